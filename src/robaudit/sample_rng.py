"""Per-sample random streams: a sample's random draws never depend on which other samples share its batch.

Every random choice that touches a verdict -- an attack's random start, a randomized purifier's noise, a randomized
classifier's noise, the draws that select and score candidates -- is drawn from the sample's own generator, seeded
from (run seed, condition, sample id). Row ``i`` of every draw comes from sample ``i``'s generator, so a sample's
records do not change with the batch size, the other conditions, or the number of shards.

Indexing a ``SampleRNG`` selects samples and shares their generators: a stage of an attack that works on a subset
advances exactly those samples' streams.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robaudit.seeding import derive_seed, isolated_global_rng


class SampleRNG:
    """One ``torch.Generator`` per sample, on ``device``; draws are (N, ...) with row i from generator i."""

    def __init__(self, generators: Sequence[torch.Generator], device: torch.device | str = "cpu") -> None:
        self.generators = list(generators)
        self.device = torch.device(device)

    @classmethod
    def from_seeds(cls, seeds: Sequence[int], device: torch.device | str = "cpu") -> SampleRNG:
        """Generators seeded with ``seeds`` (one per sample) on ``device``."""
        device = torch.device(device)
        return cls([torch.Generator(device=device).manual_seed(int(s)) for s in seeds], device)

    @classmethod
    def for_samples(
        cls, seed: int, ids: Sequence[str], *parts: object, device: torch.device | str = "cpu"
    ) -> SampleRNG:
        """Streams seeded from (``seed``, ``parts``, sample id): the same sample, condition and run, the same draws."""
        return cls.from_seeds([derive_seed(seed, *parts, sample_id) for sample_id in ids], device)

    def __len__(self) -> int:
        return len(self.generators)

    def __getitem__(self, index: torch.Tensor | slice | Sequence[int]) -> SampleRNG:
        """The streams of the selected samples (shared: drawing from the subset advances them)."""
        if isinstance(index, slice):
            return SampleRNG(self.generators[index], self.device)
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = index.nonzero().flatten()
        positions = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        return SampleRNG([self.generators[i] for i in positions], self.device)

    def _draw(self, fn, shape: Sequence[int], dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
        rows = [fn((1, *shape), generator=g, device=self.device, dtype=dtype) for g in self.generators]
        out = torch.cat(rows) if rows else torch.empty((0, *shape), dtype=dtype, device=self.device)
        return out.to(device or self.device)

    def randn(
        self, *shape: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None
    ) -> torch.Tensor:
        """Standard normal draws (N, *shape)."""
        return self._draw(torch.randn, shape, dtype, device)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
        """Uniform [0, 1) draws (N, *shape)."""
        return self._draw(torch.rand, shape, dtype, device)

    def randn_like(self, images: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``images`` (N, ...), on their device and dtype."""
        return self.randn(*images.shape[1:], dtype=images.dtype, device=images.device)

    def rand_like(self, images: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) noise shaped like ``images`` (N, ...)."""
        return self.rand(*images.shape[1:], dtype=images.dtype, device=images.device)

    def split(self, draws: int) -> SampleRNG:
        """``draws`` streams per sample, sample-major (row ``i * draws + d``: sample i's draw d), each seeded from one
        value drawn from its sample's stream and ``d``: the same streams whether the draws then run in one batch,
        one draw at a time or in chunks of any size."""
        seeds = self.seeds()
        return SampleRNG.from_seeds([derive_seed(s, "draw", d) for s in seeds for d in range(draws)], self.device)

    @classmethod
    def interleave(cls, streams: Sequence[SampleRNG]) -> SampleRNG:
        """The streams of D ``SampleRNG`` over the same N samples as N * D rows, sample-major (row ``i * D + d``:
        sample i's stream in ``streams[d]``)."""
        rows = [rng.generators[i] for i in range(len(streams[0])) for rng in streams]
        return SampleRNG(rows, streams[0].device)

    def seeds(self) -> list[int]:
        """One fresh 63-bit seed per sample, drawn from its stream (for code that reads the global RNG)."""
        return [int(torch.randint(0, 2**62, (1,), generator=g, device=self.device)) for g in self.generators]


def per_sample(fn, images: torch.Tensor, rng: SampleRNG, *rest: torch.Tensor) -> torch.Tensor:
    """``fn(images[i:i+1], *rest[i:i+1])`` for each sample under a global RNG seeded from its stream, concatenated.

    For code that draws from the global RNG (a randomized classifier's own noise, a library's random search): run
    one sample at a time, so each sample's draws come from its own stream.
    """
    outputs = []
    for i, seed in enumerate(rng.seeds()):
        with isolated_global_rng(seed, images.device):
            outputs.append(fn(images[i : i + 1], *(r[i : i + 1] for r in rest)))
    return torch.cat(outputs)


def is_randomized(module: object) -> bool:
    """Whether ``module`` (a classifier, purifier or pipeline) declares randomness inside: ``randomized = True``, or
    ``stochastic = True``, the earlier spelling that user models and plugins may still carry."""
    return bool(getattr(module, "randomized", False) or getattr(module, "stochastic", False))
