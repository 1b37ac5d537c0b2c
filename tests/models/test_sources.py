"""Pretrained model sources through timm's and the hub's own loaders: a tiny timm ViT saved in hub layout, loaded from
its folder and from a prepared offline Hugging Face cache; the card from its pretrained config; offline failures as
one-line errors; fine-tuned heads; RobustBench's loader (a stand-in module: the package pins another timm)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.errors import CheckpointError, ConfigError
from robaudit.models.fingerprint import model_fingerprint
from robaudit.models.sources import MODEL_SOURCES, SourceOptions, load_from_source
from robaudit.models.spec import ModelSpec, obtain_classifier

ARGS = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "num_classes": 3}
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
LABELS = ["cat", "dog", "owl"]
runner = CliRunner()


def tiny_vit(**overrides) -> torch.nn.Module:
    """A tiny timm ViT with a pretrained config of its own (mean/std, 32 px input, bicubic, crop 0.9)."""
    torch.manual_seed(0)
    args = {**ARGS, **overrides}
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **args).eval()
    size = args["img_size"]
    cfg = {"mean": MEAN, "std": STD, "input_size": (3, size, size), "crop_pct": 0.9, "interpolation": "bicubic"}
    model.pretrained_cfg = {**model.pretrained_cfg, **cfg}
    return model


def save_hub_layout(model: torch.nn.Module, folder: Path, args: dict) -> Path:
    """timm's own hub layout: config.json + model.safetensors."""
    timm.models.save_for_hf(
        model, str(folder), model_args=args, model_config={"label_names": LABELS}, safe_serialization=True
    )
    return folder


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = tiny_vit()
    return model, save_hub_layout(model, tmp_path_factory.mktemp("tiny-vit"), ARGS)


