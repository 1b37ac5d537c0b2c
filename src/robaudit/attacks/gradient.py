"""Losses and Expectation over Transformation (EOT) gradients of an attacked pipeline.

EOT, as robaudit computes it: for ``draws`` independent forward passes (draws of the pipeline's randomness), the
gradient of the per-draw loss summed over the batch, averaged over the draws -- the gradient of the *expected loss*
E_draw[L(f_draw(x), y)], estimated by its sample mean (Athalye et al. 2018). It is not the gradient of the loss of
averaged logits, which differs for any non-linear loss. Each draw is backpropagated on its own, so memory holds
one draw's graph at a time.

Gradient grafting (DiffHammer, Wang et al. NeurIPS 2024), for a pipeline classifier(purifier(x)) whose purifier is
stochastic: the classifier's gradients at ``draws`` purified draws u_i are averaged, g = mean_i dL/du (u_i), and g is
sent back through ``graft_draws`` fresh purifier draws, mean_j J_purifier(x; draw_j)^T g. The purifier runs backward
``graft_draws`` times instead of ``draws`` times. It is exactly the EOT gradient when the purifier's Jacobian does not
depend on its draw (a deterministic purifier, or one whose noise is additive), and an estimate of it otherwise; the
candidates it yields are judged on the true pipeline like any other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.attacks.selection import Verdict, draw, verdict_of
from robaudit.sample_rng import SampleRNG

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits (N, K), labels (N,)) -> per-sample loss (N,)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (N,)."""
    return F.cross_entropy(logits, labels, reduction="none")


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample margin z_y - max_{i != y} z_i (N,); negative means misclassified (Carlini & Wagner's f)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -torch.inf).amax(1)
    return true - others


def eot_gradient(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, loss: Loss, draws: int, rng: SampleRNG
) -> tuple[torch.Tensor, Verdict, torch.Tensor]:
    """EOT gradient (N, C, H, W) of ``loss`` at ``images`` over ``draws`` draws, the verdict of those draws and the
    mean loss (N,). The draws come from the samples' own streams ``rng``. A pipeline set to graft (``graft_draws``)
    gets the grafted estimate."""
    if getattr(model, "graft_draws", 0):
        return grafted_gradient(model, images, labels, loss=loss, draws=draws, rng=rng)
    x = images.detach().requires_grad_(True)
    grad = torch.zeros_like(x)
    total = torch.zeros(len(labels), device=images.device)
    logits = []
    for _ in range(draws):
        with torch.enable_grad():
            z = draw(model, x, rng)
            value = loss(z, labels)
            grad += torch.autograd.grad(value.sum(), x)[0]
        total += value.detach()
        logits.append(z.detach())
    return grad / draws, verdict_of(logits, labels), total / draws


def grafted_gradient(
    pipeline: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, loss: Loss, draws: int, rng: SampleRNG
) -> tuple[torch.Tensor, Verdict, torch.Tensor]:
    """The grafted EOT gradient (N, C, H, W) of ``loss`` through ``pipeline`` (a ``Pipeline`` with a purifier and
    ``graft_draws``), the verdict of its ``draws`` draws and their mean loss (N,)."""
    x = images.detach().requires_grad_(True)
    mean_grad = torch.zeros_like(x)
    total = torch.zeros(len(labels), device=images.device)
    logits = []
    for _ in range(draws):
        with torch.no_grad():
            purified = pipeline.purify(x, rng)
        purified = purified.detach().requires_grad_(True)
        with torch.enable_grad():
            z = pipeline.classify(purified, rng)
            value = loss(z, labels)
            mean_grad += torch.autograd.grad(value.sum(), purified)[0]
        total += value.detach()
        logits.append(z.detach())
    mean_grad /= draws
    grad = torch.zeros_like(x)
    for _ in range(pipeline.graft_draws):
        with torch.enable_grad():
            grad += torch.autograd.grad(pipeline.purify(x, rng), x, grad_outputs=mean_grad)[0]
    return grad / pipeline.graft_draws, verdict_of(logits, labels), total / draws
