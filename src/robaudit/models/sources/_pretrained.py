"""What the timm-backed sources share: a pretrained timm network wrapped with a card from its own config,
fine-tuned weights over it, and transformers folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from robaudit.errors import CheckpointError, ConfigError
from robaudit.hub import hub_errors
from robaudit.models.classifiers import ModelCard, NormalizedClassifier, load_checkpoint_payload
from robaudit.models.hf_transformers import transformers_classifier
from robaudit.models.sources import SourceOptions

PREPROCESS_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode")


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


def transformers_source(folder: Path, options: SourceOptions, *, origin: dict[str, Any]) -> nn.Module:
    """A transformers image classifier from ``folder`` (``--weights`` does not apply: save the fine-tuned model)."""
    if options.weights:
        raise ConfigError(
            "--weights applies to timm models; save a fine-tuned transformers model with save_pretrained and pass "
            "its folder as local-dir:PATH"
        )
    return transformers_classifier(folder, num_classes=options.num_classes, origin=origin)
