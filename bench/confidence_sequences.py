"""Which confidence sequence sequential CERTIFY should use, measured on simulated vote streams (no model: seconds).

    python bench/confidence_sequences.py [--streams 2000] [--alpha 0.001]

robaudit's sequential CERTIFY (``robaudit.certify.sequential``) bounds pA with Clopper-Pearson at doubling looks (50,
100, 200, ... draws, then n = 10,000), alpha spent across them. The alternative in the literature is a betting
confidence sequence (Waudby-Smith & Ramdas, JRSS-B 2023; Voracek 2024 for smoothing), looked at after every draw:
to test pA <= m it bets lambda_i (X_i - m) on each draw X_i, lambda_i the plug-in Kelly fraction (p_hat - m) /
(m (1 - m)) of the draws before it, capped at ``cap`` / m so that a draw against the class keeps at least 1 - cap of
the wealth, and rejects once the wealth reaches 1 / alpha (Ville's inequality); the decision "not certified" is the
mirror test.

Per true pA, over ``--streams`` Bernoulli streams each: the mean draws until the decision at r = sigma (pA against
Phi(1), the default gate's threshold at eps_l2 = sigma), and the share certified. Then the largest radius each can
certify after n draws that all vote for the class (the top of the radius curve; fixed-n CERTIFY's is
sigma Phi^-1(alpha^(1/n))).
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
from scipy.stats import norm
from tables import markdown_table  # bench/tables.py

from robaudit.certify.sequential import Looks, StoppingRule, lower_bounds

N_MAX = 10_000
THRESHOLD = float(norm.cdf(1.0))  # r = sigma


def doubling_draws(p: float, streams: int, alpha: float, seed: int) -> tuple[float, float]:
    """Mean draws to the decision at Phi(1) and the share certified, robaudit's rule (``StoppingRule``)."""
    rule = StoppingRule(Looks(N_MAX, alpha), radii=(1.0,))
    sizes = rule.looks.sizes()
    votes = np.cumsum([np.random.default_rng(seed).binomial(s, p, streams) for s in np.diff((0, *sizes))], axis=0)
    trackers, active = rule.trackers([0] * streams, sigma=1.0), np.arange(streams)
    for look, size in enumerate(sizes):
        mine = votes[look, active]
        active = active[~trackers.look(look, active, np.stack([mine, size - mine], 1), size)]
    return float(trackers.draws.mean()), float((trackers.decided[:, 0] == 1).mean())


def betting_draws(p: float, streams: int, alpha: float, seed: int, *, cap: float) -> tuple[float, float]:
    """Mean draws to the decision at Phi(1) and the share certified, a betting test after every draw."""
    x = np.random.default_rng(seed).random((N_MAX, streams)) < p
    m, bar = THRESHOLD, math.log(1 / alpha)
    up, down, successes = np.zeros(streams), np.zeros(streams), np.zeros(streams)
    stop, certified, open_ = np.full(streams, N_MAX), np.zeros(streams, dtype=bool), np.ones(streams, dtype=bool)
    for i in range(N_MAX):
        p_hat = (successes + 0.5) / (i + 1)
        up += np.log1p(np.clip((p_hat - m) / (m * (1 - m)), 0, cap / m) * (x[i] - m))
        down += np.log1p(np.clip((m - p_hat) / (m * (1 - m)), 0, cap / (1 - m)) * (m - x[i]))
        successes += x[i]
        decided = open_ & ((up >= bar) | (down >= bar))
        stop[decided], certified[decided & (up >= bar)], open_ = i + 1, True, open_ & ~decided
        if not open_.any():
            break
    return float(stop.mean()), float(certified.mean())


def top_radius_betting(n: int, alpha: float, *, cap: float) -> float:
    """The largest radius (in sigma) the betting test certifies after ``n`` draws all for the class: the largest m
    with n log(1 + cap (1 - m) / m) >= log(1 / alpha) (the bet at its cap throughout)."""
    low, high = 0.5, 1.0 - 1e-12
    for _ in range(100):
        middle = (low + high) / 2
        if n * math.log1p(cap * (1 - middle) / middle) >= math.log(1 / alpha):
            low = middle
        else:
            high = middle
    return float(norm.ppf(low))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.001)
    args = parser.parse_args(argv)
    rows = []
    for p in (1.0, 0.99, 0.95, 0.9, THRESHOLD + 0.03, THRESHOLD - 0.03, 0.7):
        row = {"pA": round(p, 3)}
        row["doubling CP: draws"], row["doubling CP: certified"] = doubling_draws(p, args.streams, args.alpha, 1)
        for cap in (0.5, 0.9):
            draws, share = betting_draws(p, args.streams, args.alpha, 2, cap=cap)
            row[f"betting cap {cap}: draws"], row[f"betting cap {cap}: certified"] = draws, share
        rows.append({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    print(markdown_table(rows))
    looks = Looks(N_MAX, args.alpha)
    ceilings = {
        "fixed-n CP (alpha)": norm.ppf(float(lower_bounds(np.array([N_MAX]), N_MAX, alpha=args.alpha)[0])),
        "doubling CP (last look: alpha / 2)": norm.ppf(
            float(lower_bounds(np.array([N_MAX]), N_MAX, alpha=looks.alpha_at(len(looks.sizes()) - 1))[0])
        ),
        "betting, cap 0.5": top_radius_betting(N_MAX, args.alpha, cap=0.5),
        "betting, cap 0.9": top_radius_betting(N_MAX, args.alpha, cap=0.9),
    }
    print(f"\nlargest radius (in sigma) after {N_MAX} draws all for the class:")
    print(markdown_table([{"bound": k, "radius / sigma": round(float(v), 3)} for k, v in ceilings.items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
