"""Losses and Expectation over Transformation (EOT) gradients of an attacked pipeline.

EOT, as robaudit computes it: for ``draws`` independent forward passes (draws of the pipeline's randomness), the
gradient of the per-draw loss summed over the batch, averaged over the draws -- the gradient of the *expected loss*
E_draw[L(f_draw(x), y)], estimated by its sample mean (Athalye et al. 2018). It is not the gradient of the loss of
averaged logits, which differs for any non-linear loss. The N x D (sample, draw) rows run in the batch dimension as
the model's ``DrawLayout`` says (``draw_layout``: all at once, in chunks of rows, or draw by draw), every row from
its own stream, and each sample's per-draw gradients are averaged in draw order, so the result is the same whatever
the layout.

Gradient grafting (DiffHammer, Wang et al. NeurIPS 2024), for a pipeline classifier(purifier(x)) whose purifier is
randomized: the classifier's gradients at ``draws`` purified draws u_i are averaged, g = mean_i dL/du (u_i), and g is
sent back through ``graft_draws`` fresh purifier draws, mean_j J_purifier(x; draw_j)^T g. The purifier runs backward
``graft_draws`` times instead of ``draws`` times. It is exactly the EOT gradient when the purifier's Jacobian does not
depend on its draw (a deterministic purifier, or one whose noise is additive), and an estimate of it otherwise; the
candidates it yields are judged on the true pipeline like any other.

Selective EOT (``mode="selective"``, after DiffHammer's selective attack): instead of the mean over draws, the draws
are weighted by softmax_i(L_i / T), T = 1, the gradient of the smooth maximum T log sum_i exp(L_i / T) of the per-draw
losses. With the cross-entropy, a draw's weight is proportional to 1 / p_y: the draws in which the sample is closest to
being wrong dominate, so the attack aims at "wrong in at least one of N draws" (the worst-of-N verdict) rather than at
the mean. On a deterministic pipeline every draw is the same and both modes give the same gradient. The weights are
accumulated in draw order with a running maximum.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.attacks.selection import Verdict, draw, verdict_of
from robaudit.errors import ConfigError
from robaudit.rng.draw_layout import DrawLayout, by_draw, draw_streams, layout_of, over_rows, rows_of
from robaudit.rng.sample_rng import SampleRNG

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits (N, K), labels (N,)) -> per-sample loss (N,)
EOT_MODES = ("mean", "selective")
SELECTIVE_TEMPERATURE = 1.0


def check_eot_mode(mode: str) -> str:
    """``mode`` if it is an EOT mode, else a ConfigError naming the modes."""
    if mode not in EOT_MODES:
        raise ConfigError(f"eot_mode must be one of {', '.join(EOT_MODES)}, got {mode!r}")
    return mode


class DrawAverage:
    """The EOT average of per-draw gradients: the plain mean (``mode="mean"``) or softmax_i(L_i / T)-weighted
    (``mode="selective"``), accumulated one draw at a time; with ``spread``, also their ``SignResolution``."""

    def __init__(self, mode: str, *, spread: bool = False) -> None:
        self.selective = check_eot_mode(mode) == "selective"
        self.total: torch.Tensor | None = None  # sum_i w_i g_i, w_i relative to exp(top / T)
        self.weight: torch.Tensor | None = None  # sum_i w_i (N,)
        self.top: torch.Tensor | None = None  # the running maximum of L_i / T (N,)
        self.spread = SignResolution() if spread else None  # how well the draws resolve the gradient's sign

    def add(self, grad: torch.Tensor, value: torch.Tensor) -> None:
        """One draw's gradient (N, ...) and its per-sample loss (N,)."""
        logit = value.detach() / SELECTIVE_TEMPERATURE if self.selective else torch.zeros_like(value.detach())
        if self.spread is not None:
            self.spread.add(grad)
        if self.total is None:
            self.total, self.weight, self.top = grad.clone(), torch.ones_like(logit), logit
            return
        if not self.selective:  # every weight is exp(0) = 1: the same sums, in the same order, in one operation
            self.total += grad
            self.weight += 1
            return
        top = torch.maximum(self.top, logit)
        old, new = torch.exp(self.top - top), torch.exp(logit - top)
        shape = (-1,) + (1,) * (grad.dim() - 1)
        self.total = self.total * old.view(shape) + grad * new.view(shape)
        self.weight, self.top = self.weight * old + new, top

    def result(self) -> torch.Tensor:
        """The weighted mean gradient (N, ...)."""
        return self.total / self.weight.view((-1,) + (1,) * (self.total.dim() - 1))


SIGN_Z = 2.0  # standard errors of the draws' mean beyond which a coordinate's sign counts as resolved


