"""Sequential CERTIFY's decisions by betting: a confidence sequence that reads every draw (Waudby-Smith & Ramdas,
"Estimating means of bounded random variables by betting", JRSS-B 2023).

To test "pA <= m", a bettor starts with wealth 1 and stakes a fraction of it on each draw X_i (1 when the draw votes
for the sample's class): wealth *= 1 + lambda_i (X_i - m). While pA <= m no stake gains in expectation, so the wealth
is a nonnegative supermartingale and, by Ville's inequality, ever reaches 1 / alpha with probability at most alpha --
at whatever draw one looks, however often. Reaching it rejects "pA <= m". The stake is the plug-in Kelly fraction
lambda_i = (p_hat - m) / (m (1 - m)) of what is known before X_i, clipped to [0, BET_CAP / m]: a draw against the
class then keeps at least 1 - BET_CAP of the wealth. What is known includes the sample's selection draws (its own
prior, as in "Halt Fast!"): p_hat = (prior votes + votes + 1/2) / (prior draws + draws + 1), the prior being the
n0 selection draws' votes for the class they chose. Those draws come from a stream of their own, independent of the
estimation draws, so a stake set from them is still fixed before X_i is drawn and the wealth stays a supermartingale
under "pA <= m": the prior changes how fast a sample is decided, never the guarantee. Without it, a sample whose
every draw votes for its class stakes little until its own draws have shown it (about 200 draws at sigma 0.25 and
r = 2 sigma); with it, it stakes the most from the first draw.

Every sample bets at each m of a grid (``m = Phi(r / sigma)``, r from 0 in steps of ``grid`` x sigma up to
``GRID_TOP`` sigma, plus the radii it must decide). Its lower bound on pA is the grid's m below which *every* m is
rejected: the claim "pA > m" is wrong only if the smallest grid m at or above the true pA was rejected, one test at
alpha, so the bound and every certificate read from it hold together with probability at least 1 - alpha. It is
certified at radius r once the bound reaches Phi(r / sigma), and not certified once the mirror bet on "pA >= m"
rejects Phi(r / sigma), or once the radius is out of reach within ``n_max`` draws (``futile``); neither costs
alpha: they only give up. Measured on simulated streams (``bench/confidence_sequences.py``), the decision at
r = sigma takes 70 draws (in robaudit's looks) for a sample that always votes for its class where Clopper-Pearson
over doubling looks takes 100, and 663 against 797 at pA 0.9.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from robaudit.certify.bounds import ABSTAIN, Certificate
from robaudit.certify.sequential import CertifyTrackers, StoppingRule, upper_bounds

BET_CAP = 0.9  # the largest stake, as a fraction of the largest that cannot lose everything (1 / m)
FUTILITY_BETA = 0.01  # the upper bound that says a radius is out of reach: kept for all but about 1% that could
PIECE = 128  # draws bet on at once per sample (memory: samples x PIECE x grid)
ESTIMATE_PSEUDO = 0.5  # pseudo-votes for and against the class in the stake's estimate of pA
GRID_TOP = 4.0  # the largest radius on the grid, in sigma (fixed-n CERTIFY at n = 10,000 stops near 3.2)


class BettingTrackers:
    """Sequential CERTIFY of N samples by betting (``stop="decisions"``), each for the class its selection draws
    chose (``guesses``, (N,)), their votes for it out of ``prior`` = (votes (N,), draws) setting the first stakes:
    wealth on the grid of thresholds (``levels``, (G,)), which thresholds were rejected,
    each decision radius's verdict (``decided``, (N, R): 1 certified, 0 not, -1 open), draws and votes so far, and
    why each sample stopped (``reason``)."""

    def __init__(
        self,
        guesses: np.ndarray,
        sigma: float,
        rule: StoppingRule,
        *,
        prior: tuple[Sequence[int] | np.ndarray, int] | None = None,
    ) -> None:
        count = len(guesses)
        self.guesses, self.sigma, self.rule, self.looks = guesses, sigma, rule, rule.looks
        prior_votes, prior_draws = prior if prior is not None else (np.zeros(count), 0)
        self.prior_votes = np.asarray(prior_votes, dtype=float)  # (N,) the selection draws' votes for the class
        self.prior_draws = int(prior_draws)
        steps = np.arange(0.0, GRID_TOP + 1e-9, rule.grid) if rule.grid else np.zeros(1)
        self.radii = np.unique(np.concatenate([steps * sigma, np.asarray(rule.radii, dtype=float)]))
        self.levels = norm.cdf(self.radii / sigma)
        self.decision_index = np.searchsorted(self.radii, np.asarray(rule.radii, dtype=float))
        self.wealth_up = np.zeros((count, len(self.levels)))  # log wealth betting on "pA > m"
        self.wealth_down = np.zeros((count, len(rule.radii)))  # log wealth betting on "pA < m", at the decisions
        self.rejected = np.zeros((count, len(self.levels)), dtype=bool)
        self.below = np.zeros((count, len(rule.radii)), dtype=bool)  # "pA < m" established: not certified
        self.draws, self.votes = np.zeros(count, dtype=int), np.zeros(count, dtype=int)
        self.decided = np.full((count, len(rule.radii)), -1, dtype=int)
        self.reason = [""] * count
        self.bar = math.log(1 / rule.alpha)

    def look(
        self, look: int, samples: np.ndarray, votes: np.ndarray, draws: int, classes: np.ndarray | None = None
    ) -> np.ndarray:
        """Read the draws since the last look of ``samples`` (M,) still drawing: their ``classes`` (M, L), in draw
        order; ``draws`` estimation draws each so far (``votes`` (M, K) are not needed). (M,) bool: which stop here."""
        hits = (classes == self.guesses[samples, None]).astype(float)  # (M, L): the draws for the class
        for first in range(0, hits.shape[1], PIECE):
            self.read(samples, hits[:, first : first + PIECE])
        self.draws[samples] = draws
        return self.decide(samples, draws)

    def read(self, samples: np.ndarray, hits: np.ndarray) -> None:
        """Bet on the next draws ``hits`` (M, L) of ``samples`` (1: for the class), in order."""
        before = self.prior_votes[samples, None] + self.votes[samples, None] + np.cumsum(hits, 1) - hits
        seen = self.prior_draws + self.draws[samples, None] + np.arange(hits.shape[1])
        p_hat = (before + ESTIMATE_PSEUDO) / (seen + 2 * ESTIMATE_PSEUDO)
        up = self.bet(p_hat, hits, self.levels, self.wealth_up[samples], rising=True)
        self.rejected[samples] |= (up >= self.bar).any(1)
        self.wealth_up[samples] = up[:, -1]
        down = self.bet(p_hat, hits, self.levels[self.decision_index], self.wealth_down[samples], rising=False)
        self.below[samples] |= (down >= self.bar).any(1)
        self.wealth_down[samples] = down[:, -1]
        self.votes[samples] += hits.sum(1).astype(int)
        self.draws[samples] += hits.shape[1]

    @staticmethod
    def bet(p_hat: np.ndarray, hits: np.ndarray, levels: np.ndarray, start: np.ndarray, *, rising: bool) -> np.ndarray:
        """(M, L, G) log wealth after each draw of bets on "pA > m" (``rising``) or "pA < m" at ``levels`` (G,),
        from log wealth ``start`` (M, G): the plug-in Kelly stake of ``p_hat`` (M, L), clipped (``BET_CAP``)."""
        m = levels[None, None, :]
        edge = (p_hat[..., None] - m) if rising else (m - p_hat[..., None])
        cap = BET_CAP / (m if rising else 1 - m)
        stake = np.clip(edge / (m * (1 - m)), 0.0, cap)
        outcome = (hits[..., None] - m) if rising else (m - hits[..., None])
        return start[:, None, :] + np.cumsum(np.log1p(stake * outcome), axis=1)

    def decide(self, samples: np.ndarray, draws: int) -> np.ndarray:
        """Update the decisions of ``samples`` from what their bets rejected and what they can still reach
        (``futile``); (M,) bool: which stop."""
        lower = self.lower_index(samples)
        certified = lower[:, None] >= self.decision_index[None, :]
        futile = self.futile(samples, draws) & ~certified
        known = np.where(certified, 1, np.where(self.below[samples] | futile, 0, -1))
        self.decided[samples] = np.where(self.decided[samples] >= 0, self.decided[samples], known)
        done = (self.decided[samples] >= 0).all(1)
        for sample, gave_up in zip(samples[done], futile[done].any(1), strict=True):
            self.reason[sample] = "not certifiable within n" if gave_up else "decided"
        if draws >= self.rule.n_max:
            for sample in samples[~done]:
                self.reason[sample] = "n_max"
            return np.ones(len(samples), dtype=bool)
        return done

    def futile(self, samples: np.ndarray, draws: int) -> np.ndarray:
        """(M, R) whether each decision radius is out of reach of ``samples`` within the draws left: even if pA were
        its upper bound U (Clopper-Pearson on the draws so far, at ``FUTILITY_BETA`` split over the looks) and every
        draw left grew the wealth at the best rate any bet on "pA > m" can, KL(U || m) per draw (Kelly's), it would
        not reach 1 / alpha. Giving up costs no alpha (it only declines to certify); the optimistic rate keeps the
        samples that could still make it, all but about ``FUTILITY_BETA`` of them."""
        left = self.rule.n_max - draws
        beta = FUTILITY_BETA / len(self.looks.sizes())  # spent over the looks: at most 1% of the samples in all
        upper = upper_bounds(self.votes[samples], max(draws, 1), alpha=beta)[:, None]
        m = self.levels[self.decision_index][None, :]
        reach = self.wealth_up[samples][:, self.decision_index] + left * bernoulli_divergence(upper, m)
        return (upper <= m) | (reach < self.bar)

    def lower_index(self, samples: np.ndarray) -> np.ndarray:
        """(M,) the index of the largest grid threshold with every threshold up to it rejected (-1: none)."""
        return np.cumprod(self.rejected[samples], axis=1).sum(1) - 1

    def certificates(self) -> list[Certificate]:
        """Each sample's certificate: its class when "pA > 1/2" was rejected (else ``ABSTAIN``), its votes and
        draws, the lower bound on pA (the grid threshold reached) and its radius, and why its draws stopped."""
        everyone = np.arange(len(self.guesses))
        lower = self.lower_index(everyone)
        out = []
        for sample, index in enumerate(lower):
            p_lower = float(self.levels[index]) if index >= 0 else 0.0
            wrong = self.reason[sample] == "wrong class"  # no estimation: its class stands, uncertified
            prediction = int(self.guesses[sample]) if index >= 0 or wrong else ABSTAIN
            radius = float(self.radii[index]) if index >= 0 else 0.0
            votes, draws = int(self.votes[sample]), int(self.draws[sample])
            out.append(Certificate(prediction, votes, draws, p_lower, radius, self.reason[sample]))
        return out


def trackers_for(
    rule: StoppingRule, guesses: Sequence[int], *, sigma: float, prior: tuple[Sequence[int], int] | None = None
) -> BettingTrackers | CertifyTrackers:
    """Fresh trackers of ``rule`` for samples whose selection draws chose ``guesses``, at noise level ``sigma``:
    betting for ``stop="decisions"`` (its first stakes set from ``prior`` = (the selection draws' votes for each
    guess, their number)), Clopper-Pearson over doubling looks for ``stop="radius"`` (whose bounds read only the
    estimation draws)."""
    if rule.stop == "decisions":
        return BettingTrackers(np.asarray(guesses, dtype=int), sigma, rule, prior=prior)
    return CertifyTrackers(np.asarray(guesses, dtype=int), sigma, rule)


def bernoulli_divergence(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """KL(Bernoulli(p) || Bernoulli(m)) where p > m (0 elsewhere): the log wealth per draw Kelly's bet on "pA > m"
    gains when pA = p."""
    p, m = np.broadcast_arrays(np.clip(p, 1e-12, 1 - 1e-12), np.clip(m, 1e-12, 1 - 1e-12))
    divergence = p * np.log(p / m) + (1 - p) * np.log((1 - p) / (1 - m))
    return np.where(p > m, divergence, 0.0)
