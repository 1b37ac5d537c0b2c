"""The diffusion timestep whose noise level matches a smoothing ``sigma`` (Carlini et al. 2023, section 3).

Smoothing adds ``sigma * noise`` to an image ``x`` in [0, 1]. A diffusion model trained on images in [-1, 1] sees
``2x - 1``, where that noise is ``2 * sigma * noise``: the value range doubles sigma. Its forward process at step t
is ``x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * noise`` = ``sqrt(abar_t) * (x0 + s_t * noise)`` with
``s_t = sqrt((1 - abar_t) / abar_t)``. The matched step is the one whose ``s_t`` is closest to the scaled sigma, and
the noisy image scaled by ``sqrt(abar_t)`` is exactly a sample of ``x_t`` there: one denoising step from t then
estimates x0.
"""

from __future__ import annotations

import torch

VALUE_SCALE = {"[0, 1]": 1.0, "[-1, 1]": 2.0}  # a model's value range -> how much it scales a [0, 1] image's noise


def noise_levels(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """(T,) ``s_t = sqrt((1 - abar_t) / abar_t)``: the noise scale, relative to the image, of each step."""
    abar = alphas_cumprod.double()
    return ((1 - abar) / abar).sqrt()


def matched_timestep(alphas_cumprod: torch.Tensor, sigma: float, *, value_range: str = "[-1, 1]") -> int:
    """The step t whose noise level ``s_t`` is closest to ``sigma`` on [0, 1] images, scaled to the model's
    ``value_range`` (``[-1, 1]`` doubles it)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    target = sigma * VALUE_SCALE[value_range]
    return int((noise_levels(alphas_cumprod) - target).abs().argmin())


def diffused(images: torch.Tensor, noise: torch.Tensor, *, sigma: float, abar: float, value_range: str) -> torch.Tensor:
    """(N, C, H, W) ``x_t`` at the matched step of [0, 1] ``images`` under smoothing noise ``sigma * noise``: the
    model-range image plus the scaled noise, times ``sqrt(abar)``."""
    scale = VALUE_SCALE[value_range]
    model_range = images * scale - (scale - 1.0)
    return (model_range + scale * sigma * noise) * abar**0.5
