"""The catalog (entries read from the registration decorators, without importing them) says what the live registries
say, for every registry: the same names, descriptions, hyperparameters and literal metadata. And reading it imports
no heavy module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from robaudit.components.catalog import PLACES, NotLiteral, catalog, declared_in, live_registry

HEAVY = ("torch", "timm", "transformers", "diffusers", "torchattacks", "pandas", "numpy")


@pytest.mark.parametrize("kind", sorted(PLACES))
def test_catalog_matches_the_live_registry(kind):
    live, read = live_registry(kind), catalog(kind)
    assert read.names() == live.names()
    for entry in live:
        declared = read.get(entry.name)
        assert declared.description == entry.description
        assert declared.params == tuple(entry.hyperparameters()), entry.name
        annotations = {k: p.annotation for k, p in entry.hyperparameters().items() if p.annotation is not p.empty}
        assert dict(declared.annotations) == annotations, entry.name
        module, _, name = declared.target.partition(":")
        assert (entry.factory.__module__, entry.factory.__name__) == (module, name)
        for key, value in declared.meta.items():
            assert entry.meta[key] == value, (entry.name, key)


@pytest.mark.parametrize("kind", sorted(PLACES))
def test_catalog_imports_no_heavy_module(kind):
    probe = (
        "import json, sys\nfrom robaudit.components.catalog import catalog\n"
        f"assert catalog({kind!r}).names()\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_an_unknown_name_names_the_valid_ones():
    with pytest.raises(Exception, match=r"unknown attack 'pgdd'.*did you mean 'pgd'"):
        catalog("attack").get("pgdd")


def test_a_registration_the_catalog_cannot_read_is_an_error(tmp_path: Path):
    source = tmp_path / "mine.py"
    source.write_text(
        "NAME = 'mine'\n@ATTACKS.register(NAME, description='mine')\ndef mine(model, *, eps: float = 0.1):\n    ...\n"
    )
    with pytest.raises(NotLiteral, match="must be literals"):
        declared_in(source, "mine", "ATTACKS")


def test_literal_metadata_and_keyword_only_arguments_are_read(tmp_path: Path):
    source = tmp_path / "mine.py"
    source.write_text(
        "@ATTACKS.register('mine', description='one', norm='L2', smoke={'steps': 2}, derive=lambda p: p)\n"
        "def mine(model, *, eps: float = 0.1, steps: int = 3):\n    ...\n"
        "@OTHER.register('other', description='not an attack')\ndef other(*, x): ...\n"
    )
    (entry,) = declared_in(source, "pkg.mine", "ATTACKS")
    assert (entry.name, entry.target, entry.description) == ("mine", "pkg.mine:mine", "one")
    assert dict(entry.meta) == {"norm": "L2", "smoke": {"steps": 2}}
    assert entry.params == ("eps", "steps")
