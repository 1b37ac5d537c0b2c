"""Folders of class subfolders of image files (the ImageFolder layout), streamed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robaudit.data.imageset import ImageSet
from robaudit.data.lazy import LazyImages
from robaudit.data.sources import DATASETS
from robaudit.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def detect(path: Path) -> bool:
    """Any folder no more specific source claims (the fallback: lowest priority)."""
    return path.is_dir()


def example(root: Path) -> str:
    """A tiny image folder under ``root`` (the contract tests' fixture); its ``--data`` text."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / "test" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "test" / name / f"{i}.png")
    return str(root)


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
    detect=detect,
    priority=0,
    example=example,
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
