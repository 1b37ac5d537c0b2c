"""MedMNIST-layout .npz files, memory mapped when uncompressed."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from robaudit.data.imageset import ImageSet, validate_pixels
from robaudit.data.lazy import LazyImages
from robaudit.data.sources import DATASETS
from robaudit.data.sources._arrays import check_image_array, check_split, to_float_images, to_labels
from robaudit.errors import DataError


def detect(path: Path) -> bool:
    """An .npz file."""
    return path.is_file() and path.suffix.lower() == ".npz"


def example(root: Path) -> str:
    """A tiny .npz under ``root`` (the contract tests' fixture); its ``--data`` text."""
    images = np.random.default_rng(0).integers(0, 256, size=(6, 12, 12), dtype=np.uint8)
    np.savez(root / "tiny.npz", test_images=images, test_labels=np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8))
    return str(root / "tiny.npz")


@DATASETS.register(
    "npz",
    description="MedMNIST-layout .npz ({split}_images, {split}_labels), gray or RGB",
    detect=detect,
    priority=10,
    example=example,
)
def npz(*, path: str, split: str = "test", class_names: list[str] | None = None) -> ImageSet:
    """Read ``{split}_images`` (N, H, W[, C]) and ``{split}_labels`` (N[, 1]) from an .npz file (no pickle).

    Images stay in their stored dtype and are converted per read; an uncompressed .npz (``np.savez``) is memory
    mapped, so only the batches being evaluated are in memory.
    """
    description = f"{path}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            splits = sorted(k[: -len("_images")] for k in keys if k.endswith("_images"))
            check_split(split, splits, description=description)
            if f"{split}_labels" not in keys:
                raise DataError(f"{description}: has {split}_images but no {split}_labels")
            raw_images = _npz_memmap(path, f"{split}_images")
            if raw_images is None:
                raw_images = archive[f"{split}_images"]
            raw_labels = archive[f"{split}_labels"]
            stored_names = archive["class_names"] if "class_names" in keys else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise DataError(f"{description} is not a readable .npz file ({exc}); re-create or re-download it") from None
    where = f"{description} [{split}_images]"
    check_image_array(raw_images, description=where)
    sample_shape = to_float_images(np.array(raw_images[:1]), description=where).shape[1:]
    labels = to_labels(raw_labels, raw_images.shape[0], description=f"{description} [{split}_labels]")
    if class_names is None and stored_names is not None:
        class_names = [str(c) for c in stored_names.tolist()]
    if class_names is None:
        class_names = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    stem = Path(path).stem
    ids = [f"{stem}-{split}-{i:05d}" for i in range(len(labels))]

    def read(indices: list[int]) -> torch.Tensor:
        try:
            images = to_float_images(raw_images[indices], description=where)
        except (OSError, ValueError) as exc:
            raise DataError(f"{description} became unreadable ({exc}); re-create or re-download it") from None
        validate_pixels(images, description=description, ids=[ids[i] for i in indices])
        return images

    images = LazyImages(read, sample_shape=sample_shape, index=range(len(labels)))
    return ImageSet(images, labels, ids, list(class_names), description=f"{description} ({split})")


def _npz_memmap(path: str, key: str) -> np.ndarray | None:
    """A read-only memory map of ``key`` in an uncompressed .npz; None when the member is compressed."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        local_header = handle.read(30)
        name_length, extra_length = struct.unpack("<HH", local_header[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        if version not in readers:
            return None
        shape, fortran_order, dtype = readers[version](handle)
        offset = handle.tell()
    if dtype.hasobject or fortran_order or offset + dtype.itemsize * int(np.prod(shape)) > Path(path).stat().st_size:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
