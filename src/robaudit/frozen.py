"""Read-only values: what a resolved audit holds (``frozen``), and their plain form for YAML and JSON (``thawed``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ReadOnlyMapping(Mapping):
    """A mapping that cannot change (no item assignment, no update), which copies, pickles and compares like the
    dict it was made from."""

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Any:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"ReadOnlyMapping({self._items!r})"

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        return (ReadOnlyMapping, (self._items,))


def frozen(value: Any) -> Any:
    """A read-only copy of a config value: mappings as ``ReadOnlyMapping``, lists as tuples, all the way down."""
    if isinstance(value, Mapping):
        return ReadOnlyMapping({key: frozen(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(frozen(item) for item in value)
    return value


def thawed(value: Any) -> Any:
    """A plain copy of a ``frozen`` value, as YAML and JSON write it: mappings as dicts, tuples as lists."""
    if isinstance(value, Mapping):
        return {key: thawed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [thawed(item) for item in value]
    return value
