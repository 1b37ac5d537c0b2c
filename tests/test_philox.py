"""The random-stream engines (``robaudit.rng.sample_rng.ENGINES``): Philox4x32-10 against Random123's known answers, its
normals and uniforms against their distributions, and the contract every engine keeps -- a row's draws depend on its
own stream only (not on the batch, the subset drawn or the order of calls of other rows)."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from robaudit.rng.philox import MASK, normal, philox4x32, uniform
from robaudit.rng.sample_rng import ENGINES, PhiloxRNG, SampleRNG

# Random123 1.14, examples/kat_vectors: philox4x32 10 rounds (counter words, key words -> output words)
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((MASK, MASK, MASK, MASK), (MASK, MASK), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
IDS = [f"s{i}" for i in range(6)]


def words(values):
    return tuple(torch.tensor([v], dtype=torch.int64) for v in values)


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox4x32_10_gives_random123s_known_answers(counter, key, expected):
    assert [int(w) for w in philox4x32(words(counter), words(key))] == list(expected)


def test_philox_words_broadcast_over_rows_and_blocks_as_one_call_each():
    keys = (torch.tensor([[1], [2**31 + 5]]), torch.tensor([[7], [MASK]]))
    blocks = torch.arange(3).view(1, 3)
    batched = philox4x32((blocks, torch.zeros_like(blocks), torch.zeros_like(blocks), torch.zeros_like(blocks)), keys)
    for row in range(2):
        for block in range(3):
            one = philox4x32(words((block, 0, 0, 0)), (keys[0][row], keys[1][row]))
            assert [int(w[row, block]) for w in batched] == [int(w) for w in one]


def test_philox_normals_and_uniforms_follow_their_distributions():
    rng = SampleRNG.from_seeds(range(64), engine="philox")
    gauss = rng.randn(4096).flatten().double()
    assert abs(float(gauss.mean())) < 0.01 and abs(float(gauss.std()) - 1) < 0.01
    assert stats.kstest(gauss.numpy(), "norm").pvalue > 1e-3
    flat = rng.rand(4096).flatten().double()
    assert float(flat.min()) >= 0 and float(flat.max()) < 1
    assert stats.kstest(flat.numpy(), "uniform").pvalue > 1e-3
    assert abs(float(torch.corrcoef(gauss.view(64, -1)[:, :2].T)[0, 1])) < 0.4  # neighbours within a block


def test_uniform_is_exact_in_float32_and_never_zero_where_a_logarithm_needs_it():
    edges = torch.tensor([0, 255, MASK], dtype=torch.int64)
    assert uniform(edges).tolist() == [0.0, 0.0, 1 - 2.0**-24]
    assert float(uniform(edges, open_at_zero=True).min()) == 2.0**-24
    assert torch.isfinite(normal(tuple(torch.zeros(1, dtype=torch.int64) for _ in range(4)))).all()


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_rows_draws_do_not_depend_on_the_batch(engine):
    whole = SampleRNG.for_samples(0, IDS, "x", engine=engine).randn(3, 5)
    parts = [
        SampleRNG.for_samples(0, IDS[:2], "x", engine=engine),
        SampleRNG.for_samples(0, IDS[2:], "x", engine=engine),
    ]
    assert torch.equal(whole, torch.cat([p.randn(3, 5) for p in parts]))
    assert not torch.equal(whole[0], whole[1])
    empty = SampleRNG.for_samples(0, IDS, engine=engine)[torch.zeros(6, dtype=torch.bool)]
    assert empty.randn(3, 5).shape == (0, 3, 5) and empty.split(2).rand(1).shape == (0, 1)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_subset_advances_its_rows_streams_and_no_other(engine):
    fresh = SampleRNG.for_samples(0, IDS, engine=engine)
    first, second = fresh.randn(7), fresh.randn(7)
    rng = SampleRNG.for_samples(0, IDS, engine=engine)
    assert torch.equal(rng[torch.tensor([False, True, True, False, False, False])].randn(7), first[1:3])
    after = rng.randn(7)
    assert (
        torch.equal(after[1:3], second[1:3]) and torch.equal(after[0], first[0]) and torch.equal(after[3:], first[3:])
    )
    fresh = SampleRNG.for_samples(0, IDS, engine=engine)
    fresh.randn(7)
    assert torch.equal(rng[3:5].rand(2), fresh[[3, 4]].rand(2))  # a slice and a list select alike


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_stream_listed_twice_takes_two_calls_in_order(engine):
    fresh = SampleRNG.for_samples(0, IDS, engine=engine)
    first, second, third = fresh.randn(4), fresh.randn(4), fresh.randn(4)
    rng = SampleRNG.for_samples(0, IDS, engine=engine)
    twice = rng[[2, 0, 2]].randn(4)
    assert torch.equal(twice, torch.stack([first[2], first[0], second[2]]))
    assert torch.equal(rng[[2]].randn(4)[0], third[2])


@pytest.mark.parametrize("engine", list(ENGINES))
def test_split_streams_are_the_same_whichever_rows_draw_together(engine):
    together = SampleRNG.for_samples(1, IDS, engine=engine).split(4)
    all_rows = together.randn(2, 3)
    again = SampleRNG.for_samples(1, IDS, engine=engine).split(4)
    pieces = [again[torch.arange(start, min(24, start + 5))].randn(2, 3) for start in range(0, 24, 5)]
    assert torch.equal(all_rows, torch.cat(pieces))
    looped = SampleRNG.for_samples(1, IDS, engine=engine).split(4)
    by_draw = [looped[torch.arange(6) * 4 + d].randn(2, 3) for d in range(4)]
    assert torch.equal(all_rows.view(6, 4, 2, 3).transpose(0, 1), torch.stack(by_draw))
    assert len({tuple(row.flatten().tolist()) for row in all_rows}) == 24


@pytest.mark.parametrize("engine", list(ENGINES))
def test_interleaved_rows_draw_what_their_own_streams_would(engine):
    def streams():
        return [SampleRNG.for_samples(2, IDS, "repeat", r, engine=engine) for r in range(3)]

    expected = torch.stack([s.rand(5) for s in streams()], 1).reshape(18, 5)
    assert torch.equal(SampleRNG.interleave(streams()).rand(5), expected)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_seeds_are_62_bit_fresh_and_reproducible(engine):
    rng = SampleRNG.for_samples(3, IDS, engine=engine)
    first, second = rng.seeds(), rng.seeds()
    assert first == SampleRNG.for_samples(3, IDS, engine=engine).seeds()
    assert all(0 <= s < 2**62 for s in first + second) and len(set(first + second)) == 12


def test_the_engines_draw_differently_and_philox_draws_all_rows_in_one_set_of_operations():
    generator = SampleRNG.for_samples(0, IDS, engine="generator").randn(8)
    philox = SampleRNG.for_samples(0, IDS, engine="philox")
    assert isinstance(philox, PhiloxRNG) and not torch.equal(generator, philox.randn(8))
    counts = []
    for rows in (500, 2):
        rng = SampleRNG.from_seeds(range(rows), engine="philox")
        with _Counting() as mode:
            rng.randn(3, 8, 8)
        counts.append(mode.count)
    assert counts[0] == counts[1], "the operations of a draw do not grow with its rows"


class _Counting(torch.overrides.TorchFunctionMode):
    """Counts the torch operations run inside it."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def test_philox_draws_trace_into_one_graph_and_advance_their_counters():
    """``torch.compile(fullgraph=True)`` traces a philox draw without a graph break (what compiling a purifier's
    chain and CUDA graphs need); the compiled calls draw what eager calls draw, counters advancing between them."""

    def noisy(images, rng):
        return images + 0.1 * rng.randn_like(images)

    images = torch.rand(6, 1, 8, 8)
    eager = SampleRNG.from_seeds(range(6), engine="philox")
    expected = [noisy(images, eager) for _ in range(3)]
    streams = SampleRNG.from_seeds(range(6), engine="philox")
    compiled = torch.compile(noisy, backend="aot_eager", fullgraph=True)
    assert all(torch.equal(compiled(images, streams), e) for e in expected)
    assert streams.state.counters.tolist() == [3] * 6


