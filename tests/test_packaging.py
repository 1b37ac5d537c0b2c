"""Every package under src/robaudit is listed in pyproject.toml's ``[tool.setuptools] packages`` (a wheel carries
only the packages listed there; the tests import from src/ and would not notice), and the old paths of moved modules
still import."""

from __future__ import annotations

from pathlib import Path

import pytest

from robaudit.moved import MOVED

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    src = REPO / "src"
    packages = {".".join(p.parent.relative_to(src).parts) for p in src.rglob("__init__.py")}
    assert packages <= listed, f"packages missing from pyproject.toml: {sorted(packages - listed)}"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_import_path_warns_and_gives_the_new_modules_names(old):
    """Plugins written against ``robaudit.sample_rng`` (and the other moved modules) keep working for one release."""
    import importlib
    import sys

    new = importlib.import_module(f"robaudit.{MOVED[old]}")
    sys.modules.pop(f"robaudit.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"robaudit.{old} moved to robaudit.{MOVED[old]}"):
        alias = importlib.import_module(f"robaudit.{old}")
    public = [name for name in vars(new) if not name.startswith("_")]
    assert public and all(getattr(alias, name) is getattr(new, name) for name in public)
