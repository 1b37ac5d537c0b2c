"""Registered data sources. Each factory reads one split into an ImageSet (float NCHW in [0, 1])."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robaudit.data.artifact import read_artifact
from robaudit.data.imageset import ImageSet, resize, validate_pixels
from robaudit.data.lazy import LazyImages
from robaudit.errors import DataError
from robaudit.registry import Registry

DATASETS: Registry = Registry("dataset")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _check_split(split: str, valid: list[str], *, description: str) -> None:
    if split not in valid:
        raise DataError(f"{description} has no split {split!r}; valid splits: {', '.join(valid)}")


def _check_image_array(array: np.ndarray, *, description: str) -> None:
    """Raise a DataError unless ``array`` is (N, H, W) or (N, H, W, 1|3) of uint8 or floats."""
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3)):
        raise DataError(
            f"{description}: images must be (N, H, W) or (N, H, W, 1|3), got shape {array.shape}; "
            "store grayscale or RGB images"
        )
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{description}: images have dtype {array.dtype}; store uint8 or floats in [0, 1]")


def _to_float_images(array: np.ndarray, *, description: str) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8/float array -> (N, C, H, W) float32 tensor in [0, 1]."""
    _check_image_array(array, description=description)
    if array.ndim == 3:
        array = array[..., None]
    if array.dtype == np.uint8:
        images = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
    else:
        images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return images.permute(0, 3, 1, 2).contiguous()


def _to_labels(array: np.ndarray, n: int, *, description: str) -> torch.Tensor:
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


@DATASETS.register("digits", description="scikit-learn's 8x8 handwritten digits (ships offline), 10 classes")
def digits(*, split: str = "test", image_size: int = 32, split_seed: int = 0) -> ImageSet:
    """The embedded default: 1797 digits, upsampled to ``image_size``; a fixed seeded 70/10/20 train/val/test split."""
    from sklearn.datasets import load_digits

    _check_split(split, ["train", "val", "test"], description="digits")
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


@DATASETS.register("npz", description="MedMNIST-layout .npz ({split}_images, {split}_labels), gray or RGB")
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
            _check_split(split, splits, description=description)
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
    _check_image_array(raw_images, description=where)
    sample_shape = _to_float_images(np.array(raw_images[:1]), description=where).shape[1:]
    labels = _to_labels(raw_labels, raw_images.shape[0], description=f"{description} [{split}_labels]")
    if class_names is None and stored_names is not None:
        class_names = [str(c) for c in stored_names.tolist()]
    if class_names is None:
        class_names = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    stem = Path(path).stem
    ids = [f"{stem}-{split}-{i:05d}" for i in range(len(labels))]

    def read(indices: list[int]) -> torch.Tensor:
        try:
            images = _to_float_images(raw_images[indices], description=where)
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


def _read_image(file: Path, *, mode: str | None) -> tuple[np.ndarray, str]:
    """(decoded pixels, mode) of an image file; ``mode`` None: "L" for a grayscale file, "RGB" otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            mode = mode or ("L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB")
            image.load()
            return np.array(image.convert(mode)), mode
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"image {str(file)!r} is unreadable ({exc}); remove it or pass --skip-bad") from None


def _image_tensor(array: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W[, C]) uint8 array -> (C, size[0], size[1]) float32 in [0, 1] (resized when needed)."""
    image = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
    image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)
    if tuple(image.shape[1:]) != size:
        image = torch.nn.functional.interpolate(
            image[None], size=size, mode="bilinear", antialias=True, align_corners=False
        )[0].clamp(0, 1)
    return image


