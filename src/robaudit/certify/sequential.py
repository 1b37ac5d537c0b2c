"""Anytime-valid randomized smoothing: each sample's estimation draws stop as soon as its evidence suffices.

Cohen et al.'s CERTIFY bounds the top class's probability pA from below with one Clopper-Pearson bound after a fixed
n draws. Here the draws come in growing blocks and the bound is looked at after each: at ``Looks.sizes()`` draws
(50, 100, 200, ... doubling, then ``n_max``). Look k spends ``alpha_k`` of the error budget (half of alpha at the
last look, the other half split evenly over the earlier ones), so the Clopper-Pearson bounds of all looks hold at
once with probability at least 1 - sum_k alpha_k = 1 - alpha (a union bound: a confidence sequence over the looks).
The running bounds -- the highest lower bound and the lowest upper bound seen so far -- are therefore valid whenever
a sample stops, whatever made it stop; a fixed-n bound computed on the same draws after a data-dependent stop would
spend alpha twice.

A certificate at radius r needs pA > Phi(r / sigma). ``CertifyTrackers`` stops a sample when

- ``stop="decisions"``: every radius it must decide is decided -- the running lower bound clears Phi(r / sigma)
  (certified at r) or the running upper bound falls to it (not certified at r) -- or at ``n_max``, where an undecided
  radius is not certified;
- ``stop="radius"``: its radius is known to within ``tolerance``: the radius of the running upper bound, capped at
  the largest radius fixed-n CERTIFY could give (all ``n_max`` draws for the class), is at most ``tolerance`` above
  the radius of the running lower bound -- or at ``n_max``.

Either way the certificate is the running lower bound: wrong with probability at most alpha, as CERTIFY's.
``PredictTrackers`` is PREDICT the same way: the top class against the runner-up by a two-sided binomial test at each
look's alpha_k, answered as soon as they separate; abstain at ``n_max``.

Clopper-Pearson over a geometric schedule is one of the two constructions the literature offers (Voracek 2024); the
other, a betting confidence sequence (Waudby-Smith & Ramdas 2023), looks after every draw. docs/numbers.md compares
them on the decisions robaudit makes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, binom, norm

from robaudit.certify.bounds import ABSTAIN, Certificate, check_alpha

FIRST_LOOK = 50  # draws before the first look: one noise block (smoothing.DRAW_BLOCK)
BET_LOOK = 10  # draws between the first looks of the betting decisions
FINAL_SHARE = 0.5  # the share of alpha the last look (n_max draws) spends: its bound stays close to fixed-n's


@dataclass(frozen=True)
class Looks:
    """When a sample's draws are read (cumulative draws ``sizes()``: ``first``, then growing by ``growth``, rounded
    up to a multiple of ``first``, below ``n_max``; then ``n_max``) and the alpha each look spends."""

    n_max: int
    alpha: float
    first: int = FIRST_LOOK
    growth: float = 2.0

    def sizes(self) -> tuple[int, ...]:
        """Cumulative draws at each look."""
        sizes, size = [], self.first
        while size < self.n_max:
            sizes.append(size)
            size = max(size + self.first, -(-int(size * self.growth) // self.first) * self.first)
        return (*sizes, self.n_max)

    def alpha_at(self, look: int) -> float:
        """The alpha look ``look`` (0-based) spends: ``FINAL_SHARE`` of alpha at the last, the rest split evenly over
        the others (all of it when there is one look)."""
        count = len(self.sizes())
        if count == 1:
            return self.alpha
        if look == count - 1:
            return self.alpha * FINAL_SHARE
        return self.alpha * (1 - FINAL_SHARE) / (count - 1)


def lower_bounds(successes: np.ndarray, trials: int, *, alpha: float) -> np.ndarray:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bounds of binomial proportions (0 where nothing succeeded):
    ``bounds.clopper_pearson_lower`` over an array of success counts out of ``trials``."""
    successes = np.asarray(successes, dtype=float)
    safe = np.maximum(successes, 1.0)
    return np.where(successes > 0, beta.ppf(alpha, safe, trials - safe + 1), 0.0)


