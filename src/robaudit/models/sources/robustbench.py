"""``robustbench:NAME``: a RobustBench model from a local ``--model-dir``, through the robustbench package."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from torch import nn

from robaudit.errors import CheckpointError, ConfigError, first_line
from robaudit.models.classifiers import ModelCard, NormalizedClassifier
from robaudit.models.sources import MODEL_SOURCES, SourceOptions

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True)
class RobustBenchData:
    """What a RobustBench dataset fixes about its models: input size, classes, evaluation transform."""

    input_size: list[int]
    num_classes: int
    class_names: list[str] | None = None
    preprocess: dict[str, Any] | None = None


ROBUSTBENCH_DATA = {
    "cifar10": RobustBenchData([3, 32, 32], 10, CIFAR10_NAMES),
    "cifar100": RobustBenchData([3, 32, 32], 100),
    "imagenet": RobustBenchData(  # RobustBench's Res256Crop224
        [3, 224, 224], 1000, None, {"input_size": [3, 224, 224], "interpolation": "bilinear", "crop_pct": 0.875}
    ),
}


@MODEL_SOURCES.register(
    "robustbench",
    description="a RobustBench model from a local --model-dir (pip install -e '.[robustbench]')",
    example="robustbench:Standard --rb-threat Linf --model-dir models/robustbench",
    choices={"rb_threat": ("Linf", "L2", "corruptions")},
)
def robustbench_source(
    ref: str,
    options: SourceOptions,
    *,
    model_dir: str | None = None,
    dataset: str | None = None,
    rb_threat: str | None = None,
) -> nn.Module:
    """``robustbench.utils.load_model`` from ``model_dir/DATASET/THREAT/NAME.pt`` (``dataset`` default cifar10,
    ``rb_threat`` default Linf); RobustBench models take [0, 1] images and normalize themselves."""
    dataset, threat = dataset or "cifar10", rb_threat or "Linf"
    if dataset not in ROBUSTBENCH_DATA or threat not in ROBUSTBENCH_THREATS:
        raise ConfigError(
            f"RobustBench has no {dataset}/{threat} models; datasets {', '.join(ROBUSTBENCH_DATA)}, "
            f"threats {', '.join(ROBUSTBENCH_THREATS)}"
        )
    if not model_dir:
        raise ConfigError(f"robustbench:{ref} needs --model-dir, the folder holding {dataset}/{threat}/{ref}.pt")
    file = Path(model_dir) / dataset / threat / f"{ref}.pt"
    if not file.is_file():
        raise CheckpointError(
            f'{str(file)!r} does not exist; on a connected machine run `python -c "from robustbench.utils import '
            f"load_model; load_model('{ref}', model_dir='{model_dir}', dataset='{dataset}', "
            f"threat_model='{threat}')\"` and copy the folder here"
        )
    net = _robustbench_load(ref, model_dir, dataset, threat, trust=options.trust_checkpoint)
    return NormalizedClassifier(net, card=_robustbench_card(net, ref, dataset, threat, file))


ROBUSTBENCH_THREATS = MODEL_SOURCES.get("robustbench").meta["choices"]["rb_threat"]


def _robustbench_load(name: str, model_dir: str, dataset: str, threat: str, *, trust: bool) -> nn.Module:
    load_model = import_robustbench_loader()
    environment = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"} if trust else {}
    with mock.patch.dict(os.environ, environment):
        try:
            return load_model(model_name=name, model_dir=model_dir, dataset=dataset, threat_model=threat)
        except (RuntimeError, ValueError, EOFError) as exc:
            first = first_line(exc)
            hint = "" if trust else "; if it holds pickled objects and you trust it, pass --trust-checkpoint"
            raise CheckpointError(f"RobustBench could not load {name!r} ({first}){hint}") from None


def import_robustbench_loader() -> Any:
    """``robustbench.utils.load_model``; a one-line error that tells a missing package from one that is installed
    but cannot be imported (robustbench 1.1.1 from PyPI imports ``autoattack``, which PyPI ships as
    ``pyautoattack``, and ``pkg_resources``, which setuptools 81 removed)."""
    if robustbench_version() is None:  # torchattacks 3.5.1 installs a stale robustbench folder: not the package
        raise ConfigError("robustbench: models need the robustbench package; pip install -e '.[robustbench]'")
    try:
        from robustbench.utils import load_model
    except ImportError as exc:
        missing = getattr(exc, "name", None) or first_line(exc)
        fixes = {
            "autoattack": "pip install git+https://github.com/fra31/auto-attack",
            "pkg_resources": "pip install 'setuptools<81'",
        }
        fix = fixes.get(missing, f"install {missing}")
        raise ConfigError(f"robustbench is installed but cannot be imported (no module {missing!r}); {fix}") from None
    return load_model


def robustbench_version() -> str | None:
    """The installed robustbench distribution's version; None when it is not installed (an importable
    ``robustbench`` folder may still exist: torchattacks 3.5.1's wheel ships an old copy of one)."""
    from importlib import metadata

    try:
        return metadata.version("robustbench")
    except metadata.PackageNotFoundError:
        return None


def _robustbench_card(net: nn.Module, name: str, dataset: str, threat: str, file: Path) -> ModelCard:
    """RobustBench models normalize inside (identity mean/std here); ImageNet ones evaluate at 224 after a 256
    resize."""
    data = ROBUSTBENCH_DATA[dataset]
    return ModelCard(
        arch=f"robustbench:{name}",
        arch_kwargs={},
        num_classes=data.num_classes,
        class_names=data.class_names or [str(i) for i in range(data.num_classes)],
        input_size=data.input_size,
        mean=[0.0, 0.0, 0.0],
        std=[1.0, 1.0, 1.0],
        kind="robustbench",
        preprocess=dict(data.preprocess or {}),
        origin={
            "source": "robustbench",
            "ref": name,
            "dataset": dataset,
            "threat": threat,
            "file": str(file),
            "num_classes": f"RobustBench dataset {dataset}",
            "class_names": f"RobustBench dataset {dataset}" if data.class_names else "class indices",
            "normalization": "inside the model (RobustBench models take [0, 1] images)",
        },
    )
