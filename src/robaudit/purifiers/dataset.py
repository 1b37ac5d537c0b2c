"""`purify` as a library call: purify every image of a dataset, keeping ids, labels and provenance."""

from __future__ import annotations

import torch

from robaudit.data import ImageSet
from robaudit.data.imageset import map_images
from robaudit.purifiers.base import Purifier
from robaudit.rng.seeding import derive_seed


@torch.no_grad()
def purify_dataset(
    purifier: Purifier, dataset: ImageSet, *, seed: int, batch_size: int, device: torch.device
) -> ImageSet:
    """Purified copies (float32, [0, 1]) of every image; randomness seeded per batch from ``seed``."""
    purifier.eval().to(device)

    def purify(start: int, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=device).manual_seed(derive_seed(seed, "purify", start))
        return purifier(images, generator=generator)

    return map_images(
        dataset,
        purify,
        batch_size=batch_size,
        device=device,
        task="purify",
        description=f"purified {dataset.description}",
    )
