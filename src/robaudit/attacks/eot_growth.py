"""EOT draws that grow where the attack stalls on gradient noise, instead of everywhere.

On a randomized pipeline a step follows the sign of an EOT gradient, the mean of D per-draw gradients. Where fewer
than ``RESOLVED_SHARE`` (half) of a sample's coordinates have a mean beyond ``SIGN_Z`` (2) standard errors of its
draws (``attacks.gradient.SignResolution``), most of the step's signs are noise: the attack stalls there however many
steps it takes, and the next step gives that sample twice the draws, up to ``growth`` times the base. Where the signs
are resolved, more draws would confirm the step the sample already takes; they are not drawn. The rule reads the draws
the step already took: it costs no pass. Each sample's draws depend on its own gradients alone, so records stay the
same whatever the batch (the samples of one draw count run as one group, each from its own stream).

What the rule decides, and its two errors, simulated (``tests/attacks/test_eot_growth.py``; 20,000 samples of 64
coordinates at D = 4, and 100,000 when this was written): a gradient that is pure noise (every coordinate's mean 0;
a coordinate passes 2 standard errors by chance 14% of the time) was grown in every sample; one whose coordinates
have a mean of 1.5 standard deviations of a draw (each resolved 82% of the time) in none. The boundary sits near a
mean of one standard deviation, where the mean of 4 draws is 2 standard errors from 0 (grown 15% of the time).
Neither error touches the audit's guarantees: the draws only steer the steps, and verdicts come from selection and
scoring draws as for any attack.

The convergence check's rung on a randomized pipeline is a PGD run at the base EOT growing to 2x (``escalate_pgd``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from robaudit.attacks.gradient import Loss, eot_gradient
from robaudit.attacks.selection import Verdict
from robaudit.rng.sample_rng import SampleRNG

RESOLVED_SHARE = 0.5  # below this share of resolved coordinates a sample's draws double


class GrowingEOT:
    """The EOT gradients of one attack run on ``n`` samples: ``eot`` draws each to start, doubled for a sample after
    a step whose signs its draws left unresolved, up to ``eot * growth`` (``growth`` 1, or ``eot`` 1: fixed)."""

    def __init__(self, model: nn.Module, n: int, *, eot: int, growth: int, mode: str, device: torch.device) -> None:
        self.model, self.eot, self.growth, self.mode = model, eot, max(1, growth), mode
        self.draws = torch.full((n,), eot, dtype=torch.long, device=device)

    def __call__(
        self,
        x: torch.Tensor,
        labels: torch.Tensor,
        index: torch.Tensor,
        rng: SampleRNG,
        loss_of: Callable[[torch.Tensor], Loss],
    ) -> tuple[torch.Tensor, Verdict, torch.Tensor]:
        """For the run's samples ``index`` (M,) at ``x`` (M, C, H, W) with ``labels`` (M,) and their streams ``rng``:
        ``eot_gradient``'s gradient, verdict and mean loss, each sample at its own draw count (``loss_of(index)``:
        the loss of those samples)."""
        if self.growth == 1 or self.eot == 1:
            return eot_gradient(self.model, x, labels, loss=loss_of(index), draws=self.eot, rng=rng, mode=self.mode)
        counts = self.draws[index]
        grad, mean_loss = torch.empty_like(x), torch.empty(len(index), device=x.device)
        correct, loss = torch.empty_like(mean_loss), torch.empty_like(mean_loss)
        for count in sorted(set(counts.tolist())):
            group = (counts == count).nonzero().flatten()
            resolution: list[torch.Tensor] = []
            settings = {"loss": loss_of(index[group]), "draws": count, "mode": self.mode, "resolution": resolution}
            step = eot_gradient(self.model, x[group], labels[group], rng=rng[group], **settings)
            grad[group], verdict, mean_loss[group] = step
            correct[group], loss[group] = verdict.correct_fraction, verdict.loss
            if resolution and len(resolution[0]):
                grow = index[group[resolution[0].to(x.device) < RESOLVED_SHARE]]
                self.draws[grow] = min(count * 2, self.eot * self.growth)
        return grad, Verdict(correct, loss), mean_loss
