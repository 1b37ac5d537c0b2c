"""Pretrained model sources, each through its library's own loader: ``timm:NAME[.TAG]`` and ``hf-hub:REPO`` via
``timm.create_model(..., pretrained=True)`` (the Hugging Face cache, offline when ``HF_HUB_OFFLINE`` is set),
``local-dir:PATH`` (a folder in timm's hub layout: ``config.json`` + ``model.safetensors``) and
``robustbench:NAME`` (the ``robustbench`` package, from a local ``--model-dir``).

The card comes from the model itself: mean/std (applied inside the wrapper), input size and evaluation transform
from timm's resolved data config, class names where the config names them. Weights load as safetensors or
weights-only pickles; ``--weights FILE`` puts a fine-tuned state dict (the whole network, or only its head) over the
pretrained one, e.g. a head for ``--num-classes 2``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from unittest import mock

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from robaudit.errors import CheckpointError, ConfigError, first_line
from robaudit.hub import hub_errors, snapshot
from robaudit.models.classifiers import ModelCard, NormalizedClassifier, load_checkpoint_payload
from robaudit.models.hf_transformers import (
    is_transformers_config,
    is_transformers_folder,
    read_json,
    transformers_classifier,
)
from robaudit.registry import Registry


@dataclass
class SourceOptions:
    """What a source may use besides its reference: a new head's class count, fine-tuned weights, RobustBench's
    model folder, dataset and threat model, and the trust flag for pickled files."""

    num_classes: int | None = None
    weights: str | None = None
    model_dir: str | None = None
    dataset: str | None = None
    threat: str | None = None
    trust_checkpoint: bool = False


class SourceLoader(Protocol):
    def __call__(self, ref: str, options: SourceOptions) -> nn.Module: ...


@dataclass(frozen=True)
class SourceMeta:
    """A source's usage example (``robaudit ls models``)."""

    example: str


MODEL_SOURCES: Registry[SourceLoader] = Registry("model source", metadata=SourceMeta)

# Files a --model path may name (models.classifiers.load_classifier), listed beside the sources by `robaudit ls models`
FILE_KINDS = [
    ("checkpoint", "a robaudit checkpoint (.pt weights-only, or .safetensors with its card)", "runs/vit.pt"),
    (
        "state dict",
        "a bare timm state dict with its architecture (config: arch_kwargs, mean, std)",
        "weights.pt --arch resnet18",
    ),
    ("TorchScript", "a scripted or traced module taking [0, 1] images (class count probed)", "model.ts"),
    (
        "torch.export",
        "a torch.export program (torch.export.save) taking [0, 1] images; loads weights-only, class count probed",
        "model.pt2",
    ),
    ("pickled module", "a whole pickled nn.Module (runs code: --trust-checkpoint)", "model.pt --trust-checkpoint"),
]

PREPROCESS_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode")
ROBUSTBENCH_THREATS = ("Linf", "L2", "corruptions")


def split_source(model: str) -> tuple[str, str] | None:
    """(source, reference) of ``source:reference`` text naming a registered source; None for a plain path."""
    source, sep, ref = model.partition(":")
    return (source, ref) if sep and source in MODEL_SOURCES else None


def load_from_source(model: str, options: SourceOptions) -> nn.Module:
    """The classifier ``model`` (``source:reference``) names, in eval mode, with a filled card."""
    source, ref = split_source(model) or (None, "")
    if source is None:
        raise ConfigError(f"{model!r} names no model source; use one of {', '.join(MODEL_SOURCES.names())}")
    if not ref:
        raise ConfigError(f"{model!r} has nothing after '{source}:'; e.g. {MODEL_SOURCES.get(source).meta['example']}")
    return MODEL_SOURCES.get(source).factory(ref, options).eval()


