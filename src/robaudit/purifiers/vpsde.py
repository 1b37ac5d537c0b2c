"""DiffPure's reverse process (Nie et al., ICML 2022): the reverse-time variance-preserving SDE of Song et al. (2021),
solved with Euler-Maruyama from t* back to 0.

The VP-SDE dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw has the reverse-time SDE
dx = [-1/2 beta(t) x - beta(t) score(x, t)] dt + sqrt(beta(t)) dw_bar, with score(x, t) = -eps(x, t) /
sqrt(1 - abar(t)) from a DDPM's noise-prediction network. Continuous time t in [0, 1] maps onto the network's T
discrete steps as DiffPure maps it: beta(t) = T beta_floor(tT), abar(t) = abar_floor(tT), and the network is queried at
step floor(tT). For the linear schedule of Ho et al. (beta 1e-4 .. 0.02, T = 1000) this is DiffPure's
beta(t) = 0.1 + 19.9 t up to the discretization of the table. Each Euler-Maruyama step (dt = t*/steps; DiffPure uses
dt = 1e-3, i.e. 100 steps at t* = 0.1) adds fresh noise, drawn from the samples' own streams.
"""

from __future__ import annotations

import torch
from torch import nn

from robaudit.purifiers.base import randn_like


def schedule_at(betas: torch.Tensor, alphas_cumprod: torch.Tensor, t: float) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(network step floor(tT), beta(t) = T beta_step, abar(t) = abar_step) for continuous time ``t`` in (0, 1]."""
    steps = betas.shape[0]
    index = min(int(t * steps), steps - 1)
    return index, steps * betas[index], alphas_cumprod[index]


def sde_steps(t_star: float, steps: int) -> list[float]:
    """The times t* = t_0 > t_1 > ... > t_{steps-1} > 0 at which Euler-Maruyama evaluates the drift (dt = t*/steps)."""
    dt = t_star / steps
    return [t_star - i * dt for i in range(steps)]


def reverse_sde(
    eps_model: nn.Module,
    x: torch.Tensor,
    *,
    betas: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    t_star: float,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Integrate the reverse VP-SDE from ``x`` (N, C, H, W) at time t* down to 0 in ``steps`` Euler-Maruyama steps;
    ``eps_model(x, step (N,) long)`` predicts the noise. One network evaluation per step."""
    dt = t_star / steps
    for t in sde_steps(t_star, steps):
        index, beta, abar = schedule_at(betas, alphas_cumprod, t)
        level = torch.full((x.shape[0],), index, device=x.device, dtype=torch.long)
        score = -eps_model(x, level) / (1 - abar).sqrt()
        drift = -0.5 * beta * x - beta * score  # reverse-time drift f(x, t) - g(t)^2 score
        x = x - drift * dt + (beta * dt).sqrt() * randn_like(x, generator)
    return x
