r"""Learning-rate schedules as pure functions of the iteration, stepped every iteration.

With T total iterations, t the current one (0-based) and e = t / (iterations per epoch):

- cyclic:   0 -> lr_max -> 0, piecewise linear, peak at ``peak_at * T`` (fast-AT papers; ELLE, N-FGSM, co_features)
- multistep: lr_max * gamma^(number of milestones <= e)
- cosine:   lr_max * (1 + cos(pi t / T)) / 2
- constant: lr_max
and, except for cyclic, an optional linear warm-up from 0 over ``warmup_epochs``.

Because the value is a function of t alone, a resumed run needs no scheduler state.
"""
from __future__ import annotations

import bisect
import math


def lr_at(cfg, t: int, total: int, per_epoch: int) -> float:
    """Learning rate for iteration ``t`` of ``total`` (``cfg`` is an OptimConfig)."""
    lr = cfg.lr
    if cfg.schedule == "cyclic":
        peak = cfg.peak_at * total
        if t <= peak:
            return lr * (t / peak if peak > 0 else 1.0)
        return lr * max(0.0, (total - t) / (total - peak))
    epoch = t / per_epoch
    if cfg.schedule == "multistep":
        value = lr * cfg.gamma ** bisect.bisect_right(cfg.milestones, epoch)
    elif cfg.schedule == "cosine":
        value = lr * 0.5 * (1.0 + math.cos(math.pi * t / total))
    else:
        value = lr
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        value *= epoch / cfg.warmup_epochs
    return value


def momentum_at(cfg, t: int, total: int, per_epoch: int) -> float | None:
    """Cyclic momentum (torch CyclicLR's default): 0.9 at lr 0, falling linearly to 0.8 at the peak."""
    if cfg.schedule != "cyclic" or not cfg.cycle_momentum:
        return None
    frac = lr_at(cfg, t, total, per_epoch) / cfg.lr
    return 0.9 - 0.1 * frac
