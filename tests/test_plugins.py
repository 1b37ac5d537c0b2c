"""Components from one file: a module added to a component package registers itself and the contract tests cover
it with no other edit, and an installed plugin (examples/plugins) adds an attack and a purifier through entry points
that ``evaluate`` runs by name. Each runs in a fresh interpreter, so the registries of this session stay as shipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from robaudit.components.plugins import load_plugins

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "examples" / "plugins" / "robaudit-example-plugin"


def run_python(code: str, *, cwd: Path, path: list[Path]) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with ``path`` ahead of sys.path, one thread (the suite's other processes share
    the CPU)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def installed_plugin(root: Path) -> Path:
    """The example plugin as pip would leave it: its modules and a ``.dist-info`` whose entry_points.txt holds the
    entry points of its pyproject.toml. Returns the folder to put on sys.path."""
    tomllib = pytest.importorskip("tomllib", reason="reading the plugin's pyproject.toml needs Python >= 3.11")
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    site = root / "site"
    shutil.copytree(PLUGIN / "src", site)
    info = site / f"robaudit_example_plugin-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    lines = [
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())
        for group, entries in groups.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return site


ADDED_ATTACK = """
import torch
from robaudit.attacks.base import ATTACKS
from robaudit.attacks.selection import Cascade


@ATTACKS.register("nudge", description="every pixel up by eps (a test's one-file attack)", norm="Linf", smoke={})
def nudge(model, *, eps: float = 8 / 255, draws: int = 1):
    stage = lambda images, labels, rng: [(images + eps).clamp(0, 1) - (images >= 1).float() * eps]
    return Cascade(model, [("nudge", stage)], norm="Linf", eps=eps, draws=draws)
"""


def test_a_new_attack_file_is_registered_and_covered_by_the_contract_tests(tmp_path):
    folder = tmp_path / "extra"
    folder.mkdir()
    (folder / "nudge.py").write_text(ADDED_ATTACK)
    code = (
        "import sys, pytest, robaudit.attacks.methods as methods\n"
        f"methods.__path__.append({str(folder)!r})  # as if nudge.py sat in src/robaudit/attacks/methods/\n"
        "from robaudit.components.plugins import discover\n"
        "assert 'nudge' in discover('robaudit.attacks.methods')\n"
        "args = ['-q', '-p', 'no:cacheprovider', '-rA', '-k', 'nudge']\n"
        "sys.exit(pytest.main([*args, 'tests/attacks/test_attacks.py']))\n"
    )
    result = run_python(code, cwd=REPO, path=[REPO / "src", REPO / "tests"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for engine in ("generator", "philox"):  # the contract runs under every random-stream engine
        assert f"PASSED tests/attacks/test_attacks.py::test_attack_contract[nudge-{engine}]" in result.stdout
    assert "4 passed" in result.stdout


def test_an_installed_plugin_adds_an_attack_and_a_purifier_that_evaluate_runs(tmp_path, digits_model_path):
    site = installed_plugin(tmp_path)
    shutil.copy(digits_model_path, tmp_path / "m.pt")
    config = {
        "model": "m.pt",
        "data": {"name": "digits", "limit": 8},
        "attacks": [{"name": "random-signs", "tries": 3}],
        "purifiers": [{"name": "smooth", "recipe": {"epochs": 1, "width": 4}}],
        "threats": ["adaptive"],
        "out": "run",
    }
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config))
    code = (
        "from typer.testing import CliRunner\n"
        "from robaudit.cli import app\n"
        "runner = CliRunner()\n"
        "listed = runner.invoke(app, ['ls', 'attacks']).output + runner.invoke(app, ['ls', 'purifiers']).output\n"
        "assert 'random-signs' in listed and 'smooth' in listed and 'mirror-dir:' in listed, listed\n"
        "assert 'narrow-vit' in runner.invoke(app, ['ls', 'architectures']).output\n"
        "result = runner.invoke(app, ['evaluate', '--config', 'audit.yaml'])\n"
        "print(result.output)\n"
        "raise SystemExit(result.exit_code)\n"
    )
    result = run_python(code, cwd=tmp_path, path=[REPO / "src", site])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [d["label"] for d in summary["defenses"]] == ["none", "smooth"]
    labels = {r["label"] for d in summary["defenses"] for r in d["results"]}
    assert "random-signs" in labels
    records = [json.loads(line) for p in (tmp_path / "run" / "records").glob("*.jsonl") for line in p.open()]
    attacked = [r for r in records if r["attack"] == "random-signs" and r["attacked"]]
    assert attacked and all(r["linf"] <= 8 / 255 + 1e-6 for r in attacked)


def test_a_broken_plugin_is_a_warning_not_a_crash(tmp_path, monkeypatch):
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[robaudit.attacks]\nbroken = no_such_module_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_plugins("robaudit.attacks") == []
    assert any("robaudit plugin 'broken'" in str(w.message) and "failed to load" in str(w.message) for w in caught)
