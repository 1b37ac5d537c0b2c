"""What every registry holds, read without importing it: lazy ``module:object`` entries with their metadata.

A component registers itself with a decorator, ``@ATTACKS.register("pgd", description=..., norm="Linf")`` on a
function whose keyword-only arguments are its hyperparameters. That decorator is its one declaration. This module
reads the same decorators from the source files with ``ast`` -- the name, the description, the metadata written as
literals and the keyword-only arguments -- and never runs the module. Listing (``robaudit ls``), ``--help`` and the
checks of a config before any work (unknown names, unknown keys) read these entries, so none of them imports torch.
The live registries import a module when an audit runs it; ``tests/test_catalog.py`` checks, for every registry,
that both give the same names, descriptions, metadata and hyperparameters.

Installed plugins (entry-point groups, ``robaudit.components.plugins``) are read the same way, from the module
their entry point names. A plugin whose registrations are not literal is imported, and its live entries are listed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from types import MappingProxyType
from typing import Any

from robaudit.config import unknown_name_message
from robaudit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]  # src/robaudit


@dataclass(frozen=True)
class Place:
    """Where a registry's components are declared: the live registry (``module:VARIABLE``; its decorators are called
    on ``VARIABLE``), the robaudit module or package (every module of a package) that declares them, and the
    entry-point group of plugins."""

    live: str
    declared_in: str
    group: str

    @property
    def variable(self) -> str:
        """The name the registration decorators are called on."""
        return self.live.partition(":")[2]


PLACES = MappingProxyType(
    {
        "attack": Place("robaudit.attacks:ATTACKS", "robaudit.attacks.methods", "robaudit.attacks"),
        "purifier": Place("robaudit.purifiers:PURIFIERS", "robaudit.purifiers.methods", "robaudit.purifiers"),
        "dataset": Place("robaudit.data.sources:DATASETS", "robaudit.data.sources", "robaudit.data_sources"),
        "model source": Place(
            "robaudit.models.sources:MODEL_SOURCES", "robaudit.models.sources", "robaudit.model_sources"
        ),
        "architecture": Place(
            "robaudit.models.architectures:ARCHITECTURES", "robaudit.models.architectures", "robaudit.architectures"
        ),
        "purifier source": Place(
            "robaudit.purifiers.sources:PURIFIER_SOURCES", "robaudit.purifiers.sources", "robaudit.purifier_sources"
        ),
    }
)


@dataclass(frozen=True)
class CatalogEntry:
    """One registered component as its decorator declares it: ``target`` is ``module:object``; ``meta`` holds the
    metadata written as literals (callables and classes are left to the live entry); ``params`` the factory's
    keyword-only arguments (its hyperparameters, and the values robaudit supplies such as ``num_classes``) and
    ``annotations`` their annotations as source text (``"int"``, ``"float | None"``)."""

    name: str
    target: str
    description: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)  # each param's annotation, as written


class Catalog:
    """The entries of one registry, by name, read from source (``catalog(kind)``)."""

    def __init__(self, kind: str, entries: list[CatalogEntry]) -> None:
        self.kind = kind
        self._entries = {entry.name: entry for entry in entries}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries[name] for name in self.names())

    def names(self) -> list[str]:
        """Declared names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> CatalogEntry:
        """The entry for ``name``; a ConfigError listing the valid names (and a close match) otherwise."""
        if name not in self._entries:
            raise ConfigError(unknown_name_message(self.kind, name, self.names()))
        return self._entries[name]


@cache
def catalog(kind: str) -> Catalog:
    """The catalog of the registry ``kind`` (``attack``, ``purifier``, ``dataset``, ``model source``,
    ``architecture``, ``purifier source``): robaudit's own components, then installed plugins'."""
    place = PLACES[kind]
    entries = package_entries(place.declared_in, place.variable)
    for point in sorted(entry_points(group=place.group), key=lambda e: e.name):
        entries += plugin_entries(point.value, place.variable, kind=kind)
    return Catalog(kind, entries)


def package_entries(module: str, variable: str) -> list[CatalogEntry]:
    """The entries declared in robaudit's ``module``: one file, or every public module of a package."""
    path = ROOT.joinpath(*module.split(".")[1:])
    if path.is_dir():
        files = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
        return [entry for file in files for entry in declared_in(file, f"{module}.{file.stem}", variable)]
    return declared_in(path.with_suffix(".py"), module, variable)


