"""A shared minibatch loop for purifier networks: seeded shuffling, AdamW, a progress bar."""

from __future__ import annotations

from collections.abc import Callable

import torch

from robaudit.data import ImageSet
from robaudit.progress import progress_bar
from robaudit.seeding import derive_seed


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
    """Minimise ``loss_fn(images (B, C, H, W), labels (B,), generator)`` over ``epochs``; returns epoch losses."""
    generator = torch.Generator().manual_seed(derive_seed(seed, description, "data"))
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=0.0)
    steps = max(1, (len(train_set) + batch_size - 1) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps, pct_start=0.1)
    losses = []
    network.train()
    with progress_bar() as bar:
        task = bar.add_task(description, total=epochs, status="")
        for _ in range(epochs):
            order = torch.randperm(len(train_set), generator=generator)
            total = 0.0
            for i in range(steps):
                index = order[i * batch_size : (i + 1) * batch_size]
                images = train_set.images[index].to(device)
                labels = train_set.labels[index].to(device)
                loss = loss_fn(images, labels, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item() * len(index)
            losses.append(total / len(train_set))
            bar.update(task, advance=1, status=f"loss {losses[-1]:.4f}")
    network.eval()
    return losses


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