def normalized(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model((images - mean) / std)


def check_loaded(loaded: torch.nn.Module, model: torch.nn.Module) -> None:
    """Same logits as the in-memory model on normalized images (normalization once, in the wrapper); card filled."""
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = loaded(images)
    torch.testing.assert_close(logits, normalized(model, images), rtol=0, atol=1e-6)
    assert not torch.allclose(logits, normalized(model, normalized_input(images))), "normalizing twice must differ"
    card = loaded.card
    assert card.mean == pytest.approx(list(MEAN)) and card.std == pytest.approx(list(STD))
    assert card.input_size == [3, 32, 32] and card.num_classes == 3 and card.class_names == LABELS
    assert card.preprocess == {
        "input_size": [3, 32, 32],
        "interpolation": "bicubic",
        "crop_pct": 0.9,
        "crop_mode": "center",
    }


def normalized_input(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_local_dir_loads_the_hub_layout_with_its_card(hub_dir):
    model, folder = hub_dir
    loaded = load_from_source(f"local-dir:{folder}", SourceOptions())
    check_loaded(loaded, model)
    assert loaded.card.origin["source"] == "local-dir"
    assert loaded.card.arch == "vit_tiny_patch16_224" and loaded.card.arch_kwargs["embed_dim"] == 32


def prepare_hub_cache(cache: Path, repo: str, folder: Path) -> None:
    """The layout huggingface_hub's cache keeps: models--OWNER--NAME/{refs/main, snapshots/COMMIT/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)


def test_hf_hub_loads_from_a_prepared_offline_cache(hub_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    model, folder = hub_dir
    prepare_hub_cache(tmp_path, "robaudit/tiny-vit", folder)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert constants.HF_HUB_OFFLINE, "the test suite runs the hub offline (conftest)"
    loaded = load_from_source("hf-hub:robaudit/tiny-vit", SourceOptions())
    check_loaded(loaded, model)
    assert loaded.card.origin == {
        "source": "hf-hub",
        "ref": "robaudit/tiny-vit",
        "repo": "robaudit/tiny-vit",
        "class_names": "pretrained config",
        "num_classes": "pretrained config (its head)",
        "normalization": "pretrained config (mean/std, applied in the wrapper)",
    }


def test_a_model_absent_from_the_offline_cache_is_one_line_naming_the_cache(tmp_path):
    from huggingface_hub import constants

    args = ["evaluate", "--model", "hf-hub:timm/absent_vit.none", "--data", "digits", "--attacks", "fgsm"]
    args += ["--out", str(tmp_path / "r")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert str(constants.HF_HUB_CACHE) in lines[0].replace("\n", "") and "hf download timm/absent_vit.none" in lines[0]
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        load_from_source("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k", SourceOptions())


def test_unknown_timm_model_and_missing_folder_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="timm has no model"):
        load_from_source("timm:no_such_model_xyz", SourceOptions())
    with pytest.raises(CheckpointError, match="no config.json"):
        load_from_source(f"local-dir:{tmp_path}", SourceOptions())
    with pytest.raises(ConfigError, match="nothing after 'timm:'"):
        load_from_source("timm:", SourceOptions())


def test_a_fine_tuned_head_loads_over_the_pretrained_weights(hub_dir, tmp_path):
    model, folder = hub_dir
    head = {"head.weight": torch.randn(2, 32), "head.bias": torch.randn(2)}
    save_file(head, str(tmp_path / "head.safetensors"))
    loaded = load_from_source(
        f"local-dir:{folder}", SourceOptions(num_classes=2, weights=str(tmp_path / "head.safetensors"))
    )
    assert loaded.card.num_classes == 2 and loaded.card.origin["weights"]["loaded"] == "head"
    images = torch.rand(3, 3, 32, 32)
    reference = tiny_vit(num_classes=2)
    reference.load_state_dict({**{k: v for k, v in model.state_dict().items() if not k.startswith("head")}, **head})
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), normalized(reference, images), rtol=0, atol=1e-6)
    torch.save({"blocks.9.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not fit the network"):
        load_from_source(f"local-dir:{folder}", SourceOptions(weights=str(tmp_path / "bad.pt")))


def test_pretrained_models_are_fingerprinted_by_their_weights(hub_dir, tmp_path):
    _, folder = hub_dir
    model, path = obtain_classifier(ModelSpec(path=f"local-dir:{folder}"), device="cpu")
    assert not path.exists()
    first = model_fingerprint(model, path)
    assert first == model_fingerprint(load_from_source(f"local-dir:{folder}", SourceOptions()), path)
    with torch.no_grad():
        model.net.head.bias.add_(1.0)
    assert model_fingerprint(model, path) != first


def test_robustbench_loads_through_the_package_from_the_model_dir(tmp_path, monkeypatch):
    calls = []
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))

    def load_model(**kwargs):
        calls.append(kwargs)
        return net

    fake = types.ModuleType("robustbench")
    fake.utils = types.SimpleNamespace(load_model=load_model)
    monkeypatch.setattr("robaudit.models.sources.robustbench.robustbench_version", lambda: "1.1.1")
    monkeypatch.setitem(sys.modules, "robustbench", fake)
    monkeypatch.setitem(sys.modules, "robustbench.utils", fake.utils)
    options = {"model_dir": str(tmp_path), "rb_threat": "Linf"}
    with pytest.raises(CheckpointError, match="cifar10/Linf/Standard.pt' does not exist"):
        load_from_source("robustbench:Standard", SourceOptions(), options)
    (tmp_path / "cifar10" / "Linf").mkdir(parents=True)
    (tmp_path / "cifar10" / "Linf" / "Standard.pt").write_bytes(b"")
    loaded = load_from_source("robustbench:Standard", SourceOptions(), options)
    assert calls == [
        {"model_name": "Standard", "model_dir": str(tmp_path), "dataset": "cifar10", "threat_model": "Linf"}
    ]
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), net(images))  # RobustBench models normalize themselves
    assert loaded.card.class_names[0] == "airplane" and loaded.card.input_size == [3, 32, 32]
    with pytest.raises(ConfigError, match="needs --model-dir"):
        load_from_source("robustbench:Standard", SourceOptions())
    with pytest.raises(ConfigError, match="no cifar10/Linfinity models"):
        load_from_source(
            "robustbench:Standard", SourceOptions(), {"model_dir": str(tmp_path), "rb_threat": "Linfinity"}
        )


def test_ls_models_lists_every_source_with_an_example():
    result = runner.invoke(app, ["ls", "models"])
    assert result.exit_code == 0
    for entry in MODEL_SOURCES:
        assert f"{entry.name}:" in result.output and entry.meta["example"] in result.output
    assert "checkpoint" in result.output and "TorchScript" in result.output


def test_robustbench_installed_but_not_importable_names_the_missing_module(tmp_path, monkeypatch):
    package = tmp_path / "site" / "robustbench"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import autoattack  # as robustbench 1.1.1 from PyPI does\n")
    (package / "utils.py").write_text("def load_model(**kwargs): ...\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in ("robustbench", "robustbench.utils"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "autoattack", None)  # not installed
    monkeypatch.setattr("robaudit.models.sources.robustbench.robustbench_version", lambda: "1.1.1")
    (tmp_path / "cifar10" / "Linf").mkdir(parents=True)
    (tmp_path / "cifar10" / "Linf" / "Standard.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"installed but cannot be imported \(no module 'autoattack'\).*fra31"):
        load_from_source("robustbench:Standard", SourceOptions(), {"model_dir": str(tmp_path)})
    # only torchattacks' copy
    monkeypatch.setattr("robaudit.models.sources.robustbench.robustbench_version", lambda: None)
    with pytest.raises(ConfigError, match=r"need the robustbench package; pip install -e '\.\[robustbench\]'"):
        load_from_source("robustbench:Standard", SourceOptions(), {"model_dir": str(tmp_path)})


def test_each_source_declares_its_own_options(monkeypatch):
    """A source's options are its loader's keyword-only arguments: a new one needs no other edit, an option the
    source does not take is an error naming those it does, and a plain checkpoint takes none."""
    from robaudit.components.catalog import Catalog, as_catalog_entry
    from robaudit.components.registry import Registry
    from robaudit.models.spec import ModelSpec, obtain_classifier

    seen = {}
    registry = Registry("model source")
    for entry in MODEL_SOURCES:
        registry.register(entry.name, description=entry.description, **entry.meta)(entry.factory)

    @registry.register("zoo", description="a test's source with an option of its own", example="zoo:tiny")
    def zoo(ref: str, options: SourceOptions, *, zoo_root: str | None = None) -> torch.nn.Module:
        seen.update(ref=ref, zoo_root=zoo_root, num_classes=options.num_classes)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))
        net.card = types.SimpleNamespace(num_classes=3)
        return net

    monkeypatch.setattr("robaudit.models.sources.MODEL_SOURCES", registry)
    read = Catalog("model source", [as_catalog_entry(entry) for entry in registry])  # as if zoo were a plugin's
    monkeypatch.setattr("robaudit.models.references.catalog", lambda kind: read)
    spec = ModelSpec.parse({"path": "zoo:tiny", "zoo_root": "/models", "num_classes": 3})
    assert spec.source_options == {"zoo_root": "/models"} and spec.to_dict()["zoo_root"] == "/models"
    obtain_classifier(spec, device="cpu")
    assert seen == {"ref": "tiny", "zoo_root": "/models", "num_classes": 3}
    with pytest.raises(ConfigError, match=r"unknown key 'model_dir' in model \(source zoo\).*zoo_root"):
        ModelSpec.parse({"path": "zoo:tiny", "model_dir": "x"})
    with pytest.raises(ConfigError, match="unknown key 'model_dir' in model;"):
        ModelSpec.parse({"path": "m.pt", "model_dir": "x"})
