"""The data as a pretrained model sees it: timm's evaluation transform (without Normalize) on images at another
size, classes matched by name or through a class map, a card-less model's class count probed; and the acceptance
run ``robaudit evaluate --model local-dir:PATH --data FOLDER --attacks pgd``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from test_sources import ARGS, LABELS, save_hub_layout, tiny_vit
from torchvision import transforms
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.data.spec import DataSpec
from robaudit.errors import DataError
from robaudit.models.model_data import data_for_model
from robaudit.models.sources import SourceOptions, load_from_source

runner = CliRunner()


def write_folder(root: Path, sizes: dict[str, list[tuple[int, int]]], *, seed: int = 0) -> Path:
    """An image folder: for each class, RGB PNGs of the given (width, height)."""
    rng = np.random.default_rng(seed)
    for name, shapes in sizes.items():
        (root / name).mkdir(parents=True)
        for i, (width, height) in enumerate(shapes):
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def model_224(tmp_path_factory):
    args = {**ARGS, "img_size": 224, "patch_size": 32}
    folder = save_hub_layout(tiny_vit(**args), tmp_path_factory.mktemp("vit224"), args)
    return load_from_source(f"local-dir:{folder}", SourceOptions())


def test_a_folder_at_300px_gets_timms_own_eval_transform_for_a_224px_model(model_224, tmp_path):
    folder = write_folder(tmp_path / "images", {"cat": [(300, 300), (224, 224)], "dog": [(300, 260)]})
    dataset = data_for_model(model_224, DataSpec.parse(str(folder)))
    assert dataset.shape == (3, 224, 224)
    config = timm.data.resolve_data_config(model=model_224.net)
    assert config["crop_pct"] == 0.9 and config["interpolation"] == "bicubic"
    timm_transform = timm.data.create_transform(**config, is_training=False)
    no_normalize = transforms.Compose([t for t in timm_transform.transforms if not isinstance(t, transforms.Normalize)])
    files = [folder / "cat" / "0.png", folder / "cat" / "1.png", folder / "dog" / "0.png"]
    expected = torch.stack([no_normalize(Image.open(f).convert("RGB")) for f in files])
    loaded = dataset.images[:]
    assert torch.equal(loaded[0], expected[0]) and torch.equal(loaded[2], expected[2])
    untouched = torch.from_numpy(np.array(Image.open(files[1]))).permute(2, 0, 1).float() / 255
    assert torch.equal(loaded[1], untouched), "an image already at the model's size is not resized"
    assert "224x224" in dataset.provenance["model_transform"]


def test_arrays_at_another_size_go_through_the_transform_as_tensors(model_224, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "small.npz", test_images=images, test_labels=np.array([0, 1, 2, 0]))
    dataset = data_for_model(model_224, DataSpec.parse(str(tmp_path / "small.npz")))
    assert (
        dataset.shape == (3, 224, 224) and float(dataset.images[:].min()) >= 0 and float(dataset.images[:].max()) <= 1
    )
    assert torch.equal(dataset.images[:][:, 0], dataset.images[:][:, 2]), "gray images repeated to the model's RGB"


def test_classes_match_by_name_or_through_a_class_map(model_224, tmp_path):
    folder = write_folder(tmp_path / "named", {"dog": [(224, 224)], "owl": [(224, 224)]})
    dataset = data_for_model(model_224, DataSpec.parse(str(folder)))
    assert dataset.labels.tolist() == [1, 2] and dataset.class_names == ["cat", "dog", "owl"]
    other = write_folder(tmp_path / "other", {"bird": [(224, 224)], "dog": [(224, 224)]})
    with pytest.raises(DataError, match=r"classes \['bird'\] are not among the model's classes.*--class-map"):
        data_for_model(model_224, DataSpec.parse(str(other)))
    (tmp_path / "map.yaml").write_text("bird: owl\ndog: 1\n")
    spec = DataSpec.parse({"path": str(other), "class_map": str(tmp_path / "map.yaml")})
    assert data_for_model(model_224, spec).labels.tolist() == [2, 1]
    (tmp_path / "bad.yaml").write_text("bird: eagle\n")
    with pytest.raises(DataError, match="'bird' -> 'eagle' names no model class"):
        data_for_model(model_224, DataSpec.parse({"path": str(other), "class_map": str(tmp_path / "bad.yaml")}))


class GrayNet(torch.nn.Module):
    """A card-less module on 1x32x32 images with 10 outputs (what TorchScript exports carry: no card)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(32 * 32, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))