class SignResolution:
    """Running per-coordinate mean and sum of squares of per-draw gradients (Welford), read as the share of each
    sample's coordinates whose mean lies beyond ``SIGN_Z`` standard errors of it: how much of a Linf step's sign
    the draws resolve. One draw resolves nothing (no spread to read: the share is 0)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def add(self, grad: torch.Tensor) -> None:
        """One draw's gradient (N, ...)."""
        grad = grad.detach().float()
        self.count += 1
        if self.mean is None:
            self.mean, self.squares = grad.clone(), torch.zeros_like(grad)
            return
        delta = grad - self.mean
        self.mean += delta / self.count
        self.squares += delta * (grad - self.mean)

    def resolved_share(self) -> torch.Tensor:
        """(N,): per sample, the share of coordinates with |mean| > SIGN_Z * sd / sqrt(draws)."""
        if self.mean is None or self.count < 2:
            return torch.zeros(0 if self.mean is None else self.mean.shape[0])
        error = (self.squares / (self.count - 1) / self.count).sqrt()
        resolved = self.mean.abs() > SIGN_Z * error
        return resolved.flatten(1).float().mean(1)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (N,)."""
    return F.cross_entropy(logits, labels, reduction="none")


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample margin z_y - max_{i != y} z_i (N,); negative means misclassified (Carlini & Wagner's f)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -torch.inf).amax(1)
    return true - others


def averaged_draws(
    leaf_and_logits: Callable[[torch.Tensor, SampleRNG | None], tuple[torch.Tensor, torch.Tensor]],
    images: torch.Tensor,
    labels: torch.Tensor,
    streams: Callable[[torch.Tensor], SampleRNG | None],
    *,
    loss: Loss,
    draws: int,
    mode: str,
    layout: DrawLayout,
    resolution: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, Verdict, torch.Tensor]:
    """Over ``draws`` draws of each sample, run as rows of ``layout`` (``leaf_and_logits(images of the rows, their
    streams)`` -> a leaf tensor and the logits (R, K) computed from it): the gradient of ``loss`` at the leaf averaged
    over each sample's draws as ``mode`` says, in draw order, the verdict of the draws and their mean loss (N,).
    ``resolution``, when given, receives the share of each sample's coordinates whose sign the draws resolve (N,)
    (``SignResolution``)."""

    def rows_pass(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sample = rows // draws
        with torch.enable_grad():
            leaf, z = leaf_and_logits(rows_of(images, rows, draws), streams(rows))
            value = loss(z, labels[sample])
            grad = torch.autograd.grad(value.sum(), leaf)[0]
        return grad, value.detach(), z.detach()

    grads, values, logits = over_rows(rows_pass, len(labels), draws, layout, images.device)
    average = DrawAverage(mode, spread=resolution is not None)
    total = torch.zeros(len(labels), device=labels.device)
    for grad, value in zip(by_draw(grads, draws), by_draw(values, draws), strict=True):
        average.add(grad, value)
        total += value
    if average.spread is not None:
        resolution.append(average.spread.resolved_share())
    return average.result(), verdict_of(by_draw(logits, draws), labels), total / draws


def eot_gradient(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    loss: Loss,
    draws: int,
    rng: SampleRNG,
    mode: str = "mean",
    resolution: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, Verdict, torch.Tensor]:
    """EOT gradient (N, C, H, W) of ``loss`` at ``images`` over ``draws`` draws (averaged as ``mode`` says), the
    verdict of those draws and the mean loss (N,). Every (sample, draw) draws from its own stream, split from the
    sample's ``rng``; the draws run in the batch dimension as ``model``'s ``layout`` says (``draw_layout``). A
    pipeline set to graft (``graft_draws``) gets the grafted estimate (``grafted_gradient``). ``resolution``: see
    ``averaged_draws`` (a grafted estimate reports none)."""
    layout = layout_of(model)
    if getattr(model, "graft_draws", 0):
        return grafted_gradient(model, images, labels, rng, loss=loss, draws=draws, mode=mode, layout=layout)

    def leaf_and_logits(x: torch.Tensor, streams: SampleRNG | None) -> tuple[torch.Tensor, torch.Tensor]:
        leaf = x.detach().requires_grad_(True)
        return leaf, draw(model, leaf, streams)

    streams = draw_streams(model, rng, draws)
    settings = {"loss": loss, "draws": draws, "mode": mode, "layout": layout, "resolution": resolution}
    return averaged_draws(leaf_and_logits, images, labels, streams, **settings)


def grafted_gradient(
    pipeline: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    rng: SampleRNG,
    *,
    loss: Loss,
    draws: int,
    mode: str,
    layout: DrawLayout,
) -> tuple[torch.Tensor, Verdict, torch.Tensor]:
    """The grafted EOT gradient (N, C, H, W) at ``images`` through ``pipeline`` (a ``Pipeline`` with a purifier and
    ``graft_draws``): the classifier's gradients at ``draws`` purified draws are averaged (``averaged_draws``), then
    sent back through ``graft_draws`` purifier draws, each row from its own stream. Also the verdict of the draws
    and their mean loss (N,)."""

    def purified_draw(x: torch.Tensor, streams: SampleRNG | None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            purified = pipeline.purify(x, streams)
        purified = purified.detach().requires_grad_(True)
        return purified, pipeline.classify(purified, streams)

    streams = draw_streams(pipeline, rng, draws)
    mean_grad, verdict, mean_loss = averaged_draws(
        purified_draw, images, labels, streams, loss=loss, draws=draws, mode=mode, layout=layout
    )
    grafts = pipeline.graft_draws
    graft_streams = draw_streams(pipeline, rng, grafts)

    def graft_rows(rows: torch.Tensor) -> tuple[torch.Tensor]:
        sample = rows // grafts
        with torch.enable_grad():
            x = images[sample].detach().requires_grad_(True)
            return (torch.autograd.grad(pipeline.purify(x, graft_streams(rows)), x, grad_outputs=mean_grad[sample])[0],)

    (rows,) = over_rows(graft_rows, len(labels), grafts, layout, images.device)
    grad = torch.zeros_like(images)
    for part in by_draw(rows, grafts):
        grad += part
    return grad / grafts, verdict, mean_loss
