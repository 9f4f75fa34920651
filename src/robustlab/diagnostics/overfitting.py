"""Robust overfitting read off a run's per-epoch robust-accuracy curve (Rice et al., 2020): the best robust
accuracy, its epoch, the last one and the gap best - last. A large gap means the model was most robust mid-training
and lost it (early stopping on a validation split keeps the best checkpoint)."""
from __future__ import annotations

PREFERRED = ("test_pgd_acc", "val_pgd_acc")


def robust_overfitting(history: list[dict], key: str | None = None) -> dict:
    """{"metric", "best", "best_epoch", "last", "gap"} for ``key`` (default: the test, else validation PGD
    accuracy of the monitor); empty if the run has no such curve."""
    key = key or next((k for k in PREFERRED if any(r.get(k) is not None for r in history)), None)
    points = [(r["epoch"], r[key]) for r in history if key and r.get(key) is not None]
    if not points:
        return {}
    best_epoch, best = max(points, key=lambda p: (p[1], -p[0]))      # the first epoch reaching the maximum
    last = points[-1][1]
    return {"metric": key, "best": best, "best_epoch": best_epoch, "last": last, "gap": best - last}
