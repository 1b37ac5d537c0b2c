"""The loss trace of an iterative attack, and the indicator of incomplete optimization read from it for free.

Pintor et al. (NeurIPS 2022, "Indicators of Attack Failure") flag a sample whose attack stopped while its loss was
still improving: rescale the sample's loss trace to [0, 1] by its own minimum and maximum, keep the best value so far
(the attack maximizes its loss here), and flag the sample when that best value still moved by more than
``THRESHOLD`` (5% of the trace's range) over the last ``WINDOW`` (10) steps. Such a sample is the one that more
iterations may break, so the convergence check always re-attacks it.

On a randomized pipeline each step's loss is an EOT estimate over a few draws, and its noise alone keeps lifting a
running best (the last of 20 noisy values is a new record one time in 20). There the trace is first averaged over a
sliding window of ``SMOOTHING`` (5) steps, which keeps a real trend and damps the noise; a deterministic pipeline's
trace is read as it is.
"""

from __future__ import annotations

import torch

WINDOW = 10  # steps at the end of a run whose progress is read
THRESHOLD = 0.05  # progress over the window, as a share of the trace's range, that flags a sample
SMOOTHING = 5  # steps a randomized pipeline's trace is averaged over before it is read


class LossTrace:
    """Per-sample losses of one run: ``record(index, loss)`` after each step on the samples ``index``; samples not in
    ``index`` repeat their last value (a settled sample's trace is flat from there)."""

    def __init__(self, n: int, device: torch.device, *, smoothing: int = 1) -> None:
        self.last = torch.full((n,), torch.nan, device=device)
        self.rows: list[torch.Tensor] = []
        self.smoothing = smoothing

    def record(self, index: torch.Tensor, loss: torch.Tensor) -> None:
        """Add one step: ``loss`` (len(index),) of the samples ``index``."""
        self.last = self.last.clone()
        self.last[index] = loss.detach().float()
        self.rows.append(self.last)

    def incomplete(self) -> torch.Tensor:
        """(N,) bool: samples whose optimization was still progressing at the end (``incomplete_optimization``)."""
        if not self.rows:
            return torch.zeros_like(self.last, dtype=torch.bool)
        return incomplete_optimization(smoothed(torch.stack(self.rows, dim=1), self.smoothing))


def smoothed(losses: torch.Tensor, window: int) -> torch.Tensor:
    """(N, T) traces averaged over a trailing window of ``window`` steps (fewer at the start); NaN stays NaN."""
    if window <= 1:
        return losses
    known = (~losses.isnan()).float()
    values = torch.nan_to_num(losses)
    total, count = values.cumsum(dim=1), known.cumsum(dim=1)
    total[:, window:] = total[:, window:] - total[:, :-window].clone()
    count[:, window:] = count[:, window:] - count[:, :-window].clone()
    return torch.where(known.bool(), total / count.clamp_min(1), losses)


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
