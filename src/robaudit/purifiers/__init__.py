"""Test-time purifiers: DDPM (DiffPure), cold diffusion (Defensive Diffusion), ADP's score model, MAEP.

The registry and the base class live in ``robaudit.purifiers.base``; training, caching and loading a purifier's
network in ``robaudit.purifiers.resolve``; the methods in ``purifiers/methods/``, one file each. Every module there
is imported here, so a purifier in a new file registers itself with no other edit; installed plugins add theirs
through the ``robaudit.purifiers`` entry-point group (``robaudit.components.plugins``).
"""

from robaudit.components.plugins import discover, load_plugins
from robaudit.purifiers.base import PURIFIERS, Purifier, epochs_key, recipe_for
from robaudit.purifiers.sources import load_purifier_network

__all__ = ["PURIFIERS", "Purifier", "epochs_key", "load_purifier_network", "recipe_for"]

discover(f"{__name__}.methods")
load_plugins("robaudit.purifiers")