def list_image_folder(root: Path) -> tuple[list[Path], list[tuple[Path, int]]]:
    """(class folders sorted by name, [(image file, class index)]) of an ImageFolder layout; DataError when empty."""
    try:
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        listed = [(f, label) for label, d in enumerate(class_dirs) for f in sorted(d.iterdir())]
    except OSError as exc:
        where = exc.filename or root
        raise DataError(f"image folder {str(where)!r} is unreadable ({exc.strerror}); check its permissions") from None
    if not class_dirs:
        raise DataError(f"image folder {str(root)!r} has no class subfolders; lay it out as {root}/CLASS/IMAGE.png")
    files = [(f, label) for f, label in listed if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"image folder {str(root)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return class_dirs, files


@DATASETS.register(
    "imagefolder",
    description="a folder of class subfolders of PNG/JPEG files (ImageFolder layout)",
    skips_bad=True,
    transforms_files=True,
)
def imagefolder(
    *,
    path: str,
    split: str = "test",
    channels: int | None = None,
    skip_bad: bool = False,
    transform: Callable[[Any], torch.Tensor] | None = None,
) -> ImageSet:
    """Read ``path/[split/]class/*.png``, streamed: every file is checked now and decoded again when its batch runs.

    Images are resized to the first image's size; classes are sorted by name. An unreadable file stops the load
    (naming it) unless ``skip_bad``, which leaves it out and lists it in ``provenance["skipped"]``. With a model's
    evaluation ``transform`` (``data.transforms.EvalTransform``), each image not already at the model's size goes
    through it as decoded (PIL), and channels follow the model.
    """
    root = Path(path)
    if (root / split).is_dir():
        root = root / split
    class_dirs, files = list_image_folder(root)
    if transform is not None and channels is None:
        channels = transform.input_size[0]
    mode = {1: "L", 3: "RGB"}.get(channels) if channels is not None else None
    good, skipped, size = [], [], transform.size if transform is not None else None
    for file, label in files:
        try:
            array, mode = _read_image(file, mode=mode)
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append({"file": str(file.relative_to(root)), "reason": str(exc)})
            continue
        size = size or tuple(array.shape[:2])
        good.append((file, label))
    if not good:
        raise DataError(f"image folder {str(root)!r} holds no readable images ({len(skipped)} skipped); fix the files")

    def one(index: int) -> torch.Tensor:
        array = _read_image(good[index][0], mode=mode)[0]
        if transform is not None and tuple(array.shape[:2]) != size:
            from PIL import Image

            return transform(Image.fromarray(array))
        return _image_tensor(array, size)

    def read(indices: list[int]) -> torch.Tensor:
        return torch.stack([one(i) for i in indices])

    channels_out = 1 if mode == "L" else 3
    images = LazyImages(read, sample_shape=(channels_out, *size), index=range(len(good)))
    labels = torch.tensor([label for _, label in good], dtype=torch.long)
    ids = [str(f.relative_to(root)) for f, _ in good]
    provenance = {"skipped": skipped} if skipped else {}
    return ImageSet(
        images, labels, ids, [d.name for d in class_dirs], description=f"{root} (image folder)", provenance=provenance
    )


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10 batches (dicts of numpy arrays, lists, bytes) and refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle protocol
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}")
        return super().find_class(module, name)


def _load_cifar_batch(file: Path) -> dict:
    try:
        data = _NumpyOnlyUnpickler(io.BytesIO(file.read_bytes()), encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"CIFAR-10 batch {str(file)!r} is unreadable or unsafe ({exc}); re-download it") from None
    if not isinstance(data, dict):
        raise DataError(f"CIFAR-10 batch {str(file)!r} is not a dict; re-download it")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@DATASETS.register("cifar10", description="the CIFAR-10 python batch folder (data_batch_*, test_batch)")
def cifar10(*, path: str, split: str = "test") -> ImageSet:
    """Read CIFAR-10 python batches with an unpickler that admits numpy arrays only (no code runs)."""
    root = Path(path)
    _check_split(split, ["train", "test"], description=f"CIFAR-10 folder {path}")
    files = sorted(root.glob("data_batch_*")) if split == "train" else [root / "test_batch"]
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(f"CIFAR-10 folder {str(root)!r} has no {split} batches (data_batch_*, test_batch)")
    images, labels, ids = [], [], []
    for file in files:
        batch = _load_cifar_batch(file)
        data = np.asarray(batch.get("data"))
        if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
            raise DataError(f"CIFAR-10 batch {str(file)!r}: data must be (N, 3072) uint8, got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.extend(batch.get("labels", batch.get("fine_labels", [])))
        ids.extend(f"{file.name}-{i:05d}" for i in range(data.shape[0]))
    array = np.concatenate(images)
    tensor = torch.from_numpy(array).float().div_(255.0)
    label_tensor = _to_labels(np.asarray(labels), tensor.shape[0], description=str(root))
    class_names = list(CIFAR10_CLASSES)
    meta = root / "batches.meta"
    if meta.is_file():
        names = _load_cifar_batch(meta).get("label_names")
        if names:
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return ImageSet(tensor, label_tensor, ids, class_names, description=f"{root} (CIFAR-10 {split})")


@DATASETS.register("artifact", description="a dataset folder written by robaudit (attack or purify output)")
def artifact(*, path: str, split: str = "test") -> ImageSet:
    """Read a robaudit dataset artifact (float32 safetensors shards + manifest)."""
    return read_artifact(path, split=split)
