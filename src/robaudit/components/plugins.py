"""Where components come from: every module of a component package registers itself when imported, and installed
packages add their own through entry points -- so adding a component is one file, or one installed plugin.

Entry-point groups (``[project.entry-points."robaudit.attacks"]`` in a plugin's pyproject.toml, each entry naming the
module that registers the component):

- ``robaudit.attacks``: attacks (``ATTACKS.register``);
- ``robaudit.purifiers``: purifiers (``PURIFIERS.register``);
- ``robaudit.data_sources``: data sources (``DATASETS.register``);
- ``robaudit.model_sources``: model sources (``MODEL_SOURCES.register``);
- ``robaudit.architectures``: classifier architectures (``ARCHITECTURES.register``);
- ``robaudit.purifier_sources``: where a purifier's network comes from (``PURIFIER_SOURCES.register``).

A plugin that fails to import is named in a one-line warning and left out; it never stops robaudit.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from importlib.metadata import entry_points

GROUPS = (
    "robaudit.attacks",
    "robaudit.purifiers",
    "robaudit.data_sources",
    "robaudit.model_sources",
    "robaudit.architectures",
    "robaudit.purifier_sources",
)


def discover(package: str, *, skip: tuple[str, ...] = ()) -> list[str]:
    """Import every module of ``package`` (a dotted name), except ``skip`` and private ``_modules``, so each registers
    its components; returns the module names, in order."""
    module = importlib.import_module(package)
    names = sorted(info.name for info in pkgutil.iter_modules(module.__path__) if not info.name.startswith("_"))
    names = [name for name in names if name not in skip]
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names


def load_plugins(group: str) -> list[str]:
    """Load every installed entry point of ``group`` (importing its module registers its components); returns the
    entry points' names. A broken plugin is a warning, not an error."""
    loaded = []
    for entry in sorted(entry_points(group=group), key=lambda e: e.name):
        try:
            entry.load()
        except Exception as error:  # a third party's bug must not stop an audit that does not use it
            warnings.warn(
                f"robaudit plugin {entry.name!r} ({entry.value}) in {group} failed to load: {error}", stacklevel=2
            )
            continue
        loaded.append(entry.name)
    return loaded
