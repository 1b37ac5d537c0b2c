"""Training loops: classifiers (seeded, with a progress bar and validation accuracy per epoch)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from rich.markup import escape

from robaudit.data import ImageSet
from robaudit.models.architectures import architecture_for
from robaudit.models.classifiers import ModelCard, NormalizedClassifier, create_classifier
from robaudit.models.recipe import ClassifierRecipe
from robaudit.progress import console
from robaudit.rng.seeding import derive_seed, isolated_global_rng
from robaudit.training.loop import train_epochs


@torch.no_grad()
def accuracy(model: torch.nn.Module, dataset: ImageSet, *, batch_size: int = 256, device: str = "cpu") -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``dataset``."""
    model.eval()
    correct = 0
    for start, stop in dataset.batches(batch_size):
        logits = model(dataset.images[start:stop].to(device))
        correct += int((logits.argmax(1).cpu() == dataset.labels[start:stop]).sum())
    return correct / max(1, len(dataset))


def make_card(train_set: ImageSet, recipe: ClassifierRecipe, num_classes: int) -> ModelCard:
    """The card of a new classifier for ``train_set``: architecture sized for the images, measured normalization."""
    channels, height, _ = train_set.shape
    arch, kwargs = architecture_for(recipe.arch, channels=channels, image_size=height)
    kwargs.update(recipe.arch_kwargs)
    if recipe.normalize:
        mean = train_set.images.mean(dim=(0, 2, 3)).tolist()
        std = train_set.images.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()
    else:
        mean, std = [0.0] * channels, [1.0] * channels
    return ModelCard(
        arch=arch,
        arch_kwargs=kwargs,
        num_classes=num_classes,
        class_names=list(train_set.class_names),
        input_size=list(train_set.shape),
        mean=[round(m, 6) for m in mean],
        std=[round(s, 6) for s in std],
    )


def warmup_cosine(optimizer: torch.optim.Optimizer, recipe: ClassifierRecipe, steps_per_epoch: int) -> Any:
    """A linear warmup over ``recipe.warmup_epochs``, then a cosine decay to zero, stepped once per batch."""
    total = recipe.epochs * steps_per_epoch
    warmup = recipe.warmup_epochs * steps_per_epoch

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def train_classifier(
    train_set: ImageSet,
    val_set: ImageSet | None,
    *,
    recipe: ClassifierRecipe,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[NormalizedClassifier, list[dict[str, float]]]:
    """Train a classifier on ``train_set`` with AdamW and a warmup+cosine schedule.

    Returns the model (in eval mode, on the CPU) and the per-epoch history (loss, train/val accuracy).
    """
    num_classes = max(len(train_set.class_names), int(train_set.labels.max()) + 1)
    card = make_card(train_set, recipe, num_classes)
    with isolated_global_rng(derive_seed(seed, "classifier-init")):
        model = create_classifier(card)
    model.to(device)
    data_gen = torch.Generator().manual_seed(derive_seed(seed, "classifier-data"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / recipe.batch_size)
    scheduler = warmup_cosine(optimizer, recipe, steps_per_epoch)
    after_epoch, history = validation_log(model, val_set, device=device)

    def step_loss(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return F.cross_entropy(model(images), labels, label_smoothing=recipe.label_smoothing)

    start_time = time.time()
    train_epochs(
        model,
        train_set,
        step_loss,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=data_gen,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        device=device,
        description="train classifier",
        max_shift=recipe.max_shift,
        step_rng=lambda epoch, step: isolated_global_rng(derive_seed(seed, "classifier-step", epoch, step), device),
        after_epoch=after_epoch,
    )
    model.cpu()
    card.training = {
        "recipe": recipe.to_dict(),
        "seed": seed,
        "data": train_set.description,
        "epochs": recipe.epochs,
        "history": history,
        "seconds": round(time.time() - start_time, 1),
    }
    console.print(
        f"trained {escape(card.arch)} in {card.training['seconds']} s; "
        + (epoch_status(history[-1]) if history else "")
    )
    return model, history


def validation_log(
    model: torch.nn.Module, val_set: ImageSet | None, *, device: str
) -> tuple[Callable[[int, float], str], list[dict[str, float]]]:
    """The training loop's after-epoch hook, which validates on ``val_set`` when given, and the history it fills
    (one record per epoch: epoch, loss, val_accuracy)."""
    history: list[dict[str, float]] = []

    def after_epoch(epoch: int, loss: float) -> str:
        record = {"epoch": epoch + 1, "loss": loss}
        if val_set is not None:
            record["val_accuracy"] = accuracy(model, val_set, device=device)
        history.append(record)
        return epoch_status(record)

    return after_epoch, history


def epoch_status(record: dict[str, float]) -> str:
    """``loss 0.523  val acc 0.989`` for an epoch's record."""
    return f"loss {record['loss']:.3f}" + (
        f"  val acc {record['val_accuracy']:.3f}" if "val_accuracy" in record else ""
    )
