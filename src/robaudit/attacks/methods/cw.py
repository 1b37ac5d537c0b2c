"""Carlini & Wagner's L2 attack (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks").

Minimises ||x' - x||^2 + c * max(z_y - max_{i != y} z_i, -kappa) over x' = (tanh(w) + 1) / 2 with Adam, the margin
term averaged over EOT draws on a randomized pipeline. robaudit cuts every candidate back to the L2 budget ``eps``
(which may undo a success) and judges it there: candidates are taken at ten evenly spaced checkpoints of the
optimisation, projected, and each sample keeps its best. There is no early stop on the batch's loss, so a sample's
result does not depend on the other samples of its batch. A sample the attacked model already misclassifies in every
draw has its margin unclamped (kappa = infinity), so the attack deepens the misclassification instead of returning
the clean image (its minimal-norm answer).
"""

from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks.base import ATTACKS, AttackFn
from robaudit.attacks.gradient import margin
from robaudit.attacks.selection import Cascade, draw
from robaudit.rng.sample_rng import SampleRNG


class CarliniWagnerL2:
    """One C&W optimisation: (images (M, C, H, W), labels (M,)) -> candidates at its checkpoints."""

    def __init__(
        self, model: nn.Module, *, c: float, kappa: float, steps: int, lr: float, eot: int, checkpoints: int = 10
    ) -> None:
        self.model, self.c, self.kappa, self.steps, self.lr, self.eot = model, c, kappa, steps, lr, eot
        self.every = max(1, steps // checkpoints)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> list[torch.Tensor]:
        """The iterates at the checkpoints, each (M, C, H, W) in [0, 1]."""
        w = torch.atanh((images * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach().requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=self.lr)
        candidates = []
        floor = torch.full_like(labels, -self.kappa, dtype=images.dtype)
        for step in range(self.steps):
            optimizer.zero_grad()
            with torch.enable_grad():
                x = (torch.tanh(w) + 1) / 2
                distance = (x - images).flatten(1).pow(2).sum()
                distance.backward(retain_graph=True)
                margins = [margin(draw(self.model, x, rng), labels) for _ in range(self.eot)]
                if step == 0:  # already fooled in every draw: push deeper instead of stopping at the clean image
                    fooled = torch.stack([m.detach() < 0 for m in margins]).all(0)
                    floor = torch.where(fooled, -torch.inf, floor)
                f = sum(torch.maximum(m, floor) for m in margins) / self.eot
                (self.c * f.sum()).backward()
            optimizer.step()
            if (step + 1) % self.every == 0 or step + 1 == self.steps:
                candidates.append(((torch.tanh(w) + 1) / 2).detach())
        return candidates


@ATTACKS.register(
    "cw",
    description="Carlini-Wagner L2, minimal-norm; results cut back to the L2 budget eps",
    norm="L2",
    escalate=lambda params, factor: {**params, "steps": params["steps"] * factor},
    smoke={"steps": 10},
)
def cw(
    model: nn.Module,
    *,
    eot: int = 1,
    draws: int = 1,
    eps: float = 0.5,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
) -> AttackFn:
    """C&W L2. It minimises the perturbation; robaudit projects each candidate onto the eps-ball and judges it there."""
    run = CarliniWagnerL2(model, c=c, kappa=kappa, steps=steps, lr=lr, eot=eot)
    return Cascade(model, [("cw", run)], norm="L2", eps=eps, draws=draws)
