"""Anytime-valid randomized smoothing: each sample's estimation draws stop as soon as its evidence suffices.

Cohen et al.'s CERTIFY bounds the top class's probability pA from below with one Clopper-Pearson bound after a fixed
n draws. Here the draws come in growing blocks and the bound is looked at after each: at ``Looks.sizes()`` draws
(50, 100, 200, ... doubling, then ``n_max``). Look k spends ``alpha_k`` of the error budget (half of alpha at the
last look, the other half split evenly over the earlier ones), so the Clopper-Pearson bounds of all looks hold at
once with probability at least 1 - sum_k alpha_k = 1 - alpha (a union bound: a confidence sequence over the looks).
The running bounds -- the highest lower bound and the lowest upper bound seen so far -- are therefore valid whenever
a sample stops, whatever made it stop; a fixed-n bound computed on the same draws after a data-dependent stop would
spend alpha twice.

A certificate at radius r needs pA > Phi(r / sigma). ``CertifyTracker`` stops a sample when

- ``stop="decisions"``: every radius it must decide is decided -- the running lower bound clears Phi(r / sigma)
  (certified at r) or the running upper bound falls to it (not certified at r) -- or at ``n_max``, where an undecided
  radius is not certified;
- ``stop="radius"``: its radius is known to within ``tolerance``: the radius of the running upper bound, capped at
  the largest radius fixed-n CERTIFY could give (all ``n_max`` draws for the class), is at most ``tolerance`` above
  the radius of the running lower bound -- or at ``n_max``.

Either way the certificate is the running lower bound: wrong with probability at most alpha, as CERTIFY's.
``PredictTracker`` is PREDICT the same way: the top class against the runner-up by a two-sided binomial test at each
look's alpha_k, answered as soon as they separate; abstain at ``n_max``.

Clopper-Pearson over a geometric schedule is one of the two constructions the literature offers (Voracek 2024); the
other, a betting confidence sequence (Waudby-Smith & Ramdas 2023), looks after every draw. docs/numbers.md compares
them on the decisions robaudit makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist

from scipy.stats import binomtest

from robaudit.certify.bounds import ABSTAIN, Certificate, check_alpha, clopper_pearson_lower

FIRST_LOOK = 50  # draws before the first look: one noise block (smoothing.DRAW_BLOCK)
FINAL_SHARE = 0.5  # the share of alpha the last look (n_max draws) spends: its bound stays close to fixed-n's
STOPS = ("decisions", "radius")


@dataclass(frozen=True)
class Looks:
    """When a sample's bound is looked at (cumulative draws ``sizes()``) and the alpha each look spends."""

    n_max: int
    alpha: float
    first: int = FIRST_LOOK

    def sizes(self) -> tuple[int, ...]:
        """Cumulative draws at each look: ``first``, doubling, below ``n_max``; then ``n_max``."""
        sizes, size = [], self.first
        while size < self.n_max:
            sizes.append(size)
            size *= 2
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


def clopper_pearson_upper(successes: int, trials: int, *, alpha: float) -> float:
    """The one-sided ``1 - alpha`` Clopper-Pearson upper bound of a binomial proportion (1 when all succeed)."""
    return 1.0 - clopper_pearson_lower(trials - successes, trials, alpha=alpha)


def radius_of(p: float, sigma: float) -> float:
    """The L2 radius ``sigma * Phi^-1(p)`` a bound p on pA certifies (0 at or below one half, inf at 1)."""
    if p <= 0.5:
        return 0.0
    if p >= 1.0:
        return float("inf")
    return sigma * NormalDist().inv_cdf(p)


def fixed_radius_ceiling(n: int, *, sigma: float, alpha: float) -> float:
    """The largest radius fixed-n CERTIFY can give: every one of ``n`` draws for the class, at ``alpha``."""
    return radius_of(clopper_pearson_lower(n, n, alpha=alpha), sigma)


