"""Classifiers: self-describing checkpoints and the normalizing wrapper, architectures, model specs, training."""
