"""Base optimisers: the torch optimiser that applies an update (lr, weight decay, momentum), with the lr schedule.

An entry of :data:`OPTIMIZERS` maps its config to a ``torch.optim.Optimizer``; the minimiser
(``optim.minimizer``, minimizer.py) decides how each step uses the loss before that update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.registry import Registry
from robustlab.core.schema import component, spec
from robustlab.optim.minimizer import MINIMIZERS, Minimizer, MinimizerConfig
from robustlab.optim.schedules import LR_SCHEDULES, ScheduleConfig


@dataclass
class OptimizerConfig:
    """Keys every optimizer accepts."""
    name: str = spec("sgd", doc="a registered base optimizer (robustlab list optimizers)")
    lr: float = spec(0.1, lo=0.0, lo_open=True, doc="peak learning rate")
    weight_decay: float = spec(5e-4, lo=0.0)
    schedule: ScheduleConfig = component(LR_SCHEDULES, "cyclic", doc="learning-rate schedule")
    minimizer: MinimizerConfig = component(MINIMIZERS, "plain", doc="how a step uses the loss (plain, ...)")


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


OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer", OptimizerConfig)
OPTIMIZERS.register("sgd", SGDConfig)(
    lambda cfg, params: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                        nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay))
OPTIMIZERS.register("adamw", AdamWConfig)(
    lambda cfg, params: torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay))


def build_optimizer(cfg, params, bctx=None) -> Minimizer:
    """The base optimiser over ``params`` (tensors, or ``(name, tensor)`` pairs such as ``named_parameters()``, which
    the minimiser keeps as ``param_names``; ASAM's official convention needs them) inside the configured minimiser."""
    params = list(params)
    named = bool(params) and isinstance(params[0], tuple)
    minimizer = MINIMIZERS.build(cfg.minimizer, OPTIMIZERS.build(cfg, [p for _, p in params] if named else params), bctx)
    minimizer.param_names = {id(p): n for n, p in params} if named else {}
    return minimizer


def set_hyperparameters(optimizer: Minimizer, schedule, lr_max: float, t: int, total: int, per_epoch: int) -> float:
    """Write the lr (and cyclic momentum) that ``schedule`` gives iteration ``t`` into every param group."""
    lr = schedule.lr_at(lr_max, t, total, per_epoch)
    mom = schedule.momentum_at(lr_max, t, total, per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if mom is not None and "momentum" in group:
            group["momentum"] = mom
    return lr
