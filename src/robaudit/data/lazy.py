"""Images read on demand: a dataset of any size costs the memory of one batch, not of every image."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Reader = Callable[[list[int]], torch.Tensor]
Transform = Callable[[torch.Tensor], torch.Tensor]


class LazyImages:
    """(N, C, H, W) float32 images in [0, 1] that are read only when indexed.

    ``read(indices)`` returns the images at those source indices as a (len(indices), C, H, W) float32 tensor;
    ``index`` maps positions to source indices (a ``range`` costs no memory); ``transforms`` apply in order to
    every read. Indexing with a slice, a list or a tensor reads just those samples.
    """

    ndim = 4
    dtype = torch.float32

    def __init__(
        self,
        read: Reader,
        *,
        sample_shape: Sequence[int],
        index: range | list[int],
        transforms: tuple[Transform, ...] = (),
    ) -> None:
        self.read = read
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.index = index
        self.transforms = transforms

    @property
    def shape(self) -> torch.Size:
        """(N, C, H, W)."""
        return torch.Size((len(self.index), *self.sample_shape))

    def __len__(self) -> int:
        return len(self.index)

    def _positions(self, key: slice | Sequence[int] | torch.Tensor) -> list[int]:
        if isinstance(key, slice):
            return list(self.index[key])
        positions = torch.as_tensor(key, dtype=torch.long).flatten().tolist()
        return [self.index[p] for p in positions]

    def __getitem__(self, key: slice | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The images at ``key`` (a slice, list or tensor of positions), read now: (n, C, H, W) float32."""
        sources = self._positions(key)
        if not sources:
            return torch.zeros((0, *self.sample_shape))
        images = self.read(sources)
        for transform in self.transforms:
            images = transform(images)
        return images

    def select(self, positions: Sequence[int] | torch.Tensor) -> LazyImages:
        """The lazy images at ``positions`` (nothing is read)."""
        return LazyImages(
            self.read, sample_shape=self.sample_shape, index=self._positions(positions), transforms=self.transforms
        )

    def map(self, transform: Transform, *, sample_shape: Sequence[int]) -> LazyImages:
        """The same images with ``transform`` applied on read; ``sample_shape`` is its output's (C, H, W)."""
        return LazyImages(
            self.read, sample_shape=sample_shape, index=self.index, transforms=(*self.transforms, transform)
        )

    def materialize(self, *, chunk: int = 256) -> torch.Tensor:
        """All images as one (N, C, H, W) tensor (reads everything)."""
        if len(self) == 0:
            return torch.zeros((0, *self.sample_shape))
        return torch.cat([self[start : start + chunk] for start in range(0, len(self), chunk)])
