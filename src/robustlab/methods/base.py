"""What a training method is: craft the batch's training inputs once (``prepare``), then a loss over them.

The trainer calls ``ctx = method.prepare(model, batch, epoch)`` once per batch, then the optimiser calls
a closure that evaluates ``method.loss(model, batch, ctx)`` and back-propagates it, once for SGD and twice
for SAM-type minimisers (the adversarial inputs are not re-crafted for the second pass, as in SAM-AT).

Regularisers compose onto any base objective: ``loss = base(model, batch, ctx) + sum_r r(model, batch, ctx)``,
each returning a scalar (weight included) and named metrics that the trainer averages per epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.data.loader import Batch


@dataclass
class LossOutput:
    loss: torch.Tensor                       # scalar to back-propagate
    logits: torch.Tensor                     # logits on the inputs the method trains on (train accuracy)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # extra scalars, detached


class Regularizer:
    """A term added to a method's loss. Subclasses implement ``__call__`` -> (weighted value, metrics)."""
    name = "regularizer"

    def __call__(self, model: nn.Module, batch: Batch, ctx: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after each optimiser step (adaptive weights such as ELLE-A update here)."""

    def state_dict(self) -> dict:
        """State a resume needs (adaptive weights); none by default."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Method:
    """Base class: ``prepare`` crafts inputs, ``objective`` is the base loss, regularisers are added."""
    name = "method"

    def __init__(self, cfg, generator: torch.Generator | None = None):
        from robustlab.methods.regularizers import LinearityRegularizer
        self.cfg = cfg
        self.generator = generator
        self.regularizers: list[Regularizer] = [LinearityRegularizer(r, cfg.eps, generator)
                                                for r in getattr(cfg, "regularizers", [])]

    def prepare(self, model: nn.Module, batch: Batch, epoch: float) -> dict:
        return {"x_train": batch.x, "eps": self.cfg.eps}

    def objective(self, model: nn.Module, batch: Batch, ctx: dict) -> LossOutput:
        logits = model(ctx["x_train"])
        return LossOutput(F.cross_entropy(logits.float(), batch.y), logits)

    def loss(self, model: nn.Module, batch: Batch, ctx: dict) -> LossOutput:
        out = self.objective(model, batch, ctx)
        for reg in self.regularizers:
            value, metrics = reg(model, batch, ctx)
            out.loss = out.loss + value
            out.metrics.update(metrics)
        return out

    def after_step(self) -> None:
        for reg in self.regularizers:
            reg.after_step()

    def state_dict(self) -> dict:
        """State that must survive a resume (adaptive weights)."""
        return {"regularizers": [r.state_dict() for r in self.regularizers]}

    def load_state_dict(self, state: dict) -> None:
        for reg, st in zip(self.regularizers, state.get("regularizers", [])):
            reg.load_state_dict(st)
