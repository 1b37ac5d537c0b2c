"""Adaptive Denoising Purification (ADP, Yoon, Hwang & Lee, ICML 2021).

A noise-conditional score network trained with denoising score matching over a geometric range of noise levels.
Purification injects Gaussian noise (sigma 0.25), then takes up to 10 steps of score ascent with ADP's adaptive
step size: s = score(x), s' = score(x + d s), z = <s, s'> / <s, s>, alpha = clamp(lambda d / (1 - z), 1e-5, 0.1),
stopping (per sample) when alpha < 1e-3; x <- clip(x + alpha s, 0, 1). A defended prediction averages the
classifier's softmax over K = 10 purified draws. The score network is robaudit's own (trained here) or a pretrained
diffusion model's noise predictor at the matching noise level (``DiffusionScoreNetwork``), from the hub, a folder or
the user's own code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robaudit.purifiers.base import PURIFIERS, Purifier, randn_like
from robaudit.purifiers.unet import UNetRecipe


@dataclass
class EBMRecipe(UNetRecipe):
    """Training hyperparameters of the score network."""

    sigma_min: float = 0.01
    sigma_max: float = 0.5
    num_levels: int = 10


class ScoreNetwork(nn.Module):
    """score(x (N, C, H, W) in [0, 1]-space, sigma level (N,)) ~ grad log p_sigma(x) = -predicted noise / sigma."""

    def __init__(self, recipe: EBMRecipe, input_size: list[int]) -> None:
        super().__init__()
        self.noise = recipe.build_unet(input_size)
        sigmas = torch.logspace(math.log10(recipe.sigma_max), math.log10(recipe.sigma_min), recipe.num_levels)
        self.register_buffer("sigmas", sigmas, persistent=False)

    def level_for(self, sigma: float) -> int:
        """Index of the trained noise level nearest to ``sigma`` (in log space)."""
        return int((self.sigmas.log() - math.log(sigma)).abs().argmin())

    @property
    def evaluated_network(self) -> nn.Module:
        """The module one network evaluation (NFE) calls once: where pass counting and ``--compile`` hook in."""
        return self.noise

    def score(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """The score at noise level index ``level``: (N, C, H, W)."""
        levels = torch.full((x.shape[0],), level, device=x.device, dtype=torch.long)
        return -self.noise(x * 2 - 1, levels) / self.sigmas[level]

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Denoising score matching, sigma^2-weighted: || sigma * score(x + sigma z) + z ||^2."""
        levels = torch.randint(0, len(self.sigmas), (images.shape[0],), generator=generator).to(images.device)
        sigma = self.sigmas[levels].view(-1, 1, 1, 1)
        z = randn_like(images, generator)
        predicted = self.noise((images + sigma * z) * 2 - 1, levels)
        return ((predicted - z) ** 2).flatten(1).sum(1).mean() / images[0].numel()


