"""Sanity checks: a gradient-masking model (input quantization) trips the zero-gradient and black-box-beats-
white-box flags; a normal model trips none."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from timm.models import register_model
from torch import nn
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.data import load_dataset
from robaudit.models.architectures import SmallCNN
from robaudit.models.classifiers import save_classifier
from robaudit.models.training import ClassifierRecipe, train_classifier


class Quantize(nn.Module):
    """Rounds inputs to 9 grey levels: piecewise constant, so its gradient is zero almost everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 8) / 8


@register_model
def robaudit_test_quantized_cnn(pretrained: bool = False, **kwargs):
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return nn.Sequential(Quantize(), SmallCNN(**kwargs))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sanity")
    train = load_dataset("digits", split="train")
    paths = {}
    for name, arch in (("normal", "cnn"), ("masked", "robaudit_test_quantized_cnn")):
        model, _ = train_classifier(train, None, recipe=ClassifierRecipe(arch=arch, epochs=6, normalize=False), seed=0)
        paths[name] = save_classifier(model, folder / f"{name}.pt")
    return paths


def _audit(model_path, tmp_path):
    config = {
        "model": str(model_path),
        "data": {"name": "digits", "limit": 48},
        "attacks": [{"name": "fgsm"}, {"name": "pgd", "steps": 20}, {"name": "square", "n_queries": 1200}],
        "eps": "16/255",
        "out": str(tmp_path / "run"),
    }
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["evaluate", "--config", str(tmp_path / "audit.yaml"), "--strict"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    return result, summary


def test_gradient_masking_is_flagged(models, tmp_path):
    result, summary = _audit(models["masked"], tmp_path)
    checks = {f["check"] for f in summary["findings"] if f["severity"] == "error"}
    assert "gradients" in checks, summary["findings"]
    assert "black-box-beats-white-box" in checks, summary["findings"]
    assert result.exit_code == 1  # --strict fails the gates
    assert "gradient masking" in (tmp_path / "run" / "report.md").read_text()


def test_normal_model_trips_no_flag(models, tmp_path):
    result, summary = _audit(models["normal"], tmp_path)
    # Square gets 1200 queries: with 300 it left 4 samples that 1200 broke, and the convergence check said so
    assert [f for f in summary["findings"] if f["severity"] != "info"] == []
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("accuracy, flagged", [(0.75, False), (0.56, False), (0.54, True), (0.5, True)])
def test_near_chance_check_on_a_binary_task(accuracy, flagged):
    from robaudit.engine.preflight import output_findings

    labels = torch.zeros(100, dtype=torch.long)
    logits = torch.zeros(100, 2)
    logits[: int(accuracy * 100), 0] = 1.0  # correct on the first `accuracy` share, class 1 elsewhere
    logits[int(accuracy * 100) :, 1] = 1.0
    flags = output_findings(logits, torch.rand(100, 1, 2, 2), labels, num_classes=2)
    assert any(f.check == "normalization" for f in flags) is flagged


def test_audited_samples_of_nearly_one_class_are_flagged():
    from robaudit.engine.preflight import class_balance_findings

    sorted_split = torch.tensor([1] * 200)  # the first 200 of a split sorted by label
    (flag,) = class_balance_findings(sorted_split, num_classes=2)
    assert flag.severity == "warning" and "subset_seed" in flag.explanation and "200 of 200" in flag.evidence
    assert class_balance_findings(torch.tensor([0, 1] * 100), num_classes=2) == []
    assert class_balance_findings(torch.tensor([1] * 10), num_classes=2) == [], "too few samples to judge"
