"""Checks and conversions shared by the data sources: splits, image arrays and labels."""

from __future__ import annotations

import numpy as np
import torch

from robaudit.errors import DataError


def check_split(split: str, valid: list[str], *, description: str) -> None:
    """Raise a DataError unless ``split`` is one of ``valid``."""
    if split not in valid:
        raise DataError(f"{description} has no split {split!r}; valid splits: {', '.join(valid)}")


def check_image_array(array: np.ndarray, *, description: str) -> None:
    """Raise a DataError unless ``array`` is (N, H, W) or (N, H, W, 1|3) of uint8 or floats."""
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3)):
        raise DataError(
            f"{description}: images must be (N, H, W) or (N, H, W, 1|3), got shape {array.shape}; "
            "store grayscale or RGB images"
        )
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{description}: images have dtype {array.dtype}; store uint8 or floats in [0, 1]")


def to_float_images(array: np.ndarray, *, description: str) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8/float array -> (N, C, H, W) float32 tensor in [0, 1]."""
    check_image_array(array, description=description)
    if array.ndim == 3:
        array = array[..., None]
    if array.dtype == np.uint8:
        images = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
    else:
        images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return images.permute(0, 3, 1, 2).contiguous()


def to_labels(array: np.ndarray, n: int, *, description: str) -> torch.Tensor:
    """(N,) or (N, 1) integer labels -> (N,) int64 tensor."""
    array = np.asarray(array)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.shape[0] != n:
        raise DataError(f"{description}: labels must be (N,) or (N, 1) with N={n}, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{description}: labels have dtype {array.dtype}; store integer class indices")
    if n and array.min() < 0:
        raise DataError(f"{description}: negative label {int(array.min())}; labels are class indices from 0")
    return torch.from_numpy(array.astype(np.int64))