def plugin_entries(module: str, variable: str, *, kind: str) -> list[CatalogEntry]:
    """The entries a plugin's ``module`` declares, read from its source; imported when they are not literal (or the
    source cannot be found), then read from the live registry."""
    try:
        spec = importlib.util.find_spec(module)
        origin = Path(spec.origin) if spec and spec.origin else None
        if origin is not None and origin.suffix == ".py":
            return declared_in(origin, module, variable)
    except (ImportError, ValueError, SyntaxError, NotLiteral):
        pass
    return live_entries(kind, module)


def live_entries(kind: str, module: str) -> list[CatalogEntry]:
    """The entries of the live registry ``kind`` that ``module`` registered (imports both; a plugin that fails to
    import is left out, as ``robaudit.components.plugins`` leaves it out)."""
    registry = live_registry(kind)
    try:
        importlib.import_module(module)
    except Exception:  # a third party's bug must not stop a listing; the live registry warns when it loads plugins
        return []
    return [as_catalog_entry(entry) for entry in registry if entry.factory.__module__ == module]


def live_registry(kind: str) -> Any:
    """The live registry of ``kind`` (imports its package and every component in it)."""
    module, _, variable = PLACES[kind].live.partition(":")
    return getattr(importlib.import_module(module), variable)


def as_catalog_entry(entry: Any) -> CatalogEntry:
    """A live ``registry.Entry`` as a catalog entry (its literal metadata only)."""
    meta = {key: value for key, value in entry.meta.items() if is_literal(value)}
    target = f"{entry.factory.__module__}:{entry.factory.__name__}"
    hyper = entry.hyperparameters()
    annotations = {name: annotation_text(p.annotation) for name, p in hyper.items() if p.annotation is not p.empty}
    return CatalogEntry(entry.name, target, entry.description, meta, tuple(hyper), MappingProxyType(annotations))


def annotation_text(annotation: Any) -> str:
    """An annotation as source text: a string (``from __future__ import annotations``) as it is, a class by name."""
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


class NotLiteral(ValueError):
    """A registration whose name or description is not a literal: the catalog cannot read it without running it."""


def declared_in(path: Path, module: str, variable: str) -> list[CatalogEntry]:
    """Every ``@VARIABLE.register(...)`` decorator on a function of the file ``path`` (module ``module``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    entries = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            if is_registration(decorator, variable):
                entries.append(entry_of(decorator, node, module))
    return entries


def is_registration(node: ast.expr, variable: str) -> bool:
    """Whether ``node`` is a call of ``VARIABLE.register``."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "register"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == variable
    )


def entry_of(decorator: ast.Call, function: ast.FunctionDef, module: str) -> CatalogEntry:
    """The catalog entry one registration decorator declares."""
    if not decorator.args:
        raise NotLiteral(f"{module}:{function.name}: register() without a name")
    keywords = {k.arg: k.value for k in decorator.keywords if k.arg is not None}
    try:
        name = ast.literal_eval(decorator.args[0])
        description = ast.literal_eval(keywords.pop("description"))
    except (ValueError, KeyError, SyntaxError):
        raise NotLiteral(f"{module}:{function.name}: a registration's name and description must be literals") from None
    meta = {}
    for key, value in keywords.items():
        try:
            meta[key] = ast.literal_eval(value)
        except ValueError:
            continue  # a callable or a class: only the live entry has it
    params = tuple(arg.arg for arg in function.args.kwonlyargs)
    annotations = {arg.arg: ast.unparse(arg.annotation) for arg in function.args.kwonlyargs if arg.annotation}
    target = f"{module}:{function.name}"
    return CatalogEntry(name, target, description, MappingProxyType(meta), params, MappingProxyType(annotations))


def is_literal(value: Any) -> bool:
    """Whether ``value`` is made of literals only (what ``ast.literal_eval`` could give)."""
    if isinstance(value, str | int | float | bool | type(None)):
        return True
    if isinstance(value, list | tuple | set):
        return all(is_literal(item) for item in value)
    if isinstance(value, dict | MappingProxyType):
        return all(is_literal(k) and is_literal(v) for k, v in value.items())
    return False
