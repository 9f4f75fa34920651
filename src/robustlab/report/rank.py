"""Spearman's rank correlation, for "does sharpness predict transfer?" (docs/transfer.md).

    rho = Pearson correlation of the ranks of x and of y,

ties given their average rank (so rho equals ``scipy.stats.spearmanr``). Two-sided p-value by permutation: the
fraction of orderings of y whose |rho| is at least the observed |rho| (exact over all n! orderings for n <= 8,
else ``permutations`` seeded random ones, the observed ordering counted). With the few surrogates a CPU study has,
the count n is reported beside every rho: rho = -1 over 3 points happens by chance once in 6 orderings.
"""
from __future__ import annotations

import itertools
import math
import random

EXACT_UP_TO = 8


def average_ranks(values: list[float]) -> list[float]:
    """Ranks 1..n; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    sab = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    saa, sbb = sum((x - ma) ** 2 for x in a), sum((y - mb) ** 2 for y in b)
    return sab / math.sqrt(saa * sbb) if saa > 0 and sbb > 0 else math.nan


def spearman(xs: list[float], ys: list[float]) -> float:
    """rho over the pairs; NaN with fewer than 3 pairs or when either side is constant."""
    if len(xs) != len(ys):
        raise ValueError(f"spearman: {len(xs)} x values but {len(ys)} y values")
    if len(xs) < 3:
        return math.nan
    return _pearson(average_ranks(list(xs)), average_ranks(list(ys)))


def permutation_p(xs: list[float], ys: list[float], permutations: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of rho under "y's order is unrelated to x's"; NaN where rho is."""
    observed = spearman(xs, ys)
    if math.isnan(observed):
        return math.nan
    rx, ry = average_ranks(list(xs)), average_ranks(list(ys))
    tol = 1e-12
    if len(ry) <= EXACT_UP_TO:
        orderings = list(itertools.permutations(ry))
        hits = sum(abs(_pearson(rx, list(p))) >= abs(observed) - tol for p in orderings)
        return hits / len(orderings)
    rng = random.Random(seed)
    hits = 1                      # the observed ordering
    for _ in range(permutations):
        p = ry[:]
        rng.shuffle(p)
        hits += abs(_pearson(rx, p)) >= abs(observed) - tol
    return hits / (permutations + 1)
