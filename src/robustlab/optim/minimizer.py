r"""How an optimiser step uses the loss: minimisers behind ``step(closure)``, in every precision.

``optim`` names the base optimiser (``sgd``, ``adamw``: lr, weight decay, schedule; :mod:`robustlab.optim.base`)
and ``optim.minimizer`` how each step uses the closure (``plain``: once; SAM-type and AWP: several passes)::

    optim: {name: sgd, lr: 0.1, momentum: 0.9, minimizer: {name: plain}}

The trainer never calls ``backward`` itself: it hands ``step`` a closure that zeroes the gradients, evaluates the
method's loss (pass ``k`` of the step: the closure counts its calls), back-propagates it and, in fp16, unscales
the gradients. A minimiser calls the closure as often as its algorithm needs and then :meth:`Minimizer.base_step`,
which the step's ``guard`` vetoes when a pass overflowed (fp16 loss scaling, precision.py). ``state_dict`` holds
the base optimiser's state and the minimiser's own, so a resume is exact.

Add a minimiser: subclass :class:`Minimizer` (override ``step``), give it a config dataclass, register it in
:data:`MINIMIZERS` (docs/extending.md).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Callable

import torch

from robustlab.core.context import BuildContext, EpochContext
from robustlab.core.registry import Registry
from robustlab.core.schema import spec


@dataclass
class MinimizerConfig:
    name: str = spec("plain", doc="a registered minimiser (robustlab list minimizers)")


MINIMIZERS: Registry[type["Minimizer"]] = Registry("minimizer", MinimizerConfig)


class Minimizer:
    Config = MinimizerConfig

    def __init__(self, cfg, base: torch.optim.Optimizer, bctx: BuildContext | None = None):
        self.cfg = cfg
        self.base = base
        self.bctx = bctx
        self.guard: Callable[[], bool] | None = None   # set by the trainer (fp16: the loss scaler's finite())
        self.param_names: dict[int, str] = {}          # id(parameter) -> its name, when built from named parameters

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
        raise NotImplementedError

    @staticmethod
    def pass_at(closure: Callable[[], torch.Tensor], params: list[torch.Tensor], deltas: list[torch.Tensor]) -> None:
        """One more pass of the closure at w + deltas (its gradient left in ``p.grad``), then w restored bit for bit
        (AWP, the SAM family)."""
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            torch._foreach_add_(params, deltas)
        with torch.enable_grad():
            closure()
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)

    def on_epoch_start(self, ectx: EpochContext) -> None:
        """Called before each epoch (warm-ups, schedules of the minimiser's own)."""

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


@MINIMIZERS.register("plain")
class Plain(Minimizer):
    """One pass: the loss's gradient, then the base optimiser's update."""

    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        self.base_step()
        return loss
