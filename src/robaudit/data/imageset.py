"""ImageSet: float NCHW images in [0, 1], integer labels, stable sample ids, class names, provenance."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from robaudit.data.lazy import LazyImages
from robaudit.errors import DataError


@dataclass
class ImageSet:
    """A labelled image dataset.

    images: (N, C, H, W) float32 in [0, 1], a tensor or ``LazyImages`` read batch by batch (``images[a:b]`` is a
    tensor either way); labels: (N,) int64; ids: N stable sample ids.
    """

    images: torch.Tensor | LazyImages
    labels: torch.Tensor
    ids: list[str]
    class_names: list[str]
    description: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4:
            raise DataError(f"{self.description}: images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels.shape != (n,) or len(self.ids) != n:
            raise DataError(f"{self.description}: {n} images but {self.labels.shape[0]} labels / {len(self.ids)} ids")
        if len(set(self.ids)) != n:
            seen: set[str] = set()
            duplicate = next(i for i in self.ids if i in seen or seen.add(i))
            raise DataError(
                f"{self.description}: sample id {duplicate!r} occurs more than once; records are keyed by sample "
                "id, so give every sample a unique id (e.g. unique file names)"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    def batches(self, batch_size: int) -> Iterator[tuple[int, int]]:
        """(start, stop) index ranges of consecutive batches."""
        for start in range(0, len(self), batch_size):
            yield start, min(start + batch_size, len(self))

    def select(self, index: torch.Tensor | list[int]) -> ImageSet:
        """The samples at ``index`` (order kept)."""
        index = torch.as_tensor(index, dtype=torch.long)
        images = self.images.select(index) if isinstance(self.images, LazyImages) else self.images[index]
        return replace(
            self,
            images=images,
            labels=self.labels[index],
            ids=[self.ids[i] for i in index.tolist()],
        )

    @property
    def streamed(self) -> bool:
        """True when images are read from disk batch by batch rather than held in memory."""
        return isinstance(self.images, LazyImages)

    def in_memory(self) -> ImageSet:
        """This dataset with every image read into one tensor (itself when already in memory)."""
        if not self.streamed:
            return self
        return replace(self, images=self.images.materialize())

    def transform_images(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Apply ``transform`` ((N, C, H, W) -> (N, C', H', W')) to the images, now or on every read."""
        if self.streamed:
            probe = transform(self.images[:1])
            self.images = self.images.map(transform, sample_shape=probe.shape[1:])
        else:
            self.images = transform(self.images)


def map_images(
    dataset: ImageSet,
    transform: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    device: torch.device,
    task: str,
    description: str,
) -> ImageSet:
    """A copy of ``dataset`` (same ids and labels) whose images are ``transform(start, images, labels)`` per batch.

    images: (B, C, H, W) float32 on ``device``; the transform returns the same shape. A progress bar shows ``task``.
    """
    from robaudit.progress import progress_bar

    outputs = []
    batches = list(dataset.batches(batch_size))
    with progress_bar() as bar:
        progress = bar.add_task(task, total=len(batches), status="")
        for start, stop in batches:
            images = dataset.images[start:stop].to(device=device, dtype=torch.float32)
            labels = dataset.labels[start:stop].to(device)
            outputs.append(transform(start, images, labels).detach().cpu())
            bar.advance(progress)
    return replace(
        dataset,
        images=torch.cat(outputs),
        labels=dataset.labels.clone(),
        ids=list(dataset.ids),
        class_names=list(dataset.class_names),
        description=description,
        provenance={},
    )


def validate_pixels(images: torch.Tensor, *, description: str, ids: list[str]) -> None:
    """Raise a DataError naming the first sample with NaN/inf pixels or values outside [0, 1]."""
    flat = images.reshape(images.shape[0], -1)
    bad_finite = ~torch.isfinite(flat).all(dim=1)
    if bad_finite.any():
        i = int(bad_finite.nonzero()[0])
        raise DataError(f"{description}: sample {ids[i]!r} has NaN or infinite pixels; remove or fix it")
    bad_range = (flat.min(dim=1).values < 0) | (flat.max(dim=1).values > 1)
    if bad_range.any():
        i = int(bad_range.nonzero()[0])
        raise DataError(
            f"{description}: sample {ids[i]!r} has pixels outside [0, 1]; store uint8 images or floats in [0, 1]"
        )


def convert_channels(images: torch.Tensor, channels: int, *, description: str) -> torch.Tensor:
    """Convert (N, C, H, W) images between 1 (luma) and 3 (repeated) channels."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True).clamp(0, 1)
    raise DataError(f"{description}: cannot convert {c}-channel images to {channels} channels; use 1 or 3")


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) images to (N, C, size, size), bilinear with antialiasing, clamped to [0, 1]."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.clamp(0, 1)
