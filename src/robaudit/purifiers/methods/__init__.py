"""The purification methods, one module each (``ddpm``: DiffPure; ``cold``: Defensive Diffusion; ``ebm``: ADP;
``mae``: MAEP): each registers itself in ``purifiers.base.PURIFIERS`` when imported, and ``robaudit.purifiers``
imports every module here (``plugins.discover``), so a new purifier is one new file. The machinery they share
(networks, the diffusion contract, sources, training, checkpointing) sits one level up, in ``robaudit.purifiers``."""
