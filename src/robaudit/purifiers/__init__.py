"""Test-time purifiers: DDPM (DiffPure), cold diffusion (Defensive Diffusion), ADP's score model, MAEP."""

from robaudit.purifiers import cold, ddpm, ebm, mae  # noqa: F401  (registers the purifiers)
from robaudit.purifiers.base import (
    PURIFIERS,
    Purifier,
    load_purifier_network,
    purifier_cache_path,
    recipe_for,
    save_purifier_network,
    train_purifier_network,
)

__all__ = [
    "PURIFIERS",
    "Purifier",
    "load_purifier_network",
    "purifier_cache_path",
    "recipe_for",
    "save_purifier_network",
    "train_purifier_network",
]
