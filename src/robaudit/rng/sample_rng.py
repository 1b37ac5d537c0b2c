"""Per-sample random streams: a sample's random draws never depend on which other samples share its batch.

Every random choice that touches a verdict -- an attack's random start, a randomized purifier's noise, a randomized
classifier's noise, the draws that select and score candidates -- is drawn from the sample's own stream, seeded
from (run seed, condition, sample id). Row ``i`` of every draw comes from sample ``i``'s stream, so a sample's
records do not change with the batch size, the other conditions, or the number of shards.

Indexing a ``SampleRNG`` selects samples and shares their streams: a stage of an attack that works on a subset
advances exactly those samples' streams.

Two engines make the streams (the run setting ``rng``; their draws differ, each the same in every layout):

- ``generator`` (the default): one ``torch.Generator`` stream per sample; a draw calls each row's generator once (a
  row that draws once borrows a shared generator seeded for it: ``SeededStream``). ``split`` fills a sample's D
  draws with one call of a generator of its own (``BlockStreams``, ``sample_blocks``). The faster on a CPU
  (``bench/throughput.py --rng``).
- ``philox``: counter-based (``robaudit.rng.philox``): a row is a 64-bit key and a call counter, and a draw of all rows
  is one set of tensor operations -- the same number of kernel launches whatever the number of rows, the same bits
  on a CPU and a GPU, traceable by ``torch.compile`` and CUDA graphs.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from robaudit.rng.philox import Words, compiled_row_values, row_blocks, row_values, split_words
from robaudit.rng.sample_blocks import FILLS, BlockRNG, BlockState, draw_with
from robaudit.rng.seeding import derive_seed, isolated_global_rng


class SampleRNG(abc.ABC):
    """Per-sample random streams; draws are (N, ...) with row i from stream i. Make them with ``for_samples`` or
    ``from_seeds``; the engines (``ENGINES``) implement ``_from_seeds``, ``__getitem__``, ``_draw``, ``seeds``,
    ``split`` and ``_interleave``."""

    device: torch.device

    @staticmethod
    def from_seeds(seeds: Sequence[int], device: torch.device | str = "cpu", *, engine: str = "generator") -> SampleRNG:
        """Streams seeded with ``seeds`` (one per sample, up to 63 bits) on ``device``, made by ``engine``."""
        return ENGINES[engine]._from_seeds(seeds, torch.device(device))

    @staticmethod
    def for_samples(
        seed: int, ids: Sequence[str], *parts: object, device: torch.device | str = "cpu", engine: str = "generator"
    ) -> SampleRNG:
        """Streams seeded from (``seed``, ``parts``, sample id): the same sample, condition and run, the same draws."""
        return SampleRNG.from_seeds([derive_seed(seed, *parts, sample_id) for sample_id in ids], device, engine=engine)

    @classmethod
    @abc.abstractmethod
    def _from_seeds(cls, seeds: Sequence[int], device: torch.device) -> SampleRNG:
        """This engine's streams, one per seed, on ``device``."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of streams (rows)."""

    @abc.abstractmethod
    def __getitem__(self, index: torch.Tensor | slice | Sequence[int]) -> SampleRNG:
        """The streams of the selected samples (shared: drawing from the subset advances them)."""

    @abc.abstractmethod
    def _draw(self, kind: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
        """One call of every stream: (N, *shape) draws of ``kind`` ("normal" or "uniform"), row i from stream i."""

    @abc.abstractmethod
    def seeds(self) -> list[int]:
        """One fresh 62-bit seed per sample, drawn from its stream (for code that reads the global RNG)."""

    @abc.abstractmethod
    def split(self, draws: int) -> SampleRNG:
        """``draws`` streams per sample, sample-major (row ``i * draws + d``: sample i's draw d), each derived from
        one call of its sample's stream and ``d``: the same streams whether the draws then run in one batch, one draw
        at a time or in chunks of any size."""

    @classmethod
    @abc.abstractmethod
    def _interleave(cls, streams: Sequence[SampleRNG]) -> SampleRNG:
        """``interleave`` for streams of this engine."""

    @staticmethod
    def interleave(streams: Sequence[SampleRNG]) -> SampleRNG:
        """The streams of D ``SampleRNG`` (one engine) over the same N samples as N * D rows, sample-major (row
        ``i * D + d``: sample i's stream in ``streams[d]``). Draw from the result only, not from ``streams`` after."""
        return type(streams[0])._interleave(streams)

    def randn(
        self, *shape: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None
    ) -> torch.Tensor:
        """Standard normal draws (N, *shape)."""
        return self._draw("normal", shape, dtype, device)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
        """Uniform [0, 1) draws (N, *shape)."""
        return self._draw("uniform", shape, dtype, device)

    def compiled(self) -> SampleRNG:
        """These streams with their draws compiled (``--compile``) where the engine has a compiled form: ``philox``
        (its rounds fuse into one kernel; the same words, normals within about 1e-6). ``generator``: unchanged."""
        return self

    def randn_like(self, images: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``images`` (N, ...), on their device and dtype."""
        return self.randn(*images.shape[1:], dtype=images.dtype, device=images.device)

    def rand_like(self, images: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) noise shaped like ``images`` (N, ...)."""
        return self.rand(*images.shape[1:], dtype=images.dtype, device=images.device)


SEED = ("seed", (1,), torch.int64)  # the draw ``seeds()`` makes: one integer in [0, 2**62)


def row_positions(index: torch.Tensor | slice | Sequence[int], length: int) -> np.ndarray:
    """The positions (K,) that ``index`` selects among ``length`` rows: a slice, a boolean mask (length,), or
    indices (a tensor or a sequence; a row may be listed twice)."""
    if isinstance(index, slice):
        return np.arange(length)[index]
    if isinstance(index, torch.Tensor):
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        return index.cpu().numpy().astype(np.int64)
    return np.asarray(list(index), dtype=np.int64)


_SHARED: dict[torch.device, torch.Generator] = {}


def shared_generator(device: torch.device) -> torch.Generator:
    """The one generator on ``device`` that lends its engine to every ``SeededStream``'s first draw (seeding resets a
    torch generator's whole state: seeded with s, it gives what a new generator seeded with s gives)."""
    generator = _SHARED.get(device)
    if generator is None:
        generator = _SHARED[device] = torch.Generator(device=device)
    return generator


class SeededStream:
    """One row's ``torch.Generator`` stream, kept as its seed until it draws a second time.

    Many streams draw once (a scoring repeat's stream of a sample, a stream read only for a seed), and making a
    generator can cost more than the draw. The first draw therefore comes from the device's shared generator, seeded
    for it (``shared_generator``): the values its own generator would give. A second draw makes its own generator and
    replays the first draw on it, so every later draw continues the stream exactly as its own generator would.
    """

    __slots__ = ("first", "generator", "seed")

    def __init__(self, seed: int) -> None:
        self.seed, self.first, self.generator = int(seed), None, None

    def take(self, draw: tuple, shared: torch.Generator) -> torch.Generator:
        """The generator to make ``draw`` (kind, shape, dtype) with, now, before any other stream draws: ``shared``
        seeded for this stream's first draw, else the stream's own."""
        if self.generator is not None:
            return self.generator
        if self.first is None:
            self.first = draw
            return shared.manual_seed(self.seed)
        self.generator = torch.Generator(device=shared.device).manual_seed(self.seed)
        draw_with(self.generator, self.first)  # replayed: the stream stands where its first draw left it
        return self.generator


class GeneratorRNG(SampleRNG):
    """One ``torch.Generator`` stream per row, on ``device`` (``SeededStream``: made only for rows that draw twice):
    a draw calls each row's stream once."""

    def __init__(self, streams: Sequence[SeededStream], device: torch.device | str = "cpu") -> None:
        self.streams = list(streams)
        self.device = torch.device(device)

    @classmethod
    def _from_seeds(cls, seeds: Sequence[int], device: torch.device) -> GeneratorRNG:
        return cls([SeededStream(s) for s in seeds], device)

    def __len__(self) -> int:
        return len(self.streams)

    def __getitem__(self, index: torch.Tensor | slice | Sequence[int]) -> GeneratorRNG:
        """The streams of the selected samples (shared: drawing from the subset advances them)."""
        return GeneratorRNG([self.streams[i] for i in row_positions(index, len(self)).tolist()], self.device)

    def _draw(self, kind: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
        """Row i filled in place by stream i: the values ``torch.randn``/``torch.rand`` of one row would give,
        without a tensor per row and their concatenation."""
        out = torch.empty((len(self.streams), *shape), dtype=dtype, device=self.device)
        draw, fill, shared = (kind, tuple(shape), dtype), FILLS[kind], shared_generator(self.device)
        for row, stream in zip(out.unbind(0), self.streams, strict=True):
            generator = stream.generator
            if generator is None and stream.first is None:  # a first draw, inline: the common case
                stream.first, generator = draw, shared.manual_seed(stream.seed)
            fill(row, generator=generator or stream.take(draw, shared))
        return out.to(device or self.device)

    def split(self, draws: int) -> BlockStreams:
        return BlockStreams.for_samples(self.seeds(), draws, self.device)

    @classmethod
    def _interleave(cls, streams: Sequence[SampleRNG]) -> GeneratorRNG:
        rows = [rng.streams[i] for i in range(len(streams[0])) for rng in streams]
        return GeneratorRNG(rows, streams[0].device)

    def seeds(self) -> list[int]:
        shared = shared_generator(self.device)
        return [int(draw_with(stream.take(SEED, shared), SEED)) for stream in self.streams]


class BlockStreams(SampleRNG):
    """The ``generator`` engine's split streams: sample i's D draws filled by one call of a generator of its own, row
    d of each fill for draw d (``sample_blocks``); the same values however the rows are grouped into calls."""

    def __init__(self, view: BlockRNG, device: torch.device) -> None:
        self.view, self.device = view, device

    @classmethod
    def for_samples(cls, seeds: Sequence[int], draws: int, device: torch.device) -> BlockStreams:
        """``draws`` rows for each sample, the sample's blocks from a generator seeded with its ``seeds`` entry."""
        rows = len(seeds) * draws
        state = BlockState(seeds, draws, device)
        return cls(BlockRNG([state], np.zeros(rows, dtype=np.int64), np.arange(rows, dtype=np.int64)), device)

    @classmethod
    def _from_seeds(cls, seeds: Sequence[int], device: torch.device) -> BlockStreams:
        return cls.for_samples(seeds, 1, device)

    def __len__(self) -> int:
        return len(self.view.rows)

    def __getitem__(self, index: torch.Tensor | slice | Sequence[int]) -> BlockStreams:
        """The selected rows (shared: drawing from the subset advances them)."""
        return BlockStreams(self.view.take(row_positions(index, len(self))), self.device)

    def _draw(self, kind: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
        out = torch.empty((len(self), *shape), dtype=dtype, device=self.device)
        return self.view.draw((kind, tuple(shape), dtype), out).to(device or self.device)

    def seeds(self) -> list[int]:
        out = torch.empty((len(self), 1), dtype=torch.int64, device=self.device)
        return self.view.draw(SEED, out)[:, 0].tolist()

    def split(self, draws: int) -> BlockStreams:
        return BlockStreams.for_samples(self.seeds(), draws, self.device)

    @classmethod
    def _interleave(cls, streams: Sequence[SampleRNG]) -> BlockStreams:
        states = [state for rng in streams for state in rng.view.states]
        offsets = np.cumsum([0, *(len(rng.view.states) for rng in streams[:-1])])
        which = np.stack([rng.view.which + offset for rng, offset in zip(streams, offsets, strict=True)], 1)
        rows = np.stack([rng.view.rows for rng in streams], 1)
        return cls(BlockRNG(states, which.reshape(-1), rows.reshape(-1)), streams[0].device)


@dataclass
class PhiloxState:
    """The streams behind ``PhiloxRNG`` views: per stream its key words (S,) and its call counter (S,), int64; and
    whether their draws run compiled (``philox.compiled_row_values``)."""

    key_low: torch.Tensor
    key_high: torch.Tensor
    counters: torch.Tensor
    compiled: bool = False


class PhiloxRNG(SampleRNG):
    """Counter-based streams (``robaudit.rng.philox``): row r's k-th call draws Philox4x32-10 blocks at counter
    (block, 0, k) under the row's key, so every row of a draw comes from one set of tensor operations."""

    def __init__(self, state: PhiloxState, rows: torch.Tensor) -> None:
        self.state, self.rows = state, rows
        self.device = state.counters.device

    @classmethod
    def _from_keys(cls, key_low: torch.Tensor, key_high: torch.Tensor, *, compiled: bool = False) -> PhiloxRNG:
        state = PhiloxState(key_low, key_high, torch.zeros_like(key_low), compiled)
        return cls(state, torch.arange(len(key_low), device=key_low.device))

    @classmethod
    def _from_seeds(cls, seeds: Sequence[int], device: torch.device) -> PhiloxRNG:
        return cls._from_keys(*split_words(torch.tensor([int(s) for s in seeds], dtype=torch.int64, device=device)))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: torch.Tensor | slice | Sequence[int]) -> PhiloxRNG:
        """The streams of the selected samples (shared: drawing from the subset advances them)."""
        if isinstance(index, slice):
            return PhiloxRNG(self.state, self.rows[index])
        if not isinstance(index, torch.Tensor):
            index = torch.as_tensor(list(index), dtype=torch.long)
        return PhiloxRNG(self.state, self.rows[index.to(self.rows.device)])

    def _advance(self) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """One call of every row: (counter words, key words), each a pair of (R,), at each row's next counter (a
        stream listed twice takes two calls, in order, as a generator drawn twice would); counters advance."""
        rows = self.rows
        order = torch.argsort(rows, stable=True)
        ordered = rows[order]
        repeat = torch.empty_like(rows)
        repeat[order] = torch.arange(len(rows), device=rows.device) - torch.searchsorted(ordered, ordered)
        counter = split_words(self.state.counters[rows] + repeat)
        self.state.counters.index_add_(0, rows, torch.ones_like(rows))
        return counter, (self.state.key_low[rows], self.state.key_high[rows])

    def _call(self, blocks: torch.Tensor) -> Words:
        """One call of every row: the Philox words (R, B) of blocks ``blocks`` (B,) (``_advance``)."""
        return row_blocks(blocks, *self._advance())

    def _draw(self, kind: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
        values_of = compiled_row_values() if self.state.compiled else row_values
        values = values_of(kind, math.prod(shape), *self._advance()).reshape(len(self.rows), *shape)
        return values.to(device=device or self.device, dtype=dtype)

    def compiled(self) -> PhiloxRNG:
        """These streams, their draws compiled from now on (shared with this view and every other)."""
        self.state.compiled = True
        return self

    def split(self, draws: int) -> PhiloxRNG:
        words = self._call(torch.arange(draws, device=self.device))
        return PhiloxRNG._from_keys(words[0].reshape(-1), words[1].reshape(-1), compiled=self.state.compiled)

    @classmethod
    def _interleave(cls, streams: Sequence[SampleRNG]) -> PhiloxRNG:
        def rows_of(field: str) -> torch.Tensor:
            return torch.stack([getattr(rng.state, field)[rng.rows] for rng in streams], 1).reshape(-1)

        compiled = all(rng.state.compiled for rng in streams)
        state = PhiloxState(rows_of("key_low"), rows_of("key_high"), rows_of("counters"), compiled)
        return cls(state, torch.arange(len(state.counters), device=state.counters.device))

    def seeds(self) -> list[int]:
        low, high = self._call(torch.zeros(1, dtype=torch.long, device=self.device))[:2]
        return (low[:, 0] | ((high[:, 0] & 0x3FFFFFFF) << 32)).tolist()


ENGINES: dict[str, type[SampleRNG]] = {"generator": GeneratorRNG, "philox": PhiloxRNG}


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