def hub_repo_of(name: str) -> str | None:
    """The Hugging Face repository timm fetches ``name``'s (``NAME.TAG``) weights from, when it is on the hub."""
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        return None
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def pretrained_classifier(model: str, options: SourceOptions, *, origin: dict[str, Any]) -> NormalizedClassifier:
    """``timm.create_model(model, pretrained=True)`` (a new ``num_classes`` head when given), the fine-tuned
    ``options.weights`` over it, wrapped with a card from its pretrained config."""
    kwargs = {} if options.num_classes is None else {"num_classes": options.num_classes}
    origin["num_classes"] = "given (--num-classes): a new head" if kwargs else "pretrained config (its head)"
    origin["normalization"] = "pretrained config (mean/std, applied in the wrapper)"
    with hub_errors(model, origin.get("repo")):
        net = timm.create_model(model, pretrained=True, **kwargs)
    if options.weights:
        origin["weights"] = {"file": options.weights, **load_finetuned(net, options.weights, options)}
    return NormalizedClassifier(net, card=card_from_pretrained_cfg(net, origin=origin))


def card_from_pretrained_cfg(net: nn.Module, *, origin: dict[str, Any]) -> ModelCard:
    """A card for a timm network: normalization and evaluation transform from ``timm.data.resolve_data_config``,
    class names from the pretrained config (or timm's ImageNet info), rebuild arguments from its model args."""
    config = timm.data.resolve_data_config(model=net)
    cfg = dict(getattr(net, "pretrained_cfg", {}) or {})
    num_classes = int(net.num_classes)
    names = class_names_of(net, cfg, num_classes)
    origin["class_names"] = "pretrained config" if names else "none in the config: class indices"
    return ModelCard(
        arch=cfg.get("architecture") or type(net).__name__,
        arch_kwargs=dict(getattr(net, "pretrained_model_args", {}) or {}),
        num_classes=num_classes,
        class_names=names or [str(i) for i in range(num_classes)],
        input_size=list(config["input_size"]),
        mean=[float(m) for m in config["mean"]],
        std=[float(s) for s in config["std"]],
        preprocess={k: _plain(config[k]) for k in PREPROCESS_KEYS if k in config},
        origin=origin,
    )


def class_names_of(net: nn.Module, cfg: dict[str, Any], num_classes: int) -> list[str]:
    """The config's ``label_names`` when they fit the head, else timm's ImageNet names for an ImageNet head."""
    names = cfg.get("label_names")
    if names and len(names) == num_classes:
        return [str(n) for n in names]
    subset = timm.data.infer_imagenet_subset(net)
    if subset:
        descriptions = timm.data.ImageNetInfo(subset).label_descriptions()
        if len(descriptions) == num_classes:
            return [d.split(",")[0] for d in descriptions]
    return []


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def load_finetuned(net: nn.Module, path: str, options: SourceOptions) -> dict[str, Any]:
    """Load a fine-tuned state dict (the whole network, or just its classifier head) into ``net``; returns what
    was loaded. Safetensors or weights-only pickles; a robaudit checkpoint's network weights are accepted too."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"weights file {path!r} does not exist; pass an existing state dict to --weights")
    state = load_file(str(file)) if file.suffix == ".safetensors" else load_checkpoint_payload(file, trust=False)
    if isinstance(state, dict) and state.get("robaudit") == "classifier":
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"weights file {path!r} is not a state dict of tensors; save net.state_dict()")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or (missing and set(state) != head_keys(net)):
        problem = f"unexpected keys {unexpected[:3]}" if unexpected else f"missing keys {missing[:3]}"
        raise CheckpointError(
            f"weights file {path!r} does not fit the network ({problem}); save the fine-tuned network's full "
            "state dict, or only its classifier head, with the same --num-classes"
        )
    return {"loaded": "head" if missing else "full network", "tensors": len(state)}


def head_keys(net: nn.Module) -> set[str]:
    """State-dict keys of a timm network's classifier head (``get_classifier()``)."""
    head = net.get_classifier()
    prefix = next((name for name, module in net.named_modules() if module is head), None)
    return {f"{prefix}.{key}" for key in head.state_dict()} if prefix else set()


@MODEL_SOURCES.register(
    "timm",
    description="a timm model name with its pretrained tag; weights from the Hugging Face cache",
    example="timm:vit_base_patch16_224.augreg2_in21k_ft_in1k",
)
def timm_source(ref: str, options: SourceOptions) -> nn.Module:
    """``timm.create_model(ref, pretrained=True)``."""
    return pretrained_classifier(ref, options, origin={"source": "timm", "ref": ref, "repo": hub_repo_of(ref)})


