"""Cold-diffusion purification with a Gaussian-blur degradation (Defensive Diffusion, Imam et al. 2023;
cold diffusion, Bansal et al. 2022).

The degradation D(x, t) blurs with a Gaussian whose standard deviation grows linearly over ``levels`` steps up to
``max_blur`` (a fraction of the image size). A U-Net restorer R(x_t, t) ~ x0 is trained with an L1 loss. Three
variants, as in the paper: ``blurred`` (D(x, t*) alone), ``direct`` (R(D(x, t*), t*), one step) and
``reconstructed`` (cold-diffusion sampling: x_{s-1} = x_s - D(R(x_s), s) + D(R(x_s), s - 1) down to 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.purifiers.base import PURIFIERS, Purifier
from robaudit.purifiers.unet import UNetRecipe

VARIANTS = ("blurred", "direct", "reconstructed")


@dataclass
class ColdRecipe(UNetRecipe):
    """Training hyperparameters of the restorer; ``levels`` and ``max_blur`` define the degradation."""

    levels: int = 20
    max_blur: float = 0.125  # largest blur standard deviation, as a fraction of the image size


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) images with reflect padding (differentiable); sigma 0 is identity."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    pad = min(radius, images.shape[-1] - 1)
    if pad < radius:  # a kernel wider than the image: clamp by replicate padding
        padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    else:
        padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    out = F.conv2d(padded, horizontal, groups=channels)
    return F.conv2d(out, vertical, groups=channels)


class BlurRestorer(nn.Module):
    """The degradation schedule and the restorer R(x_t (N, C, H, W) in [0, 1], t (N,)) -> x0 estimate in [0, 1]."""

    def __init__(self, recipe: ColdRecipe, input_size: list[int]) -> None:
        super().__init__()
        self.restore_net = recipe.build_unet(input_size)
        self.levels = recipe.levels
        self.max_sigma = recipe.max_blur * input_size[1]

    def sigma(self, level: int) -> float:
        """Blur standard deviation (pixels) at ``level`` in 0..levels."""
        return self.max_sigma * level / self.levels

    def degrade(self, images: torch.Tensor, level: int) -> torch.Tensor:
        """D(x, t): blur at ``level``."""
        return gaussian_blur(images, self.sigma(level))

    @property
    def evaluated_network(self) -> nn.Module:
        """The module one network evaluation (NFE) calls once: where pass counting and ``--compile`` hook in."""
        return self.restore_net

    def restore(self, degraded: torch.Tensor, level: int) -> torch.Tensor:
        """R(x_t, t): estimate of the clean image, (N, C, H, W) in [0, 1]."""
        levels = torch.full((degraded.shape[0],), level, device=degraded.device, dtype=torch.long)
        return ((self.restore_net(degraded * 2 - 1, levels) + 1) / 2).clamp(0, 1)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """L1 between R(D(x, t), t) and x, one random level per batch."""
        level = int(torch.randint(1, self.levels + 1, (1,), generator=generator))
        levels = torch.full((images.shape[0],), level, device=images.device, dtype=torch.long)
        restored = (self.restore_net(self.degrade(images, level) * 2 - 1, levels) + 1) / 2
        return F.l1_loss(restored, images)


class ColdPurifier(Purifier):
    """Blur to level t*, then restore (direct or iterative): (N, C, H, W) in [0, 1] -> same shape, [0, 1]."""

    randomized = False
    differentiable = True

    def __init__(self, network: BlurRestorer, *, variant: str, t_star: float) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.network, self.variant = network, variant
        self.level = max(1, min(network.levels, round(t_star * network.levels)))

    @property
    def evaluated_network(self) -> nn.Module:
        """The module called once per network evaluation: cold diffusion's restorer."""
        return self.network.evaluated_network

    def gradient_description(self) -> str:
        """What an adaptive attack differentiates through."""
        steps = {
            "blurred": "the blur",
            "direct": "the blur and one restoration step",
            "reconstructed": f"the blur and {self.level} cold-diffusion restoration steps",
        }[self.variant]
        return f"{steps} (deterministic), checkpointed where it would not fit in memory"

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Purify images (N, C, H, W) in [0, 1] (deterministic: ``generator`` is unused)."""
        x = self.network.degrade(images, self.level)
        if self.variant == "blurred":
            return x.clamp(0, 1)
        if self.variant == "direct":
            return self.network.restore(x, self.level)
        for level in range(self.level, 0, -1):
            x0 = self.network.restore(x, level)
            x = x - self.network.degrade(x0, level) + self.network.degrade(x0, level - 1)
        return x.clamp(0, 1)


@PURIFIERS.register(
    "cold",
    description="Defensive Diffusion: Gaussian-blur cold diffusion, variants blurred / direct / reconstructed",
    recipe=ColdRecipe,
    build=BlurRestorer,
    tiny={"recipe": {"widths": [8, 16], "levels": 4}},
)
def cold(network: BlurRestorer, *, variant: str = "reconstructed", t_star: float = 0.5) -> ColdPurifier:
    """variant: blurred, direct or reconstructed; t_star: blur depth as a fraction of the levels."""
    return ColdPurifier(network, variant=variant, t_star=t_star)
