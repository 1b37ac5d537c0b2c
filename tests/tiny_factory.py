"""A purifier network factory as a user's own package would provide one (OpenAI's guided-diffusion U-Net, Score SDE's
DDPM++ ...), tiny: a noise predictor ``model(x, t)`` on images in [-1, 1] with its training schedule. Tests import it
by name (``tiny_factory:tiny_noise_predictor``, with --trust-code) and as an entry point."""

from __future__ import annotations

import math

import torch
from torch import nn

from robaudit.purifiers.factories import DiffusionNetwork


class TinyNoisePredictor(nn.Module):
    """Two convolutions with a sinusoidal step embedding added in between: (x (N, C, H, W), t (N,)) -> (N, C, H, W);
    ``learned_sigma`` doubles the output channels as guided-diffusion's models do."""

    def __init__(self, channels: int, width: int, learned_sigma: bool) -> None:
        super().__init__()
        self.width = width
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, channels * (2 if learned_sigma else 1), 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        half = self.width // 2
        freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=x.device) / half)
        embedding = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], dim=1)
        hidden = torch.nn.functional.silu(self.conv_in(x) + embedding[:, :, None, None])
        return self.conv_out(hidden)


def tiny_noise_predictor(
    *, image_size: int = 32, channels: int = 1, width: int = 8, learned_sigma: bool = False, seed: int = 0
) -> DiffusionNetwork:
    """The factory: the network, Ho et al.'s linear betas over 1000 steps, and the input size."""
    torch.manual_seed(seed)
    model = TinyNoisePredictor(channels, width, learned_sigma)
    return DiffusionNetwork(
        model=model, betas=torch.linspace(1e-4, 0.02, 1000), input_size=[channels, image_size, image_size]
    )
