"""The one minibatch training loop robaudit's classifiers, purifier networks and distilled students share
(``training.loop``): seeded order and augmentation, a progress bar, device moves, per-epoch losses."""
