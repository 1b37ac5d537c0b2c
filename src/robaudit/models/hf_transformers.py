"""Hugging Face ``transformers`` image classifiers (ViT, DeiT, Swin, ConvNeXt, BEiT, ResNet, EfficientNet, ...)
through the library's own ``AutoModelForImageClassification`` and ``AutoImageProcessor``.

The processor is the card: its resize and center crop become the evaluation transform (applied to the data once),
its rescale and mean/std the normalization inside the wrapper (applied once, on [0, 1] images), ``id2label`` the
class names. Logits come from the output's ``.logits``. An optional extra: ``pip install -e ".[transformers]"``.
Code from a model repository never runs (``trust_remote_code`` stays off); weights load as safetensors or
weights-only pickles.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.errors import CheckpointError, ConfigError, first_line
from robaudit.models.card import ModelCard
from robaudit.models.classifiers import NormalizedClassifier

EXTRA = "pip install -e '.[transformers]'"
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# processors whose resize, crop and normalization robaudit's reading was checked against their own outputs
CHECKED_PROCESSORS = ("ViTImageProcessor", "ConvNextImageProcessor", "DeiTImageProcessor", "EfficientNetImageProcessor")
CONVNEXT_WARP_SIZE = 384  # ConvNeXt's processors warp (no crop) at this shortest edge and above


def is_transformers_folder(folder: Path) -> bool:
    """True when ``folder/config.json`` is a transformers config (``model_type``), not timm's (``architecture``)."""
    return is_transformers_config(read_json(folder / "config.json"))


def is_transformers_config(config: dict[str, Any]) -> bool:
    """True for a transformers ``config.json`` (it names a ``model_type``)."""
    return "model_type" in config


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object; {} when it is missing or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class LogitsOf(nn.Module):
    """A transformers image classifier as a function of normalized pixel values: (N, C, H, W) -> logits (N, K)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values: (N, C, H, W), normalized as the processor does -> logits (N, num_labels)."""
        return self.model(pixel_values=pixel_values).logits


