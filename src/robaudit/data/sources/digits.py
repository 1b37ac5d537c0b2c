"""The embedded default: scikit-learn's digits, offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robaudit.data.imageset import ImageSet, resize
from robaudit.data.sources import DATASETS
from robaudit.data.sources._arrays import check_split


def example(root: Path) -> str:
    """The ``--data`` text of a tiny instance (the contract tests' fixture): digits needs no files."""
    return "digits"


@DATASETS.register(
    "digits", description="scikit-learn's 8x8 handwritten digits (ships offline), 10 classes", example=example
)
def digits(*, split: str = "test", image_size: int = 32, split_seed: int = 0) -> ImageSet:
    """The embedded default: 1797 digits, upsampled to ``image_size``; a fixed seeded 70/10/20 train/val/test split."""
    from sklearn.datasets import load_digits

    check_split(split, ["train", "val", "test"], description="digits")
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (1797, 1, 8, 8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    n_test, n_val = int(0.2 * len(order)), int(0.1 * len(order))
    parts = {"test": order[:n_test], "val": order[n_test : n_test + n_val], "train": order[n_test + n_val :]}
    index = parts[split].sort().values
    return ImageSet(
        images=resize(images[index], image_size),
        labels=labels[index],
        ids=[f"digits-{i:04d}" for i in index.tolist()],
        class_names=[str(i) for i in range(10)],
        description=f"digits ({split})",
    )
