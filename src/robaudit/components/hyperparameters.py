"""What a config may set on a component, checked from the catalog before any work (no torch import): the keys of
its hyperparameters and, where a hyperparameter is annotated with a plain type (``int``, ``float | None``...), the
type of its value. Resolution (``attacks.resolve_attack``, ``purifiers.resolve``) then fills in the defaults of a
spec checked here."""

from __future__ import annotations

from typing import Any

from robaudit.components.catalog import catalog
from robaudit.config import ComponentSpec, check_keys, coerce, parse_eps
from robaudit.errors import ConfigError

SUPPLIED = {"attack": ("num_classes", "seed", "eot", "draws", "randomized")}  # robaudit passes these, never a config
SPECIAL = {  # keys a config entry may set besides the factory's own
    "attack": ("label",),
    "purifier": ("label", "checkpoint", "network", "recipe", "eot", "graft"),
}
PLAIN_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def check_component(spec: ComponentSpec, *, kind: str) -> None:
    """A ConfigError naming the first problem of ``spec`` (a registry ``kind``'s entry): an unknown name, a key its
    factory does not take, or a value of the wrong plain type. An attack's ``eps`` may be a fraction (``8/255``)."""
    entry = catalog(kind).get(spec.name)
    settable = [name for name in entry.params if name not in SUPPLIED.get(kind, ())]
    where = f"{kind} {spec.name!r}"
    check_keys(spec.params, sorted([*settable, *SPECIAL.get(kind, ())]), where=where)
    for key, value in spec.params.items():
        if kind == "attack" and key == "eps":
            parse_eps(value, name=f"{spec.name}.eps")
        elif key in entry.annotations:
            check_plain_type(value, entry.annotations[key], where=f"{where}: {key}")


def check_plain_type(value: Any, annotation: str, *, where: str) -> None:
    """Check ``value`` against an annotation written with plain types only (``int``, ``float | None``); any other
    annotation is left to the factory."""
    parts = [part.strip() for part in annotation.split("|")]
    if not all(part in PLAIN_TYPES or part == "None" for part in parts):
        return
    if value is None and "None" in parts:
        return
    errors = []
    for part in (part for part in parts if part != "None"):
        try:
            coerce(value, PLAIN_TYPES[part], where=where)
            return
        except ConfigError as error:
            errors.append(error)
    raise errors[0]
