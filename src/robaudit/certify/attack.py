"""SmoothAdv (Salman et al. 2019): L2 PGD on the soft smoothed classifier, the empirical side of the bracket.

The attack ascends the cross-entropy of the noise-averaged softmax, ``-log mean_j softmax(f(denoise(x' + sigma *
noise_j)))_y``, with ``eot`` fresh noise draws per step (every gradient goes through the one-shot denoiser), a
normalized L2 step, and projection onto the L2 ball of radius ``eps`` and onto [0, 1]. The adversarial image is then
judged by Cohen et al.'s PREDICT over the smoothed classifier's own draws: the smoothed classifier *is* the vote, so
no worst-of-N applies. Every draw is seeded per sample and step: the batch size changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from robaudit.attacks.selection import project
from robaudit.certify.smoothing import SmoothedClassifier
from robaudit.rng.seeding import derive_seed, generator


def smooth_adv(
    smoothed: SmoothedClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    seeds: Sequence[int],
    *,
    eps: float,
    steps: int,
    eot: int,
) -> torch.Tensor:
    """Adversarial images (N, C, H, W) in [0, 1] within L2 distance ``eps`` of ``images``, from ``steps`` steps of
    size ``2.5 * eps / steps`` against ``smoothed`` with ``eot`` noise draws each; sample i's draws from
    ``seeds[i]``."""
    per_call = max(1, smoothed.batch_size // eot)
    chunks = [
        attack_chunk(
            smoothed,
            (images[i : i + per_call], labels[i : i + per_call], seeds[i : i + per_call]),
            eps=eps,
            steps=steps,
            eot=eot,
        )
        for i in range(0, len(images), per_call)
    ]
    return torch.cat(chunks) if chunks else images.clone()


def attack_chunk(
    smoothed: SmoothedClassifier,
    chunk: tuple[torch.Tensor, torch.Tensor, Sequence[int]],
    *,
    eps: float,
    steps: int,
    eot: int,
) -> torch.Tensor:
    """SmoothAdv on one ``chunk`` of samples (images, labels, seeds), all its rows in one call per step."""
    images, labels, seeds = chunk
    shape = images.shape[1:]
    delta = torch.zeros_like(images)
    step_size = 2.5 * eps / max(1, steps)
    for step in range(steps):
        noise = torch.cat(
            [torch.randn((eot, *shape), generator=generator(derive_seed(s, "smoothadv", step))) for s in seeds]
        ).to(images.device)
        x = (images + delta).requires_grad_(True)
        probabilities = F.softmax(smoothed.logits(x.repeat_interleave(eot, 0), noise), 1)
        averaged = probabilities.view(len(images), eot, -1).mean(1)
        loss = -torch.log(averaged.gather(1, labels.view(-1, 1)).clamp_min(1e-12)).sum()
        (gradient,) = torch.autograd.grad(loss, x)
        norms = gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * len(shape)))
        delta = project(images + delta + step_size * gradient / norms, images, norm="L2", eps=eps) - images
    return (images + delta).detach()
