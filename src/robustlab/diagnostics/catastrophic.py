"""Catastrophic overfitting (CO) read off a per-epoch multi-step robust-accuracy curve.

Definition used here: CO sets in at the first epoch e whose PGD accuracy falls below ``drop`` times the
best PGD accuracy seen before e, where that best is at least ``min_peak`` (so a run that never became
robust is not called collapsed), and the curve stays below that level until the end of training.
With the defaults (drop 0.25, min_peak 0.2): a run peaking at 0.6 has collapsed once it is below 0.15
for good. FGSM accuracy is not part of the rule; reports show it beside PGD, where CO shows as FGSM
accuracy staying high while PGD accuracy is near zero.
"""
from __future__ import annotations


def co_onset(pgd_curve: list[float], drop: float = 0.25, min_peak: float = 0.2) -> int | None:
    """1-based epoch at which CO set in (see module docstring), or None."""
    best, onset = 0.0, None
    for epoch, acc in enumerate(pgd_curve, start=1):
        if acc is None:
            continue
        if onset is None:
            if best >= min_peak and acc < drop * best:
                onset, level = epoch, drop * best
            best = max(best, acc)
        elif acc >= level:
            onset = None
            best = max(best, acc)
    return onset


def co_onset_in_metrics(metrics: list[dict], key: str = "test_pgd_acc") -> int | None:
    """CO onset of a run from its metrics.jsonl rows."""
    return co_onset([m.get(key) for m in metrics])


def co_fires(curve: list[float], drop: float = 0.25, min_peak: float = 0.2) -> bool:
    """Live CO rule, checked after each epoch: the newest PGD accuracy is below ``drop`` times the best
    earlier one, which was at least ``min_peak`` (the onset condition of :func:`co_onset`, without
    waiting to see whether the run recovers)."""
    vals = [v for v in curve if v is not None]
    if len(vals) < 2:
        return False
    best = max(vals[:-1])
    return best >= min_peak and vals[-1] < drop * best
