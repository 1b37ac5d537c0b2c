"""The data as a model sees it (its evaluation transform, its class indices) and the pre-flight checks that a
dataset fits a model: labels within its classes, image size and channels."""

from __future__ import annotations

import torch
from torch import nn

from robaudit.data import ImageSet
from robaudit.data.classmap import align_classes
from robaudit.data.spec import DataSpec
from robaudit.data.transforms import EvalTransform
from robaudit.errors import CheckpointError, DataError, first_line


def data_for_model(model: nn.Module, spec: DataSpec) -> ImageSet:
    """Load ``spec`` (streamed) as ``model`` sees it: through its evaluation transform when its card has one, with a
    card-less model's class count read from the data, labels in the model's class indices, and checked to fit."""
    dataset = spec.load(stream=True, transform=model_transform(model))
    return fit_to_model(model, dataset, class_map=spec.class_map)


def model_transform(model: nn.Module) -> EvalTransform | None:
    """The evaluation transform ``model``'s card describes (pretrained models), else None."""
    preprocess = getattr(model.card, "preprocess", None)
    return EvalTransform(preprocess) if preprocess else None


def fit_to_model(model: nn.Module, dataset: ImageSet, *, class_map: str | None) -> ImageSet:
    """``dataset`` with a card-less model's class count read from it, labels in the model's class indices, checked
    to fit ``model``."""
    settle_class_count(model, dataset)
    dataset = align_classes(dataset, model.card.class_names, class_map=class_map)
    check_compatible(model, dataset)
    return dataset


@torch.no_grad()
def settle_class_count(model: nn.Module, dataset: ImageSet) -> None:
    """Fill an unknown class count (a card-less TorchScript or pickled module) from one forward pass on the data's
    first image; the card's ``origin`` says so."""
    card = model.card
    if card.num_classes:
        return
    try:
        logits = model.eval()(dataset.images[:1].float())
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign module on the probe is reported as one line
        raise CheckpointError(
            f"probing the model's class count on {dataset.ids[0]!r} failed ({first_line(exc)}); pass --num-classes"
        ) from None
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise CheckpointError(f"the model returns shape {tuple(logits.shape)}, not (N, classes); pass --num-classes")
    card.num_classes = int(logits.shape[1])
    card.class_names = [str(i) for i in range(card.num_classes)]
    card.origin = {**card.origin, "num_classes": f"probe: one forward pass on {dataset.ids[0]!r}"}


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
