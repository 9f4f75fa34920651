"""Spearman's rank correlation (robustlab.report.rank) and the sharpness-vs-transfer rows of a transfer study."""
import math
import random

import pytest
from scipy import stats

from robustlab.eval.transfer_claims import RANK_LABEL, pooled_rank, rank_rows, transfer_claims
from robustlab.report.claims import parse_claims
from robustlab.report.rank import average_ranks, permutation_p, spearman


def test_average_ranks_share_ties():
    assert average_ranks([10, 30, 20, 30]) == [1, 3.5, 2, 3.5]


@pytest.mark.parametrize("n,ties", [(3, False), (7, True), (12, False), (25, True)])
def test_spearman_equals_scipy(n, ties):
    rng = random.Random(n)
    xs = [rng.randint(0, 4) if ties else rng.random() for _ in range(n)]
    ys = [x + rng.gauss(0, 0.7) for x in xs]
    rho, p = stats.spearmanr(xs, ys)
    assert spearman(xs, ys) == pytest.approx(rho, abs=1e-12)
    if n <= 8:       # exact permutation p: scipy's permutation test over all orderings
        exact = stats.permutation_test((ys,), lambda y: stats.spearmanr(xs, y)[0], permutation_type="pairings",
                                       n_resamples=math.inf).pvalue
        assert permutation_p(xs, ys) == pytest.approx(exact, abs=1e-12)
    else:            # random permutations: close to scipy's asymptotic p
        assert permutation_p(xs, ys, permutations=4000) == pytest.approx(p, abs=0.03)


def test_hand_cases():
    assert spearman([1, 2, 3], [30, 20, 10]) == -1.0
    assert permutation_p([1, 2, 3], [30, 20, 10]) == pytest.approx(2 / 6)   # identity and reverse of 3! orderings
    assert math.isnan(spearman([1, 2], [2, 1])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="3 x values but 2 y values"):
        spearman([1, 2, 3], [1, 2])


def _row(label, seed, path, eig, success):
    return {"label": label, "seed": seed, "kernel_path": path, "status": "finished", "hessian_top_eig": eig,
            "hessian_trace": 10 * eig, "success_BIM_all": success}


def test_rank_rows_per_seed_and_a_claim_counts_them():
    rows = ([_row(f"S{i}", 0, "AVX2", e, s) for i, (e, s) in enumerate([(1, .9), (2, .8), (3, .5), (4, .4)])] +
            [_row(f"S{i}", 1, "AVX2", e, s) for i, (e, s) in enumerate([(1, .4), (2, .8), (3, .5), (4, .9)])] +
            [_row("S0", 2, "AVX2", 1, .5), _row("S1", 2, "AVX2", 2, .6)])         # 2 surrogates: no row
    ranks = rank_rows(rows, ["BIM"])
    assert [(r["seed"], r["n_BIM_top_eig"]) for r in ranks] == [(0, 4), (1, 4)]
    assert ranks[0]["rank_BIM_top_eig"] == -1.0 and ranks[1]["rank_BIM_top_eig"] == pytest.approx(0.8)   # 1 - 6*2/(4*15)
    assert ranks[0]["rank_BIM_trace"] == -1.0 and all(r["label"] == RANK_LABEL for r in ranks)
    claims = parse_claims([{"says": "flat transfers", "group": RANK_LABEL, "metric": "rank_BIM_top_eig", "max": -0.5,
                            "at_least": 0.5}])
    (c,) = transfer_claims(claims, rows + ranks)
    assert (c["met"], c["runs"], c["holds"], c["group"]) == (1, 2, True, RANK_LABEL)
    pooled = pooled_rank(rows, ["BIM"])
    xs = [r["hessian_top_eig"] for r in rows]
    assert pooled["n_BIM_top_eig"] == 10
    assert pooled["rank_BIM_top_eig"] == pytest.approx(stats.spearmanr(xs, [r["success_BIM_all"] for r in rows])[0])
