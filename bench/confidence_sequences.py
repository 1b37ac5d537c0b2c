"""Which confidence sequence sequential CERTIFY should use, measured on simulated vote streams (no model: seconds).

    python bench/confidence_sequences.py [--streams 2000] [--alpha 0.001]

robaudit's sequential CERTIFY has two constructions of a confidence sequence on pA (``robaudit.certify``): a betting
confidence sequence (Waudby-Smith & Ramdas, JRSS-B 2023; ``betting.py``), which reads every draw, and Clopper-Pearson
at doubling looks (50, 100, 200, ... draws, then n = 10,000), alpha spent across them (``sequential.py``). Both run
here as robaudit runs them (the same trackers, draws read in robaudit's looks), on simulated vote streams.

Per true pA, over ``--streams`` Bernoulli streams each: the mean draws until the decision at r = sigma (pA against
Phi(1), the default gate's threshold when eps_l2 = sigma), and the share certified. Then the largest radius each
certifies after n draws that all vote for the class (the top of the radius curve), beside fixed-n CERTIFY's
sigma Phi^-1(alpha^(1/n)). Betting decides sooner; doubling Clopper-Pearson reaches higher at the top: robaudit decides
by betting (``stop: decisions``) and estimates the curve by Clopper-Pearson (``stop: radius``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy.stats import norm
from tables import markdown_table  # bench/tables.py

from robaudit.certify.betting import GRID_TOP, PIECE, trackers_for
from robaudit.certify.sequential import CertifyTrackers, Looks, StoppingRule, lower_bounds

N_MAX = 10_000
THRESHOLD = float(norm.cdf(1.0))  # r = sigma


def run(trackers, p: float, streams: int, seed: int) -> tuple[float, float]:
    """Run ``trackers`` (class 0 every sample's guess) on Bernoulli(p) streams, look by look; the mean draws to the
    decision at r = sigma and the share certified."""
    rng = np.random.default_rng(seed)
    votes, active, done = np.zeros(streams, dtype=int), np.arange(streams), 0
    for look, size in enumerate(trackers.looks.sizes()):
        if not len(active):
            break
        classes = (rng.random((len(active), size - done)) >= p).astype(int)  # 0: a vote for the class
        votes[active] += (classes == 0).sum(1)
        mine = votes[active]
        stopped = trackers.look(look, active, np.stack([mine, size - mine], 1), size, classes)
        active, done = active[~stopped], size
    return float(trackers.draws.mean()), float((trackers.decided[:, 0] == 1).mean())


def constructions(alpha: float, streams: int, *, grid: float) -> dict:
    """Fresh trackers of both constructions deciding r = sigma (sigma 1) for ``streams`` samples."""
    rule = StoppingRule(N_MAX, alpha, radii=(1.0,), grid=grid)
    guesses = np.zeros(streams, dtype=int)
    return {
        "doubling Clopper-Pearson": CertifyTrackers(guesses, 1.0, rule),
        "betting": trackers_for(rule, guesses, sigma=1.0),
    }


def top_radius(alpha: float) -> dict[str, float]:
    """The largest radius (in sigma) each construction certifies after ``N_MAX`` draws that all vote for the class,
    and fixed-n CERTIFY's."""
    looks = Looks(N_MAX, alpha)
    last = looks.alpha_at(len(looks.sizes()) - 1)
    tops = {"fixed-n Clopper-Pearson (alpha)": float(norm.ppf(lower_bounds(np.array([N_MAX]), N_MAX, alpha=alpha)[0]))}
    tops["doubling Clopper-Pearson (last look: alpha / 2)"] = float(
        norm.ppf(lower_bounds(np.array([N_MAX]), N_MAX, alpha=last)[0])
    )
    betting = trackers_for(StoppingRule(N_MAX, alpha, radii=(GRID_TOP,), grid=0.01), [0], sigma=1.0)
    for first in range(0, N_MAX, PIECE):  # all N_MAX draws, whatever the stopping rule would say
        betting.read(np.zeros(1, dtype=int), np.ones((1, min(PIECE, N_MAX - first))))
    tops["betting (robaudit's, grid 0.01 sigma)"] = betting.certificates()[0].radius
    return tops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.001)
    args = parser.parse_args(argv)
    rows = []
    for p in (1.0, 0.99, 0.95, 0.9, THRESHOLD + 0.03, THRESHOLD - 0.03, 0.7):
        row: dict = {"pA": round(p, 3)}
        for name, trackers in constructions(args.alpha, args.streams, grid=0.0).items():
            draws, share = run(trackers, p, args.streams, seed=1)
            row[f"{name}: draws"], row[f"{name}: certified"] = round(draws, 1), round(share, 3)
        rows.append(row)
    print(markdown_table(rows))
    print(f"\nlargest radius (in sigma) after {N_MAX} draws all for the class:")
    print(markdown_table([{"bound": k, "radius / sigma": round(v, 3)} for k, v in top_radius(args.alpha).items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
