"""The conformance matrix: every model source robaudit reads x every architecture family users bring, each with
random weights built here (nothing is downloaded).

A family is one architecture, realized by whatever library a source loads through: a tiny timm network (robaudit
checkpoints, state dicts, TorchScript, torch.export, ``timm:``, ``hf-hub:``, ``local-dir:``), a tiny transformers
one (``hf-hub:`` and ``local-dir:`` transformers repositories) or RobustBench's own definition (``robustbench:``).
A source builds a ``Cell`` from a family: the model as the user holds it on disk, the in-memory model it came from,
and what the report must say. A cell a source cannot carry has its reason instead, in ``NOT_CARRIED``.

Adding a source is one entry of ``SOURCES``; adding a family is one entry of ``FAMILIES``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from robaudit.models.card import ModelCard
from robaudit.models.classifiers import NormalizedClassifier, save_classifier

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
CLASSES, SIZE, SAMPLES = 10, 32, 8
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True)
class Family:
    """An architecture family: its tiny timm form (name, arguments), transformers form and RobustBench form."""

    name: str
    timm: tuple[str, dict[str, Any]] | None = None
    transformers: Callable[[], tuple[nn.Module, Any]] | None = None  # (model, image processor)
    robustbench: Callable[[], nn.Module] | None = None
    program: Callable[[], nn.Module] | None = None  # a module taking [0, 1] images (randomness inside)


class NoisyCNN(nn.Module):
    """A BatchNorm CNN with Gaussian noise on its input (a randomized classifier): [0, 1] images -> logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        noisy = images + 0.1 * torch.randn_like(images)
        return self.head(self.features(noisy).mean(dim=(2, 3)))


def tiny_vit_config(**overrides: Any) -> Any:
    """A tiny transformers ``ViTConfig`` (one layer of width 32, patches of 8, ``SIZE`` images, ``CLASSES`` labels),
    with ``overrides``: the one ViT the transformers tests build."""
    from transformers import ViTConfig

    sizes = {"image_size": SIZE, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 1}
    return ViTConfig(**{**sizes, "num_attention_heads": 2, "intermediate_size": 64, **labels(), **overrides})


def transformers_vit() -> tuple[nn.Module, Any]:
    from transformers import ViTForImageClassification, ViTImageProcessor

    config = tiny_vit_config()
    return ViTForImageClassification(config), ViTImageProcessor(size={"height": SIZE, "width": SIZE}, **norm())


def transformers_resnet() -> tuple[nn.Module, Any]:
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], layer_type="basic", **labels()
    )
    return ResNetForImageClassification(config), ConvNextImageProcessor(size={"shortest_edge": SIZE}, **norm())


def transformers_convnext() -> tuple[nn.Module, Any]:
    from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

    config = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], **labels())
    return ConvNextForImageClassification(config), ConvNextImageProcessor(size={"shortest_edge": SIZE}, **norm())


def transformers_efficientnet() -> tuple[nn.Module, Any]:
    from transformers import EfficientNetConfig, EfficientNetForImageClassification, EfficientNetImageProcessor

    # hidden_dim must equal the rounded top width at this width coefficient (transformers sizes top_bn from it)
    config = EfficientNetConfig(
        image_size=SIZE, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128, **labels()
    )
    processor = EfficientNetImageProcessor(size={"height": SIZE, "width": SIZE}, **norm())
    model = EfficientNetForImageClassification(config)
    for module in model.modules():  # transformers draws convolutions and BatchNorm scales at std 0.02 here, which
        if isinstance(module, nn.BatchNorm2d):  # makes activations vanish: the usual initialization instead
            nn.init.ones_(module.weight)
        elif isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
    return model, processor


def transformers_swin() -> tuple[nn.Module, Any]:
    from transformers import SwinConfig, SwinForImageClassification, ViTImageProcessor

    config = SwinConfig(
        image_size=SIZE, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, **labels()
    )
    return SwinForImageClassification(config), ViTImageProcessor(size={"height": SIZE, "width": SIZE}, **norm())


