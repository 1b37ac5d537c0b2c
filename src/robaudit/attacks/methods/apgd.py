"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"), implemented in robaudit: Linf and L2, cross-entropy, DLR and targeted DLR losses, EOT.

Step size starts at 2 * eps and is halved, per sample, at checkpoints w_j (after 22% of the steps, then at
intervals shrinking by 3% of the steps down to 6%) when (1) the loss rose in at most rho = 75% of the steps since the
last checkpoint, or (2) the step size was not halved at the last checkpoint and the best loss has not improved since;
a halving restarts the sample from its best point. Updates carry momentum 0.75. Everything is per sample and the
random start comes from each sample's own stream, so a sample's run never depends on its batch. A run offers two
candidates: the iterate with the best verdict (fewest correct draws) and the iterate with the highest loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robaudit.attacks.gradient import Loss, check_eot_mode, cross_entropy, eot_gradient
from robaudit.attacks.loss_trace import LossTrace
from robaudit.attacks.selection import BestSoFar, EarlyExit, Judged, draw, project, reusable_verdicts
from robaudit.rng.sample_rng import SampleRNG


def dlr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Untargeted DLR loss (N,): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3); needs >= 3 classes."""
    ordered = logits.sort(dim=1).values
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -torch.inf).amax(1)
    return -(true - others) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


def targeted_dlr(targets: torch.Tensor) -> Loss:
    """Targeted DLR loss toward ``targets`` (N,): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2); needs >= 4 classes."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ordered = logits.sort(dim=1).values
        true = logits.gather(1, labels[:, None]).squeeze(1)
        target = logits.gather(1, targets[:, None]).squeeze(1)
        return -(true - target) / (ordered[:, -1] - 0.5 * (ordered[:, -3] + ordered[:, -4]) + 1e-12)

    return loss


def targets_by_logits(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> torch.Tensor:
    """(M, K) classes ordered by one draw of the scores at the clean ``images``, highest first (AutoAttack's rule:
    rank 2 -- index 1 -- is the runner-up)."""
    with torch.no_grad():
        return draw(model, images, rng).sort(dim=1).indices.flip(1)


def targets_by_linear_estimate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG, *, norm: str, candidates: int = 20
) -> torch.Tensor:
    """(M, 1 + k) the label, then the ``candidates`` highest-scoring other classes ordered by the linear estimate
    of their distance, (z_y - z_j) / ||grad (z_y - z_j)||_* (dual norm: L1 for Linf, L2 for L2), nearest first.

    The targeting rule of MALT (Melamed et al., NeurIPS 2024): a class a first-order model says is near is a better
    target than the one with the second-highest score. One forward and one backward pass per candidate, at one draw.
    """
    x = images.detach().requires_grad_(True)
    with torch.enable_grad():
        z = draw(model, x, rng)
        others = z.detach().scatter(1, labels[:, None], -torch.inf)
        top = others.topk(min(candidates, z.shape[1] - 1), dim=1).indices  # (M, k)
        true = z.gather(1, labels[:, None]).squeeze(1)
        distances = []
        for r in range(top.shape[1]):
            gap = true - z.gather(1, top[:, r : r + 1]).squeeze(1)
            grad = torch.autograd.grad(gap.sum(), x, retain_graph=r + 1 < top.shape[1])[0]
            dual = grad.flatten(1).norm(p=1 if norm == "Linf" else 2, dim=1).clamp_min(1e-12)
            distances.append(gap.detach() / dual)
    ordered = top.gather(1, torch.stack(distances, 1).argsort(dim=1))
    return torch.cat([labels[:, None], ordered], dim=1)


def apgd_start(images: torch.Tensor, rng: SampleRNG, *, norm: str, eps: float) -> torch.Tensor:
    """APGD's random start: a random direction scaled to the ball's surface (Linf: max |t| = eps), clipped."""
    if norm == "Linf":
        t = 2 * rng.rand_like(images) - 1
        scale = t.flatten(1).abs().amax(1).clamp_min(1e-12)
    else:
        t = rng.randn_like(images)
        scale = t.flatten(1).norm(dim=1).clamp_min(1e-12)
    return (images + eps * t / scale.view(-1, 1, 1, 1)).clamp(0, 1)


