"""Old import paths of modules that moved into packages (``robaudit.sample_rng`` is now ``robaudit.rng.sample_rng``).
They keep working for one release: importing one warns (``DeprecationWarning``) and gives a module whose names are
the new module's. ``robaudit/__init__.py`` installs the finder; nothing in robaudit imports an old path."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

MOVED = {
    **{name: f"rng.{name}" for name in ("philox", "sample_rng", "seeding", "draw_layout", "row_draws")},
    **{name: f"components.{name}" for name in ("registry", "catalog", "plugins")},
    **{name: f"runs.{name}" for name in ("rundir", "manifest", "records", "findings")},
    **{name: f"headline.{name}" for name in ("check_bound", "headline_check")},
}
REMOVED_IN = "0.2"


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``robaudit.<old name>`` and loads it as an alias of its new module, with a deprecation warning."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        """A spec for an old path, None for every other module."""
        package, _, name = fullname.partition(".")
        if package != "robaudit" or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        """The default module (filled by ``exec_module``)."""
        return None

    def exec_module(self, module: ModuleType) -> None:
        """Warn, then give ``module`` the new module's names (later lookups fall through to it)."""
        new_name = f"robaudit.{MOVED[module.__name__.partition('.')[2]]}"
        warnings.warn(
            f"{module.__name__} moved to {new_name}; the old path goes in robaudit {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=2,
        )
        new = importlib.import_module(new_name)
        module.__dict__.update({k: v for k, v in vars(new).items() if not k.startswith("__")})
        module.__getattr__ = lambda attribute: getattr(new, attribute)


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
