"""The loss trace of an iterative attack, and the indicator of incomplete optimization read from it for free.

Pintor et al. (NeurIPS 2022, "Indicators of Attack Failure") flag a sample whose attack stopped while its loss was
still improving: rescale the sample's loss trace to [0, 1] by its own minimum and maximum, keep the best value so far
(the attack maximizes its loss here), and flag the sample when that best value still moved by more than
``THRESHOLD`` (5% of the trace's range) over the last ``WINDOW`` (10) steps. Such a sample is the one that more
iterations may break, so the convergence check always re-attacks it.

On a randomized pipeline each step's loss is an EOT estimate over a few draws, and its noise alone keeps lifting a
running best (the last of 20 noisy values is a new record one time in 20, and a small one crosses 5% of the range
often). There the indicator asks whether the loss still *rises* beyond its noise: the mean of the last half of the
window exceeds the mean of the first half by more than ``NOISE_Z`` (2) standard errors of that difference, estimated
from the two halves themselves (a one-sided two-sample test; measured on Gaussian noise it flags 4% of samples).
The flag only adds samples to the check's seeded draw, whose sizing carries the guarantee, so a flag that misses
costs the evidence nothing.
"""

from __future__ import annotations

import torch

WINDOW = 10  # steps at the end of a run whose progress is read
THRESHOLD = 0.05  # progress over the window, as a share of the trace's range, that flags a sample
NOISE_Z = 2.0  # standard errors a noisy (EOT) trace must rise by over the window to be flagged


class LossTrace:
    """Per-sample losses of one run: ``record(index, loss)`` after each step on the samples ``index``; samples not in
    ``index`` repeat their last value (a settled sample's trace is flat from there). ``noisy``: the losses are EOT
    estimates on a randomized pipeline (``rising_beyond_noise`` reads them)."""

    def __init__(self, n: int, device: torch.device, *, noisy: bool = False) -> None:
        self.last = torch.full((n,), torch.nan, device=device)
        self.rows: list[torch.Tensor] = []
        self.noisy = noisy

    def record(self, index: torch.Tensor, loss: torch.Tensor) -> None:
        """Add one step: ``loss`` (len(index),) of the samples ``index``."""
        self.last = self.last.clone()
        self.last[index] = loss.detach().float()
        self.rows.append(self.last)

    def incomplete(self) -> torch.Tensor:
        """(N,) bool: samples whose optimization was still progressing at the end."""
        if not self.rows:
            return torch.zeros_like(self.last, dtype=torch.bool)
        losses = torch.stack(self.rows, dim=1)
        return rising_beyond_noise(losses) if self.noisy else incomplete_optimization(losses)


def incomplete_optimization(
    losses: torch.Tensor, *, window: int = WINDOW, threshold: float = THRESHOLD
) -> torch.Tensor:
    """(N,) bool from per-sample loss traces ``losses`` (N, T), higher loss = stronger attack: the running best of
    the trace rescaled to [0, 1] rose by more than ``threshold`` over the last ``window`` steps. Steps before a
    sample's first value (NaN) are ignored; a constant trace is never flagged."""
    values = losses.float()
    low = torch.where(values.isnan(), torch.inf, values).amin(dim=1, keepdim=True)
    high = torch.where(values.isnan(), -torch.inf, values).amax(dim=1, keepdim=True)
    span = (high - low).clamp_min(1e-12)
    scaled = torch.where(values.isnan(), torch.zeros_like(values), (values - low) / span)
    best = scaled.cummax(dim=1).values
    tail = best[:, -min(window, best.shape[1]) :]
    moved = tail[:, -1] - tail[:, 0]
    return (moved > threshold) & (high.squeeze(1) > low.squeeze(1))


def rising_beyond_noise(losses: torch.Tensor, *, window: int = WINDOW, z: float = NOISE_Z) -> torch.Tensor:
    """(N,) bool from noisy per-sample loss traces ``losses`` (N, T): over the last ``window`` steps, the second
    half's mean loss exceeds the first half's by more than ``z`` standard errors of the difference. A trace shorter
    than ``window`` steps is flagged (too short to tell)."""
    if losses.shape[1] < window:
        return torch.ones(losses.shape[0], dtype=torch.bool, device=losses.device)
    half = window // 2
    tail = torch.nan_to_num(losses[:, -window:].float())
    first, second = tail[:, :half], tail[:, half:]
    error = (first.var(dim=1) / half + second.var(dim=1) / (window - half)).sqrt()
    return second.mean(dim=1) - first.mean(dim=1) > z * error.clamp_min(1e-12)
