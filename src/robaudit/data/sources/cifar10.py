"""The CIFAR-10 python batch folder, read with an unpickler that admits numpy arrays only."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from robaudit.data.imageset import ImageSet
from robaudit.data.sources import DATASETS
from robaudit.data.sources._arrays import check_split, to_labels
from robaudit.errors import DataError


def detect(path: Path) -> bool:
    """A folder holding ``test_batch`` or ``data_batch_*``."""
    return path.is_dir() and ((path / "test_batch").is_file() or any(path.glob("data_batch_*")))


def example(root: Path) -> str:
    """A tiny CIFAR-10 batch folder under ``root`` (the contract tests' fixture); its ``--data`` text."""
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 4), ("test_batch", 5)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    return str(root)


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


@DATASETS.register(
    "cifar10",
    description="the CIFAR-10 python batch folder (data_batch_*, test_batch)",
    detect=detect,
    priority=20,
    example=example,
)
def cifar10(*, path: str, split: str = "test") -> ImageSet:
    """Read CIFAR-10 python batches with an unpickler that admits numpy arrays only (no code runs)."""
    root = Path(path)
    check_split(split, ["train", "test"], description=f"CIFAR-10 folder {path}")
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
    label_tensor = to_labels(np.asarray(labels), tensor.shape[0], description=str(root))
    class_names = list(CIFAR10_CLASSES)
    meta = root / "batches.meta"
    if meta.is_file():
        names = _load_cifar_batch(meta).get("label_names")
        if names:
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return ImageSet(tensor, label_tensor, ids, class_names, description=f"{root} (CIFAR-10 {split})")
