"""Square Attack, Linf (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box adversarial attack
via random search"), implemented in robaudit with per-sample proposals.

Starts from vertical stripes of +-eps; each query changes one square window of side s to +-eps per channel and keeps
it when the margin loss z_y - max_{i != y} z_i drops (or the sample becomes misclassified). The window's size
follows the reference schedule (p_init halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000
queries, stretched to the budget with ``rescale`` -- the reference's default; AutoAttack runs it unstretched), and
every sample draws its own window position and signs from its own stream -- the reference and torchattacks draw
one window per query for the whole batch, which ties a sample's search to its batch. A sample stops querying once
misclassified. L2 Square is torchattacks' single run, one sample at a time from the sample's own stream. This file
is the whole of the ``square`` attack: the algorithm, its stage (AutoAttack runs it too) and its registration.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchattacks import Square

from robaudit.attacks.base import ATTACKS, AttackFn
from robaudit.attacks.gradient import margin
from robaudit.attacks.selection import Cascade, Stage, draw, run_stage
from robaudit.rng.sample_rng import SampleRNG, per_sample

HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, query: int, *, n_queries: int, rescale: bool) -> float:
    """The fraction p of pixels a window covers at ``query``: the reference schedule, written for 10,000 queries and,
    with ``rescale``, stretched to ``n_queries``."""
    step = int(query / n_queries * 10000) if rescale else query
    return p_init / 2 ** sum(step > halving for halving in HALVINGS)


def windows(rng: SampleRNG, *, side: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """(M, 1, H, W) bool masks of one side x side window per sample, its corner drawn from the sample's stream."""
    corner = rng.rand(2, device=device)  # (M, 2) uniform in [0, 1)
    top = (corner[:, 0] * (height - side)).long().view(-1, 1, 1, 1)
    left = (corner[:, 1] * (width - side)).long().view(-1, 1, 1, 1)
    rows = torch.arange(height, device=device).view(1, 1, -1, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, -1)
    return (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)


def random_signs(rng: SampleRNG, *shape: int, device: torch.device) -> torch.Tensor:
    """+-1 per sample and ``shape``, from the samples' streams."""
    return (rng.rand(*shape, device=device) < 0.5).float() * 2 - 1


class SquareLinf:
    """One Square run: ``run(images, labels, rng)`` -> [each sample's best query] (a cascade stage)."""

    def __init__(self, model: nn.Module, *, eps: float, n_queries: int, p_init: float, rescale: bool) -> None:
        self.model, self.eps, self.n_queries, self.p_init, self.rescale = model, eps, n_queries, p_init, rescale

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> list[torch.Tensor]:
        """images (M, C, H, W), labels (M,) -> [best query (M, C, H, W)]."""
        n, c, h, w = images.shape
        stripes = random_signs(rng, c, 1, w, device=images.device)
        best = (images + self.eps * stripes).clamp(0, 1)
        loss = margin(draw(self.model, best, rng), labels)
        for query in range(1, self.n_queries):
            active = (loss > 0).nonzero().flatten()
            if active.numel() == 0:
                break
            p = square_fraction(self.p_init, query, n_queries=self.n_queries, rescale=self.rescale)
            side = max(1, min(h - 1, round(math.sqrt(p * h * w))))
            streams = rng[active]
            mask = windows(streams, side=side, height=h, width=w, device=images.device)
            step = 2 * self.eps * random_signs(streams, c, 1, 1, device=images.device)
            x, start = images[active], best[active]
            proposal = torch.where(mask, start + step, start)
            proposal = torch.min(torch.max(proposal, x - self.eps), x + self.eps).clamp(0, 1)
            new_loss = margin(draw(self.model, proposal, streams), labels[active])
            better = new_loss < loss[active]
            best[active[better]] = proposal[better]
            loss[active[better]] = new_loss[better]
        return [best]


def square_stage(
    model: nn.Module, *, norm: str, eps: float, n_queries: int, p_init: float, seed: int, rescale: bool = True
) -> Stage:
    """One Square run; its candidate is each sample's best-margin query.

    Linf: robaudit's own (``attacks.methods.square``: per-sample windows, the reference's p schedule). L2: torchattacks'
    single run, which draws its proposals from the global RNG for a whole batch, so it runs one sample at a time,
    each under a global RNG seeded from the sample's own stream.
    """
    if norm == "Linf":
        return run_stage(SquareLinf(model, eps=eps, n_queries=n_queries, p_init=p_init, rescale=rescale))
    attack = Square(model, norm=norm, eps=eps, n_queries=n_queries, p_init=p_init, n_restarts=1, seed=seed)
    attack.rescale_schedule = rescale

    def single(image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        attack.init_hyperparam(image)
        with torch.no_grad():
            return attack.attack_single_run(image, label)[1]

    def stage(images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> list[torch.Tensor]:
        return [per_sample(single, images, rng, labels)]

    stage.attack = attack
    return stage


@ATTACKS.register(
    "square",
    description="Square Attack, black-box score-based (Andriushchenko et al. 2020)",
    access="black-box",
    escalate=lambda params, factor: {**params, "n_queries": params["n_queries"] * factor},
    smoke={"n_queries": 30},
)
def square(
    model: nn.Module,
    *,
    draws: int = 1,
    eps: float = 8 / 255,
    norm: str = "Linf",
    n_queries: int = 5000,
    p_init: float = 0.8,
    seed: int = 0,
) -> AttackFn:
    """Square Attack: random square-shaped updates, queries only the model's outputs (one draw per query)."""
    stage = square_stage(model, norm=norm, eps=eps, n_queries=n_queries, p_init=p_init, seed=seed)
    return Cascade(model, [("square", stage)], norm=norm, eps=eps, draws=draws)
