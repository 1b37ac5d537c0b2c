"""Training a purifier network: AdamW and a one-cycle schedule over robaudit's one loop (``training.loop``)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from robaudit.data import ImageSet
from robaudit.rng.seeding import derive_seed
from robaudit.training.loop import train_epochs


def fit(
    network: torch.nn.Module,
    train_set: ImageSet,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str,
    description: str,
) -> list[float]:
    """Minimise ``loss_fn(images (B, C, H, W), labels (B,), generator)`` over ``epochs`` with AdamW and a one-cycle
    schedule (``training.loop``); returns epoch losses."""
    generator = torch.Generator().manual_seed(derive_seed(seed, description, "data"))
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=0.0)
    steps = max(1, (len(train_set) + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps, pct_start=0.1)
    return train_epochs(
        network,
        train_set,
        loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=generator,
        epochs=epochs,
        batch_size=batch_size,
        device=device,
        description=description,
    )


def fit_recipe(
    network: torch.nn.Module, train_set: ImageSet, *, recipe, seed: int, device: str, description: str
) -> None:
    """Train ``network.loss`` with the recipe's ``epochs``, ``batch_size`` and ``lr``."""
    fit(
        network,
        train_set,
        network.loss,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        seed=seed,
        device=device,
        description=description,
    )
