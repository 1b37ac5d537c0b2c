"""Every package under src/robaudit is listed in pyproject.toml's ``[tool.setuptools] packages``: a wheel carries
only the packages listed there (the tests import from src/ and would not notice)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    src = REPO / "src"
    packages = {".".join(p.parent.relative_to(src).parts) for p in src.rglob("__init__.py")}
    assert packages <= listed, f"packages missing from pyproject.toml: {sorted(packages - listed)}"