def labels() -> dict[str, Any]:
    names = {i: f"class-{i}" for i in range(CLASSES)}
    return {"num_labels": CLASSES, "id2label": names, "label2id": {v: k for k, v in names.items()}}


def norm() -> dict[str, Any]:
    return {"image_mean": list(MEAN), "image_std": list(STD)}


def robustbench_wide_resnet() -> nn.Module:
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    return WideResNet(depth=10, widen_factor=1)


def robustbench_resnet() -> nn.Module:
    from robustbench.model_zoo.architectures.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1])


FAMILIES = {
    f.name: f
    for f in [
        Family(
            "vit",
            ("vit_tiny_patch16_224", {"img_size": SIZE, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}),
            transformers_vit,
        ),
        Family(
            "resnet-bn",
            ("resnet18", {"channels": (8, 16, 32, 64), "stem_width": 8, "layers": (1, 1, 1, 1)}),
            transformers_resnet,
            robustbench_resnet,
        ),
        Family(
            "convnext-ln", ("convnext_atto", {"dims": (8, 16, 32, 64), "depths": (1, 1, 1, 1)}), transformers_convnext
        ),
        Family("efficientnet-se-silu", ("test_efficientnet", {}), transformers_efficientnet),
        Family(
            "wideresnet",
            ("robaudit_wide_resnet", {"depth": 10, "widen_factor": 1}),
            robustbench=robustbench_wide_resnet,
        ),
        Family(
            "swin",
            (
                "swin_tiny_patch4_window7_224",
                {
                    "img_size": SIZE,
                    "patch_size": 2,
                    "window_size": 4,
                    "embed_dim": 16,
                    "depths": (1, 1),
                    "num_heads": (1, 2),
                },
            ),
            transformers_swin,
        ),
        Family("randomized", program=NoisyCNN),
    ]
}


def timm_network(family: Family, seed: int) -> nn.Module:
    """The family's tiny timm network with ``seed``'s weights and a pretrained config naming its normalization."""
    name, kwargs = family.timm
    torch.manual_seed(seed)
    net = timm.create_model(name, pretrained=False, num_classes=CLASSES, **kwargs).eval()
    cfg = {"mean": MEAN, "std": STD, "input_size": (3, SIZE, SIZE), "crop_pct": 1.0, "interpolation": "bilinear"}
    net.pretrained_cfg = {**net.pretrained_cfg, **cfg}
    return net


class Normalizing(nn.Module):
    """What a user exports or scripts: a network with its normalization inside ([0, 1] images -> logits)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


@dataclass
class Cell:
    """One (source, family) cell: the config's ``model`` entry, the in-memory model ([0, 1] images -> logits), what
    the report names, and whether the file's module normalizes itself."""

    model: Any
    reference: Callable[[torch.Tensor], torch.Tensor]
    source: str
    class_count: str
    normalized_inside: bool = False
    environment: dict[str, str] = field(default_factory=dict)


def checkpoint_cell(family: Family, folder: Path, seed: int) -> Cell:
    net = timm_network(family, seed)
    card = ModelCard(
        arch=family.timm[0],
        arch_kwargs=dict(family.timm[1]),
        num_classes=CLASSES,
        class_names=[str(i) for i in range(CLASSES)],
        input_size=[3, SIZE, SIZE],
        mean=list(MEAN),
        std=list(STD),
    )
    path = save_classifier(NormalizedClassifier(net, card=card), folder / "model.pt")
    return Cell(str(path), Normalizing(net), "robaudit checkpoint", "checkpoint card")


def state_dict_cell(family: Family, folder: Path, seed: int) -> Cell:
    net = timm_network(family, seed)
    torch.save(net.state_dict(), folder / "weights.pt")
    name, kwargs = family.timm
    model = {
        "path": str(folder / "weights.pt"),
        "arch": name,
        "arch_kwargs": dict(kwargs),
        "mean": list(MEAN),
        "std": list(STD),
    }
    return Cell(model, Normalizing(net), "state dict", "state dict head")


