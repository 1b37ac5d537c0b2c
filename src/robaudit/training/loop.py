"""One minibatch loop for every network robaudit trains: classifiers (``models.training``), purifier networks
(``purifiers.training``) and distilled students (``distill.loop``). The caller brings the loss, the optimizer and its
schedule; the loop owns the rest: the epoch order and augmentation drawn from one seeded generator, the per-step
seeding of randomness inside the network, device moves, the progress bar and the per-epoch mean losses."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.progress import progress_bar

StepLoss = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each (C, H, W) image of (N, C, H, W) by up to ``max_shift`` pixels (zero padding)."""
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    rows = offsets[:, 0, None] + torch.arange(h)  # (N, H)
    cols = offsets[:, 1, None] + torch.arange(w)  # (N, W)
    index = torch.arange(n)[:, None, None]
    return padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def train_epochs(
    network: nn.Module,
    train_set: Any,
    step_loss: StepLoss,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    epochs: int,
    batch_size: int,
    device: str,
    description: str,
    max_shift: int | None = None,
    step_rng: Callable[[int, int], contextlib.AbstractContextManager] | None = None,
    after_epoch: Callable[[int, float], str] | None = None,
) -> list[float]:
    """Minimise ``step_loss(images (B, C, H, W), labels (B,), generator)`` over ``epochs`` passes of ``train_set``
    (an ImageSet) in orders drawn from ``generator``; returns the mean loss of each epoch; leaves ``network`` in eval
    mode.

    ``max_shift``: translate each batch by up to that many pixels (drawn from ``generator``; None: no augmentation
    step at all). ``step_rng(epoch, step)``: a context seeding randomness inside the network for one step.
    ``after_epoch(epoch, mean loss)``: the progress bar's status (default ``loss x.xxxx``), e.g. after validating.
    """
    steps = max(1, math.ceil(len(train_set) / batch_size))
    losses = []
    with progress_bar() as bar:
        task = bar.add_task(description, total=epochs, status="")
        for epoch in range(epochs):
            network.train()
            order = torch.randperm(len(train_set), generator=generator)
            total = 0.0
            for i in range(steps):
                index = order[i * batch_size : (i + 1) * batch_size]
                images = train_set.images[index]
                if max_shift is not None:
                    images = random_shift(images, max_shift, generator)
                images, labels = images.to(device), train_set.labels[index].to(device)
                with step_rng(epoch, i) if step_rng else contextlib.nullcontext():
                    loss = step_loss(images, labels, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item() * len(index)
            losses.append(total / len(train_set))
            status = after_epoch(epoch, losses[-1]) if after_epoch else f"loss {losses[-1]:.4f}"
            bar.update(task, advance=1, status=status)
    network.eval()
    return losses
