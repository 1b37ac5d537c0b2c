"""Sequential CERTIFY and PREDICT (``robaudit.certify.sequential``), their guarantees measured on simulated vote
streams: at pA exactly at the threshold Phi(r / sigma), or just below it, at most alpha of the samples are certified
at r (plus binomial slack) -- while looking at a fixed-n bound after every block does not keep alpha; an all-one-class
stream is decided within a few blocks of the closed form; sequential and fixed agree wherever the fixed-n bound clears
the threshold by a margin; PREDICT answers a fair split at most alpha of the time and a clear vote early."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from robaudit.certify.betting import trackers_for
from robaudit.certify.bounds import ABSTAIN, clopper_pearson_lower
from robaudit.certify.sequential import (
    CertifyTrackers,
    Looks,
    PredictTrackers,
    StoppingRule,
    fair_split_pvalues,
    lower_bounds,
    upper_bounds,
)

SIGMA, RADIUS = 0.5, 0.5


def cumulative_votes(p: np.ndarray, sizes: tuple[int, ...], seed: int) -> np.ndarray:
    """(len(sizes), N) votes for the class after each look: Bernoulli(p) streams, block increments of one stream."""
    rng = np.random.default_rng(seed)
    steps = np.diff((0, *sizes))
    return np.cumsum([rng.binomial(step, p) for step in steps], axis=0)


def run_trackers(trackers, p: np.ndarray, seed: int, streams: np.ndarray | None = None):
    """Run ``trackers`` (class 0 the guess of every sample) on Bernoulli(p) vote streams, look by look, each look
    given the new draws in order (their classes: 0 for the class, 1 against) and the votes so far; the trackers.
    ``streams`` (N, n_max) bool, when given, are the draws (True: for the class)."""
    rng = np.random.default_rng(seed)
    count = len(p)
    votes = np.zeros(count, dtype=int)
    active, done = np.arange(count), 0
    for look, size in enumerate(trackers.looks.sizes()):
        if not len(active):
            break
        if streams is None:
            classes = (rng.random((len(active), size - done)) >= p[active, None]).astype(int)
        else:
            classes = (~streams[active, done:size]).astype(int)
        votes[active] += (classes == 0).sum(1)
        mine = votes[active]
        stopped = trackers.look(look, active, np.stack([mine, size - mine], 1), size, classes)
        active, done = active[~stopped], size
    return trackers


def clopper_pearson_trackers(rule: StoppingRule, count: int) -> CertifyTrackers:
    """Clopper-Pearson over doubling looks for ``count`` samples (the radius rule's; here also deciding)."""
    return CertifyTrackers(np.zeros(count, dtype=int), SIGMA, rule)


def slack(count: int, alpha: float) -> int:
    """At most this many of ``count`` samples may be certified wrongly: the 99.9% quantile of Binomial(count, alpha)."""
    return int(binom.ppf(0.999, count, alpha))


GUARANTEE_CASES = [
    (construction, alpha, below)
    for construction in ("betting", "clopper-pearson")
    for alpha in (0.001, 0.05)
    for below in (0.0, 0.01)
    if construction == "clopper-pearson" or below == 0.0  # betting's 20,000 streams to n_max take 20 s a case
]


@pytest.mark.parametrize(("construction", "alpha", "below"), GUARANTEE_CASES)
def test_at_or_below_the_threshold_at_most_alpha_of_the_samples_are_certified(construction, alpha, below):
    count = 20_000
    threshold = norm.cdf(RADIUS / SIGMA)
    rule = StoppingRule(10_000, alpha, radii=(RADIUS,), grid=0.0)  # the decision's threshold alone: fast
    trackers = trackers_for(rule, [0] * count, sigma=SIGMA) if construction == "betting" else None
    trackers = trackers or clopper_pearson_trackers(rule, count)
    run_trackers(trackers, np.full(count, threshold - below), seed=int(1000 * alpha) + 7)
    certified = int((trackers.decided[:, 0] == 1).sum())
    assert certified <= slack(count, alpha), (certified, slack(count, alpha))
    assert all(trackers.reason), "every sample stopped, at n_max at the latest"


@pytest.mark.parametrize("prior", ["every selection draw for the class", "selection draws at pA"])
def test_a_prior_from_the_selection_draws_keeps_the_guarantee_at_the_threshold(prior):
    """The stakes may start from the selection draws (independent of the estimation draws): even a prior that says
    pA = 1 (all 100 for the class, the stakes at their cap from the first draw) certifies at most alpha of 20,000
    samples whose pA sits exactly at the threshold."""
    count, alpha, n0 = 20_000, 0.05, 100
    threshold = norm.cdf(RADIUS / SIGMA)
    at_pa = np.random.default_rng(5).binomial(n0, threshold, count)
    votes = np.full(count, n0) if prior.startswith("every") else at_pa
    rule = StoppingRule(10_000, alpha, radii=(RADIUS,), grid=0.0)
    trackers = trackers_for(rule, [0] * count, sigma=SIGMA, prior=(votes, n0))
    run_trackers(trackers, np.full(count, threshold), seed=29)
    certified = int((trackers.decided[:, 0] == 1).sum())
    assert certified <= slack(count, alpha), (certified, slack(count, alpha))


@pytest.mark.parametrize("sigma", [0.5, 0.25])
def test_with_its_selection_draws_as_prior_an_all_one_class_stream_is_decided_near_the_closed_form(sigma):
    """At r = 2 sigma (pA must clear Phi(2) = 0.977) the closed form is 300 draws; without a prior the stakes stay
    small until the sample's own draws have shown its class, with 100 selection draws for the class they start near
    their cap. Within 30% of the closed form: the looks grow by a quarter (a decision lands on the next look) and
    the stake's cap (a draw against the class keeps a tenth of the wealth) costs a tenth. r = sigma: 40 draws."""
    alpha, radius = 0.001, 2 * sigma if sigma == 0.25 else sigma
    rule = StoppingRule(10_000, alpha, radii=(radius,))
    closed_form = math.log(alpha) / math.log(norm.cdf(radius / sigma))
    with_prior = run_trackers(trackers_for(rule, [0], sigma=sigma, prior=([100], 100)), np.ones(1), seed=0)
    without = run_trackers(trackers_for(rule, [0], sigma=sigma), np.ones(1), seed=0)
    assert with_prior.decided[0, 0] == 1 and without.decided[0, 0] == 1
    assert closed_form <= with_prior.draws[0] <= 1.3 * closed_form, (with_prior.draws[0], closed_form)
    assert with_prior.draws[0] < without.draws[0], (with_prior.draws[0], without.draws[0])


def test_the_betting_bound_on_its_grid_holds_at_the_threshold():
    """The default grid (radii every 0.02 sigma): the lower bound the certificate reports is above the true pA at
    most alpha of the time."""
    count, alpha = 1_000, 0.05
    p = norm.cdf(RADIUS / SIGMA)
    rule = StoppingRule(1_000, alpha, radii=(RADIUS,))
    trackers = run_trackers(trackers_for(rule, [0] * count, sigma=SIGMA), np.full(count, p), seed=13)
    wrong = sum(c.p_lower > p for c in trackers.certificates())
    assert wrong <= slack(count, alpha), wrong
    assert all(c.radius <= RADIUS + 1e-9 or c.p_lower > p for c in trackers.certificates())


def test_a_fixed_n_bound_looked_at_after_every_look_does_not_keep_alpha():
    """The failure the alpha spending prevents, measured with the same streams: Clopper-Pearson at the full alpha
    at each of the looks certifies well beyond alpha at the threshold."""
    count, alpha = 20_000, 0.05
    threshold = norm.cdf(RADIUS / SIGMA)
    looks = Looks(10_000, alpha)  # Clopper-Pearson's doubling looks
    votes = cumulative_votes(np.full(count, threshold), looks.sizes(), seed=3)
    ever = np.zeros(count, dtype=bool)
    for look, size in enumerate(looks.sizes()):
        ever |= lower_bounds(votes[look], size, alpha=alpha) > threshold
    assert ever.sum() > slack(count, alpha), "naive looks should break the guarantee"


@pytest.mark.parametrize(("construction", "within"), [("betting", 50), ("clopper-pearson", 3 * 50)])
def test_an_all_one_class_stream_is_decided_within_a_few_blocks_of_the_closed_form(construction, within):
    alpha = 0.001
    rule = StoppingRule(10_000, alpha, radii=(SIGMA,))  # r = sigma: pA must clear Phi(1)
    trackers = trackers_for(rule, [0], sigma=SIGMA) if construction == "betting" else clopper_pearson_trackers(rule, 1)
    run_trackers(trackers, np.ones(1), seed=0)
    closed_form = math.log(alpha) / math.log(norm.cdf(1.0))  # about 40 draws
    assert trackers.reason == ["decided"] and trackers.decided[0, 0] == 1
    assert closed_form <= trackers.draws[0] <= closed_form + within, (trackers.draws[0], closed_form)
    assert trackers.certificates()[0].radius >= SIGMA


@pytest.mark.parametrize("construction", ["betting", "clopper-pearson"])
def test_sequential_and_fixed_agree_where_the_fixed_n_bound_clears_the_threshold_by_a_margin(construction):
    count, alpha, margin = 2_000, 0.001, 0.01
    threshold = norm.cdf(RADIUS / SIGMA)
    rule = StoppingRule(10_000, alpha, radii=(RADIUS,), grid=0.0)
    p = np.random.default_rng(0).uniform(0.6, 1.0, count)
    streams = np.random.default_rng(11).random((count, 10_000)) < p[:, None]
    votes = streams.sum(1)  # what fixed n = 10,000 sees on the same streams
    trackers = trackers_for(rule, [0] * count, sigma=SIGMA) if construction == "betting" else None
    trackers = run_trackers(trackers or clopper_pearson_trackers(rule, count), p, seed=0, streams=streams)
    sequential = trackers.decided[:, 0] == 1
    clear_yes = lower_bounds(votes, 10_000, alpha=alpha) > threshold + margin
    clear_no = upper_bounds(votes, 10_000, alpha=alpha) < threshold - margin
    assert clear_yes.sum() > 100 and clear_no.sum() > 100
    assert sequential[clear_yes].all() and not sequential[clear_no].any()


def test_the_radius_rule_stops_within_tolerance_of_what_fixed_n_certifies():
    count, alpha, tolerance = 2_000, 0.001, 0.05
    rule = StoppingRule(10_000, alpha, stop="radius", tolerance=tolerance)
    p = np.concatenate([np.ones(200), np.random.default_rng(1).uniform(0.55, 0.9999, count - 200)])
    trackers = run_trackers(trackers_for(rule, [0] * count, sigma=SIGMA), p, seed=5)
    assert isinstance(trackers, CertifyTrackers), "the radius rule is Clopper-Pearson's"
    fixed = np.array([clopper_pearson_lower(int(v), 10_000, alpha=alpha) for v in cumulative_votes(p, (10_000,), 6)[0]])
    fixed_radius = np.where(fixed > 0.5, SIGMA * norm.ppf(np.clip(fixed, 0.5, 1)), 0.0)
    radius = np.array([c.radius for c in trackers.certificates()])
    assert (radius >= fixed_radius - tolerance * SIGMA - 0.01).mean() >= 0.99
    assert set(trackers.reason) <= {"within tolerance", "n_max"}


def test_looks_double_and_spend_exactly_alpha():
    looks = Looks(10_000, 0.001)
    assert looks.sizes() == (50, 100, 200, 400, 800, 1600, 3200, 6400, 10_000)
    assert sum(looks.alpha_at(k) for k in range(len(looks.sizes()))) == pytest.approx(0.001, rel=1e-12)
    assert looks.alpha_at(8) == pytest.approx(0.0005) and Looks(30, 0.01).sizes() == (30,)
    assert Looks(30, 0.01).alpha_at(0) == 0.01
    betting = StoppingRule(10_000, 0.001).looks.sizes()
    assert betting[:6] == (10, 20, 30, 40, 50, 70) and betting[-1] == 10_000 and list(betting) == sorted(set(betting))


def test_predict_answers_a_fair_split_at_most_alpha_of_the_time_and_a_clear_vote_early():
    count, alpha = 20_000, 0.05
    looks = Looks(10_000, alpha)
    first = cumulative_votes(np.full(count, 0.5), looks.sizes(), seed=2)
    trackers = PredictTrackers(count, looks)
    active = np.arange(count)
    for look, size in enumerate(looks.sizes()):
        votes = np.stack([first[look, active], size - first[look, active], np.zeros(len(active), int)], 1)
        active = active[~trackers.look(look, active, votes, size)]
    assert (trackers.answers != ABSTAIN).sum() <= slack(count, alpha)
    clear = PredictTrackers(1, Looks(10_000, 0.001))
    assert clear.look(0, np.array([0]), np.array([[2, 48, 0]]), 50)[0] and clear.answers[0] == 1
    assert clear.draws[0] == 50 and clear.reason == ["separated"]


@pytest.mark.parametrize(("top", "trials"), [(30, 50), (25, 50), (48, 50), (7, 9), (0, 0)])
def test_fair_split_pvalues_are_scipys_binomtest(top, trials):
    from scipy.stats import binomtest

    expected = binomtest(top, trials, 0.5).pvalue if trials else 1.0
    assert fair_split_pvalues(np.array([top]), np.array([trials]))[0] == pytest.approx(expected, rel=1e-9)


def test_a_radius_out_of_reach_is_given_up_early_and_a_reachable_one_is_kept():
    """At pA exactly at the threshold no bet can certify within n draws: the betting rule gives up (costing no
    alpha) about halfway; well above it (pA 0.93 against Phi(1) = 0.84), every sample is certified."""
    rule = StoppingRule(10_000, 0.001, radii=(RADIUS,), grid=0.0)
    at = run_trackers(trackers_for(rule, [0] * 1_000, sigma=SIGMA), np.full(1_000, norm.cdf(1.0)), seed=3)
    assert at.draws.mean() < 0.6 * 10_000 and at.reason.count("not certifiable within n") >= 990
    above = run_trackers(trackers_for(rule, [0] * 1_000, sigma=SIGMA), np.full(1_000, 0.93), seed=4)
    assert (above.decided[:, 0] == 1).all()
