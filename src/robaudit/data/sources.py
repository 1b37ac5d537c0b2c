"""Registered data sources. Each factory reads one split into an ImageSet (float NCHW in [0, 1])."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from robaudit.data.artifact import read_artifact
from robaudit.data.imageset import ImageSet, resize, validate_pixels
from robaudit.errors import DataError
from robaudit.registry import Registry

DATASETS: Registry = Registry("dataset")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _check_split(split: str, valid: list[str], *, description: str) -> None:
    if split not in valid:
        raise DataError(f"{description} has no split {split!r}; valid splits: {', '.join(valid)}")


def _to_float_images(array: np.ndarray, *, description: str) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8/float array -> (N, C, H, W) float32 tensor in [0, 1]."""
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise DataError(
            f"{description}: images must be (N, H, W) or (N, H, W, 1|3), got shape {array.shape}; "
            "store grayscale or RGB images"
        )
    if array.dtype == np.uint8:
        images = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
    elif np.issubdtype(array.dtype, np.floating):
        images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    else:
        raise DataError(f"{description}: images have dtype {array.dtype}; store uint8 or floats in [0, 1]")
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
    """Read ``{split}_images`` (N, H, W[, C]) and ``{split}_labels`` (N[, 1]) from an .npz file (no pickle)."""
    description = f"{path}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            splits = sorted(k[: -len("_images")] for k in keys if k.endswith("_images"))
            _check_split(split, splits, description=description)
            if f"{split}_labels" not in keys:
                raise DataError(f"{description}: has {split}_images but no {split}_labels")
            raw_images = archive[f"{split}_images"]
            raw_labels = archive[f"{split}_labels"]
            stored_names = archive["class_names"] if "class_names" in keys else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{description} is not a readable .npz file ({exc}); re-create or re-download it") from None
    images = _to_float_images(raw_images, description=f"{description} [{split}_images]")
    labels = _to_labels(raw_labels, images.shape[0], description=f"{description} [{split}_labels]")
    if class_names is None and stored_names is not None:
        class_names = [str(c) for c in stored_names.tolist()]
    if class_names is None:
        class_names = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    stem = Path(path).stem
    ids = [f"{stem}-{split}-{i:05d}" for i in range(len(labels))]
    validate_pixels(images, description=description, ids=ids)
    return ImageSet(images, labels, ids, list(class_names), description=f"{description} ({split})")


def _read_image(file: Path, *, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image.load()
            return np.array(image.convert(mode))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"image {str(file)!r} is unreadable ({exc}); remove it or pass --skip-bad") from None


@DATASETS.register("imagefolder", description="a folder of class subfolders of PNG/JPEG files (ImageFolder layout)")
def imagefolder(*, path: str, split: str = "test", channels: int | None = None) -> ImageSet:
    """Read ``path/[split/]class/*.png``. Images are resized to the first image's size; classes sorted by name."""
    root = Path(path)
    if (root / split).is_dir():
        root = root / split
    try:
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as exc:
        raise DataError(f"image folder {str(root)!r} is unreadable ({exc.strerror}); check its permissions") from None
    if not class_dirs:
        raise DataError(f"image folder {str(root)!r} has no class subfolders; lay it out as {root}/CLASS/IMAGE.png")
    files = [
        (f, label)
        for label, d in enumerate(class_dirs)
        for f in sorted(d.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(f"image folder {str(root)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if channels is None:
        from PIL import Image

        with Image.open(files[0][0]) as first:
            channels = 1 if first.mode in ("1", "L", "I", "I;16", "F") else 3
    mode = "L" if channels == 1 else "RGB"
    arrays = [_read_image(f, mode=mode) for f, _ in files]
    height, width = arrays[0].shape[:2]
    tensors = []
    for array in arrays:
        image = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
        image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)
        if image.shape[1:] != (height, width):
            image = torch.nn.functional.interpolate(
                image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False
            )[0].clamp(0, 1)
        tensors.append(image)
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    ids = [str(f.relative_to(root)) for f, _ in files]
    return ImageSet(
        torch.stack(tensors), labels, ids, [d.name for d in class_dirs], description=f"{root} (image folder)"
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
