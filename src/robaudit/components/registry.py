"""The one Registry class: stable names mapped to small factories with keyword-only, typed arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from robaudit.config import check_keys, did_you_mean, unknown_name_message  # noqa: F401 (plugins import them here)
from robaudit.errors import ConfigError
from robaudit.frozen import thawed

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry:
    """One registered component: its name, factory, one-line description and free-form metadata."""

    name: str
    factory: Callable[..., Any]
    description: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def hyperparameters(self) -> dict[str, inspect.Parameter]:
        """Keyword-only parameters of the factory: what a config section may set."""
        params = inspect.signature(self.factory).parameters
        return {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


class Registry(Generic[F]):
    """Maps stable names to factories. Unknown names fail with the valid ones and a "did you mean".

    ``metadata``: a dataclass every entry's metadata must fit (unknown or missing fields fail at registration, i.e.
    at import); entries then carry all its fields, defaults filled in.
    """

    def __init__(self, kind: str, *, metadata: type | None = None) -> None:
        self.kind = kind
        self.metadata = metadata
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, description: str, **meta: Any) -> Callable[[F], F]:
        """Decorator registering ``factory`` under ``name``."""

        def decorator(factory: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            typed = dict(meta) if self.metadata is None else vars(self.metadata(**meta))
            self._entries[name] = Entry(name, factory, description, typed)
            return factory

        return decorator

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries[n] for n in sorted(self._entries))

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        """The entry for ``name``; a ConfigError listing valid names (and a close match) otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(unknown_name_message(self.kind, name, self.names())) from None

    def build(self, name: str, params: Mapping[str, Any] | None = None, /, *args: Any, **context: Any) -> Any:
        """Call the factory of ``name`` with user ``params`` checked against its keyword-only arguments.

        ``context`` holds values robaudit supplies itself (for example ``num_classes``); each is passed only
        when the factory declares it, and a user may not set them.
        """
        entry = self.get(name)
        allowed = entry.hyperparameters()
        params = thawed(params or {})
        check_keys(params, sorted(k for k in allowed if k not in context), where=f"{self.kind} {name!r}")
        kwargs = {k: v for k, v in context.items() if k in allowed}
        kwargs.update(params)
        return entry.factory(*args, **kwargs)
