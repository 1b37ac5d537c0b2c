"""A tiny train -> purify -> evaluate run for each purifier through the CLI, and the purifier cache."""

from __future__ import annotations

import json
import shutil
from dataclasses import fields

import pytest
import yaml
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.config import ComponentSpec
from robaudit.purifiers import PURIFIERS, epochs_key, recipe_for
from robaudit.purifiers.resolve import PurifierContext, obtain_purifier, resolve_purifier
from tiny import TINY_EPOCHS, TINY_PURIFICATION, TINY_RECIPES

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("kind", PURIFIERS.names())
def test_train_purify_evaluate(kind, tmp_path, monkeypatch, digits_model_path):
    monkeypatch.chdir(tmp_path)
    shutil.copy(digits_model_path, "vit.pt")
    recipe = {**TINY_RECIPES[kind], **TINY_EPOCHS.get(kind, {"epochs": 1})}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    invoke("train", kind, "--data", "digits", "--out", "pur.pt", "--config", "recipe.yaml", "--model", "vit.pt")
    invoke(
        "purify",
        "--purifier",
        kind,
        "--purifier-checkpoint",
        "pur.pt",
        "--data",
        "digits",
        "--limit",
        8,
        "--out",
        "purified",
    )
    manifest = json.loads((tmp_path / "purified" / "manifest.json").read_text())
    assert manifest["provenance"]["purifier"]["name"] == kind and manifest["num_samples"] == 8
    invoke("evaluate", "--model", "vit.pt", "--data", "purified", "--out", "scored")
    assert json.loads((tmp_path / "scored" / "summary.json").read_text())["n_samples"] == 8

    purifier = {"name": kind, "checkpoint": "pur.pt", **TINY_PURIFICATION.get(kind, {})}
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump({"purifiers": [purifier], "selection_draws": 2}))
    invoke(
        "evaluate",
        "--config",
        "audit.yaml",
        "--model",
        "vit.pt",
        "--data",
        "digits",
        "--limit",
        8,
        "--attacks",
        "fgsm",
        "--eot",
        1,
        "--repeats",
        2,
        "--out",
        "run",
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    defended = summary["defenses"][1]
    assert defended["label"] == kind
    assert [r["threat"] for r in defended["results"]] == ["non-adaptive", "bpda", "adaptive"]
    assert defended["repeats"] == (2 if defended["randomized"] else 1)
    worst = defended["worst_case"]["robust_accuracy"]["value"]
    assert worst <= min(r["robust_accuracy_worst_of_n"]["value"] for r in defended["results"])
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Defended models" in report and defended["gradient"] in report
    records = [
        json.loads(line)
        for p in sorted((tmp_path / "run" / "records").glob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]
    assert {r["threat"] for r in records} == {"none", "non-adaptive", "bpda", "adaptive"}
    assert all(r["linf"] <= 8 / 255 + 1e-6 for r in records)


def test_untrained_purifier_is_trained_once_and_cached(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBAUDIT_CACHE", str(tmp_path))  # a cache of its own: other tests may train the same recipe
    spec = ComponentSpec("cold", {"recipe": {**TINY_RECIPES["cold"], "epochs": 1}})
    resolved = resolve_purifier(spec)
    _, first = obtain_purifier(resolved, PurifierContext(data_source="digits", seed=0, device="cpu"))
    assert "training one" in capsys.readouterr().err
    _, second = obtain_purifier(resolved, PurifierContext(data_source="digits", seed=0, device="cpu"))
    assert first == second and "reusing cached" in capsys.readouterr().err


@pytest.mark.parametrize("kind", PURIFIERS.names())
def test_epochs_flag_sets_the_recipe_field_each_purifier_names(kind, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("robaudit.purifiers.resolve.train_purifier_file", lambda _kind, **kwargs: seen.update(kwargs))
    invoke("train", kind, "--data", "digits", "--epochs", 3, "--out", tmp_path / "pur.pt")
    assert epochs_key(kind) in {f.name for f in fields(PURIFIERS.get(kind).meta["recipe"])}
    assert seen["recipe"] == {epochs_key(kind): 3}
    assert getattr(recipe_for(kind, seen["recipe"]), epochs_key(kind)) == 3