def user_module(family: Family, seed: int) -> nn.Module:
    """The module a user would script, trace or export: normalization inside, or the family's own program."""
    torch.manual_seed(seed)
    return (family.program() if family.program else Normalizing(timm_network(family, seed))).eval()


def scripted_cell(family: Family, folder: Path, seed: int) -> Cell:
    module = user_module(family, seed)
    torch.jit.script(module).save(str(folder / "model.ts"))
    return Cell(str(folder / "model.ts"), module, "TorchScript", "probe", normalized_inside=True)


def traced_cell(family: Family, folder: Path, seed: int) -> Cell:
    module = user_module(family, seed)
    example = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    torch.jit.trace(module, example, check_trace=False).save(str(folder / "model.ts"))
    return Cell(str(folder / "model.ts"), module, "TorchScript", "probe", normalized_inside=True)


def exported_cell(family: Family, folder: Path, seed: int) -> Cell:
    module = user_module(family, seed)
    example = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, folder / "model.pt2")
    return Cell(str(folder / "model.pt2"), module, "torch.export", "probe", normalized_inside=True)


def timm_folder(family: Family, folder: Path, seed: int) -> Path:
    """The family's tiny network saved in timm's hub layout (config.json + model.safetensors)."""
    net = timm_network(family, seed)
    out = folder / "timm-folder"
    timm.models.save_for_hf(
        net, str(out), model_args={**family.timm[1], "num_classes": CLASSES}, safe_serialization=True
    )
    return out


def hub_cache(folder: Path) -> Path:
    """The Hugging Face cache the cells built beside ``folder`` share (one per test)."""
    return folder.parent / "hub"


def prepare_hub_cache(cache: Path, repo: str, folder: Path) -> None:
    """The layout huggingface_hub's cache keeps: models--OWNER--NAME/{refs/main, snapshots/COMMIT/...}."""
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / COMMIT)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)


def local_dir_cell(family: Family, folder: Path, seed: int) -> Cell:
    out = timm_folder(family, folder, seed)
    return Cell(f"local-dir:{out}", Normalizing(timm_network(family, seed)), "local-dir", "pretrained config")


def hf_hub_cell(family: Family, folder: Path, seed: int) -> Cell:
    repo = f"robaudit-test/{family.name}-{seed}"
    prepare_hub_cache(hub_cache(folder), repo, timm_folder(family, folder, seed))
    cell = Cell(f"hf-hub:{repo}", Normalizing(timm_network(family, seed)), "hf-hub", "pretrained config")
    cell.environment = {"HF_HUB_CACHE": str(hub_cache(folder))}
    return cell


def timm_cell(family: Family, folder: Path, seed: int) -> Cell:
    """``timm:NAME.TAG`` for a tiny entry point registered with timm whose pretrained config names a repository in
    the prepared cache (``timm_catalogue``): timm's own pretrained loading, offline."""
    name = timm_catalogue()[family.name]
    repo = f"robaudit-test/timm-{family.name}-{seed}"
    prepare_hub_cache(hub_cache(folder), repo, timm_folder(family, folder, seed))
    cell = Cell(f"timm:{name}.seed{seed}", Normalizing(timm_network(family, seed)), "timm", "pretrained config")
    cell.environment = {"HF_HUB_CACHE": str(hub_cache(folder))}
    return cell


