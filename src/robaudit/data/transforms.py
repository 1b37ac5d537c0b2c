"""A model's evaluation transform, applied to the data once before any attack: timm's own resize and crop
(``timm.data.create_transform`` from the model's data config), or the explicit resize and center crop a Hugging Face
image processor describes (``resize``/``center_crop`` keys), without the Normalize step, which lives in the model
wrapper. The eps-ball is then in the model's input space.

Images already at the model's input size pass through untouched; others go through the transform: decoded image
files as PIL images (exactly what timm's pipeline does), arrays and stored tensors as float tensors (torchvision's
tensor kernels, antialiased; clamped back to [0, 1]).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import transforms
from torchvision.transforms import functional


class EvalTransform:
    """Resize/crop of a model's evaluation transform, minus Normalize: PIL image or (C, H, W) tensor -> (C, h, w)
    float tensor in [0, 1] at the model's ``input_size``."""

    def __init__(self, preprocess: dict[str, Any]) -> None:
        self.preprocess = dict(preprocess)
        self.input_size = [int(v) for v in preprocess["input_size"]]
        self.origin = preprocess.get("origin", "timm eval transform")
        steps = explicit_steps(preprocess) if "resize" in preprocess else timm_steps(preprocess)
        self.steps = transforms.Compose(steps)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the transformed images."""
        return self.input_size[1], self.input_size[2]

    def __call__(self, image: Any) -> torch.Tensor:
        """A PIL image or a (C, H, W) float tensor in [0, 1] -> (C, h, w) float32 in [0, 1]."""
        out = self.steps(image)
        return out.float().clamp_(0, 1)

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float images -> (N, C, h, w); unchanged when already at the model's size."""
        if tuple(images.shape[-2:]) == self.size:
            return images
        return torch.stack([self(image) for image in images])

    def description(self) -> str:
        """One line for the report: the resize/crop steps and the target size."""
        steps = ", ".join(_step_text(t) for t in self.steps.transforms if type(t).__name__ != "MaybeToTensor")
        return f"{steps} -> {self.input_size[1]}x{self.input_size[2]} ({self.origin}, Normalize in the model)"


def timm_steps(preprocess: dict[str, Any]) -> list[Any]:
    """timm's eval transform for a data config (input_size, interpolation, crop_pct, crop_mode), minus Normalize."""
    from timm.data import create_transform

    channels = int(preprocess["input_size"][0])
    full = create_transform(
        input_size=tuple(int(v) for v in preprocess["input_size"]),
        interpolation=preprocess.get("interpolation", "bilinear"),
        crop_pct=preprocess.get("crop_pct"),
        crop_mode=preprocess.get("crop_mode"),
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
        is_training=False,
    )
    return [t for t in full.transforms if not isinstance(t, transforms.Normalize)]


def explicit_steps(preprocess: dict[str, Any]) -> list[Any]:
    """Resize (``resize``: the shorter edge as an int, or [height, width]) with ``interpolation``, then an optional
    ``center_crop`` [height, width]: the steps of a Hugging Face image processor."""
    from timm.data.transforms import MaybeToTensor, str_to_interp_mode

    resize = preprocess["resize"]
    size = resize if isinstance(resize, int) else tuple(int(v) for v in resize)
    steps = [transforms.Resize(size, interpolation=str_to_interp_mode(preprocess.get("interpolation", "bilinear")))]
    if preprocess.get("center_crop"):
        steps.append(FloorCenterCrop(tuple(int(v) for v in preprocess["center_crop"])))
    return [*steps, MaybeToTensor()]


class FloorCenterCrop:
    """A center crop whose offsets round down, as Hugging Face image processors crop (torchvision's CenterCrop
    rounds them to the nearest pixel, one pixel off when a margin is odd). PIL image or (C, H, W) tensor."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def __call__(self, image: Any) -> Any:
        width, height = image.size if hasattr(image, "size") and not callable(image.size) else image.shape[-1:-3:-1]
        top, left = (height - self.size[0]) // 2, (width - self.size[1]) // 2
        return functional.crop(image, top, left, self.size[0], self.size[1])

    def __repr__(self) -> str:
        return f"FloorCenterCrop(size={self.size})"


def _step_text(step: Any) -> str:
    text = repr(step).replace("\n", " ")
    return " ".join(text.split())
