"""Row-attributed draws (robaudit.rng.row_draws): each random operation of a model answered row by row from the rows'
own streams, with the operation's distribution; what cannot be attributed is refused, and such a model runs one row
per call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robaudit.rng.row_draws import Unattributable, attributable, with_row_draws
from robaudit.rng.sample_rng import ENGINES, SampleRNG

ROWS = 4000


def rows(n: int, engine: str = "generator", first: int = 0) -> SampleRNG:
    return SampleRNG.from_seeds(range(first, first + n), engine=engine)


OPS = {
    "randn_like": lambda x: torch.randn_like(x),
    "rand_like": lambda x: torch.rand_like(x),
    "randn": lambda x: torch.randn(x.shape[0], 3),
    "rand": lambda x: torch.rand(x.shape[0], 3),
    "normal_": lambda x: torch.empty(x.shape[0], 3).normal_(2.0, 0.5),
    "uniform_": lambda x: torch.empty(x.shape[0], 3).uniform_(-1.0, 3.0),
    "bernoulli": lambda x: torch.bernoulli(torch.full((x.shape[0], 3), 0.3)),
    "bernoulli_": lambda x: torch.empty(x.shape[0], 3).bernoulli_(0.7),
    "dropout": lambda x: F.dropout(torch.ones(x.shape[0], 3), 0.25, True),
    "randint": lambda x: torch.randint(2, 7, (x.shape[0], 3)).float(),
    "normal(mean, std)": lambda x: torch.normal(torch.full((x.shape[0], 3), 1.0), 2.0),
}
MOMENTS = {  # (mean, variance) of each operation's draws
    "randn_like": (0.0, 1.0),
    "rand_like": (0.5, 1 / 12),
    "randn": (0.0, 1.0),
    "rand": (0.5, 1 / 12),
    "normal_": (2.0, 0.25),
    "uniform_": (1.0, 16 / 12),
    "bernoulli": (0.3, 0.21),
    "bernoulli_": (0.7, 0.21),
    "dropout": (1.0, 1 / 3),  # kept with 0.75, scaled by 4/3
    "randint": (4.0, 2.0),  # uniform on 2..6
    "normal(mean, std)": (1.0, 4.0),
}


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("op", list(OPS))
def test_each_operation_keeps_its_distribution_and_gives_row_i_its_own_stream(op, engine):
    x = torch.zeros(ROWS, 1)
    values = with_row_draws(OPS[op], x, rows(ROWS, engine))
    mean, variance = MOMENTS[op]
    assert values.shape[0] == ROWS
    assert float(values.mean()) == pytest.approx(mean, abs=5 * (variance / values.numel()) ** 0.5)
    assert float(values.var()) == pytest.approx(variance, rel=0.08)
    alone = with_row_draws(OPS[op], x[7:9], rows(2, engine, first=7))
    assert torch.equal(alone, values[7:9]), "rows 7 and 8 drew the same values alone as among 4,000"


@pytest.mark.parametrize("replacement", [True, False])
def test_multinomial_draws_categories_at_their_weights(replacement):
    weights = torch.tensor([0.0, 1.0, 2.0, 5.0]).repeat(ROWS, 1)
    picked = with_row_draws(lambda w: torch.multinomial(w, 2, replacement=replacement), weights, rows(ROWS))
    assert picked.shape == (ROWS, 2) and not bool((picked == 0).any()), "a weight of zero is never drawn"
    if replacement:
        counts = torch.bincount(picked.flatten(), minlength=4).float() / picked.numel()
        assert counts.tolist() == pytest.approx([0.0, 1 / 8, 2 / 8, 5 / 8], abs=0.015)
    else:
        assert bool((picked[:, 0] != picked[:, 1]).all()), "without replacement, two different categories"
        first = torch.bincount(picked[:, 0], minlength=4).float() / ROWS
        assert first.tolist() == pytest.approx([0.0, 1 / 8, 2 / 8, 5 / 8], abs=0.025)


class BatchSize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :3] * torch.rand(1)  # one draw for the whole batch


class Permuted(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, torch.randperm(3)]


def test_draws_without_a_row_per_sample_are_refused_and_such_a_model_runs_one_row_per_call():
    images = torch.rand(3, 1, 6, 6)
    for model in (BatchSize(), Permuted()):
        with pytest.raises(Unattributable):
            with_row_draws(model, images, rows(3))
        assert not attributable(model, images)


def test_a_scripted_model_with_noise_inside_is_attributable_and_differentiable():
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x + 0.1 * torch.randn_like(x)).flatten(1)

    scripted = torch.jit.script(Noisy().eval())
    images = torch.rand(5, 1, 6, 6)
    assert attributable(scripted, images)
    x = images.clone().requires_grad_(True)
    out = with_row_draws(scripted, x, rows(5))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    again = with_row_draws(scripted, images[2:], rows(3, first=2))
    assert torch.allclose(again, out[2:].detach(), atol=1e-6), "a sample's draws do not depend on its batch"


def test_a_vit_with_fused_attention_and_noise_inside_runs_batched_with_its_own_draws_per_row():
    """timm's ViT calls scaled_dot_product_attention, whose CPU kernel torch tags as random (its dropout_p); at 0 in
    eval mode it draws nothing, so a ViT with noise injection runs batched, not one row per call."""
    timm = pytest.importorskip("timm")

    class NoisyViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = timm.create_model(
                "vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=8, depth=2, num_classes=3
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.vit(x + 0.1 * torch.randn_like(x))

    torch.manual_seed(0)
    model = NoisyViT().eval()
    images = torch.rand(4, 3, 16, 16)
    assert attributable(model, images)
    batched = with_row_draws(model, images, rows(4))
    alone = with_row_draws(model, images[1:2], rows(2, first=1)[:1])
    assert torch.allclose(alone, batched[1:2], atol=1e-5), "a sample's draws do not depend on its batch"
    noise_free = model.vit(images)
    assert not torch.allclose(batched, noise_free, atol=1e-4), "the noise is drawn"


def test_dropout_that_draws_draws_per_row_and_dropout_that_cannot_runs():
    images = torch.rand(3, 64)
    dropped = with_row_draws(lambda x: F.dropout(x, p=0.5, training=True), images, rows(3))
    alone = with_row_draws(lambda x: F.dropout(x, p=0.5, training=True), images[2:], rows(1, first=2))
    assert torch.equal(dropped[2:], alone) and 0 < (dropped == 0).float().mean() < 1
    assert torch.equal(with_row_draws(lambda x: F.dropout(x, p=0.5, training=False), images, rows(3)), images)
    q = torch.rand(3, 2, 5, 4)
    attention = with_row_draws(lambda x: F.scaled_dot_product_attention(x, x, x, dropout_p=0.0), q, rows(3))
    assert torch.allclose(attention, F.scaled_dot_product_attention(q, q, q))


def test_a_generator_stream_fills_its_row_with_what_torch_draws_from_it():
    """``GeneratorRNG`` fills row i in place from generator i: the values ``torch.randn``/``torch.rand`` give that
    generator, for every dtype and for shapes on both sides of torch's vectorized path (16 values), call after call
    (records of deterministic pipelines -- a random start -- depend on it)."""
    from robaudit.rng.sample_rng import GeneratorRNG

    seeds = list(range(100, 112))
    drawn = GeneratorRNG._from_seeds(seeds, torch.device("cpu"))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    for kind, reference in (("normal", torch.randn), ("uniform", torch.rand)):
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            for shape in ((), (7,), (16,), (17,), (1, 28, 28)):
                expected = torch.cat([reference((1, *shape), generator=g, dtype=dtype) for g in generators])
                assert torch.equal(drawn._draw(kind, shape, dtype, None), expected), (kind, dtype, shape)


def test_streams_drawn_through_subsets_in_any_order_give_their_own_generators_values():
    """A stream keeps only its seed until it draws twice (``SeededStream``): its first draw borrows the shared
    generator, a second replays the first on a generator of its own. Whatever the order -- subsets, repeated rows,
    seeds, kinds, sizes on both sides of torch's vectorized path -- each row gets what its own generator gives."""
    from robaudit.rng.sample_rng import GeneratorRNG

    seeds = [2**40 + 7 * k for k in range(6)]
    streams = GeneratorRNG._from_seeds(seeds, torch.device("cpu"))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    steps = [
        ([0, 2, 4], "normal", (5,)),
        ([1, 2, 2, 3], "uniform", (17,)),
        ("seeds", [5, 0, 1]),
        ([0, 1, 2, 3, 4, 5], "normal", (3, 4)),
    ]
    steps += [("seeds", [4, 4]), ([5, 3], "uniform", ()), ([0, 1, 2, 3, 4, 5], "normal", (16,))]
    for step in steps:
        if step[0] == "seeds":
            expected = [int(torch.randint(0, 2**62, (1,), generator=generators[i])) for i in step[1]]
            assert streams[step[1]].seeds() == expected
            continue
        rows, kind, shape = step
        reference = torch.randn if kind == "normal" else torch.rand
        expected = torch.cat([reference((1, *shape), generator=generators[i]) for i in rows])
        assert torch.equal(streams[rows]._draw(kind, shape, torch.float32, None), expected), step


