"""`purify` as a library call: purify every image of a dataset, keeping ids, labels and provenance."""

from __future__ import annotations

import torch

from robaudit.data import ImageSet
from robaudit.progress import progress_bar
from robaudit.purifiers.base import Purifier
from robaudit.seeding import derive_seed


@torch.no_grad()
def purify_dataset(
    purifier: Purifier, dataset: ImageSet, *, seed: int, batch_size: int, device: torch.device
) -> ImageSet:
    """Purified copies (float32, [0, 1]) of every image; randomness seeded per batch from ``seed``."""
    purifier.eval().to(device)
    outputs = []
    batches = list(dataset.batches(batch_size))
    with progress_bar() as bar:
        task = bar.add_task("purify", total=len(batches), status="")
        for start, stop in batches:
            images = dataset.images[start:stop].to(device=device, dtype=torch.float32)
            generator = torch.Generator(device=device).manual_seed(derive_seed(seed, "purify", start))
            outputs.append(purifier(images, generator=generator).cpu())
            bar.advance(task)
    return ImageSet(
        images=torch.cat(outputs),
        labels=dataset.labels.clone(),
        ids=list(dataset.ids),
        class_names=list(dataset.class_names),
        description=f"purified {dataset.description}",
    )
