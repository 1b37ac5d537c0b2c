"""Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) in tensor operations.

A counter-based generator: the output is a pure function of a 128-bit counter and a 64-bit key, so every element of
every row of a draw is computed at once, in one set of tensor operations whatever the number of rows, on any device
(the same bits on a CPU and a GPU), inside ``torch.compile`` and CUDA graphs. ``sample_rng.PhiloxRNG`` builds the
per-sample streams on it. Checked against Random123's known-answer vectors (``tests/test_philox.py``).

Words are uint32 values held in int64 tensors. A 32 x 32-bit product fits in 64 bits; int64 multiplication wraps
modulo 2**64 on the CPU and on CUDA, which keeps the product's bits, so its high and low words are read with a shift
and a mask.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch

MASK = 0xFFFFFFFF
MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)  # Philox4x32's round multipliers
WEYL = (0x9E3779B9, 0xBB67AE85)  # the key schedule's increments (golden ratio, sqrt(3) - 1)
ROUNDS = 10

Words = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def philox4x32(counter: Words, key: tuple[torch.Tensor, torch.Tensor], *, rounds: int = ROUNDS) -> Words:
    """The four 32-bit output words of Philox4x32-``rounds`` for ``counter`` (four word tensors) under ``key`` (two
    word tensors); all int64 tensors of words in [0, 2**32), broadcast against each other."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for done in range(rounds):
        p0, p1 = c0 * MULTIPLIERS[0], c2 * MULTIPLIERS[1]
        c0, c1, c2, c3 = ((p1 >> 32) & MASK) ^ c1 ^ k0, p1 & MASK, ((p0 >> 32) & MASK) ^ c3 ^ k1, p0 & MASK
        if done + 1 < rounds:
            k0, k1 = (k0 + WEYL[0]) & MASK, (k1 + WEYL[1]) & MASK
    return c0, c1, c2, c3


def uniform(words: torch.Tensor, *, open_at_zero: bool = False) -> torch.Tensor:
    """Float32 uniforms from 32-bit words (the top 24 bits: exact in float32): [0, 1), or (0, 1] with
    ``open_at_zero`` (for a logarithm)."""
    return ((words >> 8) + int(open_at_zero)).to(torch.float32) * 2.0**-24


def normal(words: Words) -> torch.Tensor:
    """Standard normals (..., 4) from the four words (...) of Philox blocks: two Box-Muller pairs per block."""
    radius_a = (-2.0 * uniform(words[0], open_at_zero=True).log()).sqrt()
    radius_b = (-2.0 * uniform(words[2], open_at_zero=True).log()).sqrt()
    angle_a, angle_b = 2 * math.pi * uniform(words[1]), 2 * math.pi * uniform(words[3])
    return torch.stack(
        [radius_a * angle_a.cos(), radius_a * angle_a.sin(), radius_b * angle_b.cos(), radius_b * angle_b.sin()], -1
    )


def split_words(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative int64 values (up to 63 bits) as their (low, high) 32-bit words."""
    return values & MASK, values >> 32


def row_blocks(
    blocks: torch.Tensor, counter: tuple[torch.Tensor, torch.Tensor], key: tuple[torch.Tensor, torch.Tensor]
) -> Words:
    """The words (R, B) of blocks ``blocks`` (B,) of R streams: block b of row r at counter (b, 0, counter[0][r],
    counter[1][r]) under key (key[0][r], key[1][r]); ``counter`` and ``key`` are word pairs (R,)."""
    blocks = blocks.view(1, -1)
    zeros = torch.zeros_like(blocks)
    return philox4x32((blocks, zeros, counter[0][:, None], counter[1][:, None]), (key[0][:, None], key[1][:, None]))


def row_values(
    kind: str, count: int, counter: tuple[torch.Tensor, torch.Tensor], key: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """``count`` float32 values per row (R, count) of ``kind`` ("normal" or "uniform") from R streams' blocks
    0, 1, ... at ``counter`` under ``key`` (``row_blocks``): four values per block."""
    words = row_blocks(torch.arange(-(-count // 4), device=counter[0].device), counter, key)
    values = normal(words) if kind == "normal" else torch.stack([uniform(w) for w in words], -1)
    return values.flatten(1)[:, :count]


@functools.cache
def compiled_row_values() -> Callable[..., torch.Tensor]:
    """``row_values`` compiled with ``torch.compile`` (dynamic shapes: one graph per kind whatever the rows and
    counts): the Philox rounds fuse into one kernel instead of about 200. Its words are the eager ones bit for bit,
    so its uniforms are too; its normals round within about 1e-6 of the eager ones (fused log and cos)."""
    return torch.compile(row_values, dynamic=True)