@dataclass
class CertifyTracker:
    """One sample's sequential CERTIFY for the class ``guess`` (chosen on selection draws apart): the running
    Clopper-Pearson bounds on pA over ``looks``, the ``radii`` it must decide, and when it stops (``stop``:
    "decisions" or "radius", within ``tolerance``, an L2 distance)."""

    guess: int
    sigma: float
    looks: Looks
    radii: tuple[float, ...] = (0.0,)
    stop: str = "decisions"
    tolerance: float = 0.0
    lower: float = 0.0
    upper: float = 1.0
    draws: int = 0
    votes: int = 0
    reason: str = ""
    decided: dict[float, bool] = field(default_factory=dict)

    def look(self, look: int, votes: list[int], draws: int) -> bool:
        """Read look ``look`` (0-based): per-class ``votes`` among ``draws`` estimation draws so far. Whether the
        sample stops here (``reason`` says why)."""
        alpha = self.looks.alpha_at(look)
        self.votes, self.draws = votes[self.guess], draws
        self.lower = max(self.lower, clopper_pearson_lower(self.votes, draws, alpha=alpha))
        self.upper = min(self.upper, clopper_pearson_upper(self.votes, draws, alpha=alpha))
        for radius in self.radii:
            threshold = NormalDist().cdf(radius / self.sigma)
            if radius not in self.decided and (self.lower > threshold or self.upper <= threshold):
                self.decided[radius] = self.lower > threshold
        if self.stop == "decisions" and len(self.decided) == len(self.radii):
            self.reason = "decided"
        elif self.stop == "radius" and self.radius_width() <= self.tolerance:
            self.reason = "within tolerance"
        elif draws >= self.looks.n_max:
            self.reason = "n_max"
        return bool(self.reason)

    def radius_width(self) -> float:
        """How far the radius could still rise: the running upper bound's radius, capped at fixed-n's ceiling, less
        the running lower bound's (0 once the upper bound is at or below one half: the sample abstains)."""
        if self.upper <= 0.5:
            return 0.0
        ceiling = fixed_radius_ceiling(self.looks.n_max, sigma=self.sigma, alpha=self.looks.alpha)
        return max(0.0, min(radius_of(self.upper, self.sigma), ceiling) - radius_of(self.lower, self.sigma))

    @property
    def prediction(self) -> int:
        """The class, certified at radius 0 (running lower bound above one half), else ``ABSTAIN``."""
        return self.guess if self.lower > 0.5 else ABSTAIN

    @property
    def radius(self) -> float:
        """The certified L2 radius of the running lower bound (0 when abstaining)."""
        return radius_of(self.lower, self.sigma) if self.lower > 0.5 else 0.0

    def certificate(self) -> Certificate:
        """The sample's certificate: its prediction, votes, draws, running lower bound, radius and why it stopped."""
        radius = self.radius
        return Certificate(self.prediction, self.votes, self.draws, self.lower, radius, stopped=self.reason)


@dataclass(frozen=True)
class StoppingRule:
    """What stops a sample's sequential CERTIFY: its ``looks``; with ``stop="decisions"``, the ``radii`` it must
    decide; with ``stop="radius"``, the ``tolerance`` on its radius as a fraction of sigma."""

    looks: Looks
    radii: tuple[float, ...] = (0.0,)
    stop: str = "decisions"
    tolerance: float = 0.05

    def tracker(self, guess: int, *, sigma: float) -> CertifyTracker:
        """A fresh tracker for a sample whose selection draws chose ``guess``, at noise level ``sigma``."""
        return CertifyTracker(guess, sigma, self.looks, self.radii, self.stop, self.tolerance * sigma)


@dataclass
class PredictTracker:
    """One sample's sequential PREDICT over ``looks``: the top class once a two-sided binomial test of its votes
    against the runner-up's rejects a fair split at the look's alpha; ``ABSTAIN`` at ``n_max``."""

    looks: Looks
    answer: int = ABSTAIN
    draws: int = 0
    reason: str = ""

    def look(self, look: int, votes: list[int], draws: int) -> bool:
        """Read look ``look``: per-class ``votes`` among ``draws`` draws so far. Whether the sample stops here."""
        check_alpha(self.looks.alpha)
        self.draws = draws
        order = sorted(range(len(votes)), key=lambda c: (-votes[c], c))
        top, second = votes[order[0]], votes[order[1]] if len(order) > 1 else 0
        if top + second and binomtest(top, top + second, 0.5).pvalue <= self.looks.alpha_at(look):
            self.answer, self.reason = order[0], "separated"
        elif draws >= self.looks.n_max:
            self.reason = "n_max"
        return bool(self.reason)
