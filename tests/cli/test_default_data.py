"""`robaudit evaluate --model vit.pt` with no --data audits the test split of the data the model was trained on:
robaudit's trainer records the source in the checkpoint's card; a model that does not record it is a one-line
error asking for --data (exit 2)."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.models.classifiers import training_data_source
from robaudit.models.spec import TrainSpec, data_location, train_and_save


def with_data_source(path, out, source):
    payload = torch.load(path, map_location="cpu", weights_only=True)
    payload["card"]["training"]["data_source"] = source
    torch.save(payload, out)
    return out


def test_evaluate_without_data_audits_the_models_own_test_split(tmp_path, digits_model_path):
    model = with_data_source(digits_model_path, tmp_path / "vit.pt", "digits")
    args = ["evaluate", "--model", str(model), "--limit", "4", "--attacks", "fgsm", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "no data given: auditing the test split of the model's training data, digits" in result.output
    config = (tmp_path / "r" / "config.yaml").read_text()
    assert "name: digits" in config and "split: test" in config and "limit: 4" in config
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["n_samples"] == 4


def test_a_model_without_a_recorded_source_asks_for_data(tmp_path, digits_model_path):
    result = CliRunner().invoke(app, ["evaluate", "--model", str(digits_model_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "no data given" in result.output and "pass --data" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_the_trainer_records_where_its_data_came_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert data_location("digits") == "digits"
    spec = TrainSpec(data="digits", image_size=16, channels=None, seed=0, recipe={"epochs": 1, "arch": "cnn"})
    train_and_save(spec, tmp_path / "m.pt", device="cpu")
    assert training_data_source(tmp_path / "m.pt") == "digits"
    (tmp_path / "d.npz").write_bytes(b"")
    assert data_location("d.npz") == str((tmp_path / "d.npz").resolve()), "a path is recorded absolute"
    assert training_data_source(tmp_path / "d.npz") is None