def timm_catalogue() -> dict[str, str]:
    """Tiny timm entry points ``robaudit_test_FAMILY`` with tags ``seed0``/``seed1`` whose pretrained configs point at
    ``robaudit-test/timm-FAMILY-SEED`` on the hub, registered once (timm reads ``default_cfgs`` of their module)."""
    module = sys.modules[__name__]
    if not getattr(module, "_catalogue", None):
        from timm.models import generate_default_cfgs, register_model

        carried = {name: f for name, f in FAMILIES.items() if f.timm}
        cfgs = {}
        for name in carried:
            for seed in (0, 1):
                cfgs[f"{entry_name(name)}.seed{seed}"] = {
                    "hf_hub_id": f"robaudit-test/timm-{name}-{seed}",
                    "num_classes": CLASSES,
                    "input_size": (3, SIZE, SIZE),
                    "mean": MEAN,
                    "std": STD,
                    "crop_pct": 1.0,
                }
        module.default_cfgs = generate_default_cfgs(cfgs)
        for name, family in carried.items():
            register_model(tiny_entry_point(entry_name(name), family))
        module._catalogue = {name: entry_name(name) for name in carried}
    return module._catalogue


def entry_name(family: str) -> str:
    return "robaudit_test_" + family.replace("-", "_")


def tiny_entry_point(name: str, family: Family) -> Callable[..., nn.Module]:
    base, kwargs = family.timm

    def entry(pretrained: bool = False, **overrides: Any) -> nn.Module:
        tag = overrides.get("pretrained_cfg")
        if isinstance(tag, str):  # timm passes the tag of NAME.TAG: this entry point's own config for it
            overrides["pretrained_cfg"] = timm.models.get_pretrained_cfg(f"{name}.{tag}")
        return timm.create_model(base, pretrained=pretrained, **{**kwargs, **overrides})

    entry.__name__, entry.__qualname__, entry.__module__ = name, name, __name__
    return entry


def transformers_parts(family: Family, seed: int) -> tuple[nn.Module, Any]:
    torch.manual_seed(seed)
    model, processor = family.transformers()
    return model.eval(), processor


def transformers_folder(family: Family, folder: Path, seed: int) -> Path:
    model, processor = transformers_parts(family, seed)
    out = folder / "transformers-folder"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def processor_reference(model: nn.Module, processor: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model called as transformers users call it: pixel values from the processor's own rescale and normalize
    (no resize: the images are at the model's size) on 8-bit images."""

    def reference(images: torch.Tensor) -> torch.Tensor:
        pixels = [np.asarray((image.permute(1, 2, 0) * 255).round().to(torch.uint8)) for image in images]
        values = processor(pixels, do_resize=False, do_center_crop=False, return_tensors="pt")["pixel_values"]
        return model(pixel_values=values).logits

    return reference


def transformers_local_cell(family: Family, folder: Path, seed: int) -> Cell:
    out = transformers_folder(family, folder, seed)
    reference = processor_reference(*transformers_parts(family, seed))
    return Cell(f"local-dir:{out}", reference, "local-dir", "config id2label")


def transformers_hub_cell(family: Family, folder: Path, seed: int) -> Cell:
    repo = f"robaudit-test/transformers-{family.name}-{seed}"
    prepare_hub_cache(hub_cache(folder), repo, transformers_folder(family, folder, seed))
    reference = processor_reference(*transformers_parts(family, seed))
    environment = {"HF_HUB_CACHE": str(hub_cache(folder))}
    return Cell(f"hf-hub:{repo}", reference, "hf-hub", "config id2label", environment=environment)


ROBUSTBENCH_ENTRIES = {"wideresnet": "Standard", "resnet-bn": "Sehwag2021Proxy_R18"}


def robustbench_cell(family: Family, folder: Path, seed: int) -> Cell:
    """A model directory in RobustBench's layout (``cifar10/Linf/NAME.pt``, a DataParallel-style state dict) for a zoo
    entry whose architecture is made tiny with RobustBench's own classes."""
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    name = ROBUSTBENCH_ENTRIES[family.name]
    model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf][name]["model"] = family.robustbench
    torch.manual_seed(seed)
    net = family.robustbench().eval()
    (folder / "rb" / "cifar10" / "Linf").mkdir(parents=True)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state}, folder / "rb" / "cifar10" / "Linf" / f"{name}.pt")
    model = {"path": f"robustbench:{name}", "model_dir": str(folder / "rb"), "threat": "Linf"}
    return Cell(model, net, "robustbench", "RobustBench dataset cifar10", normalized_inside=True)


