"""The collapse of robustness to ~0 and the local-linearity warning before it (robustlab.diagnostics.catastrophic):
hand-made curves, including the round-3 CIFAR-10 carrier run's recorded PGD curve, where the CO rule (peak >= 0.2)
does not fire."""
from robustlab.diagnostics import collapse_verdict, linearity_lead, linearity_rise_epoch, robustness_lost_epoch

# test PGD-10 and clean accuracy per epoch of docs/evidence/searches/cifar10_co_round3_curves.csv, "FGSM-AT eps 8 beta 8"
ROUND3_PGD = [0.048, 0.126, 0.162, 0.094, 0.022, 0.01, 0.0, 0.002, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
ROUND3_CLEAN = [0.218, 0.376, 0.298, 0.446, 0.478, 0.676, 0.686, 0.686, 0.792, 0.794, 0.774, 0.804, 0.806, 0.828, 0.826]


def test_lost_epoch_counts_from_the_last_time_above_the_floor():
    assert robustness_lost_epoch(ROUND3_PGD) == 6                 # <= 0.02 from epoch 6 to the end
    assert collapse_verdict(ROUND3_PGD, ROUND3_CLEAN) == ("none", None)   # the CO rule needs a peak >= 0.2
    assert robustness_lost_epoch([0.1, 0.0, 0.3, 0.0]) == 4       # a recovery resets it
    assert robustness_lost_epoch([0.0, 0.01]) is None             # never robust: nothing was lost
    assert robustness_lost_epoch([0.3, 0.25]) is None             # robust at the end
    assert robustness_lost_epoch([0.3, None, 0.0]) == 3           # missing epochs are skipped


def test_linearity_rise_and_lead():
    assert linearity_rise_epoch([1.0, 1.2, 0.9, 3.5, 9.0]) == 4   # 3.5 >= 3 x median(1.0, 1.2, 0.9) = 3.0
    assert linearity_rise_epoch([1.0, 2.9]) is None               # needs two earlier epochs
    assert linearity_rise_epoch([1.0, 1.0, 2.9, 8.0]) == 4
    rows = [{"test_pgd_acc": p, "diag_elle_error": e} for p, e in
            zip([0.1, 0.15, 0.16, 0.08, 0.01, 0.0], [0.01, 0.012, 0.011, 0.05, 0.2, 0.3])]
    assert linearity_lead(rows) == {"lost_epoch": 5, "elle_rise_epoch": 4, "linearity_lead": 1}
    late = [dict(r, diag_elle_error=0.01) for r in rows[:5]] + [dict(rows[5])]
    assert linearity_lead(late) == {"lost_epoch": 5, "elle_rise_epoch": None, "linearity_lead": None}


def test_collapse_map_counts_runs_with_robustness_lost_per_cell():
    """The study report's collapse map: per (eps, beta) cell, k of n runs in CO, in failure, with robustness lost."""
    from robustlab.report.study import COLLAPSE_PANELS, cell_counts
    rows = [{"method.eps": e, "data.inject.beta": b, "collapse": c, "lost_epoch": lost}
            for e, b, c, lost in [(8, 0, "none", None), (8, 0, "none", ""), (8, 8, "none", 5), (8, 8, "co", 7),
                                  (6, 8, "failure", None), (6, 8, "none", 3), (6, 0, "none", None)]]
    got = {name: [[sum(c) for c in row] for row in cell_counts(rows, "method.eps", "data.inject.beta", counted)]
           for name, counted in COLLAPSE_PANELS}
    # rows: beta 0, 8; columns: eps 6, 8
    assert got == {"CO": [[0, 0], [0, 1]], "training failure": [[0, 0], [1, 0]], "robustness lost": [[0, 0], [1, 2]]}
    assert [[len(c) for c in row] for row in cell_counts(rows, "method.eps", "data.inject.beta", lambda r: 1)] == \
        [[1, 2], [2, 2]]
