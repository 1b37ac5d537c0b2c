"""The leave rule (attacks.stopping): its error rate, simulated; the first law on randomized toys with and without."""

from __future__ import annotations

import math

import pytest
import torch

import robaudit.attacks.stopping as stopping
from robaudit.attacks import resolve_attack
from robaudit.attacks.stopping import LEAVE_ALPHA, joint_error, leave_count, leave_error
from toys import randomized_toy_audit, worst_of_n_standing

TABLE = [(m, n) for m in (1, 2, 3, 4, 5, 10, 20, 40) for n in (1, 2, 5, 10, 20)]


@pytest.mark.parametrize(("m", "n"), TABLE)
def test_the_leave_count_keeps_its_error_at_alpha_or_falls_back_to_wrong_in_every_draw(m, n):
    c = leave_count(m, n)
    assert 0 <= c < max(m, 1)
    if c > 0:
        assert leave_error(c, m, n) <= LEAVE_ALPHA, "the count chosen keeps the rate"
    if c + 1 < m:
        assert leave_error(c + 1, m, n) > LEAVE_ALPHA, "the largest such count"


def test_the_rule_is_the_old_rule_on_a_deterministic_pipeline():
    assert leave_count(1, 1) == 0, "one draw, one scoring draw: a sample leaves when fooled, as before"


def test_the_worst_case_over_p_is_found():
    """Known answer: with c = 0 the error is max_p (1 - p)^m p^n, at p = n / (m + n)."""
    for m, n in ((10, 10), (3, 5), (20, 2)):
        p = n / (m + n)
        assert leave_error(0, m, n) == pytest.approx((1 - p) ** m * p**n, rel=1e-4)


@pytest.mark.parametrize(("m", "n"), [(10, 10), (20, 10), (10, 5), (4, 10)])
def test_the_simulated_error_rate_is_at_most_the_stated_rate(m, n):
    """A sample counted broken by the rule (it leaves) and robust under the full n scoring draws: simulated over
    200,000 candidates at each true chance p, never above the stated rate plus four binomial standard errors; at the
    worst p it reaches the computed rate (the bound is tight, not loose)."""
    generator = torch.Generator().manual_seed(m * 100 + n)
    c, trials = leave_count(m, n), 200_000
    stated = leave_error(c, m, n)
    grid = [i / 20 for i in range(1, 20)]
    worst_p = max(grid, key=lambda p: joint_error(c, m, n, p))
    for p in grid:
        selection = (torch.rand(trials, m, generator=generator) < p).sum(1)
        survives = (torch.rand(trials, n, generator=generator) < p).all(1)
        rate = float(((selection <= c) & survives).float().mean())
        slack = 4 * math.sqrt(max(stated, 1e-6) / trials)
        assert rate <= stated + slack, f"p={p}: {rate} > {stated}"
        if p == worst_p:
            assert rate == pytest.approx(joint_error(c, m, n, p), abs=slack)


def toy_attacks(eps: float) -> list:
    return [
        resolve_attack("pgd", {"steps": 10}, eps=eps, eps_l2=0.5),
        resolve_attack("autoattack", {"steps": 10, "eot_iter": 4}, eps=eps, eps_l2=0.5),
    ]


@pytest.mark.parametrize(("eps", "sigma"), [(0.06, 0.25), (0.08, 0.4)])
def test_the_rule_never_reports_more_than_one_sample_above_the_full_draw_run(eps, sigma, monkeypatch):
    """First law, on a randomized toy over 5 seeds: with the leave rule the worst-of-10 headline is within one
    sample of the run that keeps attacking until a candidate is wrong in every selection draw, or lower; and the
    rule is exercised (it spends fewer passes where samples sit between the two)."""
    saved = []
    for seed in range(5):
        records, passes = randomized_toy_audit(seed, toy_attacks(eps), sigma=sigma)
        monkeypatch.setattr(stopping, "LEAVE_ALPHA", 0.0)
        full_records, full_passes = randomized_toy_audit(seed, toy_attacks(eps), sigma=sigma)
        monkeypatch.setattr(stopping, "LEAVE_ALPHA", LEAVE_ALPHA)
        assert worst_of_n_standing(records) <= worst_of_n_standing(full_records) + 1, f"seed {seed}"
        saved.append(full_passes - passes)
    if sigma >= 0.4:
        assert sum(saved) > 0, "samples between the rules left early"
