"""``smooth``: a learned denoiser as a test-time purifier -- two 3x3 convolutions trained to remove Gaussian noise,
applied once at test time (deterministic, differentiable). The whole of a purifier: its recipe, its network with its
training loss, the purifier and the registration."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.purifiers.base import PURIFIERS, Purifier


@dataclass
class SmoothRecipe:
    """Training hyperparameters (robaudit's shared loop reads ``epochs``, ``batch_size`` and ``lr``)."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-2
    width: int = 16
    sigma: float = 0.1  # the training noise's standard deviation


class Denoiser(nn.Module):
    """(N, C, H, W) in [0, 1] -> denoised, same shape, in [0, 1]: x + conv(relu(conv(x)))."""

    def __init__(self, recipe: SmoothRecipe, input_size: list[int]) -> None:
        super().__init__()
        channels = input_size[0]
        self.body = nn.Sequential(
            nn.Conv2d(channels, recipe.width, 3, padding=1), nn.ReLU(), nn.Conv2d(recipe.width, channels, 3, padding=1)
        )
        self.sigma = recipe.sigma

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images + self.body(images)).clamp(0, 1)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Mean squared error of denoising ``images`` under Gaussian noise of ``sigma``."""
        noise = torch.randn(images.shape, generator=generator).to(images.device)
        return F.mse_loss(self(images + self.sigma * noise), images)


class SmoothPurifier(Purifier):
    """One denoising pass: (N, C, H, W) in [0, 1] -> same shape, [0, 1]."""

    randomized = False
    differentiable = True

    def __init__(self, network: Denoiser) -> None:
        super().__init__()
        self.network = network

    @property
    def evaluated_network(self) -> nn.Module:
        """The module called once per network evaluation: the denoiser."""
        return self.network

    def gradient_description(self) -> str:
        """What an adaptive attack differentiates through."""
        return "the denoiser's single pass"

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Denoise (N, C, H, W) images in [0, 1] (deterministic: ``generator`` is unused)."""
        return self.network(images)


@PURIFIERS.register(
    "smooth",
    description="a learned two-layer denoiser, one pass (example plugin)",
    recipe=SmoothRecipe,
    build=Denoiser,
    tiny={"recipe": {"width": 4}},
)
def smooth(network: Denoiser) -> SmoothPurifier:
    """The denoiser as a purifier."""
    return SmoothPurifier(network)
