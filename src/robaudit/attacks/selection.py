"""Choosing each sample's adversarial candidate, the same way for deterministic and randomized pipelines.

One forward pass of an attacked pipeline is one draw of its randomness (a randomized purifier's noise, a randomized
classifier's noise; a deterministic model gives the same answer every time). A candidate is judged on ``draws``
*selection draws*: its ``correct_fraction`` (the fraction of draws still classifying it correctly; lower is better),
ties broken by its mean cross-entropy over those draws (higher is better). Selection draws come from the attack's own
random stream, independent of the draws that later score the verdict, so the attack never sees the defense's
verdict-time randomness.

Rules every attack follows through this module:

- the clean image is never a candidate: a sample's result is the best candidate an attack stage produced (a sample
  keeps its clean image only when no stage could move it, e.g. a zero gradient for FGSM);
- candidates are projected onto the eps-ball and [0, 1] *before* they are judged;
- in a cascade (restarts, AutoAttack's components), a sample leaves once its candidate passes the leave rule
  (``attacks.stopping``): fooled, on a deterministic pipeline; on a randomized one, correct in so few of its fresh
  selection draws that it would survive all N scoring draws with probability at most 1%, whatever its true
  chance; otherwise every later stage attacks it again and the better candidate is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.attacks.stopping import leaves
from robaudit.rng.draw_layout import by_draw, draw_streams, layout_of, over_rows, rows_of
from robaudit.rng.sample_rng import SampleRNG, is_randomized

# A stage attacks (images (M, C, H, W), labels (M,), the samples' streams) and returns candidates, each (M, C, H, W).
Stage = Callable[[torch.Tensor, torch.Tensor, SampleRNG], Sequence["torch.Tensor | Judged"]]


def draw(model: nn.Module, images: torch.Tensor, rng: SampleRNG | None) -> torch.Tensor:
    """One draw of ``model``'s scores (N, K) on (N, C, H, W) images, its randomness from the samples' streams
    where the model takes them (a ``Pipeline``); a deterministic model is simply called."""
    if rng is not None and getattr(model, "takes_sample_rng", False):
        return model(images, rng=rng)
    return model(images)


@dataclass
class Verdict:
    """Per-sample judgement of candidates: ``correct_fraction`` (N,) in [0, 1] and mean ``loss`` (N,)."""

    correct_fraction: torch.Tensor
    loss: torch.Tensor

    def __getitem__(self, index: torch.Tensor) -> Verdict:
        return Verdict(self.correct_fraction[index], self.loss[index])

    def beats(self, other: Verdict) -> torch.Tensor:
        """(N,) bool: fewer correct draws, or as many with a higher loss."""
        fewer = self.correct_fraction < other.correct_fraction
        tie = (self.correct_fraction == other.correct_fraction) & (self.loss > other.loss)
        return fewer | tie


def scoring_draws(model: nn.Module) -> int:
    """N, the scoring draws that will judge the attacked ``model``'s verdicts (the engine sets it on a
    ``Pipeline``: its defense's repeats); 1 for a model that does not say."""
    return int(getattr(model, "scoring_draws", 1) or 1)


def may_leave(model: nn.Module, verdict: Verdict, draws: int) -> torch.Tensor:
    """(N,) bool: the samples whose ``verdict`` (on ``draws`` fresh draws of ``model``) lets them leave the attack
    (``attacks.stopping.leaves``: on a deterministic model, fooled)."""
    if not is_randomized(model):
        return leaves(verdict.correct_fraction, 1, 1)
    return leaves(verdict.correct_fraction, draws, scoring_draws(model))


def project(adversarial: torch.Tensor, images: torch.Tensor, *, norm: str, eps: float) -> torch.Tensor:
    """Clip to [0, 1], then project the perturbation onto the ``norm`` ball of radius ``eps`` (N, C, H, W)."""
    adversarial = adversarial.clamp(0, 1)
    delta = adversarial - images
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * (eps / norms).clamp(max=1.0).view(-1, 1, 1, 1)
    return (images + delta).clamp(0, 1)