@pytest.mark.slow
def test_compiled_philox_draws_the_eager_words_and_advances_the_same_counters():
    """``--compile`` streams (``SampleRNG.compiled``): philox's draws run through inductor with dynamic shapes. Its
    uniforms are the eager ones bit for bit, its normals within 1e-6 (fused log and cos), through subsets, ``split``
    and ``interleave``, at any row count and shape, and every draw advances the counters as the eager draw does;
    ``generator`` streams have no compiled form and come back unchanged."""
    eager = SampleRNG.for_samples(0, IDS, "compiled", engine="philox")
    compiled = SampleRNG.for_samples(0, IDS, "compiled", engine="philox").compiled()

    def both(draw):
        return draw(eager), draw(compiled)

    for shape in [(3, 5, 5), (7,), (1, 16, 16)]:
        torch.testing.assert_close(*both(lambda rng, shape=shape: rng.randn(*shape)), atol=1e-6, rtol=0)
        assert torch.equal(*both(lambda rng, shape=shape: rng.rand(*shape)))
    subset = [4, 1, 1]
    torch.testing.assert_close(*both(lambda rng: rng[subset].randn(2, 9)), atol=1e-6, rtol=0)
    split_eager, split_compiled = both(lambda rng: rng.split(3))
    assert split_compiled.state.compiled and len(split_compiled) == 3 * len(IDS)
    torch.testing.assert_close(split_eager[2:11].randn(4, 4), split_compiled[2:11].randn(4, 4), atol=1e-6, rtol=0)
    mixed = SampleRNG.interleave([split_compiled[:6], split_compiled[6:12]])
    assert mixed.state.compiled
    torch.testing.assert_close(
        SampleRNG.interleave([split_eager[:6], split_eager[6:12]]).randn(5), mixed.randn(5), atol=1e-6, rtol=0
    )
    assert torch.equal(eager.state.counters, compiled.state.counters)
    assert torch.equal(split_eager.state.counters, split_compiled.state.counters)
    generator = SampleRNG.for_samples(0, IDS, "compiled")
    assert generator.compiled() is generator
