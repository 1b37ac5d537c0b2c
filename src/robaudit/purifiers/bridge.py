"""A purifier at its own resolution in front of a classifier at another: ``resize_back(purifier(resize_to(x)))``.

Both resizes are differentiable (antialiased bicubic, clamped to [0, 1]) and sit inside the attacked pipeline, so
adaptive and BPDA gradients flow through them; the eps-ball stays in the classifier's input space, where the attack
happens. E.g. a 224 px ViT behind OpenAI's 256 px diffusion model: 224 -> 256 (bicubic) -> purify -> 224.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.errors import ConfigError
from robaudit.purifiers.base import Purifier


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> (N, C, *size) in [0, 1]: antialiased bicubic, differentiable."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


class ResolutionBridge(Purifier):
    """(N, C, H, W) images at the classifier's size -> purified at the purifier's size -> back; same shape out."""

    def __init__(self, purifier: Purifier, *, outer: tuple[int, int], inner: tuple[int, int]) -> None:
        super().__init__()
        self.purifier = purifier
        self.outer, self.inner = tuple(outer), tuple(inner)
        self.randomized = purifier.randomized
        self.differentiable = purifier.differentiable
        self.ensemble = purifier.ensemble

    @property
    def evaluated_network(self) -> nn.Module:
        """The inner purifier's (pass counting and ``--compile`` hook in there)."""
        return self.purifier.evaluated_network

    def description(self) -> str:
        """The bridge as reports state it, e.g. "224 -> 256 (bicubic) -> purify -> 224"."""
        return f"{self.outer[0]} -> {self.inner[0]} (bicubic) -> purify -> {self.outer[0]}" + (
            "" if self.outer[0] == self.outer[1] and self.inner[0] == self.inner[1] else " (height shown)"
        )

    def gradient_description(self) -> str:
        """What an adaptive attack differentiates through."""
        return f"{self.purifier.gradient_description()}, between differentiable resizes ({self.description()})"

    def process_description(self) -> str:
        """The inner purifier's process, for reports."""
        describe = getattr(self.purifier, "process_description", None)
        return describe() if describe else ""

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Purify (N, C, H, W) images at the purifier's resolution; the output has the input's size."""
        return resize(self.purifier(resize(images, self.inner), generator=generator), self.outer)


def bridged(purifier: Purifier, *, purifier_shape: list[int], input_shape: tuple[int, ...]) -> Purifier:
    """``purifier`` as is when it runs at the classifier's input (C, H, W), else inside a ResolutionBridge; channels
    must agree."""
    channels, height, width = input_shape
    if int(purifier_shape[0]) != channels:
        raise ConfigError(
            f"the purifier takes {purifier_shape[0]}-channel images but the classifier's input has {channels}; use a "
            f"purifier trained on {channels}-channel images (or pass --channels {purifier_shape[0]})"
        )
    inner = (int(purifier_shape[1]), int(purifier_shape[2]))
    if inner == (height, width):
        return purifier
    return ResolutionBridge(purifier, outer=(height, width), inner=inner)