def verdict_of(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> Verdict:
    """The verdict of per-draw logits (each (N, K)) on ``labels`` (N,)."""
    correct = torch.stack([(z.argmax(1) == labels).float() for z in logits]).mean(0)
    loss = torch.stack([F.cross_entropy(z.float(), labels, reduction="none") for z in logits]).mean(0)
    return Verdict(correct, loss.detach())


@torch.no_grad()
def judge(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, draws: int, rng: SampleRNG | None
) -> Verdict:
    """Verdict of ``model`` on (N, C, H, W) ``images`` over ``draws`` forward passes (selection draws), always in
    float32 (autocast off), so a reduced-precision attack never decides a verdict. The draws run in the batch
    dimension as ``model``'s layout says, every (sample, draw) from its own stream (``draw_layout``)."""
    with torch.autocast(images.device.type, enabled=False):
        return verdict_of(by_draw(draw_logits(model, images, rng, draws), draws), labels)


def draw_logits(model: nn.Module, images: torch.Tensor, rng: SampleRNG | None, draws: int) -> torch.Tensor:
    """The scores of ``draws`` draws of ``model`` on each of the (N, C, H, W) ``images``: (N * D, K), sample-major."""
    streams = draw_streams(model, rng, draws)

    def rows_pass(rows: torch.Tensor) -> tuple[torch.Tensor]:
        return (draw(model, rows_of(images, rows, draws), streams(rows)),)

    return over_rows(rows_pass, images.shape[0], draws, layout_of(model), images.device)[0]


class BestSoFar:
    """Each sample's best candidate among those offered with their verdicts; none at first (never the clean image)."""

    def __init__(self, images: torch.Tensor) -> None:
        n = images.shape[0]
        self.images = images
        self.best = images.clone()
        self.found = torch.zeros(n, dtype=torch.bool, device=images.device)
        self.verdict = Verdict(torch.ones(n, device=images.device), torch.full((n,), -torch.inf, device=images.device))

    def update(self, index: torch.Tensor, candidates: torch.Tensor, verdict: Verdict) -> torch.Tensor:
        """Keep ``candidates`` (len(index), C, H, W) where they beat the current best; returns the kept mask."""
        moved = (candidates != self.images[index]).flatten(1).any(1)
        keep = moved & (~self.found[index] | verdict.beats(self.verdict[index]))
        chosen = index[keep]
        self.best[chosen] = candidates[keep].detach()
        self.found[chosen] = True
        self.verdict.correct_fraction[chosen] = verdict.correct_fraction[keep]
        self.verdict.loss[chosen] = verdict.loss[keep]
        return keep

    def unsettled(self) -> torch.Tensor:
        """(N,) bool: samples without a candidate, or whose candidate is still correct in some selection draw."""
        return ~self.found | (self.verdict.correct_fraction > 0)


class EarlyExit:
    """Which samples of an iterative run are settled, so the run stops working on them (``enabled``).

    On a deterministic model a sample is settled by the first iterate that fools it (kept by ``BestSoFar``): its
    verdict cannot change. On a randomized one (``is_randomized(model)``) an iterate that passes the leave rule
    (``attacks.stopping``) on the ``step_draws`` draws of its step is judged again on ``draws`` fresh selection draws,
    and the sample is settled only when it passes the rule on them too -- the rule the cascade uses to let a sample
    leave (the fresh draws make its error rate hold: the step's draws chose the iterate). A settled sample stays
    settled.
    """

    def __init__(
        self,
        model: nn.Module,
        labels: torch.Tensor,
        rng: SampleRNG,
        *,
        draws: int,
        enabled: bool,
        step_draws: int = 1,
    ) -> None:
        self.model, self.labels, self.rng, self.draws, self.enabled = model, labels, rng, draws, enabled
        self.step_draws = step_draws
        self.confirm = is_randomized(model) or torch.is_autocast_enabled(labels.device.type)
        self.settled = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        self.checked = torch.zeros_like(self.settled)  # the current candidate was judged again and not confirmed

    def active(self, best: BestSoFar, index: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """The samples of ``index`` still to work on, after ``best`` was updated there (``kept``: replaced)."""
        if not self.enabled:
            return index
        self.checked[index[kept]] = False
        fooled = best.found & may_leave(self.model, best.verdict, self.step_draws) & ~self.settled & ~self.checked
        candidates = fooled[index].nonzero().flatten()
        if candidates.numel() and self.confirm:
            chosen = index[candidates]
            again = judge(self.model, best.best[chosen], self.labels[chosen], draws=self.draws, rng=self.rng[chosen])
            confirmed = may_leave(self.model, again, self.draws)
            self.checked[chosen[~confirmed]] = True
            candidates = candidates[confirmed]
        self.settled[index[candidates]] = True
        return index[~self.settled[index]]


ROUNDING = 1e-6  # re-projecting a projected image can move pixels by a few float32 ulps, never more


@dataclass
class Judged:
    """A stage's candidates (M, C, H, W) with the verdict a deterministic model gave them in float32 while the stage
    ran: the pool keeps that verdict instead of spending a forward pass to judge the same images again."""

    images: torch.Tensor
    verdict: Verdict


def reusable_verdicts(model: nn.Module, device: torch.device) -> bool:
    """True when verdicts taken during a stage equal a fresh ``judge``: a deterministic model, autocast off."""
    return not is_randomized(model) and not torch.is_autocast_enabled(device.type)


class CandidatePool(BestSoFar):
    """A ``BestSoFar`` that projects and judges what it is offered on fresh selection draws of ``model``.

    ``chosen_by[i]`` names the stage whose candidate sample ``i`` holds.
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        rng: SampleRNG,
        *,
        norm: str,
        eps: float,
        draws: int,
    ) -> None:
        super().__init__(images)
        self.model, self.labels, self.rng, self.norm, self.eps, self.draws = model, labels, rng, norm, eps, draws
        self.chosen_by: list[str | None] = [None] * images.shape[0]
        self.incomplete = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)

    def offer(self, index: torch.Tensor, candidates: torch.Tensor | Judged, *, stage: str) -> None:
        """Project ``candidates`` for samples ``index``, judge them, keep the better ones. ``Judged`` candidates
        keep their verdict when the model is deterministic and projection moved them by float rounding at most
        (``ROUNDING``; they were projected when made). Scoring judges the kept images again either way."""
        verdict = candidates.verdict if isinstance(candidates, Judged) else None
        candidates = candidates.images if isinstance(candidates, Judged) else candidates
        projected = project(candidates.detach(), self.images[index], norm=self.norm, eps=self.eps)
        reuse = verdict is not None and reusable_verdicts(self.model, projected.device)
        if not (reuse and torch.allclose(projected, candidates, rtol=0, atol=ROUNDING)):
            verdict = judge(self.model, projected, self.labels[index], draws=self.draws, rng=self.rng[index])
        kept = self.update(index, projected, verdict)
        for i in index[kept].tolist():
            self.chosen_by[i] = stage

    def unsettled(self) -> torch.Tensor:
        """(N,) bool: samples without a candidate, or whose candidate does not pass the leave rule on its selection
        draws (``may_leave``: on a deterministic model, still correct)."""
        return ~self.found | ~may_leave(self.model, self.verdict, self.draws)


def run_cascade(pool: CandidatePool, stages: Sequence[tuple[str, Stage]]) -> CandidatePool:
    """Run ``stages`` in order on ``pool``'s samples, each stage on those still unsettled (every sample meets the
    first stage). A stage and the judging of its candidates draw from the streams of the samples they work on only.
    ``pool.incomplete`` marks the samples whose loss trace still progressed at the end of some stage that keeps one
    (``attacks.loss_trace``: robaudit's PGD and APGD runs).
    """
    images, labels, rng = pool.images, pool.labels, pool.rng
    for name, stage in stages:
        index = pool.unsettled().nonzero().flatten()
        if index.numel() == 0:
            break
        for candidate in stage(images[index], labels[index], rng[index]):
            pool.offer(index, candidate, stage=name)
        incomplete = getattr(getattr(stage, "attack", stage), "incomplete", None)
        if callable(incomplete):
            pool.incomplete[index] |= incomplete().to(pool.incomplete.device)
    return pool


class Cascade:
    """An attack made of stages (restarts, AutoAttack's components) run by ``run_cascade``: an ``AttackFn``.

    ``components`` names the stages in order; after each call ``chosen_by`` names, per sample, the stage whose
    candidate it holds, ``unsettled`` marks the samples still correct in some selection draw and ``incomplete`` those
    whose loss trace was still progressing when a stage ended (Pintor et al.'s indicator).
    """

    def __init__(
        self, model: nn.Module, stages: Sequence[tuple[str, Stage]], *, norm: str, eps: float, draws: int
    ) -> None:
        self.model, self.stages, self.norm, self.eps, self.draws = model, list(stages), norm, eps, draws
        self.chosen_by: list[str | None] = []
        self.unsettled = torch.zeros(0, dtype=torch.bool)
        self.incomplete = torch.zeros(0, dtype=torch.bool)

    @property
    def components(self) -> list[str]:
        """The stage names, in the order they run."""
        return [name for name, _ in self.stages]

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG | None = None) -> torch.Tensor:
        """images (N, C, H, W) in [0, 1], labels (N,), the samples' streams -> each sample's best candidate.

        Without ``rng``, sample i's stream is seeded with i (so results then depend on the batch).
        """
        rng = rng if rng is not None else SampleRNG.from_seeds(range(len(labels)), images.device)
        pool = CandidatePool(self.model, images, labels, rng, norm=self.norm, eps=self.eps, draws=self.draws)
        run_cascade(pool, self.stages)
        self.chosen_by, self.unsettled, self.incomplete = pool.chosen_by, pool.unsettled(), pool.incomplete
        return pool.best


def run_stage(run: Callable[[torch.Tensor, torch.Tensor, SampleRNG], list[torch.Tensor]]) -> Stage:
    """A stage of one of robaudit's own runs (APGD: its best-verdict and best-loss iterates; Square: its best query)."""

    def stage(images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> list[torch.Tensor]:
        return run(images, labels, rng)

    stage.attack = run  # for inspection (tests, reports)
    return stage