def import_transformers() -> Any:
    """The transformers package, or a one-line error naming the extra that installs it."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"this is a Hugging Face transformers model; install the extra: {EXTRA}") from None
    return transformers


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' own progress bars and load reports off while robaudit loads a model."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        logging.enable_progress_bar()


def transformers_classifier(folder: Path, *, num_classes: int | None, origin: dict[str, Any]) -> NormalizedClassifier:
    """``AutoModelForImageClassification`` and ``AutoImageProcessor`` from ``folder`` (a local folder or a hub
    snapshot), wrapped with a card from the processor; ``num_classes`` replaces the head with a new, untrained one."""
    transformers = import_transformers()
    kwargs = {"num_labels": num_classes, "ignore_mismatched_sizes": True} if num_classes else {}
    try:
        with quiet_transformers():
            model = transformers.AutoModelForImageClassification.from_pretrained(
                str(folder), trust_remote_code=False, **kwargs
            )
            processor = transformers.AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=False)
    except (ValueError, OSError, KeyError) as exc:
        raise CheckpointError(
            f"transformers could not load an image classifier from {str(folder)!r} ({first_line(exc)[:200]}); "
            "robaudit runs no code from model repositories: the folder needs config.json, the weights and "
            "preprocessor_config.json of a built-in transformers architecture"
        ) from None
    card = processor_card(model, processor)
    card.origin = {
        **origin,
        "num_classes": "given (--num-classes): a new, untrained head" if num_classes else "config id2label",
        "class_names": "config id2label",
        "normalization": f"image processor {type(processor).__name__} (rescale, mean/std; applied in the wrapper)",
        **({} if checked(processor) else {"processor": "read as a generic resize/crop; not checked for this type"}),
    }
    return NormalizedClassifier(LogitsOf(model.eval()), card=card)


def checked(processor: Any) -> bool:
    """True for processor types whose reading robaudit checked against their own outputs."""
    return type(processor).__name__.removesuffix("Fast").removesuffix("Pil") in CHECKED_PROCESSORS


def processor_card(model: nn.Module, processor: Any) -> ModelCard:
    """A card for a transformers classifier: classes from ``id2label``, transform and normalization from
    ``processor``."""
    config = model.config
    channels = int(getattr(config, "num_channels", 3))
    labels = {int(k): str(v) for k, v in config.id2label.items()}
    names = [labels.get(i, str(i)) for i in range(config.num_labels)]
    mean, std = processor_normalization(processor, channels)
    preprocess = processor_preprocess(processor, channels)
    return ModelCard(
        arch=(config.architectures or [type(model).__name__])[0],
        arch_kwargs={},
        num_classes=int(config.num_labels),
        class_names=names,
        input_size=list(preprocess["input_size"]),
        mean=mean,
        std=std,
        kind="transformers",
        preprocess=preprocess,
    )


def processor_normalization(processor: Any, channels: int) -> tuple[list[float], list[float]]:
    """(mean, std) on [0, 1] images that give the processor's pixel values: its rescale (factor, EfficientNet's
    offset) and normalize steps (EfficientNet's ``include_top`` divides by std a second time) folded into one."""
    rescaled = bool(getattr(processor, "do_rescale", True))
    scale = 255.0 * float(processor.rescale_factor) if rescaled else 255.0
    offset = -1.0 if rescaled and getattr(processor, "rescale_offset", False) else 0.0
    normalized = bool(getattr(processor, "do_normalize", True))
    mean = per_channel(processor.image_mean, channels) if normalized else [0.0] * channels
    std = per_channel(processor.image_std, channels) if normalized else [1.0] * channels
    # pixel values = (scale * x + offset - mean) / std  ==  (x - (mean - offset) / scale) / (std / scale)
    folded_mean = [(m - offset) / scale for m in mean]
    folded_std = [s / scale for s in std]
    if getattr(processor, "include_top", False):
        folded_std = [f * s for f, s in zip(folded_std, per_channel(processor.image_std, channels), strict=True)]
    return folded_mean, folded_std


def per_channel(values: Any, channels: int) -> list[float]:
    """A processor's mean or std as one float per channel."""
    values = [float(v) for v in (values if isinstance(values, list | tuple) else [values])]
    return values * channels if len(values) == 1 else values


def size_of(size: Any) -> dict[str, int]:
    """A processor's size (a dict or transformers' SizeDict) as a dict of the keys that are set."""
    items = dict(size) if hasattr(size, "keys") else dict(vars(size))
    return {k: int(v) for k, v in items.items() if v is not None}


def processor_preprocess(processor: Any, channels: int) -> dict[str, Any]:
    """The processor's resize and center crop as an evaluation transform (``data.transforms.EvalTransform``)."""
    size = size_of(processor.size) if getattr(processor, "do_resize", True) else {}
    crop = None
    if "height" in size and "width" in size:
        resize: int | list[int] = [size["height"], size["width"]]
    elif "shortest_edge" in size and getattr(processor, "crop_pct", None):  # ConvNeXt's rule
        edge = size["shortest_edge"]
        warp = edge >= CONVNEXT_WARP_SIZE
        resize = [edge, edge] if warp else int(edge / processor.crop_pct)
        crop = None if warp else [edge, edge]
    elif "shortest_edge" in size:
        resize = size["shortest_edge"]
    else:
        raise CheckpointError(
            f"robaudit cannot read the image processor's size {size or 'no resize'} ({type(processor).__name__}); "
            "resize the data to the model's input size and use a processor with a fixed height and width"
        )
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None):
        cropped = size_of(processor.crop_size)
        crop = [cropped["height"], cropped["width"]]
    output = crop or resize
    if isinstance(output, int):
        raise CheckpointError(
            f"the image processor {type(processor).__name__} resizes the shortest edge to {output} without a crop, "
            "so image sizes vary; robaudit needs one input size: set do_center_crop with a crop_size"
        )
    return {
        "input_size": [channels, *output],
        "resize": resize,
        "center_crop": crop,
        "interpolation": PIL_RESAMPLE.get(int(getattr(processor, "resample", 2)), "bilinear"),
        "origin": f"the model's image processor {type(processor).__name__}",
    }
