"""Self-describing checkpoints: round trips, safe loading, bare state dicts and TorchScript."""

from __future__ import annotations

import pytest
import torch

from robaudit.errors import CheckpointError
from robaudit.models.classifiers import load_classifier, save_classifier
from robaudit.models.model_data import settle_class_count


def test_pt_and_safetensors_roundtrip(digits_model_path, digits_test, tmp_path):
    model = load_classifier(digits_model_path)
    assert not model.training and model.card.num_classes == 10 and model.card.input_size == [1, 32, 32]
    expected = model(digits_test.images)
    save_classifier(model, tmp_path / "copy.safetensors")
    again = load_classifier(tmp_path / "copy.safetensors")
    assert torch.equal(again(digits_test.images), expected)


def test_pickled_module_is_refused_and_runs_nothing(digits_model_path, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        load_classifier(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.save(load_classifier(digits_model_path), tmp_path / "module.pt")  # a full pickled nn.Module
    with pytest.raises(CheckpointError, match="arbitrary code.*--trust-checkpoint"):
        load_classifier(tmp_path / "module.pt")


def test_trusted_pickled_module_loads(digits_model_path, digits_test, tmp_path):
    model = load_classifier(digits_model_path)
    torch.save(model, tmp_path / "module.pt")
    loaded = load_classifier(tmp_path / "module.pt", trust_checkpoint=True)
    assert loaded.card == model.card and not loaded.training
    assert torch.equal(loaded(digits_test.images), model(digits_test.images))
    torch.save(torch.nn.Sequential(model), tmp_path / "bare-module.pt")  # a module without a card
    unknown = load_classifier(tmp_path / "bare-module.pt", trust_checkpoint=True, num_classes=None)
    assert unknown.card.num_classes == 0 and unknown.card.origin["num_classes"] == "unknown"
    assert (
        unknown.card.origin["source"] == "pickled module" and "inside the model" in unknown.card.origin["normalization"]
    )
    settle_class_count(unknown, digits_test)  # one probe forward pass on the data
    assert unknown.card.num_classes == 10 and unknown.card.origin["num_classes"].startswith("probe")
    wrapped = load_classifier(tmp_path / "bare-module.pt", trust_checkpoint=True, num_classes=10)
    assert wrapped.card.kind == "pickled-module" and wrapped.card.num_classes == 10


def test_bare_state_dict_needs_arch(digits_model_path, digits_test, tmp_path):
    model = load_classifier(digits_model_path)
    torch.save(model.net.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="--arch"):
        load_classifier(tmp_path / "bare.pt")


@pytest.mark.parametrize(
    "arch, kwargs",
    [("resnet10t", {"in_chans": 1}), ("vit_tiny_patch16_224", {"in_chans": 1, "img_size": 32, "patch_size": 8})],
)
def test_bare_timm_state_dict_loads_with_arch(arch, kwargs, digits_test, tmp_path):
    import timm

    net = timm.create_model(arch, pretrained=False, num_classes=10, **kwargs).eval()
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    model = load_classifier(tmp_path / "bare.pt", arch=arch)
    assert model.card.num_classes == 10 and model.card.arch_kwargs["in_chans"] == 1
    assert torch.allclose(model(digits_test.images[:4]), net(digits_test.images[:4]), atol=1e-5)


def test_torchscript_loads(digits_model_path, digits_test, tmp_path):
    model = load_classifier(digits_model_path)
    traced = torch.jit.trace(model, digits_test.images[:2])
    traced.save(str(tmp_path / "model.ts"))
    loaded = load_classifier(tmp_path / "model.ts", num_classes=10)
    assert torch.allclose(loaded(digits_test.images), model(digits_test.images), atol=1e-5)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_classifier(tmp_path / "nope.pt")


def test_a_state_dicts_normalization_and_arguments_come_from_flags_or_config(digits_test, tmp_path, monkeypatch):
    import json

    import timm
    from typer.testing import CliRunner

    from robaudit.cli import app

    kwargs = {"channels": [8, 16, 32, 64], "stem_width": 8}
    net = timm.create_model("resnet18", num_classes=10, in_chans=1, **kwargs).eval()
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    (tmp_path / "model.yaml").write_text(
        "model: {path: bare.pt, arch: resnet18, arch_kwargs: {channels: [8, 16, 32, 64], stem_width: 8}}\n"
    )
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "--config", "model.yaml", "--data", "digits", "--limit", "4", "--attacks", "fgsm"]
    result = CliRunner().invoke(app, [*args, "--mean", "0.5", "--std", "0.25", "--out", "run"])
    assert result.exit_code == 0, result.output
    origin = json.loads((tmp_path / "run" / "summary.json").read_text())["model"]["origin"]
    assert origin["normalization"] == "given (model mean/std)" and origin["source"] == "state dict"
    model = load_classifier("bare.pt", arch="resnet18", arch_kwargs=kwargs, mean=[0.5], std=[0.25])
    images = digits_test.images[:4]
    assert torch.allclose(model(images), net((images - 0.5) / 0.25), atol=1e-5)
    bad = CliRunner().invoke(app, [*args, "--mean", "half", "--out", "run2"])
    assert bad.exit_code == 2 and "model.mean must be a list of numbers" in bad.output
