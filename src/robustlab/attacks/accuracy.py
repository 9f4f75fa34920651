"""What evaluations are made of: the PGD/FGSM settings of an evaluation attack (:class:`AttackSpec`), the attack
built from them in eval mode, eval-mode predictions that never count a non-finite output as correct, and exact
fractions. The evaluation engine that runs them (every evaluation robustlab makes) is :mod:`robustlab.protocols`.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from robustlab.attacks.gradient import FGSM, PGD
from robustlab.attacks.modes import attack_mode
from robustlab.attacks.objectives import OBJECTIVES
from robustlab.attacks.threat import default_step

EVAL_SEED = 1234  # evaluation randomness is fixed, so an evaluation is a function of the weights alone


def fraction(flags: torch.Tensor, empty: float = float("nan")) -> float:
    """The share of True flags as the exact ratio count / n in double precision (a float32 mean prints as
    0.9739999771118164 where 974 / 1000 is meant); ``empty`` when there are none."""
    n = int(flags.numel())
    return int(flags.sum()) / n if n else empty


@dataclass
class AttackSpec:
    name: str = "pgd"        # pgd | fgsm
    eps: float = 8 / 255
    alpha: float | None = None  # default eps / 4
    steps: int = 50
    restarts: int = 10
    norm: str = "linf"
    loss: str = "ce"         # ce | cw | dlr (robustlab.attacks.objectives.OBJECTIVES)

    def describe(self) -> str:
        if self.name == "fgsm":
            return "FGSM"
        return f"PGD-{'' if self.loss == 'ce' else self.loss.upper() + '-'}{self.steps}-{self.restarts}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["alpha"] = self.step_size
        if self.loss == "ce":
            del d["loss"]     # records written before losses were selectable stay comparable
        return d

    @property
    def step_size(self) -> float:
        return default_step(self.eps) if self.alpha is None else self.alpha


ATTACK_NAMES = ("pgd", "fgsm")


def build_eval_attack(model: nn.Module, spec: AttackSpec, generator: torch.Generator | None = None):
    if spec.loss not in OBJECTIVES:
        raise ValueError(f"attack loss: got {spec.loss!r}; allowed: {', '.join(OBJECTIVES)}")
    if spec.name == "pgd":
        return PGD(model, spec.eps, spec.step_size, spec.steps, spec.restarts, norm=spec.norm, mode="eval",
                   generator=generator, objective=None if spec.loss == "ce" else OBJECTIVES[spec.loss])
    if spec.name == "fgsm":
        return FGSM(model, spec.eps, norm=spec.norm, mode="eval")
    raise ValueError(f"attack: got {spec.name!r}; allowed: {', '.join(ATTACK_NAMES)}")


NO_PREDICTION = -1   # the label predict() gives a point whose logits are not all finite: never a class


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int, autocast=contextlib.nullcontext) -> torch.Tensor:
    """Predicted labels in eval mode (the model's flags are restored); :data:`NO_PREDICTION` where the logits are
    not all finite, so that NaN outputs never count as correct."""
    out = []
    with attack_mode(model, "eval"):
        for i in range(0, len(x), batch_size):
            with autocast():
                logits = model(x[i:i + batch_size])
            out.append(torch.where(torch.isfinite(logits).all(1), logits.argmax(1), NO_PREDICTION))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)
