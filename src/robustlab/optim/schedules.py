r"""Learning-rate schedules as components, pure functions of the iteration, stepped every iteration.

With T total iterations, t the current one (0-based) and e = t / (iterations per epoch):

- ``cyclic``:    0 -> lr_max -> 0, piecewise linear, peak at ``peak_at * T`` (fast-AT papers; ELLE, N-FGSM, co_features);
  ``cycle_momentum`` moves momentum 0.9 -> 0.8 -> 0.9 against the lr, as torch's CyclicLR does
- ``multistep``: lr_max * gamma^(number of milestones <= e)
- ``cosine``:    lr_max * (1 + cos(pi t / T)) / 2
- ``constant``:  lr_max
and, except for cyclic, an optional linear warm-up from 0 over ``warmup_epochs``.

Because the value is a function of t alone, a resumed run needs no scheduler state.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from robustlab.core.errors import ConfigError
from robustlab.core.registry import Registry
from robustlab.core.schema import spec


@dataclass
class ScheduleConfig:
    name: str = spec("cyclic")


@dataclass
class WarmupConfig(ScheduleConfig):
    warmup_epochs: float = spec(0.0, lo=0.0, doc="linear warm-up from 0 over this many epochs")


@dataclass
class CyclicConfig(ScheduleConfig):
    peak_at: float = spec(0.5, lo=0.0, hi=1.0, doc="fraction of training spent rising")
    cycle_momentum: bool = spec(False, doc="move momentum 0.9->0.8->0.9 against the lr, as torch's CyclicLR does")

    def uses_total_epochs(self) -> bool:
        """The lr at every iteration depends on the run's length."""
        return True


@dataclass
class MultiStepConfig(WarmupConfig):
    milestones: list[float] = spec(default_factory=list, doc="epochs at which lr *= gamma")
    gamma: float = spec(0.1, lo=0.0)

    def check(self, key: str) -> None:
        if sorted(self.milestones) != list(self.milestones):
            raise ConfigError(f"{key}milestones: got {self.milestones!r}; must be increasing")


LR_SCHEDULES: Registry[type] = Registry("lr schedule", ScheduleConfig)


class Schedule:
    """``lr_at(lr_max, t, total, per_epoch)``; ``momentum_at(...)`` is None unless the schedule moves momentum."""

    def __init__(self, cfg):
        self.cfg = cfg

    def value(self, lr: float, t: int, total: int, per_epoch: int) -> float:
        raise NotImplementedError

    def lr_at(self, lr: float, t: int, total: int, per_epoch: int) -> float:
        value = self.value(lr, t, total, per_epoch)
        warm, epoch = self.cfg.warmup_epochs, t / per_epoch
        if warm > 0 and epoch < warm:
            value *= epoch / warm
        return value

    def momentum_at(self, lr: float, t: int, total: int, per_epoch: int) -> float | None:
        return None


@LR_SCHEDULES.register("cyclic", CyclicConfig)
class Cyclic(Schedule):
    def lr_at(self, lr, t, total, per_epoch):
        peak = self.cfg.peak_at * total
        if t <= peak:
            return lr * (t / peak if peak > 0 else 1.0)
        return lr * max(0.0, (total - t) / (total - peak))

    def momentum_at(self, lr, t, total, per_epoch):
        """torch CyclicLR's default: 0.9 at lr 0, falling linearly to 0.8 at the peak."""
        if not self.cfg.cycle_momentum:
            return None
        return 0.9 - 0.1 * (self.lr_at(lr, t, total, per_epoch) / lr)


@LR_SCHEDULES.register("multistep", MultiStepConfig)
class MultiStep(Schedule):
    def value(self, lr, t, total, per_epoch):
        return lr * self.cfg.gamma ** bisect.bisect_right(self.cfg.milestones, t / per_epoch)


@dataclass
class CosineConfig(WarmupConfig):
    def uses_total_epochs(self) -> bool:
        """The lr at every iteration depends on the run's length."""
        return True


@LR_SCHEDULES.register("cosine", CosineConfig)
class Cosine(Schedule):
    def value(self, lr, t, total, per_epoch):
        return lr * 0.5 * (1.0 + math.cos(math.pi * t / total))


@LR_SCHEDULES.register("constant", WarmupConfig)
class Constant(Schedule):
    def value(self, lr, t, total, per_epoch):
        return lr
