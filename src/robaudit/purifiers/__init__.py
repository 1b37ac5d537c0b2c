"""Test-time purifiers: DDPM (DiffPure), cold diffusion (Defensive Diffusion), ADP's score model, MAEP.

The registry and the base class live in ``robaudit.purifiers.base``; training, caching and loading a purifier's
network in ``robaudit.purifiers.resolve``.
"""

from robaudit.purifiers import cold, ddpm, ebm, mae  # noqa: F401  (registers the purifiers)
from robaudit.purifiers.base import PURIFIERS, Purifier, epochs_key, load_purifier_network, recipe_for

__all__ = ["PURIFIERS", "Purifier", "epochs_key", "load_purifier_network", "recipe_for"]
