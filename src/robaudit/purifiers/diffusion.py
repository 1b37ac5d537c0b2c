"""The diffusion-network contract every diffusion purifier and source shares: a noise predictor with its training
schedule (``DDPMNetwork``: diffuse with ``q_sample``, step back with ``p_sample`` or ``ddim_sample``), built from
a recipe, a diffusers ``save_pretrained`` folder or a user's own noise predictor. Methods (``ddpm``, ``ebm``) run
their purification on it; sources (``purifiers.sources``) and factories (``purifiers.factories``) make one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch import nn

from robaudit.errors import CheckpointError, first_line
from robaudit.purifiers.base import randn_like
from robaudit.purifiers.unet import LevelConditionedUNet, UNetRecipe


@dataclass
class DDPMRecipe(UNetRecipe):
    """Training hyperparameters of the denoiser. ``train_t_max``: train on timesteps below this fraction only."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    train_t_max: float = 0.3


def renamed_noise_predictor(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """Load checkpoints saved when the noise predictor was called ``eps`` (its keys ``eps.*``) into
    ``noise_predictor``: a load_state_dict pre-hook that renames the keys in place."""
    old = f"{prefix}eps."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[f"{prefix}noise_predictor." + key[len(old) :]] = state_dict.pop(key)


class DDPMNetwork(nn.Module):
    """The noise-prediction U-Net (``noise_predictor``: x_t (N, C, H, W) in [-1, 1], t (N,) -> the noise, (N, C, H, W))
    plus its schedule."""

    def __init__(
        self,
        recipe: DDPMRecipe,
        input_size: list[int],
        *,
        eps_model: nn.Module | None = None,
        schedule: DDPMScheduler | None = None,
    ) -> None:
        super().__init__()
        self.noise_predictor = eps_model or recipe.build_unet(input_size)
        self.register_load_state_dict_pre_hook(renamed_noise_predictor)
        schedule = schedule or DDPMScheduler(
            num_train_timesteps=recipe.num_train_timesteps, beta_schedule=recipe.beta_schedule
        )
        self.register_buffer("betas", schedule.betas.float(), persistent=False)
        self.register_buffer("alphas_cumprod", schedule.alphas_cumprod.float(), persistent=False)
        self.train_t_max = recipe.train_t_max
        self.input_size = list(input_size)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, trust: bool = False) -> DDPMNetwork:
        """A diffusers ``save_pretrained`` folder: a ``UNet2DModel`` (``unet/`` or the top level, as
        ``google/ddpm-cifar10-32`` keeps it) and its ``DDPMScheduler`` config, which gives the noise schedule.

        Weights load from safetensors; pickled ``.bin`` weights only when ``trust`` (they can run code).
        """
        path = Path(path)
        unet_dir = path / "unet" if (path / "unet").is_dir() else path
        scheduler_dir = path / "scheduler" if (path / "scheduler").is_dir() else path
        safetensors = any(unet_dir.glob("*.safetensors"))
        if not safetensors and not trust:
            raise CheckpointError(
                f"diffusers folder {str(path)!r} has no safetensors weights; robaudit does not load pickled (.bin) "
                "weights unless you trust them (--trust-checkpoint): convert them to safetensors"
            )
        with _offline():
            try:
                unet = UNet2DModel.from_pretrained(str(unet_dir), use_safetensors=safetensors, low_cpu_mem_usage=False)
                schedule = DDPMScheduler.from_pretrained(str(scheduler_dir))
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"diffusers folder {str(path)!r} is unreadable ({first_line(exc)})") from None
        size = unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        input_size = [unet.config.in_channels, size, size]
        return cls.from_eps_model(LevelConditionedUNet(unet), schedule, input_size).eval()

    @classmethod
    def from_eps_model(cls, eps_model: nn.Module, schedule: DDPMScheduler, input_size: list[int]) -> DDPMNetwork:
        """A network around a pretrained noise predictor ``eps_model(x, t)`` and its training ``schedule``."""
        recipe = DDPMRecipe(num_train_timesteps=schedule.config.num_train_timesteps)
        network = cls(recipe, input_size, eps_model=eps_model, schedule=schedule)
        network.schedule_config = {k: schedule.config[k] for k in ("beta_schedule", "num_train_timesteps")}
        return network

    def parameter_count(self) -> int:
        """Parameters of the noise predictor."""
        return sum(p.numel() for p in self.noise_predictor.parameters())

    @property
    def num_timesteps(self) -> int:
        """T, the schedule's length."""
        return self.betas.shape[0]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Diffuse x0 (N, C, H, W) to timesteps t (N,): sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def predict_x0(self, x: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """x0 estimate from x_t and predicted noise, clipped to [-1, 1]."""
        abar = self.alphas_cumprod[t]
        return ((x - (1 - abar).sqrt() * noise) / abar.sqrt()).clamp(-1, 1)

    @property
    def evaluated_network(self) -> nn.Module:
        """The module one network evaluation (NFE) calls once: where pass counting and ``--compile`` hook in."""
        return self.noise_predictor

    def p_sample(self, x: torch.Tensor, t: int, generator: torch.Generator) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1} (x_0's mean at t = 0)."""
        noise = self.noise_predictor(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
        x0 = self.predict_x0(x, t, noise)
        abar = self.alphas_cumprod[t]
        abar_prev = self.alphas_cumprod[t - 1] if t > 0 else torch.ones_like(abar)
        beta = self.betas[t]
        mean = (abar_prev.sqrt() * beta / (1 - abar)) * x0 + ((1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)) * x
        if t == 0:
            return mean
        variance = beta * (1 - abar_prev) / (1 - abar)
        return mean + variance.sqrt() * randn_like(x, generator)

    def ddim_sample(self, x: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) along decreasing ``timesteps``, ending at x0."""
        for i, t in enumerate(timesteps):
            noise = self.noise_predictor(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
            x0 = self.predict_x0(x, t, noise)
            if i + 1 < len(timesteps):
                abar_next = self.alphas_cumprod[timesteps[i + 1]]
                x = abar_next.sqrt() * x0 + (1 - abar_next).sqrt() * noise
            else:
                x = x0
        return x

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """eps-prediction MSE on timesteps drawn uniformly below train_t_max * T."""
        x0 = images * 2 - 1
        t_max = max(1, round(self.train_t_max * self.num_timesteps))
        t = torch.randint(0, t_max, (x0.shape[0],), generator=generator).to(x0.device)
        noise = randn_like(x0, generator)
        return F.mse_loss(self.noise_predictor(self.q_sample(x0, t, noise), t), noise)


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Forbid the Hugging Face hub while loading: everything comes from disk."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def ddim_timesteps(t_start: int, steps: int) -> list[int]:
    """``steps`` decreasing timesteps from t_start to 0 (unique, inclusive)."""
    values = torch.linspace(t_start, 0, max(1, steps)).round().long().tolist()
    return sorted(set(values), reverse=True)