@MODEL_SOURCES.register(
    "hf-hub",
    description="a timm or transformers model repository on the Hugging Face hub (cached; HF_HUB_OFFLINE honoured)",
    example="hf-hub:google/vit-base-patch16-224",
)
def hf_hub_source(ref: str, options: SourceOptions) -> nn.Module:
    """A transformers repository (its config.json names a ``model_type``) through ``AutoModelForImageClassification``
    on the cached snapshot; a timm one through ``timm.create_model('hf-hub:' + ref, pretrained=True)``."""
    repo, _, revision = ref.partition("@")
    origin = {"source": "hf-hub", "ref": ref, "repo": repo}
    if is_transformers_config(read_json(Path(hub_file(repo, "config.json", revision=revision or None)))):
        return transformers_source(Path(snapshot(repo, revision=revision or None)), options, origin=origin)
    return pretrained_classifier(f"hf-hub:{ref}", options, origin=origin)


def hub_file(repo: str, filename: str, *, revision: str | None) -> str:
    """A file of a hub repository through the Hugging Face cache (one-line errors when it is missing offline)."""
    from huggingface_hub import hf_hub_download

    with hub_errors(repo, repo):
        return hf_hub_download(repo, filename, revision=revision)


def transformers_source(folder: Path, options: SourceOptions, *, origin: dict[str, Any]) -> nn.Module:
    """A transformers image classifier from ``folder`` (``--weights`` does not apply: save the fine-tuned model)."""
    if options.weights:
        raise ConfigError(
            "--weights applies to timm models; save a fine-tuned transformers model with save_pretrained and pass "
            "its folder as local-dir:PATH"
        )
    return transformers_classifier(folder, num_classes=options.num_classes, origin=origin)


@MODEL_SOURCES.register(
    "local-dir",
    description="a folder a model was saved to: timm's hub layout (save_for_hf) or transformers' save_pretrained",
    example="local-dir:models/vit-xray",
)
def local_dir_source(ref: str, options: SourceOptions) -> nn.Module:
    """A transformers folder (config.json with a ``model_type``) through ``AutoModelForImageClassification``; a timm
    one through ``timm.create_model('local-dir:' + ref, pretrained=True)``. No network; weights only."""
    folder = Path(ref)
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{str(folder)!r} is not a model folder (no config.json); save one with "
            "timm.models.save_for_hf(model, PATH, safe_serialization=True) or model.save_pretrained(PATH)"
        )
    origin = {"source": "local-dir", "ref": str(folder)}
    if is_transformers_folder(folder):
        return transformers_source(folder, options, origin=origin)
    return pretrained_classifier(f"local-dir:{folder}", options, origin=origin)


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
    example="robustbench:Standard --threat Linf --model-dir models/robustbench",
)
def robustbench_source(ref: str, options: SourceOptions) -> nn.Module:
    """``robustbench.utils.load_model`` from ``model_dir/DATASET/THREAT/NAME.pt`` (dataset default cifar10,
    threat default Linf); RobustBench models take [0, 1] images and normalize themselves."""
    dataset, threat = options.dataset or "cifar10", options.threat or "Linf"
    if dataset not in ROBUSTBENCH_DATA or threat not in ROBUSTBENCH_THREATS:
        raise ConfigError(
            f"RobustBench has no {dataset}/{threat} models; datasets {', '.join(ROBUSTBENCH_DATA)}, "
            f"threats {', '.join(ROBUSTBENCH_THREATS)}"
        )
    if not options.model_dir:
        raise ConfigError(f"robustbench:{ref} needs --model-dir, the folder holding {dataset}/{threat}/{ref}.pt")
    file = Path(options.model_dir) / dataset / threat / f"{ref}.pt"
    if not file.is_file():
        raise CheckpointError(
            f'{str(file)!r} does not exist; on a connected machine run `python -c "from robustbench.utils import '
            f"load_model; load_model('{ref}', model_dir='{options.model_dir}', dataset='{dataset}', "
            f"threat_model='{threat}')\"` and copy the folder here"
        )
    net = _robustbench_load(ref, options.model_dir, dataset, threat, trust=options.trust_checkpoint)
    return NormalizedClassifier(net, card=_robustbench_card(net, ref, dataset, threat, file))


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
