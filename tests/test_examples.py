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


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_example_config_runs_tiny(config, tmp_path, monkeypatch, digits_model_path):
    mapping = yaml.safe_load(config.read_text())
    if config.read_text().startswith("# robaudit distill"):
        monkeypatch.chdir(REPO)
        out = tmp_path / "student.pt"
        result = CliRunner().invoke(
            app,
            [
                "distill",
                "--config",
                str(config),
                "--teacher",
                str(digits_model_path),
                "--epochs",
                "1",
                "--out",
                str(out),
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        assert out.is_file() and (tmp_path / "student.comparison.md").is_file()
        return
    data = mapping["data"]
    source = data.get("path") or data.get("name")
    if source.startswith("../shared") and not PNEUMONIA.exists():
        pytest.skip("../shared/data is not beside the project")
    monkeypatch.chdir(REPO)  # configs name data relative to the repository root
    if source == "digits":
        model = digits_model_path
    else:
        train = load_dataset(source, split="train", limit=300)
        net, _ = train_classifier(train, None, recipe=TINY_RECIPE, seed=0)
        model = tmp_path / "tiny.pt"
        save_classifier(net, model)
    for purifier in mapping.get("purifiers", []):  # tiny networks, one epoch: the config's structure is what is tested
        purifier["recipe"] = {**TINY_RECIPES[purifier["name"]], **TINY_EPOCHS.get(purifier["name"], {"epochs": 1})}
        purifier.update(TINY_PURIFICATION.get(purifier["name"], {}))
    if mapping.get("purifiers"):
        mapping.update(eot=1, repeats=2, selection_draws=2)
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
    assert [a["name"] for a in summary["attacks"]] == [
        a["name"] if isinstance(a, dict) else a for a in mapping["attacks"]
    ]
    assert Path(out / "report.md").read_text().count("worst case") >= 1
