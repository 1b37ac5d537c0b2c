"""Data sources: registered names or detected paths, yielding float NCHW images in [0, 1].

The names below load on first use (PEP 562), so reading a config's data section (``data.spec``) or listing the
datasets imports no torch; ``from robaudit.data import load_dataset`` works as before.
"""

from __future__ import annotations

import importlib
from typing import Any

EXPORTS = {
    "DATASETS": "robaudit.data.sources",
    "ImageSet": "robaudit.data.imageset",
    "detect_source": "robaudit.data.loading",
    "load_dataset": "robaudit.data.loading",
    "read_artifact": "robaudit.data.artifact",
    "write_artifact": "robaudit.data.artifact",
}
__all__ = sorted(EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the module of an exported name when it is first read."""
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(EXPORTS[name]), name)
    globals()[name] = value
    return value
