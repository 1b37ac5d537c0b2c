"""Known answers on a model no one here wrote: the reference AutoAttack's example ResNet-18 (``pyautoattack``'s
``examples/resnet.py`` with its ``model_test.pt`` weights, BatchNorm throughout), exported to TorchScript, audited on
the first 32 CIFAR-10 test images of ``../shared/data/cifar10_head.npz``: the run completes and its clean accuracy
equals the model's own, called directly."""

from __future__ import annotations

import importlib.util
import json
from importlib import resources

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import SHARED_DATA
from robaudit.cli import app

CIFAR = SHARED_DATA / "cifar10_head.npz"


def reference_resnet18() -> torch.nn.Module:
    examples = resources.files("pyautoattack") / "examples"
    spec = importlib.util.spec_from_file_location("pyautoattack_example_resnet", str(examples / "resnet.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.ResNet18()
    net.load_state_dict(torch.load(str(examples / "model_test.pt"), map_location="cpu", weights_only=True))
    return net.eval()


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.exists(), reason="../shared/data/cifar10_head.npz is not beside the repository")
def test_the_reference_autoattack_resnet18_as_torchscript_scores_as_called_directly(tmp_path, monkeypatch):
    net = reference_resnet18()
    torch.jit.script(net).save(str(tmp_path / "resnet18.ts"))
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "--model", "resnet18.ts", "--data", str(CIFAR), "--split", "test", "--limit", "32"]
    result = CliRunner().invoke(app, [*args, "--attacks", "fgsm", "--out", "run"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["complete"] and summary["samples_done"] == summary["samples_expected"] == 32
    with np.load(CIFAR) as data:
        images = torch.from_numpy(data["test_images"][:32]).permute(0, 3, 1, 2).float() / 255
        labels = torch.from_numpy(data["test_labels"][:32].reshape(-1)).long()
    with torch.no_grad():
        direct = (net(images).argmax(1) == labels).sum().item()
    assert summary["clean_accuracy"]["successes"] == direct
    assert summary["model"]["origin"]["num_classes"].startswith("probe")
    assert summary["model"]["sha256"] and len(summary["model"]["sha256"]) == 64
