"""Pre-flight checks that a dataset fits a model: labels within its classes, image size and channels."""

from __future__ import annotations

from torch import nn

from robaudit.data import ImageSet
from robaudit.errors import DataError


def check_compatible(model: nn.Module, dataset: ImageSet) -> None:
    """Raise a DataError naming the mismatch between ``dataset`` and ``model.card`` and how to fix it."""
    card = model.card
    if len(dataset.labels):
        bad = ((dataset.labels < 0) | (dataset.labels >= card.num_classes)).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            raise DataError(
                f"{dataset.description}: sample {dataset.ids[i]!r} has label {int(dataset.labels[i])}, outside the "
                f"model's {card.num_classes} classes (0..{card.num_classes - 1}); pass data labelled for this model"
            )
    if not card.input_size:
        return
    channels, height, width = dataset.shape
    want_c, want_h, want_w = card.input_size
    if channels != want_c:
        raise DataError(
            f"{dataset.description}: images have {channels} channel(s) but the model expects {want_c}; "
            f"pass --channels {want_c}"
        )
    if (height, width) != (want_h, want_w):
        raise DataError(
            f"{dataset.description}: images are {height}x{width} but the model expects {want_h}x{want_w}; "
            f"pass --image-size {want_h}"
        )
