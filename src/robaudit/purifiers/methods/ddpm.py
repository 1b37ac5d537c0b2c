"""DiffPure-style diffusion purification (Nie et al., ICML 2022) with a DDPM (Ho et al., 2020).

Diffuse the input to t* (a fraction of the schedule), then run the reverse process back to 0: the full ancestral
chain (``sampler: ddpm``, Ho et al.; t* T steps, fresh noise at each), a few deterministic DDIM steps
(``sampler: ddim``, ``steps``; random only in the first diffusion) or DiffPure's own reverse VP-SDE (``sampler: sde``,
Euler-Maruyama with step ``sde_dt``, fresh noise at each step: ``purifiers.vpsde``). The network is a diffusers
``UNet2DModel``; the schedule comes from diffusers' ``DDPMScheduler``. For adaptive attacks the gradient
flows through the chain (checkpointed where it would not fit in memory, ``purifiers.checkpointing``);
``backward_steps`` declares a DDIM surrogate of that many steps for the backward pass only (Lee & Kim, ICCV 2023),
starting from the same diffused point.
"""

from __future__ import annotations

import torch
from torch import nn

from robaudit.errors import ConfigError
from robaudit.purifiers.base import PURIFIERS, Purifier, randn_like
from robaudit.purifiers.diffusion import DDPMNetwork, DDPMRecipe, ddim_timesteps
from robaudit.purifiers.vpsde import reverse_sde

__all__ = ["DDPMNetwork", "DDPMPurifier", "DDPMRecipe", "ddim_timesteps", "ddpm"]


class DDPMPurifier(Purifier):
    """Diffuse to t*, denoise back: (N, C, H, W) in [0, 1] -> (N, C, H, W) in [0, 1]."""

    randomized = True
    differentiable = True

    def __init__(
        self,
        network: DDPMNetwork,
        *,
        t_star: float,
        sampler: str,
        steps: int,
        backward_steps: int | str | None,
        sde_dt: float = 1e-3,
    ) -> None:
        super().__init__()
        if not (backward_steps in (None, "auto") or (isinstance(backward_steps, int) and backward_steps >= 1)):
            raise ConfigError(f"ddpm backward_steps must be a step count >= 1, auto or absent, got {backward_steps!r}")
        if sampler not in SAMPLERS:
            raise ConfigError(f"ddpm sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if not 0 < sde_dt <= t_star:
            raise ConfigError(f"ddpm sde_dt must be in (0, t_star = {t_star}], got {sde_dt!r}")
        self.network = network
        self.t_start = max(1, round(t_star * network.num_timesteps)) - 1
        self.t_star, self.sampler, self.steps, self.backward_steps = t_star, sampler, steps, backward_steps
        self.sde_steps = max(1, round(t_star / sde_dt))

    def process_description(self) -> str:
        """The reverse process, for reports."""
        return {
            "ddpm": f"ancestral DDPM chain, {self.t_start + 1} steps from t* = {self.t_star}",
            "ddim": f"DDIM (eta 0), {len(ddim_timesteps(self.t_start, self.steps))} steps from t* = {self.t_star}",
            "sde": f"reverse VP-SDE (DiffPure), Euler-Maruyama, {self.sde_steps} steps from t* = {self.t_star}",
        }[self.sampler]

    @property
    def evaluated_network(self) -> nn.Module:
        """The module called once per network evaluation: the noise predictor."""
        return self.network.evaluated_network

    def gradient_description(self) -> str:
        """What an adaptive attack differentiates through."""
        chain = f"the {self.process_description()}"
        if self.backward_steps == "auto":
            return f"a DDIM surrogate whose step count is measured before the attack (forward: {chain})"
        if self.backward_steps:
            return (
                f"a {len(ddim_timesteps(self.t_start, self.backward_steps))}-step DDIM surrogate from the same "
                f"diffused point (forward: {chain}), checkpointed where it would not fit in memory"
            )
        return f"{chain} and the diffusion noise, checkpointed where it would not fit in memory"

    def reverse(self, x_t: torch.Tensor, generator: torch.Generator, *, sampler: str, steps: int) -> torch.Tensor:
        """Run the reverse process from x_t at t_start down to x0 (in [-1, 1])."""
        if sampler == "ddim":
            return self.network.ddim_sample(x_t, ddim_timesteps(self.t_start, steps))
        if sampler == "sde":
            return reverse_sde(
                self.network.noise_predictor,
                x_t,
                betas=self.network.betas,
                alphas_cumprod=self.network.alphas_cumprod,
                t_star=(self.t_start + 1) / self.network.num_timesteps,
                steps=self.sde_steps,
                generator=generator,
            )
        x = x_t
        for t in range(self.t_start, -1, -1):
            x = self.network.p_sample(x, t, generator)
        return x

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Purify images (N, C, H, W) in [0, 1]."""
        generator = self.generator_for(images, generator)
        x0 = images * 2 - 1
        t = torch.full((images.shape[0],), self.t_start, device=images.device, dtype=torch.long)
        x_t = self.network.q_sample(x0, t, randn_like(x0, generator))
        if self.backward_steps and torch.is_grad_enabled() and images.requires_grad:
            if self.backward_steps == "auto":
                raise RuntimeError("ddpm backward_steps: auto is resolved by purifiers.surrogate before any gradient")
            with torch.no_grad():
                full = self.reverse(x_t, generator, sampler=self.sampler, steps=self.steps)
            surrogate = self.network.ddim_sample(x_t, ddim_timesteps(self.t_start, self.backward_steps))
            out = surrogate + (full - surrogate).detach()
        else:
            out = self.reverse(x_t, generator, sampler=self.sampler, steps=self.steps)
        return ((out + 1) / 2).clamp(0, 1)


SAMPLERS = ("ddpm", "ddim", "sde")


@PURIFIERS.register(
    "ddpm",
    description="DiffPure: diffuse to t*, reverse with the ancestral chain, DDIM (few steps) or the VP-SDE",
    recipe=DDPMRecipe,
    build=DDPMNetwork,
    from_diffusion=lambda network: network,
    tiny={"recipe": {"widths": [8, 16]}, "params": {"steps": 3}, "purification": {"steps": 2}},
    certifies=True,
)
def ddpm(
    network: DDPMNetwork,
    *,
    t_star: float = 0.1,
    sampler: str = "ddim",
    steps: int = 10,
    backward_steps: int | str | None = None,
    sde_dt: float = 1e-3,
) -> DDPMPurifier:
    """t_star: diffusion depth (fraction of T); sampler ddpm (t* T ancestral steps), ddim (``steps`` steps) or sde
    (DiffPure's reverse VP-SDE, Euler-Maruyama steps of ``sde_dt``: t*/sde_dt steps); backward_steps K: adaptive
    gradients through a K-step DDIM surrogate, ``auto``: K measured before the attack (``purifiers.surrogate``)."""
    return DDPMPurifier(
        network, t_star=t_star, sampler=sampler, steps=steps, backward_steps=backward_steps, sde_dt=sde_dt
    )