def upper_bounds(successes: np.ndarray, trials: int, *, alpha: float) -> np.ndarray:
    """One-sided ``1 - alpha`` Clopper-Pearson upper bounds (1 where everything succeeded)."""
    return 1.0 - lower_bounds(trials - np.asarray(successes, dtype=float), trials, alpha=alpha)


def radii_of(p: np.ndarray, sigma: float) -> np.ndarray:
    """The L2 radii ``sigma * Phi^-1(p)`` bounds p on pA certify (0 at or below one half, inf at 1)."""
    p = np.asarray(p, dtype=float)
    return np.where(p > 0.5, sigma * norm.ppf(np.clip(p, 0.5, 1.0)), 0.0)


def fixed_radius_ceiling(n: int, *, sigma: float, alpha: float) -> float:
    """The largest radius fixed-n CERTIFY can give: every one of ``n`` draws for the class, at ``alpha``."""
    return float(radii_of(lower_bounds(np.array([n]), n, alpha=alpha), sigma)[0])


@dataclass(frozen=True)
class StoppingRule:
    """What stops a sample's sequential CERTIFY, at most ``n_max`` estimation draws at ``alpha``: with
    ``stop="decisions"``, the ``radii`` it must decide (a betting confidence sequence, ``certify.betting``, its
    reported radius on a grid of ``grid`` x sigma); with ``stop="radius"``, its radius to within ``tolerance`` x sigma
    (Clopper-Pearson over doubling looks). ``betting.trackers_for`` makes a rule's trackers."""

    n_max: int
    alpha: float
    radii: tuple[float, ...] = (0.0,)
    stop: str = "decisions"
    tolerance: float = 0.05
    grid: float = 0.02

    @property
    def looks(self) -> Looks:
        """When the samples' draws are read: every 10 draws, growing by a quarter, for the betting decisions (which
        read every draw: the looks only batch them); doubling from 50 for Clopper-Pearson (each look spends alpha)."""
        if self.stop == "decisions":
            return Looks(self.n_max, self.alpha, first=BET_LOOK, growth=1.25)
        return Looks(self.n_max, self.alpha)


class CertifyTrackers:
    """Sequential CERTIFY of N samples, each for the class its selection draws chose (``guesses``, (N,)): the running
    Clopper-Pearson bounds on pA over the rule's looks (``lower``, ``upper``), each radius's decision (``decided``,
    (N, R): 1 certified, 0 not, -1 open), the draws and votes so far, and why each sample stopped (``reason``; ""
    while it draws)."""

    def __init__(self, guesses: np.ndarray, sigma: float, rule: StoppingRule) -> None:
        count = len(guesses)
        self.guesses, self.sigma, self.rule = guesses, sigma, rule
        self.thresholds = norm.cdf(np.asarray(rule.radii, dtype=float) / sigma)
        self.looks = Looks(rule.n_max, rule.alpha)  # doubling from 50: each look spends its share of alpha
        self.lower, self.upper = np.zeros(count), np.ones(count)
        self.draws, self.votes = np.zeros(count, dtype=int), np.zeros(count, dtype=int)
        self.decided = np.full((count, len(rule.radii)), -1, dtype=int)
        self.reason = [""] * count
        self.ceiling = fixed_radius_ceiling(rule.n_max, sigma=sigma, alpha=rule.alpha)

    def look(
        self, look: int, samples: np.ndarray, votes: np.ndarray, draws: int, classes: np.ndarray | None = None
    ) -> np.ndarray:
        """Read look ``look`` (0-based) for ``samples`` (M,) still drawing: their per-class ``votes`` (M, K) among
        ``draws`` estimation draws each (``classes``, the new draws' classes, is not needed). (M,) bool: which stop
        here (``reason`` says why)."""
        alpha = self.looks.alpha_at(look)
        mine = votes[np.arange(len(samples)), self.guesses[samples]]
        self.votes[samples], self.draws[samples] = mine, draws
        self.lower[samples] = np.maximum(self.lower[samples], lower_bounds(mine, draws, alpha=alpha))
        self.upper[samples] = np.minimum(self.upper[samples], upper_bounds(mine, draws, alpha=alpha))
        lower, upper = self.lower[samples, None], self.upper[samples, None]
        known = np.where(lower > self.thresholds, 1, np.where(upper <= self.thresholds, 0, -1))
        self.decided[samples] = np.where(self.decided[samples] >= 0, self.decided[samples], known)
        if self.rule.stop == "decisions":
            done = (self.decided[samples] >= 0).all(1)
        else:
            done = self.radius_width(samples) <= self.rule.tolerance * self.sigma
        for position, sample in enumerate(samples):
            if done[position]:
                self.reason[sample] = "decided" if self.rule.stop == "decisions" else "within tolerance"
            elif draws >= self.rule.n_max:
                self.reason[sample] = "n_max"
        return np.array([bool(self.reason[sample]) for sample in samples], dtype=bool)

    def radius_width(self, samples: np.ndarray) -> np.ndarray:
        """(M,) how far each radius could still rise: the running upper bound's radius, capped at fixed-n's ceiling,
        less the running lower bound's (0 once the upper bound is at or below one half: the sample abstains)."""
        top = np.minimum(radii_of(self.upper[samples], self.sigma), self.ceiling)
        width = np.maximum(0.0, top - radii_of(self.lower[samples], self.sigma))
        return np.where(self.upper[samples] <= 0.5, 0.0, width)

    def certificates(self) -> list[Certificate]:
        """Each sample's certificate: the class certified at radius 0 (running lower bound above one half; else
        ``ABSTAIN``), its votes and draws, the running lower bound, its radius and why its draws stopped."""
        radii = radii_of(self.lower, self.sigma)
        return [
            Certificate(
                int(guess) if lower > 0.5 or reason == "wrong class" else ABSTAIN,
                int(votes),
                int(draws),
                float(lower),
                float(radius),
                reason,
            )
            for guess, lower, votes, draws, radius, reason in zip(
                self.guesses, self.lower, self.votes, self.draws, radii, self.reason, strict=True
            )
        ]


