"""Matching a dataset's classes to a model's: by name, or through a ``--class-map`` file; never silently by index
when both sides name their classes differently.

A class-map file is YAML or JSON: ``{DATASET_CLASS: MODEL_CLASS}``, the model class by name or index, e.g.
``{cat: "tabby", dog: 207}``. Every dataset class present in the labels must be mapped.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from robaudit.config import load_yaml
from robaudit.data.imageset import ImageSet
from robaudit.errors import DataError


def _placeholder(names: list[str]) -> bool:
    """True when class names are just their indices ("0", "1", ...): nothing to match by."""
    return all(name == str(i) for i, name in enumerate(names))


def align_classes(dataset: ImageSet, model_classes: list[str], *, class_map: str | None = None) -> ImageSet:
    """``dataset`` with labels in the model's class indices.

    With ``class_map`` the file decides; else identical names (or names that are only indices) keep the labels;
    else every dataset class found among the model's names is relabelled by name; anything else is a DataError
    asking for a class map.
    """
    if class_map is not None:
        return relabel(dataset, model_classes, read_class_map(class_map, model_classes), how=f"class map {class_map}")
    names = list(dataset.class_names)
    if names == list(model_classes[: len(names)]) or _placeholder(names) or _placeholder(list(model_classes)):
        return dataset
    index = {name: i for i, name in enumerate(model_classes)}
    if all(name in index for name in _used(dataset)):
        mapping = {name: index[name] for name in names if name in index}
        return relabel(dataset, model_classes, mapping, how="class names")
    unknown = [name for name in _used(dataset) if name not in index]
    raise DataError(
        f"{dataset.description}: classes {unknown[:4]} are not among the model's classes "
        f"({', '.join(model_classes[:4])}{', ...' if len(model_classes) > 4 else ''}); pass --class-map FILE "
        "mapping each data class to a model class (YAML {data_class: model_class_or_index})"
    )


def _used(dataset: ImageSet) -> list[str]:
    """The class names the labels actually use."""
    return [dataset.class_names[int(i)] for i in torch.unique(dataset.labels)]


def read_class_map(path: str, model_classes: list[str]) -> dict[str, int]:
    """``{data class: model index}`` from a YAML/JSON file whose values are model class names or indices."""
    raw = load_yaml(path)
    index = {name: i for i, name in enumerate(model_classes)}
    mapping = {}
    for data_class, target in raw.items():
        if isinstance(target, int) and 0 <= target < len(model_classes):
            mapping[str(data_class)] = target
        elif str(target) in index:
            mapping[str(data_class)] = index[str(target)]
        else:
            raise DataError(
                f"class map {path}: {data_class!r} -> {target!r} names no model class; use a model class name "
                f"or an index 0..{len(model_classes) - 1}"
            )
    return mapping


def relabel(dataset: ImageSet, model_classes: list[str], mapping: dict[str, int], *, how: str) -> ImageSet:
    """``dataset`` with each label moved to ``mapping[its class name]``; class names become the model's."""
    missing = [name for name in _used(dataset) if name not in mapping]
    if missing:
        raise DataError(f"{how}: data classes {missing[:4]} are not mapped; add them to the class map")
    table = torch.tensor([mapping.get(name, -1) for name in dataset.class_names], dtype=torch.long)
    provenance = {**dataset.provenance, "class_mapping": {"by": how, "map": mapping}}
    return replace(dataset, labels=table[dataset.labels], class_names=list(model_classes), provenance=provenance)