class DiffusionScoreNetwork(nn.Module):
    """ADP's score from a pretrained DDPM noise predictor (a diffusers model, or the user's own network).

    ADP perturbs images in [0, 1] as y = x + sigma z. In the DDPM's [-1, 1] space that is 2y - 1 = x0 + 2 sigma z,
    which is x_t / sqrt(abar_t) for the step t with (1 - abar_t) / abar_t = (2 sigma)^2; hence
    score(y) = -eps(sqrt(abar_t) (2y - 1), t) / sigma_t with sigma_t = sqrt((1 - abar_t) / abar_t) / 2. A level is a
    DDPM step; ``level_for(sigma)`` picks the step whose sigma_t is nearest (in log space).
    """

    def __init__(self, diffusion: nn.Module) -> None:
        super().__init__()
        self.diffusion = diffusion
        self.input_size = list(diffusion.input_size)
        abar = diffusion.alphas_cumprod
        self.register_buffer("sigmas", ((1 - abar) / abar).sqrt() / 2, persistent=False)

    def level_for(self, sigma: float) -> int:
        """The DDPM step whose noise level (in [0, 1] image units) is nearest to ``sigma``."""
        return int((self.sigmas.log() - math.log(sigma)).abs().argmin())

    @property
    def evaluated_network(self) -> nn.Module:
        """The module one network evaluation (NFE) calls once: the noise predictor."""
        return self.diffusion.evaluated_network

    def score(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """The score of images ``x`` (N, C, H, W) perturbed at noise level ``level`` (a DDPM step): (N, C, H, W)."""
        abar = self.diffusion.alphas_cumprod[level]
        steps = torch.full((x.shape[0],), level, device=x.device, dtype=torch.long)
        return -self.diffusion.noise_predictor(abar.sqrt() * (x * 2 - 1), steps) / self.sigmas[level]

    def parameter_count(self) -> int:
        """Parameters of the noise predictor."""
        return self.diffusion.parameter_count()


def adaptive_step_size(
    s: torch.Tensor, s_probe: torch.Tensor, *, probe: float, lam: float, low: float = 1e-5, high: float = 0.1
) -> torch.Tensor:
    """ADP's step size per sample: z = <s, s'>/<s, s>, alpha = clamp(lam * probe / (1 - z), low, high). (N,)"""
    z = (s * s_probe).flatten(1).sum(1) / (s * s).flatten(1).sum(1).clamp_min(1e-12)
    return (lam * probe / (1 - z)).clamp(low, high)


@PURIFIERS.register(
    "ebm",
    description="ADP: score network (DSM), noise injection + adaptive-step score ascent, K-draw ensemble",
    recipe=EBMRecipe,
    build=ScoreNetwork,
    from_diffusion=DiffusionScoreNetwork,
    tiny={
        "recipe": {"widths": [8, 16]},
        "params": {"max_steps": 2, "ensemble": 2},
        "purification": {"ensemble": 2, "max_steps": 2},
    },
)
def ebm(
    network: ScoreNetwork,
    *,
    sigma: float = 0.25,
    max_steps: int = 10,
    probe: float = 1e-3,
    lam: float = 0.05,
    stop_below: float = 1e-3,
    score_sigma: float | None = None,
    ensemble: int = 10,
) -> ADPPurifier:
    """ADP with the paper's constants; the score is taken at the trained level nearest ``score_sigma`` (or sigma)."""
    return ADPPurifier(
        network,
        sigma=sigma,
        max_steps=max_steps,
        probe=probe,
        lam=lam,
        stop_below=stop_below,
        score_sigma=score_sigma,
        ensemble=ensemble,
    )


class ADPPurifier(Purifier):
    """Noise injection + adaptive score ascent: (N, C, H, W) in [0, 1] -> (N, C, H, W) in [0, 1]."""

    randomized = True
    differentiable = True

    def __init__(
        self,
        network: ScoreNetwork,
        *,
        sigma: float,
        max_steps: int,
        probe: float,
        lam: float,
        stop_below: float,
        score_sigma: float | None,
        ensemble: int,
    ) -> None:
        super().__init__()
        self.network = network
        self.sigma, self.max_steps, self.probe, self.lam, self.stop_below = sigma, max_steps, probe, lam, stop_below
        self.level = network.level_for(score_sigma if score_sigma is not None else sigma)
        self.ensemble = ensemble

    @property
    def evaluated_network(self) -> nn.Module:
        """The module called once per network evaluation: the score network."""
        return self.network.evaluated_network

    def gradient_description(self) -> str:
        """What an adaptive attack differentiates through."""
        return f"the noise injection and up to {self.max_steps} score-ascent steps (step sizes included)"

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Purify images (N, C, H, W) in [0, 1]."""
        generator = self.generator_for(images, generator)
        x = images + self.sigma * randn_like(images, generator)
        active = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
        for _ in range(self.max_steps):
            s = self.network.score(x, self.level)
            s_probe = self.network.score(x + self.probe * s, self.level)
            alpha = adaptive_step_size(s, s_probe, probe=self.probe, lam=self.lam)
            active = active & (alpha >= self.stop_below)
            if not bool(active.any()):
                break
            step = torch.where(active, alpha, torch.zeros_like(alpha)).view(-1, 1, 1, 1)
            x = (x + step * s).clamp(0, 1)
        return x.clamp(0, 1)