def test_torchscript_without_num_classes_is_probed_and_the_report_says_so(tmp_path):
    torch.manual_seed(0)
    torch.jit.script(GrayNet()).save(str(tmp_path / "model.ts"))
    out = tmp_path / "run"
    args = ["evaluate", "--model", str(tmp_path / "model.ts"), "--data", "digits", "--limit", "8"]
    result = runner.invoke(app, [*args, "--attacks", "fgsm", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["num_classes"] == 10 and summary["model"]["origin"]["num_classes"].startswith("probe")
    assert "class count: probe: one forward pass" in (out / "report.md").read_text()


def test_evaluate_a_local_dir_model_on_an_image_folder(tmp_path):
    args = {**ARGS, "num_classes": 3}
    folder = save_hub_layout(tiny_vit(), tmp_path / "vit", args)
    images = write_folder(tmp_path / "images", {"cat": [(40, 40)] * 2, "owl": [(48, 40)] * 2})
    out = tmp_path / "run"
    command = ["evaluate", "--model", f"local-dir:{folder}", "--data", str(images), "--attacks", "pgd"]
    result = runner.invoke(app, [*command, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["origin"]["source"] == "local-dir" and summary["samples_done"] == 4
    assert summary["data"]["provenance"]["class_mapping"]["map"] == {"cat": 0, "owl": 2}
    report = (out / "report.md").read_text()
    assert "model source: local-dir" in report and "32x32 \\(timm eval transform" in report
    assert "classes mapped to the model's by class names: cat -> cat, owl -> owl\n" in report
    records = [json.loads(line) for p in (out / "records").glob("*.jsonl") for line in p.read_text().splitlines()]
    attacked = [r for r in records if r["attacked"]]
    assert attacked and max(r["linf"] for r in attacked) <= 8 / 255 + 1e-6


def test_attack_writes_adversarial_images_in_the_models_input_space(tmp_path):
    folder = save_hub_layout(tiny_vit(), tmp_path / "vit", ARGS)
    images = write_folder(tmp_path / "images", {"dog": [(40, 40)] * 3})
    out = tmp_path / "adv"
    command = ["attack", "--model", f"local-dir:{folder}", "--data", str(images), "--attack", "fgsm"]
    result = runner.invoke(app, [*command, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    from robaudit.data import read_artifact

    adversarial = read_artifact(out)
    assert adversarial.shape == (3, 32, 32) and adversarial.labels.tolist() == [1, 1, 1]


def test_a_purifier_for_a_pretrained_model_trains_on_data_through_its_transform(tmp_path):
    """28 px gray arrays, a 32 px RGB model: the purifier trains and runs at the model's input, not the data's."""
    folder = save_hub_layout(tiny_vit(), tmp_path / "vit", ARGS)
    rng = np.random.default_rng(0)
    arrays = {f"{split}_images": rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8) for split in ("train", "test")}
    labels = {f"{split}_labels": np.arange(12) % 3 for split in ("train", "test")}
    np.savez(tmp_path / "gray.npz", **arrays, **labels, class_names=np.array(LABELS))
    config = {
        "model": f"local-dir:{folder}",
        "data": {"path": str(tmp_path / "gray.npz"), "limit": 4},
        "attacks": [{"name": "pgd", "steps": 2}],
        "purifiers": [{"name": "cold", "variant": "direct", "recipe": {"widths": [8, 16], "levels": 4, "epochs": 1}}],
        "threats": ["adaptive"],
        "out": str(tmp_path / "run"),
    }
    (tmp_path / "audit.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["evaluate", "--config", str(tmp_path / "audit.yaml")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    checkpoint = torch.load(manifest["purifier_details"]["cold"]["checkpoint"], weights_only=True)
    assert list(checkpoint["input_size"]) == [3, 32, 32]


def test_compile_runs_a_torchscript_model_as_scripted_and_says_so(tmp_path):
    """``--compile`` with a TorchScript classifier (torch.compile cannot trace it; ScriptModules refuse
    ``requires_grad_``): the run completes with the eager records and one line says the model ran as scripted."""
    torch.manual_seed(0)
    torch.jit.script(GrayNet()).save(str(tmp_path / "model.ts"))
    args = ["evaluate", "--model", str(tmp_path / "model.ts"), "--data", "digits", "--limit", "8", "--attacks", "fgsm"]
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        result = runner.invoke(app, [*args, *extra, "--out", str(tmp_path / name)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        runs[name] = [p.read_text() for p in sorted((tmp_path / name / "records").glob("part-*.jsonl"))]
        assert ("TorchScript" in result.output) == (name == "compiled"), result.output
    assert runs["compiled"] == runs["eager"] and runs["eager"]
