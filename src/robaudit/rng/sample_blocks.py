"""Split streams of the ``generator`` engine: a sample's D draws filled by one generator call, row for row the same in
any batch.

``GeneratorRNG.split(D)`` gives N x D rows (row ``i * D + d``: sample i's draw d). Here every sample has one generator,
seeded from one call of its own stream, and the k-th draw of its rows is its k-th *block*: one fill of D rows, row d
for draw d. Which rows run together -- all at once, in chunks that cut a sample's draws apart, or one draw at a time --
changes nothing: a row's k-th values are row d of block k of its sample, and block k is the k-th fill of the sample's
generator whoever asks for it first (a block is kept until all D rows have taken it). One fill of D rows costs about
what one global draw of D rows costs; a seeded generator per row cost twice that (``bench/randomized_peers.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

FILLS = {"normal": torch.Tensor.normal_, "uniform": torch.Tensor.uniform_}  # what torch.randn / torch.rand do


def draw_with(generator: torch.Generator, draw: tuple, out: torch.Tensor | None = None) -> torch.Tensor:
    """``draw`` (kind, shape, dtype) from ``generator``, into ``out`` (a fresh tensor when None): normals or
    uniforms filled in place, or a ``SEED`` integer."""
    kind, shape, dtype = draw
    if kind == "seed":
        return torch.randint(0, 2**62, shape, generator=generator, device=generator.device)
    target = torch.empty(shape, dtype=dtype, device=generator.device) if out is None else out
    return FILLS[kind](target, generator=generator)


class BlockState:
    """The blocks of N samples x ``draws`` rows: per sample its generator (made on its first fill) and the blocks
    some of its rows have not taken yet; per row how many draws it made."""

    def __init__(self, seeds: Sequence[int], draws: int, device: torch.device) -> None:
        self.seeds, self.draws, self.device = [int(s) for s in seeds], int(draws), device
        self.generators: list[torch.Generator | None] = [None] * len(self.seeds)
        self.filled = [0] * len(self.seeds)  # blocks filled so far, per sample
        self.kept: dict[tuple[int, int], list] = {}  # (sample, k) -> [block, the draw it is, rows yet to take it]
        self.counts = np.zeros(len(self.seeds) * self.draws, dtype=np.int64)

    def fill(self, sample: int, draw: tuple, out: torch.Tensor | None = None) -> torch.Tensor:
        """Sample ``sample``'s next block of ``draw`` (kind, shape, dtype): (D, *shape), into ``out`` when given."""
        generator = self.generators[sample]
        if generator is None:
            generator = self.generators[sample] = torch.Generator(device=self.device).manual_seed(self.seeds[sample])
        kind, shape, dtype = draw
        self.filled[sample] += 1
        return draw_with(generator, (kind, (self.draws, *shape), dtype), out)

    def block(self, sample: int, k: int, draw: tuple, taking: int) -> torch.Tensor:
        """Block ``k`` of ``sample`` (filled now if it is the next), ``taking`` of its rows taking it now."""
        if (sample, k) not in self.kept:
            if k != self.filled[sample]:
                raise RuntimeError(f"sample {sample}'s draw {k} was asked before its draw {self.filled[sample]}")
            self.kept[(sample, k)] = [self.fill(sample, draw), draw, self.draws]
        entry = self.kept[(sample, k)]
        if entry[1] != draw:
            raise RuntimeError(f"rows of sample {sample} drew {entry[1]} and {draw} as their draw {k}")
        entry[2] -= taking
        if entry[2] <= 0:
            del self.kept[(sample, k)]
        return entry[0]


class BlockRNG:
    """Rows of ``BlockState`` s (one per row: ``states[which[j]]``, row ``rows[j]``), drawn as ``SampleRNG`` rows.
    Made by ``GeneratorRNG.split``; ``sample_rng.BlockStreams`` wraps it as a ``SampleRNG``."""

    def __init__(self, states: list[BlockState], which: np.ndarray, rows: np.ndarray) -> None:
        self.states, self.which, self.rows = states, which, rows

    def take(self, index: np.ndarray) -> BlockRNG:
        """The rows at ``index`` (positions in this view), sharing their state."""
        return BlockRNG(self.states, self.which[index], self.rows[index])

    def draw(self, draw: tuple, out: torch.Tensor) -> torch.Tensor:
        """Each row's next draw ``draw`` (kind, shape, dtype) into ``out`` (len(rows), *shape): row d of its sample's
        next block (a row listed twice takes two draws, in order). A sample whose D rows all draw here, in order, is
        filled straight into ``out``."""
        for which, state in enumerate(self.states):
            positions = np.nonzero(self.which == which)[0]
            if len(positions):
                self.draw_state(state, positions, draw, out)
        return out

    def draw_state(self, state: BlockState, positions: np.ndarray, draw: tuple, out: torch.Tensor) -> None:
        """``draw`` for the rows of this view at ``positions`` (all of ``state``), into ``out``."""
        rows = self.rows[positions]
        order = np.argsort(rows, kind="stable")
        repeat = np.empty_like(rows)
        repeat[order] = np.arange(len(rows)) - np.searchsorted(rows[order], rows[order])
        ks = state.counts[rows] + repeat  # each occurrence's own draw
        np.add.at(state.counts, rows, 1)
        samples = rows // state.draws
        groups = np.lexsort((positions, ks, samples))  # by sample, then draw, then position in the view
        keys = np.stack([samples[groups], ks[groups]], 1)
        starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(1)])
        for begin, end in zip(starts, [*starts[1:], len(groups)], strict=True):
            members = groups[begin:end]
            sample, k = int(samples[members[0]]), int(ks[members[0]])
            where, mine = positions[members], rows[members]
            whole = len(mine) == state.draws and (np.diff(where) == 1).all() and (np.diff(mine) == 1).all()
            if (
                whole
                and mine[0] == sample * state.draws
                and k == state.filled[sample]
                and (sample, k) not in state.kept
            ):
                target = out[int(where[0]) : int(where[0]) + state.draws]
                values = state.fill(sample, draw, target)
                if values is not target:
                    target.copy_(values)
                continue
            block = state.block(sample, k, draw, len(members))
            out[torch.as_tensor(where)] = block[torch.as_tensor(mine % state.draws)].to(out.dtype)
