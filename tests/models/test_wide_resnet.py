"""robaudit's WideResNet is RobustBench's: the same state-dict layout (so RobustBench checkpoints load as a bare
state dict) and, where robustbench imports, the same outputs on the same weights."""

from __future__ import annotations

import contextlib
import importlib
import sys

import pytest
import timm
import torch

from robaudit.models.classifiers import load_classifier
from robaudit.models.sources.robustbench import robustbench_version

# the weights (no buffers, no biases) of RobustBench 1.1.1's WideResNet(depth=10, widen_factor=1), listed from it
ROBUSTBENCH_WRN_10_1_WEIGHTS = [
    "block1.layer.0.bn1.weight", "block1.layer.0.bn2.weight", "block1.layer.0.conv1.weight",
    "block1.layer.0.conv2.weight", "block2.layer.0.bn1.weight", "block2.layer.0.bn2.weight",
    "block2.layer.0.conv1.weight", "block2.layer.0.conv2.weight", "block2.layer.0.convShortcut.weight",
    "block3.layer.0.bn1.weight", "block3.layer.0.bn2.weight", "block3.layer.0.conv1.weight",
    "block3.layer.0.conv2.weight", "block3.layer.0.convShortcut.weight", "bn1.weight", "conv1.weight", "fc.weight",
]  # fmt: skip


def test_the_state_dict_layout_is_robustbenchs():
    net = timm.create_model("robaudit_wide_resnet", depth=10, widen_factor=1, num_classes=10)
    keys = sorted(net.state_dict())
    assert len(keys) == 46
    weights = [k for k in keys if not k.endswith(("running_mean", "running_var", "num_batches_tracked", "bias"))]
    assert weights == ROBUSTBENCH_WRN_10_1_WEIGHTS


def robustbench_wide_resnet(monkeypatch):
    """RobustBench's own class; skipped with the reason where robustbench does not import (its PyPI release imports
    ``autoattack``, shipped as ``pyautoattack``: aliased here)."""
    with contextlib.suppress(ImportError):
        monkeypatch.setitem(sys.modules, "autoattack", importlib.import_module("pyautoattack"))
    if robustbench_version() is None:
        pytest.skip("robustbench is not installed (torchattacks 3.5.1's old robustbench folder is not the package)")
    try:
        from robustbench.model_zoo.architectures.wide_resnet import WideResNet
    except ImportError as exc:
        pytest.skip(f"robustbench is not importable here ({exc}); pip install -e '.[robustbench]' runs this test")
    return WideResNet


def test_a_robustbench_checkpoint_loads_as_a_state_dict_and_predicts_the_same(tmp_path, monkeypatch):
    wide_resnet = robustbench_wide_resnet(monkeypatch)
    torch.manual_seed(0)
    reference = wide_resnet(depth=16, widen_factor=2).eval()
    for module in reference.modules():  # trained-looking statistics, so BatchNorm is not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(reference.state_dict(), tmp_path / "wrn.pt")
    loaded = load_classifier(
        tmp_path / "wrn.pt", arch="robaudit_wide_resnet", arch_kwargs={"depth": 16, "widen_factor": 2}
    )
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), reference(images), rtol=1e-5, atol=1e-5)
    assert loaded.card.origin["num_classes"] == "state dict head 'fc.weight'"


def test_wrn_is_a_registered_architecture():
    from robaudit.models.architectures import architecture_for

    name, kwargs = architecture_for("wrn", channels=3, image_size=32)
    net = timm.create_model(name, num_classes=10, **kwargs)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(36.5e6, rel=0.01), "WRN-28-10"
