"""How many standing samples a convergence check must re-attack, and what it certifies when none of them falls.

The samples still standing after an audit are a finite population of ``population`` samples. Re-attack a seeded random
``drawn`` of them, without replacement: if none falls, a count ``bad`` of samples that *would* fall is rejected at
confidence ``c`` when the chance of drawing none of them, the hypergeometric P(X = 0) = C(N - K, m) / C(N, m), is at
most 1 - c. The largest count not rejected is the certified bound: at confidence ``c``, at most that many of the
standing samples would fall to the stronger attack, so the headline would fall by at most that many samples. The
bound is exact (no normal or Poisson approximation); ``subset_size`` inverts it.
"""

from __future__ import annotations

from math import comb, floor


def none_drawn(population: int, bad: int, drawn: int) -> float:
    """P(X = 0) for X ~ Hypergeometric(population, bad, drawn): a random ``drawn`` of ``population`` samples, of
    which ``bad`` would fall, contains none of them."""
    if bad < 0 or drawn < 0 or bad > population or drawn > population:
        raise ValueError(f"need 0 <= bad, drawn <= population; got {population=}, {bad=}, {drawn=}")
    return comb(population - bad, drawn) / comb(population, drawn)


def certified_fallers(population: int, drawn: int, *, confidence: float = 0.95) -> int:
    """The largest number of samples (of ``population``) that could still fall when ``drawn`` of them were
    re-attacked and none fell, at ``confidence``: the largest K with P(none of K drawn) > 1 - confidence."""
    alpha = 1 - confidence
    bad = 0
    while bad < population - drawn and none_drawn(population, bad + 1, drawn) > alpha:
        bad += 1
    return bad


def subset_size(population: int, allowed: int, *, confidence: float = 0.95) -> int:
    """The fewest samples to re-attack, of ``population``, so that if none falls at most ``allowed`` could
    (``certified_fallers`` <= ``allowed``) at ``confidence``. 0 when ``population`` <= ``allowed``."""
    if population <= allowed:
        return 0
    low, high = 0, population  # certified_fallers falls as drawn grows; the whole population certifies 0
    while low < high:
        middle = (low + high) // 2
        if certified_fallers(population, middle, confidence=confidence) <= allowed:
            high = middle
        else:
            low = middle + 1
    return low


def allowed_fallers(delta: float, total: int) -> int:
    """The samples a headline over ``total`` samples may lose for it to fall by at most ``delta`` (a fraction)."""
    return floor(delta * total + 1e-9)
