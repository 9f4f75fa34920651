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
    """A term added to a method's loss. Subclasses implement ``__call__`` -> (weighted value, metrics).

    A term that only needs the model's logits on extra inputs (ELLE's 3B triplet) may set ``fuses = True``
    and implement ``extra_inputs`` + ``from_logits``: the method then sends those inputs through the same
    forward pass as its training inputs (one larger batch; BatchNorm sees them together)."""
    name = "regularizer"
    fuses = False

    def __call__(self, model: nn.Module, batch: Batch, ctx: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def extra_inputs(self, batch: Batch, ctx: dict) -> torch.Tensor:
        raise NotImplementedError

    def from_logits(self, logits: torch.Tensor, batch: Batch, ctx: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
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

    def objective(self, model: nn.Module, batch: Batch, ctx: dict, logits: torch.Tensor | None = None) -> LossOutput:
        """The base loss on ``ctx["x_train"]``; ``logits`` are those inputs' logits when a fused forward
        already computed them."""
        logits = model(ctx["x_train"]) if logits is None else logits
        return LossOutput(F.cross_entropy(logits.float(), batch.y), logits)

    def loss(self, model: nn.Module, batch: Batch, ctx: dict) -> LossOutput:
        fused = [r for r in self.regularizers if r.fuses]
        if fused:   # one forward over [x_train; extra inputs of each fused term]
            parts = [ctx["x_train"]] + [r.extra_inputs(batch, ctx) for r in fused]
            chunks = model(torch.cat(parts)).split([len(p) for p in parts])
            out = self.objective(model, batch, ctx, logits=chunks[0])
            terms = list(zip(fused, [r.from_logits(c, batch, ctx) for r, c in zip(fused, chunks[1:])]))
        else:
            out = self.objective(model, batch, ctx)
            terms = []
        terms += [(r, r(model, batch, ctx)) for r in self.regularizers if not r.fuses]
        for _, (value, metrics) in terms:
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
