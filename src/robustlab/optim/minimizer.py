r"""Optimizer components: every update goes through ``step(closure)``, in every precision.

A :class:`Minimizer` wraps a torch base optimizer. The trainer never calls ``backward`` itself: it hands
``step`` a closure that zeroes the gradients, evaluates the method's loss (pass ``k`` of the step: the
closure counts its calls), back-propagates it and, in fp16, unscales the gradients. A plain minimiser calls
the closure once and then :meth:`Minimizer.base_step`; a SAM-type one calls it twice (ascend, evaluate,
restore) before :meth:`base_step`. ``base_step`` is skipped when the step's ``guard`` says the gradients
overflowed (fp16 loss scaling, see precision.py). ``state_dict`` holds the base optimiser's state and the
minimiser's own, so a resume is exact.

Add an optimizer: subclass :class:`Minimizer` (override ``build_base`` and/or ``step``), give it a config
dataclass, register it in :data:`OPTIMIZERS`.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Callable

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import Registry
from robustlab.core.schema import component, spec
from robustlab.optim.schedules import LR_SCHEDULES, ScheduleConfig  # noqa: F401  (LR_SCHEDULES: the schedule field)


@dataclass
class OptimizerConfig:
    """Keys every optimizer accepts."""
    name: str = spec("sgd", doc="a registered optimizer (robustlab list optimizers)")
    lr: float = spec(0.1, lo=0.0, lo_open=True, doc="peak learning rate")
    weight_decay: float = spec(5e-4, lo=0.0)
    schedule: ScheduleConfig = component(LR_SCHEDULES, "cyclic", doc="learning-rate schedule")


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = spec(0.9, lo=0.0, hi=1.0)
    nesterov: bool = spec(False)


@dataclass
class AdamWConfig(OptimizerConfig):
    betas: list[float] = spec(default_factory=lambda: [0.9, 0.999], doc="AdamW betas")

    def check(self, key: str) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"{key}betas: got {self.betas!r}; expected two numbers")


OPTIMIZERS: Registry[type["Minimizer"]] = Registry("optimizer", OptimizerConfig)


class Minimizer:
    Config = OptimizerConfig

    def __init__(self, cfg, params, bctx=None):
        self.cfg = cfg
        self.base = self.build_base(cfg, list(params))
        self.guard: Callable[[], bool] | None = None   # set by the trainer (fp16: the loss scaler's finite())

    def build_base(self, cfg, params) -> torch.optim.Optimizer:
        raise NotImplementedError

    @property
    def param_groups(self) -> list[dict]:
        return self.base.param_groups

    def params(self) -> typing.Iterator[torch.nn.Parameter]:
        for group in self.base.param_groups:
            yield from group["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def base_step(self) -> None:
        """The base optimiser's update with the gradients now in place, unless the guard vetoes it."""
        if self.guard is None or self.guard():
            self.base.step()

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One pass: loss and gradients from the closure, then the base update."""
        with torch.enable_grad():
            loss = closure()
        self.base_step()
        return loss

    def extra_state(self) -> dict:
        """The minimiser's own state (none for a plain one)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {"base": self.base.state_dict(), "own": self.extra_state()}

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state["base"])
        self.load_extra_state(state.get("own", {}))


@OPTIMIZERS.register("sgd", SGDConfig)
class SGD(Minimizer):
    """SGD with momentum, optional Nesterov, and weight decay (torch.optim.SGD)."""

    def build_base(self, cfg, params):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw", AdamWConfig)
class AdamW(Minimizer):
    """AdamW (torch.optim.AdamW): decoupled weight decay."""

    def build_base(self, cfg, params):
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def build_optimizer(cfg, params, bctx=None) -> Minimizer:
    return OPTIMIZERS.build(cfg, params, bctx)


def set_hyperparameters(optimizer: Minimizer, schedule, lr_max: float, t: int, total: int, per_epoch: int) -> float:
    """Write the lr (and cyclic momentum) that ``schedule`` gives iteration ``t`` into every param group."""
    lr = schedule.lr_at(lr_max, t, total, per_epoch)
    mom = schedule.momentum_at(lr_max, t, total, per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if mom is not None and "momentum" in group:
            group["momentum"] = mom
    return lr
