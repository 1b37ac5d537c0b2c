"""Registered data sources: each module of this package is one source, whose factory reads one split into an
ImageSet (float NCHW in [0, 1]) and whose registration says how ``--data`` text selects it. Every module here is
imported, so a new source is one new file; installed plugins add theirs through the ``robaudit.data_sources``
entry-point group (``robaudit.components.plugins``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from robaudit.components.registry import Registry


@dataclass(frozen=True)
class DataSourceEntry:
    """What a data source registers besides its factory: ``detect`` (a path -> whether it holds this source's data;
    None: a named source, chosen by its name, with no path), ``priority`` (path sources are tried highest first:
    the most specific layout first, any folder last), ``skips_bad`` (it can leave unreadable files out),
    ``transforms_files`` (it applies a model's evaluation transform to decoded files) and ``example`` (a folder ->
    the ``--data`` text of a tiny instance written there: the contract tests' fixture, so a new source is tested with
    no other edit)."""

    detect: Callable[[Path], bool] | None = None
    priority: int = 0
    skips_bad: bool = False
    transforms_files: bool = False
    example: Callable[[Path], str] | None = None


DATASETS: Registry = Registry("dataset", metadata=DataSourceEntry)

from robaudit.components.plugins import discover, load_plugins  # noqa: E402  (after DATASETS, which the sources import)

discover(__name__)
load_plugins("robaudit.data_sources")
