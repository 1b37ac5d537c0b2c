"""The statistics of a smoothed classifier's vote, as Cohen, Rosenfeld and Kolter (ICML 2019) certify and predict.

CERTIFY: the top class of ``n0`` selection draws is the guess; ``n`` estimation draws (streams apart from the
selection's) count its votes, and a one-sided Clopper-Pearson bound at ``alpha`` bounds its probability from below,
``pA_lower``. Below one half the classifier abstains; otherwise its prediction is certified within the L2 radius
``sigma * Phi^-1(pA_lower)``, with probability at least ``1 - alpha`` over the draws.

PREDICT: the top two classes of ``n`` draws; a two-sided binomial test of the top count against the runner-up at
``alpha`` decides between the top class and an abstention (wrong with probability at most ``alpha``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from scipy.stats import beta, binomtest

ABSTAIN = -1  # the class a smoothed classifier answers when its vote is not clear


@dataclass(frozen=True)
class Certificate:
    """One sample's CERTIFY: the ``prediction`` (``ABSTAIN`` when unclear), the votes for it among ``n`` estimation
    draws, its lower bound ``p_lower``, the certified L2 ``radius`` (0 when abstaining) and why its draws ``stopped``
    (``sequential``: decided, within tolerance, n_max, wrong class; fixed: "fixed n")."""

    prediction: int
    votes: int
    n: int
    p_lower: float
    radius: float
    stopped: str = "fixed n"

    @property
    def abstained(self) -> bool:
        """Whether the smoothed classifier abstains on this sample."""
        return self.prediction == ABSTAIN


def clopper_pearson_lower(successes: int, trials: int, *, alpha: float) -> float:
    """The one-sided ``1 - alpha`` Clopper-Pearson lower bound of a binomial proportion: the ``alpha`` quantile of
    Beta(successes, trials - successes + 1); 0 when there is no success."""
    check_alpha(alpha)
    if successes <= 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def certify_from_counts(selection: list[int], estimation: list[int], *, sigma: float, alpha: float) -> Certificate:
    """CERTIFY from the per-class vote counts of the selection draws and of the estimation draws (apart)."""
    guess = top_class(selection)
    n = sum(estimation)
    p_lower = clopper_pearson_lower(estimation[guess], n, alpha=alpha)
    if p_lower <= 0.5:
        return Certificate(ABSTAIN, estimation[guess], n, p_lower, 0.0)
    return Certificate(guess, estimation[guess], n, p_lower, sigma * NormalDist().inv_cdf(p_lower))


def top_class(counts: list[int]) -> int:
    """The class with the most votes in ``counts``; ties go to the lowest index."""
    return max(range(len(counts)), key=lambda c: (counts[c], -c))


def predict_from_counts(counts: list[int], *, alpha: float) -> int:
    """PREDICT from per-class vote counts: the top class when a two-sided binomial test of its count against the
    runner-up's rejects a fair split at ``alpha``; ``ABSTAIN`` otherwise."""
    check_alpha(alpha)
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    top, second = counts[order[0]], counts[order[1]] if len(order) > 1 else 0
    if top + second == 0 or binomtest(top, top + second, 0.5).pvalue > alpha:
        return ABSTAIN
    return order[0]


def check_alpha(alpha: float) -> None:
    """A ValueError unless 0 < alpha < 1."""
    if not 0 < alpha < 1 or math.isnan(alpha):
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
