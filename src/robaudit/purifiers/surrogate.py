"""Choosing the DDIM surrogate's step count by measurement (``backward_steps: auto``).

Lee & Kim (2023) attack a diffusion purifier through a few-step DDIM surrogate of its reverse process: the forward
pass runs the true process, the backward pass differentiates K DDIM steps from the same diffused point. Fewer steps
are cheaper; too few steps give a gradient that points elsewhere, and the attack quietly weakens. The rule here
measures, instead of guessing:

- the calibration set is the first ``CALIBRATION_SAMPLES`` samples of the audited data (the same on every shard);
- for each candidate K (1, 2, 5, 10, 20 steps, below the chain's own length), the EOT gradient of the classifier's
  cross-entropy through the surrogate is compared with the true process's EOT gradient over the same ``draws``
  purifier draws (the same diffusion noise; seeded by the run's seed);
- agreement is the cosine similarity of the two, per sample, averaged; the chosen K is the smallest whose agreement
  reaches ``THRESHOLD`` (0.9). When none does, the attack keeps the true process's gradient.

The measurement is recorded with the run (each K's agreement) and the report states the gradient it led to. Whatever
K is chosen, candidates are judged on the true pipeline, so a poor surrogate can only weaken the attack, and the
convergence check is there to catch that.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.purifiers.checkpointing import chain_checkpointing
from robaudit.rng.seeding import derive_seed

CANDIDATE_STEPS = (1, 2, 5, 10, 20)
THRESHOLD = 0.9
CALIBRATION_SAMPLES = 8
DRAWS = 4


def surrogate_target(purifier: nn.Module) -> nn.Module | None:
    """The purifier (inside any bridge) whose ``backward_steps`` is ``"auto"``, or None."""
    while purifier is not None:
        if getattr(purifier, "backward_steps", None) == "auto":
            return purifier
        purifier = getattr(purifier, "purifier", None)
    return None


def eot_input_gradient(
    purifier: nn.Module, classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, draws: int, seed: int
) -> torch.Tensor:
    """The mean over ``draws`` seeded purifier draws of d CE(classifier(purifier(x)), y) / dx, (N, C, H, W)."""
    total = torch.zeros_like(images)
    for index in range(draws):
        generator = torch.Generator(device=images.device).manual_seed(derive_seed(seed, "surrogate", index))
        x = images.detach().requires_grad_(True)
        with torch.enable_grad(), chain_checkpointing(purifier, x):
            loss = F.cross_entropy(classifier(purifier(x, generator=generator)), labels, reduction="sum")
            total += torch.autograd.grad(loss, x)[0]
    return total / draws


def measure_agreement(
    purifier: nn.Module,
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int,
    draws: int = DRAWS,
    candidates: tuple[int, ...] = CANDIDATE_STEPS,
) -> dict[int, float]:
    """Each candidate step count's agreement (mean per-sample cosine) with the true process's gradient, on images
    (N, C, H, W) and labels (N,). ``purifier`` is a ``DDPMPurifier``; its ``backward_steps`` is restored."""
    saved = purifier.backward_steps
    try:
        purifier.backward_steps = None
        true = eot_input_gradient(purifier, classifier, images, labels, draws=draws, seed=seed).flatten(1)
        agreement = {}
        for steps in (k for k in candidates if k <= purifier.t_start):
            purifier.backward_steps = steps
            cheap = eot_input_gradient(purifier, classifier, images, labels, draws=draws, seed=seed).flatten(1)
            agreement[steps] = round(float(F.cosine_similarity(cheap, true, dim=1).mean()), 4)
        return agreement
    finally:
        purifier.backward_steps = saved


def choose_backward_steps(agreement: dict[int, float], *, threshold: float = THRESHOLD) -> int | None:
    """The smallest step count whose agreement reaches ``threshold``; None (the true gradient) when none does."""
    passing = [steps for steps, value in sorted(agreement.items()) if value >= threshold]
    return passing[0] if passing else None


def calibrate_surrogate(
    purifier: nn.Module, classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, seed: int
) -> dict[str, Any] | None:
    """Resolve ``backward_steps: auto`` on ``purifier`` (or the one inside its bridge) by measurement on the
    calibration images (N, C, H, W) in [0, 1]; returns what was measured and chosen, or None when nothing is auto."""
    target = surrogate_target(purifier)
    if target is None:
        return None
    images, labels = images[:CALIBRATION_SAMPLES], labels[:CALIBRATION_SAMPLES]
    agreement = measure_agreement(SteeredPurifier(purifier, target), classifier, images, labels, seed=seed)
    target.backward_steps = choose_backward_steps(agreement)
    return {
        "rule": f"smallest DDIM step count whose gradient's cosine with the true process's reaches {THRESHOLD}",
        "samples": len(labels),
        "draws": DRAWS,
        "agreement": {str(k): v for k, v in agreement.items()},
        "chosen": target.backward_steps,
    }


class SteeredPurifier(nn.Module):
    """The outer purifier (bridge included) whose ``backward_steps`` and ``t_start`` are the inner DDPM's."""

    def __init__(self, outer: nn.Module, inner: nn.Module) -> None:
        super().__init__()
        self.outer, self.inner = outer, inner

    @property
    def t_start(self) -> int:
        return self.inner.t_start

    @property
    def backward_steps(self) -> Any:
        return self.inner.backward_steps

    @backward_steps.setter
    def backward_steps(self, value: Any) -> None:
        self.inner.backward_steps = value

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.outer(images, generator=generator)
