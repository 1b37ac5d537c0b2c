"""Adversarial copies of a whole dataset (``robaudit attack``), each sample from its own random stream."""

from __future__ import annotations

import torch
from torch import nn

from robaudit.attacks.base import ResolvedAttack, build_attack, prepare_model, run_attack
from robaudit.data import ImageSet
from robaudit.data.imageset import map_images
from robaudit.rng.sample_rng import SampleRNG
from robaudit.rng.seeding import derive_seed


def attack_dataset(
    model: nn.Module,
    dataset: ImageSet,
    attack: ResolvedAttack,
    *,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> ImageSet:
    """Adversarial copies of every sample of ``dataset`` (float32, in the eps-ball), with the same ids and labels.

    Sample ``i``'s randomness is seeded from (``seed``, attack label, sample id): the batch size changes nothing.
    """
    prepare_model(model)
    built = build_attack(attack, model, num_classes=model.card.num_classes, seed=derive_seed(seed, attack.label))

    def perturb(start: int, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ids = dataset.ids[start : start + len(labels)]
        rng = SampleRNG.for_samples(seed, ids, "attack", attack.label, device=images.device)
        return run_attack(built, attack, images, labels, rng=rng, seed=derive_seed(seed, "global", attack.label))

    return map_images(
        dataset,
        perturb,
        batch_size=batch_size,
        device=device,
        task=f"attack {attack.label}",
        description=f"{attack.label} adversarial examples of {dataset.description}",
    )