def checkpoint_intervals(steps: int) -> list[int]:
    """Steps between APGD's checkpoints: 22% of ``steps``, then 3% fewer each time, never below 6%."""
    first, shrink, floor = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    intervals, k = [], first
    while sum(intervals) < steps:
        intervals.append(k)
        k = max(k - shrink, floor)
    return intervals


class APGDRun:
    """One APGD run: ``run(images, labels, rng)`` -> [best-verdict iterate, best-loss iterate] (a cascade stage).

    ``target_rank``: for APGD-T, attack toward the class ranked ``target_rank`` (2 = runner-up) at the clean image,
    with the targeted DLR loss; ``targeting`` ranks the classes: "logits" (the pipeline's scores, AutoAttack's rule)
    or "linear" (``targets_by_linear_estimate``, MALT's rule).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str,
        eps: float,
        steps: int,
        eot: int,
        loss: str = "ce",
        target_rank: int | None = None,
        rho: float = 0.75,
        momentum: float = 0.75,
        draws: int = 1,
        early_exit: bool = True,
        targeting: str = "logits",
        eot_mode: str = "mean",
    ) -> None:
        if targeting not in TARGETING:
            raise ValueError(f"targeting must be one of {', '.join(TARGETING)}, got {targeting!r}")
        self.model, self.norm, self.eps, self.steps, self.eot = model, norm, eps, steps, eot
        self.targeting, self.eot_mode = targeting, check_eot_mode(eot_mode)
        self.loss_name, self.target_rank, self.rho, self.momentum = loss, target_rank, rho, momentum
        self.draws, self.early_exit = draws, early_exit

    def loss_for(self, images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> Callable[[torch.Tensor], Loss]:
        """The loss of this run on the samples ``index`` (targets of APGD-T ranked at the clean images, one draw)."""
        if self.target_rank is not None:
            targets = TARGETING[self.targeting](self, images, labels, rng)[:, self.target_rank - 1]
            return lambda index: targeted_dlr(targets[index])
        loss = dlr if self.loss_name == "dlr" else cross_entropy
        return lambda index: loss

    def gradient(self, x: torch.Tensor, labels: torch.Tensor, loss: Loss, rng: SampleRNG):
        """The EOT gradient (N, C, H, W), verdict and mean loss (N,) of ``loss`` at ``x`` (``eot_gradient``)."""
        return eot_gradient(self.model, x, labels, loss=loss, draws=self.eot, rng=rng, mode=self.eot_mode)

    def ascent(self, x: torch.Tensor, grad: torch.Tensor, step: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The projected steepest-ascent point z = P(x + step * direction(grad))."""
        if self.norm == "Linf":
            direction = grad.sign()
        else:
            direction = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return project(x + step * direction, images, norm=self.norm, eps=self.eps)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, rng: SampleRNG) -> list[torch.Tensor | Judged]:
        """images (M, C, H, W), labels (M,) -> [best-verdict iterate, best-loss iterate], each (M, C, H, W); on a
        deterministic model in float32 only the first, with the verdicts its own passes gave (``Judged``).

        With ``early_exit`` a sample stops once its verdict is settled (``EarlyExit``); its state stays frozen.
        """
        loss_of = self.loss_for(images, labels, rng)
        x = apgd_start(images, rng, norm=self.norm, eps=self.eps)
        active = torch.arange(images.shape[0], device=images.device)
        grad, verdict, value = self.gradient(x, labels, loss_of(active), rng)
        best = BestSoFar(images)
        done = EarlyExit(self.model, labels, rng, draws=self.draws, enabled=self.early_exit, step_draws=self.eot)
        active = done.active(best, active, best.update(active, x, verdict))
        state = _State(x, grad, value, step=torch.full((len(labels), 1, 1, 1), 2 * self.eps, device=images.device))
        checkpoints = iter(checkpoint_intervals(self.steps))
        until_check = next(checkpoints)
        trace = LossTrace(images.shape[0], images.device, noisy=self.eot > 1)
        trace.record(torch.arange(images.shape[0], device=images.device), value)
        self.incomplete = lambda: trace.incomplete() & ~done.settled  # the samples still progressing at the end
        for i in range(self.steps):
            if active.numel() == 0:
                break
            x = self.next_point(state, images, active, first=i == 0)
            grad, value = state.grad.clone(), state.losses[-1].clone()  # settled samples keep theirs
            loss = loss_of(active)
            step = self.gradient(x[active], labels[active], loss, rng[active])
            grad[active], verdict, value[active] = step
            trace.record(active, value[active])
            kept = best.update(active, x[active], verdict)
            state.record(x, grad, value)
            active = done.active(best, active, kept)
            until_check -= 1
            if until_check == 0 and i + 1 < self.steps:
                state.checkpoint(self.rho)
                until_check = next(checkpoints)
        if reusable_verdicts(self.model, images.device):  # every iterate was judged: the best verdict dominates
            return [Judged(best.best, best.verdict)]
        return [best.best, state.x_best]

    def next_point(self, state: _State, images: torch.Tensor, active: torch.Tensor, *, first: bool) -> torch.Tensor:
        """x_{k+1} = P(x_k + a (z - x_k) + (1 - a) (x_k - x_{k-1})), z the ascent point; a = 1 at the first step.

        Samples outside ``active`` (settled) keep their point."""
        a = 1.0 if first else self.momentum
        z = self.ascent(state.x, state.grad, state.step, images)
        moved = state.x + a * (z - state.x) + (1 - a) * (state.x - state.x_previous)
        state.x_previous = state.x
        x = state.x.clone()
        x[active] = project(moved[active], images[active], norm=self.norm, eps=self.eps)
        return x


