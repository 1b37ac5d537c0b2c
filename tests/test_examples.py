"""End-to-end runs of every example config at a tiny size (a tiny model, a few samples)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import PNEUMONIA, REPO, TINY_RECIPE
from robaudit.cli import app
from robaudit.data import load_dataset
from robaudit.models.classifiers import save_classifier
from robaudit.models.training import train_classifier
from tiny import TINY_EPOCHS, TINY_PURIFICATION, TINY_RECIPES

pytestmark = pytest.mark.slow  # end-to-end runs; `pytest -m "not slow"` skips them

CONFIGS = sorted((REPO / "examples" / "configs").glob("*.yaml"))


def test_every_config_is_headed_by_its_command():
    for config in CONFIGS:
        first = config.read_text().splitlines()[0]
        assert first.startswith("# robaudit ") and config.name in first, config


def tiny_purifier_entry(purifier: dict) -> dict:
    """A config's purifier with a tiny network trained for one epoch: the config's structure is what is tested."""
    entry = {
        **purifier,
        "recipe": {**TINY_RECIPES[purifier["name"]], **TINY_EPOCHS.get(purifier["name"], {"epochs": 1})},
    }
    return {**entry, **TINY_PURIFICATION.get(purifier["name"], {})}


def tiny_attack(attack: str | dict) -> str | dict:
    """A config's attack with at most 5 steps (its structure is what is tested)."""
    if isinstance(attack, dict) and "steps" in attack:
        return {**attack, "steps": min(attack["steps"], 5)}
    return attack


def tiny_model(source: str, tmp_path: Path, digits_model_path: Path) -> Path:
    """The digits fixture model, or a tiny ViT trained on 300 images of the config's own data."""
    if source == "digits":
        return digits_model_path
    train = load_dataset(source, split="train", limit=300)
    net, _ = train_classifier(train, None, recipe=TINY_RECIPE, seed=0)
    save_classifier(net, tmp_path / "tiny.pt")
    return tmp_path / "tiny.pt"


def run_distill_tiny(config: Path, mapping: dict, model: Path, tmp_path: Path) -> None:
    """A distill config with the tiny teacher, a tiny purifier and one epoch."""
    if mapping.get("purifier"):
        mapping["purifier"] = tiny_purifier_entry(mapping["purifier"])
    tiny_config = tmp_path / config.name
    tiny_config.write_text(yaml.safe_dump(mapping))
    out = tmp_path / "student.pt"
    args = ["distill", "--config", str(tiny_config), "--teacher", str(model), "--epochs", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert out.is_file() and (tmp_path / "student.comparison.md").is_file()


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_example_config_runs_tiny(config, tmp_path, monkeypatch, digits_model_path):
    mapping = yaml.safe_load(config.read_text())
    data = mapping["data"]
    source = data.get("path") or data.get("name")
    if source.startswith("../shared") and not PNEUMONIA.exists():
        pytest.skip("../shared/data is not beside the project")
    monkeypatch.chdir(REPO)  # configs name data relative to the repository root
    model = tiny_model(source, tmp_path, digits_model_path)
    if config.read_text().startswith("# robaudit distill"):
        run_distill_tiny(config, mapping, model, tmp_path)
        return
    mapping["purifiers"] = [tiny_purifier_entry(p) for p in mapping.get("purifiers", [])]
    if mapping["purifiers"]:  # tiny budgets through purifiers: the convergence rung still runs, at factor 2
        mapping.update(eot=1, repeats=2, selection_draws=2, convergence={"mode": "check", "factor": 2})
        mapping["attacks"] = [tiny_attack(a) for a in mapping["attacks"]]
    if mapping.get("certify"):  # tiny draws: the section's structure is what is tested
        mapping["certify"] = {**mapping["certify"], "n0": 10, "n": 50, "steps": 2, "eot": 2}
    tiny_config = tmp_path / config.name
    tiny_config.write_text(yaml.safe_dump(mapping))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--config", str(tiny_config), "--model", str(model), "--limit", "6", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["n_samples"] == 6
    base = [a for a in summary["attacks"] if a.get("convergence_of") is None]
    assert [a["name"] for a in base] == [a["name"] if isinstance(a, dict) else a for a in mapping["attacks"]]
    rungs = [a for a in summary["attacks"] if a.get("convergence_of") is not None]
    assert all(r["convergence_of"] in {b["label"] for b in base} and r["label"] != r["convergence_of"] for r in rungs)
    assert Path(out / "report.md").read_text().count("worst case") >= 1
    if mapping.get("certify"):
        smoothed = [r["smoothed"] for r in summary["certified"]["results"]]
        assert smoothed == [f"{p['name']}@{s:g}" for p in mapping["purifiers"] for s in mapping["certify"]["sigma"]]
