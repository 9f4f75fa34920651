"""What a regulariser is: a term added to a method's loss, with its own config and a weight schedule.

Subclasses implement :meth:`Regularizer.term` (the unweighted value and named metrics); the base applies the
weight (``constant`` or ``onoff``, see weights.py), logs ``<name>_lambda`` and hands the first pass's value to
the schedule after the optimiser step. A term that only needs the model's logits on extra inputs (ELLE's 3B
triplet) may set ``fuses`` and implement ``extra_inputs`` + ``from_logits``: the method then sends those
inputs through its own forward pass (one larger batch; BatchNorm sees them together).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field

import torch
from torch import nn

from robustlab.attacks.threat import random_point
from robustlab.core.context import BuildContext, EpochContext, StepContext
from robustlab.core.errors import ConfigError
from robustlab.core.registry import Registry
from robustlab.core.schema import component, spec
from robustlab.methods.regularizers.weights import WEIGHT_SCHEDULES, WeightScheduleConfig


@dataclass
class Term:
    value: torch.Tensor                      # weighted, in the graph
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    error: torch.Tensor | None = None        # unweighted, detached: what an adaptive weight learns from


@dataclass
class RegularizerConfig:
    name: str = spec("elle")
    weight: typing.Optional[float] = spec(None, lo=0.0, doc="lambda (lambda_max for onoff); default: the published value for eps")
    schedule: typing.Optional[WeightScheduleConfig] = component(WEIGHT_SCHEDULES, None,
                                                                doc="constant or onoff (default per regulariser)")
    default_schedule: typing.ClassVar[str] = "constant"

    def default_weight(self, eps: float, key: str) -> float:
        raise ConfigError(f"{key}weight: no published value for {self.name}; set weight explicitly")

    def resolve(self, parent, key: str) -> None:
        if self.weight is None:
            self.weight = self.default_weight(parent.eps, key)
        if self.schedule is None:
            self.schedule = WEIGHT_SCHEDULES.config_class(self.default_schedule)(name=self.default_schedule)


@dataclass
class RandomPointsConfig(RegularizerConfig):
    """A regulariser that draws random points in the eps-ball of the run's threat model."""
    clip_box: bool = spec(True, doc="clip the random points to [0,1] (the ELLE CIFAR code does not)")


@dataclass
class ELLECodeWeightsConfig(RegularizerConfig):
    """LLR and CURE as the ELLE scripts run them: on/off weight by default, published weights per eps (in px)
    that assume the scripts' batch-mean input gradients (``mean_grad_quirk``)."""
    mean_grad_quirk: bool = spec(False, doc="batch-mean input gradients, as the ELLE code (its weights assume it)")
    default_schedule: typing.ClassVar[str] = "onoff"
    published: typing.ClassVar[dict] = {}

    def default_weight(self, eps: float, key: str) -> float:
        px = round(eps * 255)
        if self.mean_grad_quirk and px in self.published and abs(eps * 255 - px) < 1e-6:
            return float(self.published[px])
        raise ConfigError(f"{key}weight: no published value for eps={eps:.4g}"
                          + ("" if self.mean_grad_quirk else " without mean_grad_quirk (the published weights assume it)")
                          + f"; set weight explicitly (published, with the quirk: {self.published} at eps in px)")


REGULARIZERS: Registry[type["Regularizer"]] = Registry("regularizer", RegularizerConfig)


class Regularizer:
    Config = RegularizerConfig
    fuses = False

    def __init__(self, cfg, bctx: BuildContext):
        self.cfg = cfg
        self.name = cfg.name
        self.norm = bctx.norm
        self.generator = bctx.generators.get("attack")
        self.weight = WEIGHT_SCHEDULES.build(cfg.schedule, cfg.weight)

    def random_point(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """x + a uniform draw from the run's eps-ball (L-inf or L2), clipped to [0,1] if ``clip_box``."""
        return random_point(x, eps, self.norm, self.generator, clip=self.cfg.clip_box)

    def term(self, model: nn.Module, batch, ctx: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(unweighted value, metrics)."""
        raise NotImplementedError

    def __call__(self, model: nn.Module, batch, ctx: dict) -> Term:
        return self.weighted(*self.term(model, batch, ctx))

    def weighted(self, value: torch.Tensor, metrics: dict[str, torch.Tensor]) -> Term:
        lam = self.weight.value(value.device)
        metrics[f"{self.name}_lambda"] = lam.detach()
        return Term(lam * value, metrics, value.detach())

    def extra_inputs(self, batch, ctx: dict) -> tuple[torch.Tensor, object]:
        """(inputs for a fused forward, what ``from_logits`` needs about them)."""
        raise NotImplementedError

    def from_logits(self, logits: torch.Tensor, batch, ctx: dict, aux) -> Term:
        raise NotImplementedError

    # ---- lifecycle -------------------------------------------------------------------------------------
    def on_epoch_start(self, ectx: EpochContext) -> None:
        pass

    def after_step(self, sctx: StepContext, term: Term | None) -> None:
        """After the optimiser step, with this regulariser's pass-0 term (None if it was not computed)."""
        if term is not None and term.error is not None:
            self.weight.update(term.error)

    def on_epoch_end(self, ectx: EpochContext) -> None:
        pass

    def state_dict(self) -> dict:
        return {"weight": self.weight.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("weight"):
            self.weight.load_state_dict(state["weight"])