class PredictTrackers:
    """Sequential PREDICT of N samples over ``looks``: the top class once a two-sided binomial test of its votes
    against the runner-up's rejects a fair split at the look's alpha (``answers``; ``ABSTAIN`` at ``n_max``), the
    draws each took and why it stopped."""

    def __init__(self, count: int, looks: Looks) -> None:
        check_alpha(looks.alpha)
        self.looks = looks
        self.answers = np.full(count, ABSTAIN, dtype=int)
        self.draws = np.zeros(count, dtype=int)
        self.reason = [""] * count

    def look(
        self, look: int, samples: np.ndarray, votes: np.ndarray, draws: int, classes: np.ndarray | None = None
    ) -> np.ndarray:
        """Read look ``look`` for ``samples`` (M,): per-class ``votes`` (M, K) among ``draws`` draws so far. (M,)
        bool: which stop here."""
        self.draws[samples] = draws
        ranked = np.sort(votes, axis=1)[:, ::-1]
        top, second = ranked[:, 0], ranked[:, 1] if votes.shape[1] > 1 else np.zeros(len(votes), dtype=int)
        separated = (top + second > 0) & (fair_split_pvalues(top, top + second) <= self.looks.alpha_at(look))
        winners = np.argmax(votes, axis=1)  # the first of equals: the lowest index, as PREDICT breaks ties
        for position, sample in enumerate(samples):
            if separated[position]:
                self.answers[sample], self.reason[sample] = int(winners[position]), "separated"
            elif draws >= self.looks.n_max:
                self.reason[sample] = "n_max"
        return np.array([bool(self.reason[sample]) for sample in samples], dtype=bool)


def fair_split_pvalues(top: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Two-sided p-values of ``top`` successes in ``trials`` under a fair coin: twice the smaller tail, at most 1
    (``scipy.stats.binomtest(top, trials, 0.5).pvalue``, whose two tails are mirror images at one half)."""
    trials = np.asarray(trials)
    smaller = np.minimum(top, trials - top)
    tail = binom.cdf(smaller, np.maximum(trials, 1), 0.5)
    return np.where(top == trials - top, 1.0, np.minimum(1.0, 2 * tail))
