"""When a sample may leave an attack on a randomized pipeline: the leave rule, with its error rate.

The headline counts a sample broken when its adversarial image is wrong in at least one of the N scoring draws (the
worst of N). An attack need not work on a sample until its candidate is wrong in *every* selection draw: once the
candidate is wrong in enough of m fresh selection draws, it would be wrong in some scoring draw with near certainty.

The rule: a candidate correct in at most ``c`` of ``m`` selection draws leaves the attack. Its error is a sample that
leaves and is then correct in all N scoring draws (robust under the full draws, though the rule let it go). The
selection and scoring draws are independent given the candidate, so for a candidate whose true chance of being
classified correctly in one draw is p, that error happens with probability

    P(Bin(m, p) <= c) * p^N,

and ``leave_count`` picks the largest ``c`` whose worst case over every p in [0, 1] is at most ``alpha``
(``LEAVE_ALPHA``, 1%). The rate holds for every sample, whatever its p: no prior, no assumption on the pipeline. When
no ``c`` >= 0 reaches alpha (few draws and N small), ``c`` is 0 -- wrong in every selection draw, the rule robaudit
used before -- and its own worst case is the rate stated (``leave_error``). A deterministic pipeline has m = N = 1
and c = 0: a sample leaves when it is fooled.

A sample's final candidate is the best of those judged for it (``attacks.selection.BestSoFar``); the rate is per
judged candidate, so a sample whose J candidates were judged leaves wrongly with probability at most J x the rate
(union bound). docs/numbers.md states the rule; tests/attacks/test_stopping.py measures its rate by simulation.
"""

from __future__ import annotations

from functools import lru_cache
from math import comb

LEAVE_ALPHA = 0.01
GRID = 2000  # p is searched on a grid of GRID + 1 points, then refined around the worst one


def binomial_cdf(c: int, m: int, p: float) -> float:
    """P(Bin(m, p) <= c)."""
    return sum(comb(m, j) * p**j * (1 - p) ** (m - j) for j in range(max(c, -1) + 1))


def joint_error(c: int, m: int, n: int, p: float) -> float:
    """P(a candidate correct with chance p leaves (<= c of m correct) and survives all n scoring draws)."""
    return binomial_cdf(c, m, p) * p**n


@lru_cache(maxsize=256)
def leave_error(c: int, m: int, n: int) -> float:
    """The worst case over p in [0, 1] of ``joint_error(c, m, n, p)``: the rule's error rate."""
    if c < 0:
        return 0.0
    if c >= m:
        return 1.0
    best = max(range(GRID + 1), key=lambda i: joint_error(c, m, n, i / GRID))
    fine = [(best - 1 + k / 50) / GRID for k in range(101)]
    return max(joint_error(c, m, n, min(1.0, max(0.0, p))) for p in fine)


@lru_cache(maxsize=256)
def leave_count(m: int, n: int, alpha: float = LEAVE_ALPHA) -> int:
    """The largest count ``c`` of correct selection draws (of ``m``) with which a sample leaves, its error rate
    against ``n`` scoring draws at most ``alpha``; at least 0 (wrong in every draw)."""
    c = 0
    while c + 1 < m and leave_error(c + 1, m, n) <= alpha:
        c += 1
    return c


def leaves(correct_fraction, m: int, n: int):
    """(N,) bool: the verdicts whose ``correct_fraction`` (N,) of ``m`` selection draws lets the sample leave against
    ``n`` scoring draws (``leave_count`` at ``LEAVE_ALPHA``, read at the call: 0 restores the rule "wrong in every
    draw"); a float tolerance keeps a count of c / m exact."""
    return correct_fraction * m <= leave_count(m, n, LEAVE_ALPHA) + 1e-6