@dataclass(frozen=True)
class Source:
    """A way a model reaches robaudit: how a cell is built, which library realizes the family, and the reason for
    each family it cannot carry."""

    build: Callable[[Family, Path, int], Cell]
    carrier: str  # "timm", "program", "transformers" or "robustbench": the Family field it needs
    needs: str | None = None  # an importable package the row needs (skipped with its reason without it)


SOURCES = {
    "robaudit checkpoint": Source(checkpoint_cell, "timm"),
    "state dict + arch": Source(state_dict_cell, "timm"),
    "TorchScript (scripted)": Source(scripted_cell, "program"),
    "TorchScript (traced)": Source(traced_cell, "program"),
    "torch.export": Source(exported_cell, "program"),
    "timm: (offline cache)": Source(timm_cell, "timm"),
    "hf-hub: (timm, offline cache)": Source(hf_hub_cell, "timm"),
    "local-dir: (timm)": Source(local_dir_cell, "timm"),
    "hf-hub: (transformers, offline cache)": Source(transformers_hub_cell, "transformers", needs="transformers"),
    "local-dir: (transformers)": Source(transformers_local_cell, "transformers", needs="transformers"),
    "robustbench: (model dir)": Source(robustbench_cell, "robustbench", needs="robustbench"),
}

DETERMINISTIC = "deterministic: a model with randomness inside comes as a program (TorchScript, torch.export)"
NOT_CARRIED = {
    ("timm", "randomized"): "timm networks are " + DETERMINISTIC,
    ("transformers", "randomized"): "transformers classifiers are " + DETERMINISTIC,
    ("transformers", "wideresnet"): "transformers has no WideResNet architecture",
    ("robustbench", "vit"): "RobustBench's CIFAR-10 zoo has no ViT (its ViTs are ImageNet models it builds with timm)",
    ("robustbench", "convnext-ln"): "RobustBench's CIFAR-10 zoo has no ConvNeXt (ImageNet only, built with timm)",
    ("robustbench", "efficientnet-se-silu"): "RobustBench's zoo has no EfficientNet or MobileNet",
    ("robustbench", "swin"): "RobustBench's CIFAR-10 zoo has no Swin (ImageNet only)",
    ("robustbench", "randomized"): "RobustBench's leaderboards hold deterministic models only",
}


def carries(source: Source, family: Family) -> bool:
    """True when the source's library realizes the family (a program carries every timm family too)."""
    if source.carrier == "program":
        return family.timm is not None or family.program is not None
    return getattr(family, source.carrier) is not None


def matrix() -> list[tuple[str, str, str | None]]:
    """Every (source, family, reason it does not apply or None)."""
    rows = []
    for source_name, source in SOURCES.items():
        for family_name, family in FAMILIES.items():
            reason = None if carries(source, family) else NOT_CARRIED[(source.carrier, family_name)]
            rows.append((source_name, family_name, reason))
    return rows


def write_data(path: Path) -> Path:
    """8 random 32x32 RGB test images with labels 0..7, as a MedMNIST-layout .npz."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(SAMPLES, SIZE, SIZE, 3), dtype=np.uint8)
    np.savez(path, test_images=images, test_labels=np.arange(SAMPLES) % CLASSES)
    return path


if __name__ == "__main__":  # prints the matrix (what each cell checks: tests/models/test_conformance.py)
    print("| source | " + " | ".join(FAMILIES) + " |")
    print("|---" * (len(FAMILIES) + 1) + "|")
    for source_name in SOURCES:
        cells = [reason or "runs" for s, f, reason in matrix() if s == source_name]
        print(f"| {source_name} | " + " | ".join(cells) + " |")