def split_reference(parent_seeds: list[int], draws: int, calls: list[tuple[str, tuple]]) -> list[torch.Tensor]:
    """What a split's rows draw, written out: sample i's generator is seeded with one draw of its own stream; its
    k-th block is the k-th fill of (draws, *shape) from it, row d for draw d: one (N * draws, *shape) tensor a call."""
    parents = [torch.Generator().manual_seed(s) for s in parent_seeds]
    generators = [torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=g))) for g in parents]
    reference = {"normal": torch.randn, "uniform": torch.rand}
    return [torch.cat([reference[kind]((draws, *shape), generator=g) for g in generators]) for kind, shape in calls]


def test_a_split_fills_each_samples_draws_from_one_generator_of_its_own():
    from robaudit.rng.sample_rng import GeneratorRNG

    seeds, draws = [3, 2**50 + 1, 77], 4
    calls = [("normal", (2, 3)), ("uniform", (17,)), ("normal", ())]
    split = GeneratorRNG._from_seeds(seeds, torch.device("cpu")).split(draws)
    expected = split_reference(seeds, draws, calls)
    for (kind, shape), want in zip(calls, expected, strict=True):
        assert torch.equal(split._draw(kind, shape, torch.float32, None), want), (kind, shape)


@pytest.mark.parametrize("grouping", ["one draw at a time", "chunks across samples", "shuffled"])
def test_a_splits_rows_draw_the_same_however_they_are_grouped_into_calls(grouping):
    """Row r's k-th values are row d of block k of its sample, whichever rows share its call: a block is filled once,
    kept until every row took it, then dropped."""
    from robaudit.rng.sample_rng import GeneratorRNG

    seeds, draws, calls = [11, 12, 13, 14, 15], 3, [("normal", (5,)), ("uniform", (2, 2))]
    expected = split_reference(seeds, draws, calls)
    split = GeneratorRNG._from_seeds(seeds, torch.device("cpu")).split(draws)
    rows = len(seeds) * draws
    groups = {
        "one draw at a time": [list(range(d, rows, draws)) for d in range(draws)],
        "chunks across samples": [list(range(0, 4)), list(range(4, 11)), list(range(11, rows))],
        "shuffled": [[14, 2, 7, 0], [5, 9, 1, 13, 3], [12, 6, 10, 4, 11, 8]],
    }[grouping]
    for (kind, shape), want in zip(calls, expected, strict=True):
        taken = {}
        for group in groups:
            values = split[group]._draw(kind, shape, torch.float32, None)
            for row, value in zip(group, values, strict=True):
                taken.setdefault(row, []).append(value)
        for row in range(rows):
            assert torch.equal(taken[row][0], want[row]), (grouping, kind, row)
    assert not split.view.states[0].kept, "every block taken by all its rows is dropped"


def test_a_row_listed_twice_in_a_call_takes_its_next_two_draws():
    from robaudit.rng.sample_rng import GeneratorRNG

    seeds, draws = [21, 22], 2
    expected = split_reference(seeds, draws, [("normal", (4,)), ("normal", (4,))])
    split = GeneratorRNG._from_seeds(seeds, torch.device("cpu")).split(draws)
    values = split[[1, 1, 0, 2, 3]]._draw("normal", (4,), torch.float32, None)
    assert torch.equal(values[0], expected[0][1]) and torch.equal(values[1], expected[1][1])
    assert torch.equal(values[2:], expected[0][[0, 2, 3]])


def test_interleaved_splits_draw_what_each_split_draws():
    from robaudit.rng.sample_rng import GeneratorRNG, SampleRNG

    def splits():
        return [GeneratorRNG._from_seeds(seeds, torch.device("cpu")).split(2) for seeds in ([1, 2], [3, 4], [5, 6])]

    apart = [s._draw("normal", (3,), torch.float32, None) for s in splits()]
    together = SampleRNG.interleave(splits())._draw("normal", (3,), torch.float32, None)
    assert torch.equal(together, torch.stack(apart, 1).reshape(-1, 3))
