"""A randomized pipeline's draws in the batch dimension (``robaudit.rng.draw_layout``): every (sample, draw) row has its
own stream, so batched and looped draws, and any chunk size -- one that splits a sample's draws too -- give the same
records, verdicts and pass counts; the pass counters count N x D evaluations as N x D."""

from __future__ import annotations

import pytest
import torch

from robaudit.attacks.gradient import cross_entropy, eot_gradient
from robaudit.engine.passes import PassCounter
from robaudit.engine.pipeline import Pipeline, score, score_draws
from robaudit.rng.draw_layout import DrawLayout
from robaudit.rng.sample_rng import ENGINES, SampleRNG
from toys import GaussianNoise, NearestMean, WithCard, randomized_part, streams, toy_data

LAYOUTS = {
    "looped": DrawLayout(batched=False),
    "batched": DrawLayout(),
    "chunk of 3 rows (splits a sample's 4 draws)": DrawLayout(chunk=3),
    "chunk of 8 rows": DrawLayout(chunk=8),
}


@pytest.fixture(scope="module", params=[(e, rows) for e in ENGINES for rows in (False, True)], ids=str)
def looped(request):
    """((engine, row_draws), the looped layout's records and passes) for each random-stream engine, the noisy
    classifier one row per call or batched with its draws given to rows (``row_draws``)."""
    engine, rows = request.param
    return request.param, randomized_part(LAYOUTS["looped"], rng=engine, row_draws=rows)


@pytest.mark.parametrize("name", [name for name in LAYOUTS if name != "looped"])
def test_batched_and_chunked_draws_give_the_looped_records_verdicts_and_pass_counts(looped, name):
    (engine, rows), (expected, expected_passes) = looped
    records, passes = randomized_part(LAYOUTS[name], rng=engine, row_draws=rows)
    assert records == expected
    assert passes == expected_passes
    assert {r["condition"] for r in records} >= {"pgd|none|none", "pgd|noise|adaptive", "pgd|ddpm|adaptive"}
    assert any(not r["correct"] for r in records) and any(r["correct"] for r in records), "verdicts to compare"


def test_the_batch_size_changes_no_record_with_draws_batched(looped):
    (engine, rows), (expected, _) = looped
    assert randomized_part(DrawLayout(chunk=5), batch_size=5, rng=engine, row_draws=rows)[0] == expected


@pytest.mark.slow
def test_compiled_philox_streams_keep_the_eager_verdicts(monkeypatch):
    """Under ``--compile`` the executor's philox streams draw compiled (``SampleRNG.compiled``): the records of a
    randomized part with the streams compiled (the networks eager, to see the streams alone) have the eager records'
    conditions and samples and verdicts that differ in at most one record (compiled normals round within 1e-6 of the
    eager ones, which can move only a sample on a decision boundary)."""
    from types import SimpleNamespace

    from robaudit.engine.execute import PartExecutor

    expected, expected_passes = randomized_part(DrawLayout(), rng="philox")
    eager_streams = PartExecutor.streams
    monkeypatch.setattr(PartExecutor, "streams", lambda self, *args: eager_streams(self, *args).compiled())
    records, passes = randomized_part(DrawLayout(), rng="philox")
    assert [(r["condition"], r["sample_id"]) for r in records] == [(r["condition"], r["sample_id"]) for r in expected]
    assert sum(a["correct"] != b["correct"] for a, b in zip(records, expected, strict=True)) <= 1
    assert passes.keys() == expected_passes.keys()
    monkeypatch.setattr(PartExecutor, "streams", eager_streams)
    plan = SimpleNamespace(seed=0, rng="philox", defenses=[], layout=None, attacks=[], conditions=lambda: [])
    batch = SimpleNamespace(ids=["a", "b"])
    compiling = PartExecutor.__new__(PartExecutor)
    compiling.plan, compiling.device, compiling.compile = plan, torch.device("cpu"), True
    assert compiling.streams(batch, "pgd").state.compiled, "--compile compiles the philox draws"
    compiling.compile = False
    assert not compiling.streams(batch, "pgd").state.compiled


def test_the_engines_give_their_own_records():
    records = {engine: randomized_part(DrawLayout(), rng=engine)[0] for engine in ENGINES}
    assert records["generator"] != records["philox"]


def test_the_pass_counters_count_n_by_d_evaluations_as_n_by_d():
    images, labels, means = toy_data(6, seed=1)
    classifier = WithCard(NearestMean(means)).eval()
    for layout in LAYOUTS.values():
        pipeline = Pipeline(classifier, GaussianNoise(0.2), layout=layout)
        counter = PassCounter(classifier, [])
        with counter.charge("eot"):
            eot_gradient(pipeline, images, labels, loss=cross_entropy, draws=4, rng=streams(6))
        count = counter.take("eot")
        assert (count.forward, count.backward) == (6 * 4, 6 * 4), layout


def test_scoring_draws_in_one_batch_equal_one_call_per_repeat():
    images, labels, means = toy_data(9, seed=2)
    pipeline = Pipeline(WithCard(NearestMean(means)).eval(), GaussianNoise(0.3, ensemble=3))
    ids = [str(i) for i in range(9)]
    looped = [score(pipeline, images, SampleRNG.for_samples(0, ids, "score", r)) for r in range(4)]
    for layout in LAYOUTS.values():
        pipeline.layout = layout
        again = [SampleRNG.for_samples(0, ids, "score", r) for r in range(4)]
        assert all(torch.equal(a, b) for a, b in zip(score_draws(pipeline, images, again), looped, strict=True))
