"""Catastrophic overfitting (CO) read off per-epoch robust- and clean-accuracy curves.

Definition used here: CO sets in at the first epoch e whose PGD accuracy falls below ``drop`` times the
best PGD accuracy seen before e, where that best is at least ``min_peak`` (a run that never became robust
is not called collapsed), **while the model still classifies clean inputs as well as it did**: clean accuracy at
e, and at the last epoch, is at least ``keep`` times the clean accuracy at the epoch of that PGD peak. For
:func:`co_onset` the PGD curve must also stay below that level until the end. A run whose robust accuracy
collapsed while its clean accuracy fell by more than that (a model broken into a near-constant classifier, a
divergence, or the clean-accuracy loss that FGSM-AT shows on injected-feature data) is a *training failure*, not
the catastrophic overfitting of the papers (Wong et al. 2020: robust accuracy drops to ~0 within an epoch while
clean accuracy stays high): :func:`collapse_verdict` tells the two apart.
With the defaults (drop 0.25, min_peak 0.2, keep 0.9): a run peaking at PGD 0.6 with clean 0.96 has collapsed
once it is below 0.15 for good while its clean accuracy is >= 0.864 at the onset and at the end. FGSM accuracy
is not part of the rule; reports show it beside PGD, where CO shows as FGSM accuracy staying high while PGD
accuracy is near zero. Without a clean curve the clean condition is skipped.
"""
from __future__ import annotations

DROP, MIN_PEAK, KEEP = 0.25, 0.2, 0.9


def _still_classifies(clean: list | None, epoch_idx: int, peak_idx: int, keep: float) -> bool:
    if clean is None or clean[epoch_idx] is None or clean[peak_idx] is None:
        return True
    return clean[epoch_idx] >= keep * clean[peak_idx]


def co_onset(pgd_curve: list[float], clean_curve: list[float] | None = None, drop: float = DROP,
             min_peak: float = MIN_PEAK, keep: float = KEEP) -> int | None:
    """1-based epoch at which CO set in (see module docstring), or None."""
    best, best_i, onset, peak_i = 0.0, 0, None, 0
    for i, acc in enumerate(pgd_curve):
        if acc is None:
            continue
        if onset is None:
            if best >= min_peak and acc < drop * best and _still_classifies(clean_curve, i, best_i, keep):
                onset, level, peak_i = i + 1, drop * best, best_i
            if acc > best:
                best, best_i = acc, i
        elif acc >= level:
            onset = None
            if acc > best:
                best, best_i = acc, i
    last = max((i for i, v in enumerate(pgd_curve) if v is not None), default=0)
    if onset is not None and not _still_classifies(clean_curve, last, peak_i, keep):
        return None                    # clean accuracy did not hold to the end: a training failure
    return onset


def collapse_verdict(pgd_curve: list[float], clean_curve: list[float] | None = None) -> tuple[str, int | None]:
    """``("co", onset)`` when robust accuracy collapsed for good while clean accuracy held (:func:`co_onset`);
    ``("failure", epoch)`` when robust accuracy collapsed the same way but clean accuracy fell too (not CO);
    ``("none", None)`` otherwise. Epochs are 1-based."""
    onset = co_onset(pgd_curve, clean_curve)
    if onset is not None:
        return "co", onset
    collapse = co_onset(pgd_curve)
    return ("failure", collapse) if collapse is not None else ("none", None)


def co_onset_in_metrics(metrics: list[dict], prefix: str = "test") -> int | None:
    """CO onset of a run from its metrics.jsonl rows (``{prefix}_pgd_acc`` and ``{prefix}_clean_acc``)."""
    return co_onset([m.get(f"{prefix}_pgd_acc") for m in metrics], [m.get(f"{prefix}_clean_acc") for m in metrics])


def collapse_verdict_in_metrics(metrics: list[dict], prefix: str = "test") -> tuple[str, int | None]:
    """:func:`collapse_verdict` of a run from its metrics.jsonl rows (``{prefix}_pgd_acc``, ``{prefix}_clean_acc``)."""
    return collapse_verdict([m.get(f"{prefix}_pgd_acc") for m in metrics], [m.get(f"{prefix}_clean_acc") for m in metrics])


def co_fires(curve: list[float], clean_curve: list[float] | None = None, drop: float = DROP,
             min_peak: float = MIN_PEAK, keep: float = KEEP) -> bool:
    """Live CO rule, checked after each epoch: the newest PGD accuracy is below ``drop`` times the best
    earlier one, which was at least ``min_peak``, and the newest clean accuracy is at least ``keep`` times
    the clean accuracy at that best epoch (the onset condition of :func:`co_onset`, without waiting to
    see whether the run recovers)."""
    idx = [i for i, v in enumerate(curve) if v is not None]
    if len(idx) < 2:
        return False
    last = idx[-1]
    peak = max(idx[:-1], key=lambda i: curve[i])
    return (curve[peak] >= min_peak and curve[last] < drop * curve[peak]
            and _still_classifies(clean_curve, last, peak, keep))


# ---- the collapse of robustness to ~0 and the local-linearity warning before it -----------------------------------
# Where robust accuracy never builds to the CO rule's peak (CIFAR-10 at CPU scale: docs/cifar10.md), the collapse the
# papers describe (robust accuracy to ~0 for good while the model still learns) is read off separately, with these
# thresholds fixed before the CIFAR-10 claim runs. They are not the CO rule above.
FLOOR, RISE = 0.02, 3.0


def robustness_lost_epoch(pgd_curve: list, floor: float = FLOOR) -> int | None:
    """1-based epoch from which PGD accuracy stays at or below ``floor`` to the end, after some earlier epoch was
    above it; None when it never was above, or does not end at the floor. E.g. [.05, .16, .02, .0, .01] -> 3."""
    idx = [i for i, v in enumerate(pgd_curve) if v is not None]
    if not idx or pgd_curve[idx[-1]] > floor:
        return None
    k = len(idx) - 1
    while k > 0 and pgd_curve[idx[k - 1]] <= floor:
        k -= 1
    return idx[k] + 1 if k > 0 else None


def linearity_rise_epoch(errors: list, factor: float = RISE, history: int = 2) -> int | None:
    """1-based first epoch whose local-linearity error (``diag_elle_error``) is at least ``factor`` times the median
    of all earlier epochs' (at least ``history`` of them): the warning the ELLE paper (Fig. 2) sees before CO."""
    seen = []
    for i, e in enumerate(errors):
        if e is None:
            continue
        if len(seen) >= history and e >= factor * sorted(seen)[len(seen) // 2] and e > 0:
            return i + 1
        seen.append(e)
    return None


def linearity_lead(metrics: list[dict], prefix: str = "test") -> dict:
    """From metrics.jsonl rows: ``lost_epoch`` (:func:`robustness_lost_epoch` of ``{prefix}_pgd_acc``),
    ``elle_rise_epoch`` (:func:`linearity_rise_epoch` of ``diag_elle_error`` up to that epoch) and ``linearity_lead``
    = lost_epoch - elle_rise_epoch (epochs by which the linearity error rose first; 0: in the same epoch; negative:
    after; None when either is missing)."""
    lost = robustness_lost_epoch([m.get(f"{prefix}_pgd_acc") for m in metrics])
    errors = [m.get("diag_elle_error") for m in metrics]
    rise = linearity_rise_epoch(errors[:lost] if lost else errors)
    return {"lost_epoch": lost, "elle_rise_epoch": rise,
            "linearity_lead": lost - rise if lost is not None and rise is not None else None}
