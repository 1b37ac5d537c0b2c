"""Data loading: registered sources and detected paths, read into float NCHW images in [0, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robaudit.data.imageset import ImageSet, convert_channels, resize
from robaudit.data.sources import DATASETS
from robaudit.data.transforms import EvalTransform
from robaudit.errors import DataError


def detect_source(source: str) -> tuple[str, dict[str, Any]]:
    """Map ``--data`` text to (registered source name, its path parameter): the name of a named source, or a path
    claimed by the first path source (highest ``priority`` first) whose ``detect`` accepts it."""
    named = [entry.name for entry in DATASETS if entry.meta["detect"] is None]
    by_path = sorted((e for e in DATASETS if e.meta["detect"] is not None), key=lambda e: -e.meta["priority"])
    if source in named:
        return source, {}
    path = Path(source)
    kinds = "; ".join(f"{e.name}: {e.description}" for e in by_path)
    if not path.exists():
        raise DataError(
            f"data {source!r} is neither a registered dataset ({', '.join(named)}) nor an existing path; "
            f"pass a name or the path of data robaudit reads ({kinds})"
        )
    for entry in by_path:
        if entry.meta["detect"](path):
            return entry.name, {"path": str(path)}
    what = "file" if path.is_file() else "path"
    raise DataError(f"data {what} {source!r} is of no kind robaudit reads ({kinds}); pass an .npz file or a folder")


def load_dataset(
    source: str,
    *,
    split: str = "test",
    limit: int | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    subset_seed: int | None = None,
    stream: bool = False,
    skip_bad: bool = False,
    transform: EvalTransform | None = None,
    **params: Any,
) -> ImageSet:
    """Load ``source`` (a registered name or a path) and apply the common options.

    limit: keep at most this many samples (the first ones, or a seeded random subset when ``subset_seed`` is set).
    image_size / channels: resize to (image_size, image_size) and convert to 1 or 3 channels.
    stream: leave images on disk and read them batch by batch where the source allows (image folders, robaudit
    datasets, uncompressed .npz); otherwise every image is read into memory.
    skip_bad: leave out unreadable image files (listed in ``provenance["skipped"]``) instead of stopping.
    transform: a model's evaluation transform (``EvalTransform``): images at another size are resized and cropped
    as the model's own pipeline does -- image files as decoded, other sources as tensors -- after ``channels``.
    """
    name, detected = detect_source(source)
    if skip_bad:
        if not DATASETS.get(name).meta.get("skips_bad"):
            raise DataError(f"--skip-bad applies to image folders; {source!r} is a {name} source. Fix the data instead")
        params = {**params, "skip_bad": True}
    transforms_files = transform is not None and DATASETS.get(name).meta.get("transforms_files")
    if transforms_files:
        params = {**params, "transform": transform}
    dataset: ImageSet = DATASETS.build(name, {**detected, **params, "split": split})
    if len(dataset) == 0:
        raise DataError(f"{dataset.description} is empty; pass a dataset with at least one image")
    if limit is not None:
        if limit <= 0:
            raise DataError(f"limit must be a positive number of samples, got {limit}")
        if subset_seed is not None:
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(subset_seed))
            dataset = dataset.select(order[:limit].sort().values)
        elif limit < len(dataset):
            dataset = dataset.select(list(range(limit)))
    if channels is not None:
        dataset.transform_images(lambda images: convert_channels(images, channels, description=dataset.description))
    if image_size is not None:
        dataset.transform_images(lambda images: resize(images, image_size))
    if transform is not None:
        if channels is None and dataset.shape[0] != transform.input_size[0]:
            wanted = transform.input_size[0]
            dataset.transform_images(lambda images: convert_channels(images, wanted, description=dataset.description))
        if not transforms_files:
            dataset.transform_images(transform.batch)
        dataset.provenance = {**dataset.provenance, "model_transform": transform.description()}
    dataset.provenance = {**dataset.provenance, "source": name, "split": split}
    return dataset if stream else dataset.in_memory()
