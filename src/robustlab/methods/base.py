"""What a training method is: craft the batch's training inputs once (``prepare``), then one loss over them.

The trainer calls ``ctx = method.prepare(model, batch, progress)`` once per batch, then the optimiser calls a
closure that evaluates ``method.loss(model, batch, ctx)`` and back-propagates it: once for SGD, twice for
SAM-type minimisers (``ctx["pass"]`` is the pass index; the inputs are not re-crafted, as in SAM-AT).
``ctx`` is the step's scratchpad: anything a method or regulariser must carry from the loss to its
``after_step`` hook lives there, never on the object.

Regularisers compose onto any base objective: ``loss = objective(model, batch, ctx) + sum_r r(model, batch, ctx)``.

A method may own trainable modules (:meth:`Method.modules`: optimised, DDP-synchronised, checkpointed and
resumed with the model) and state (:meth:`Method.state_dict`), and receives lifecycle hooks with their
context: ``on_epoch_start``, ``after_step``, ``on_epoch_end``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.core.context import BuildContext, EpochContext, StepContext
from robustlab.core.errors import ConfigError
from robustlab.core.registry import Registry
from robustlab.core.schema import components, spec
from robustlab.data.loader import Batch
from robustlab.methods.regularizers.base import REGULARIZERS, Regularizer, RegularizerConfig


@dataclass
class LossOutput:
    loss: torch.Tensor                       # scalar to back-propagate
    logits: torch.Tensor                     # logits on the inputs the method trains on (train accuracy)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # extra scalars, detached


@dataclass
class MethodConfig:
    """Keys every method accepts."""
    name: str = spec("fgsm", doc="a registered training method (robustlab list methods)")
    eps: float = spec(8 / 255, lo=0.0, doc="threat radius on the 0-1 scale (attacks, monitor, diagnostics)")
    norm: str = spec("linf", choices=["linf", "l2"], doc="threat model")
    regularizers: list[RegularizerConfig] = components(REGULARIZERS, doc="terms added to the loss")

    def check(self, key: str) -> None:
        """An L-inf radius above 1 covers the whole [0,1] box: almost surely a radius in pixel levels (8, not 8/255)."""
        if self.norm == "linf" and self.eps > 1:
            raise ConfigError(f"{key}eps: got {self.eps:g}; an L-inf radius above 1 covers the whole [0,1] image box "
                              "(radii are on the 0-1 scale: write 8/255 for 8 pixel levels)")


METHODS: Registry[type["Method"]] = Registry("method", MethodConfig)


class Method:
    """Base class: ``prepare`` crafts inputs, ``objective`` is the base loss, regularisers are added."""
    Config = MethodConfig

    def __init__(self, cfg, bctx: BuildContext):
        self.cfg = cfg
        self.generator = bctx.generators.get("attack")
        self.regularizers: list[Regularizer] = [REGULARIZERS.build(r, bctx) for r in cfg.regularizers]

    # ---- the loss ------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, batch: Batch, progress: float) -> dict:
        """The step's context: the inputs to train on (``x_train``) and the radius in force (``eps``)."""
        return {"x_train": batch.x, "eps": self.cfg.eps}

    def objective(self, model: nn.Module, batch: Batch, ctx: dict, logits: torch.Tensor | None = None) -> LossOutput:
        """The base loss on ``ctx["x_train"]``; ``logits`` are those inputs' logits when a fused forward
        already computed them."""
        logits = model(ctx["x_train"]) if logits is None else logits
        return LossOutput(F.cross_entropy(logits.float(), batch.y), logits)

    def loss(self, model: nn.Module, batch: Batch, ctx: dict) -> LossOutput:
        fused = [r for r in self.regularizers if r.fuses]
        if fused:   # one forward over [x_train; extra inputs of each fused term]
            extra = [r.extra_inputs(batch, ctx) for r in fused]
            parts = [ctx["x_train"]] + [points for points, _ in extra]
            chunks = model(torch.cat(parts)).split([len(p) for p in parts])
            out = self.objective(model, batch, ctx, logits=chunks[0])
            terms = [(r, r.from_logits(c, batch, ctx, aux)) for r, c, (_, aux) in zip(fused, chunks[1:], extra)]
        else:
            out = self.objective(model, batch, ctx)
            terms = []
        terms += [(r, r(model, batch, ctx)) for r in self.regularizers if not r.fuses]
        for reg, term in terms:
            out.loss = out.loss + term.value
            out.metrics.update(term.metrics)
            if ctx.get("pass", 0) == 0:
                ctx.setdefault("terms", {})[id(reg)] = term
        return out

    # ---- what the trainer owns on the method's behalf --------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """Trainable modules the method owns (optimised and checkpointed with the model); none by default."""
        return {}

    def on_epoch_start(self, ectx: EpochContext) -> None:
        for reg in self.regularizers:
            reg.on_epoch_start(ectx)

    def after_step(self, sctx: StepContext, ctx: dict) -> None:
        """After each optimiser step; ``ctx`` is the step's context (with the pass-0 ``terms``)."""
        for reg in self.regularizers:
            reg.after_step(sctx, ctx.get("terms", {}).get(id(reg)))

    def on_epoch_end(self, ectx: EpochContext) -> None:
        for reg in self.regularizers:
            reg.on_epoch_end(ectx)

    def state_dict(self) -> dict:
        """State that must survive a resume: owned modules and every regulariser's state."""
        return {"modules": {k: m.state_dict() for k, m in self.modules().items()},
                "regularizers": [r.state_dict() for r in self.regularizers]}

    def load_state_dict(self, state: dict) -> None:
        for k, m in self.modules().items():
            m.load_state_dict(state["modules"][k])
        for reg, st in zip(self.regularizers, state.get("regularizers", [])):
            reg.load_state_dict(st)
