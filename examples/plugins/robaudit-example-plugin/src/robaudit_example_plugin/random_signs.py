"""``random-signs``: a black-box baseline attack. Each try moves every pixel by +-eps with a sign drawn from the
sample's own stream; robaudit's cascade judges every try and keeps, per sample, the one that fools the model (or the
one closest to it). A gradient attack that breaks fewer samples than this baseline is broken itself."""

from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks.base import ATTACKS, AttackFn
from robaudit.attacks.selection import Cascade
from robaudit.rng.sample_rng import SampleRNG


def signs_stage(*, eps: float, tries: int):
    """A cascade stage: ``tries`` candidates (N, C, H, W), each images + eps * random signs, clamped to [0, 1]."""

    def stage(images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> list[torch.Tensor]:
        candidates = []
        for _ in range(tries):
            signs = (rng.rand(*images.shape[1:], device=images.device) < 0.5).float() * 2 - 1
            candidates.append((images + eps * signs).clamp(0, 1))
        return candidates

    return stage


@ATTACKS.register(
    "random-signs",
    description="random +-eps sign perturbations, the best of `tries` (a black-box baseline; example plugin)",
    norm="Linf",
    access="black-box",
    escalate=lambda params, factor: {**params, "tries": params["tries"] * factor},
    smoke={"tries": 2},
)
def random_signs(model: nn.Module, *, eps: float = 8 / 255, tries: int = 10, draws: int = 1) -> AttackFn:
    """``tries`` random sign perturbations at Linf ``eps``; the cascade keeps each sample's best."""
    return Cascade(model, [("random-signs", signs_stage(eps=eps, tries=tries))], norm="Linf", eps=eps, draws=draws)
