"""Scoring draws that decide (``PartExecutor.score_chosen``): an attacked sample gets its first scoring draw, and the
other N - 1 only where the first found it correct. Its worst-of-N verdict is then exact, its draws are those of a full
scoring, and the mean over draws is estimated, unbiased, by the first draw."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from robaudit.engine.execute import UNDRAWN, Batch, PartExecutor
from robaudit.engine.pipeline import Pipeline
from robaudit.engine.plan import AuditPlan, Defense
from robaudit.reporting.results import summarize
from toys import NearestMean, WithCard, toy_data

REPEATS = 10


def noisy_executor(n: int, *, seed: int) -> tuple[PartExecutor, Defense, Batch]:
    """A nearest-mean classifier with noise inside, scored over ``REPEATS`` draws, and a batch of ``n`` images
    half-way between two class means (each draw's prediction a coin flip between them)."""
    images, labels, means = toy_data(n, seed=seed)
    classifier = WithCard(NearestMean(means, sigma=0.1)).eval()
    scoring = Pipeline(classifier, randomized_classifier=True, row_draws=True)
    defense = Defense("none", None, REPEATS, ["none"], scoring)
    plan = AuditPlan([], [defense], seed=seed, eot=1, draws=1, num_samples=n, part_size=n)
    executor = PartExecutor(plan, classifier, device=torch.device("cpu"), batch_size=n)
    other = (labels + 1) % means.shape[0]
    between = (means[labels] + means[other]) / 2 + 0.02 * (torch.rand(n, means.shape[1]) - 0.5)
    batch = Batch(between.view_as(images).clamp(0, 1), labels, [f"s{i:03d}" for i in range(n)], 0)
    return executor, defense, batch


def test_draws_stop_at_the_first_wrong_draw_and_the_verdicts_are_those_of_full_scoring():
    executor, defense, batch = noisy_executor(64, seed=2)
    chosen = torch.ones(64, dtype=torch.bool)
    chosen[:4] = False  # not attacked: they keep the predictions given
    given = [torch.full((64,), 7) for _ in range(REPEATS)]
    full = torch.stack(executor.score_repeats(defense, batch.images, batch, "k"))
    drawn = torch.stack(executor.score_chosen(defense, batch.images, batch, "k", chosen, given))
    first_right = full[0] == batch.labels
    assert 0 < int(first_right[4:].sum()) < 60, "the toy must give both outcomes of the first draw"
    assert torch.equal(drawn[:, :4], torch.stack(given)[:, :4])
    scored = drawn[:, 4:] != UNDRAWN
    assert torch.equal(drawn[:, 4:][scored], full[:, 4:][scored]), "the draws made are those of a full scoring"
    assert torch.equal(scored[1:].all(0), first_right[4:]) and not (scored[1:] & ~first_right[4:]).any()
    robust_full = (full[:, 4:] == batch.labels[4:]).all(0)
    assert torch.equal((drawn[:, 4:] == batch.labels[4:]).all(0), robust_full), "worst of N, exactly"


def test_scoring_spends_the_further_draws_only_on_samples_the_first_draw_found_correct():
    executor, defense, batch = noisy_executor(64, seed=3)
    spent = []
    original = executor.score_repeats

    def counting(defense, images, batch, key, index=None, repeats=None):
        spent.append(len(images) * len(repeats or range(defense.repeats)))
        return original(defense, images, batch, key, index, repeats)

    executor.score_repeats = counting
    drawn = executor.score_chosen(defense, batch.images, batch, "k", torch.ones(64, dtype=torch.bool))
    correct_first = int((drawn[0] == batch.labels).sum())
    assert spent == [64, (REPEATS - 1) * correct_first] and sum(spent) < 64 * REPEATS


def test_the_mean_is_the_first_draw_and_unbiased_where_the_mean_of_the_draws_made_is_not():
    """Simulated: samples with true probabilities p of a correct draw, scored by the rule. The report's mean (the
    first draw) is within its binomial error of mean(p); the mean of the draws made (later draws only where the first
    was correct) is far below it."""
    rng = np.random.default_rng(0)
    n = 4000
    p = rng.uniform(0.3, 1.0, n)
    draws = rng.random((n, REPEATS)) < p[:, None]
    base = {"label": 0, "linf": 0.0, "l2": 0.0}
    records = [
        {**base, "sample_id": f"s{i}", "condition": "none|none|none", "repeat": r, "correct": True, "attacked": False}
        for i in range(n)
        for r in range(REPEATS)
    ]
    records += [  # the attack condition's records: the first draw, and the others where it was correct
        {
            **base,
            "sample_id": f"s{i}",
            "condition": "pgd|none|none",
            "repeat": r,
            "correct": bool(draws[i, r]),
            "attacked": True,
        }
        for i in range(n)
        for r in range(REPEATS if draws[i, 0] else 1)
    ]
    made = np.where(draws[:, :1], draws, False)  # a draw not made reads as wrong
    attack = {"label": "pgd", "name": "pgd", "norm": "Linf", "eps": 0.03}
    summary = summarize(pd.DataFrame.from_records(records), attacks=[attack])
    mean = summary["attacks"][0]["robust_accuracy"]
    error = 3 * np.sqrt(p.mean() * (1 - p.mean()) / n)
    assert abs(mean["value"] - p.mean()) < error and mean["estimated_from"] == "first draw"
    assert made.mean() < p.mean() - 5 * error
    worst = summary["attacks"][0]["robust_accuracy_worst_of_n"]["value"]
    assert worst == draws.all(1).mean(), "worst of N: exactly the full draws' verdict"


def test_a_condition_where_every_sample_fell_at_its_first_draw_still_reports_its_n_draws():
    base = {"label": 0, "linf": 0.0, "l2": 0.0}
    records = [
        {**base, "sample_id": f"s{i}", "condition": "none|none|none", "repeat": r, "correct": True, "attacked": False}
        for i in range(4)
        for r in range(REPEATS)
    ]
    records += [
        {**base, "sample_id": f"s{i}", "condition": "pgd|none|none", "repeat": 0, "correct": False, "attacked": True}
        for i in range(4)
    ]
    attack = {"label": "pgd", "name": "pgd", "norm": "Linf", "eps": 0.03}
    (result,) = summarize(pd.DataFrame.from_records(records), attacks=[attack])["attacks"]
    assert result["repeats"] == REPEATS and result["robust_accuracy"]["estimated_from"] == "first draw"
    assert result["robust_accuracy"]["value"] == 0.0 == result["robust_accuracy_worst_of_n"]["value"]