class _State:
    """Per-sample APGD state: current point, gradient and loss; best point; step sizes; the checkpoint memory."""

    def __init__(self, x: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor, *, step: torch.Tensor) -> None:
        self.x, self.x_previous, self.grad, self.step = x, x, grad, step
        self.x_best, self.grad_best, self.loss_best = x.clone(), grad.clone(), loss.clone()
        self.losses = [loss]  # losses since the last checkpoint, the one before it first
        self.best_at_check = loss.clone()
        self.halved_at_check = torch.ones_like(loss, dtype=torch.bool)

    def record(self, x: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor) -> None:
        """Move to ``x`` and keep it as the best point where its loss is higher."""
        self.x, self.grad = x, grad
        better = loss > self.loss_best
        self.x_best[better], self.grad_best[better], self.loss_best[better] = x[better], grad[better], loss[better]
        self.losses.append(loss)

    def checkpoint(self, rho: float) -> None:
        """Halve the step (and go back to the best point) where progress stalled since the last checkpoint."""
        history = torch.stack(self.losses)  # (k + 1, M)
        rises = (history[1:] > history[:-1]).float().sum(0)
        oscillating = rises <= rho * (len(self.losses) - 1)
        stalled = ~self.halved_at_check & (self.best_at_check >= self.loss_best)
        halve = oscillating | stalled
        self.step[halve] /= 2
        self.x = torch.where(halve.view(-1, 1, 1, 1), self.x_best, self.x)
        self.grad = torch.where(halve.view(-1, 1, 1, 1), self.grad_best, self.grad)
        self.halved_at_check, self.best_at_check = halve, self.loss_best.clone()
        self.losses = [self.losses[-1]]


TARGETING = {
    "logits": lambda run, images, labels, rng: targets_by_logits(run.model, images, labels, rng),
    "linear": lambda run, images, labels, rng: targets_by_linear_estimate(
        run.model, images, labels, rng, norm=run.norm
    ),
}
