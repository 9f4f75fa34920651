"""Evaluation protocols as components: what every evaluation runs (``robustlab eval --attack NAME``, the per-epoch
monitor's PGD and FGSM, the final evaluation's ``final_eval.protocol``).

| name | stages (a resumable cascade, each on the points still robust) |
|---|---|
| ``pgd`` | PGD-steps-restarts (default PGD-50-10, step eps/4), freeze-at-first-fool |
| ``fgsm`` | FGSM |
| ``autoattack`` | the standard AutoAttack protocol: APGD-CE, APGD-T, FAB-T, Square, by the reference code (extra) |
| ``pgd+autoattack`` | PGD, then standard AutoAttack on the points PGD left robust |

Add a protocol by registering a class with ``stages(eps, norm)`` (and ``pgd_spec`` where it has PGD settings) in
:data:`EVAL_ATTACKS`.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

from robustlab.attacks.accuracy import AttackSpec
from robustlab.core.registry import Registry
from robustlab.core.schema import spec
from robustlab.protocols.cascade import AutoAttackStage, PGDStage, autoattack_stages, import_autoattack


@dataclass
class ProtocolConfig:
    name: str = spec("pgd")


@dataclass
class PGDProtocolConfig(ProtocolConfig):
    steps: int = spec(50, lo=1, doc="PGD iterations")
    restarts: int = spec(10, lo=1, doc="random restarts (per-sample worst case)")
    alpha: typing.Optional[float] = spec(None, lo=0.0, doc="step size (default eps/4)")
    loss: str = spec("ce", choices=["ce", "cw", "dlr"], doc="the ascended loss: cross-entropy, the CW margin, or "
                                                         "the DLR ratio (Croce & Hein, 2020)")


@dataclass
class AutoAttackConfig(ProtocolConfig):
    version: str = spec("standard", choices=["standard"], doc="the reference library's protocol, unaltered")
    seed: int = spec(0, lo=0)


@dataclass
class PGDAutoAttackConfig(PGDProtocolConfig):
    version: str = spec("standard", choices=["standard"])
    seed: int = spec(0, lo=0)


EVAL_ATTACKS: Registry[type] = Registry("evaluation attack", ProtocolConfig)


class Protocol:
    def __init__(self, cfg):
        self.cfg = cfg

    def stages(self, eps: float, norm: str) -> list:
        raise NotImplementedError

    def pgd_spec(self, eps: float, norm: str) -> AttackSpec | None:
        """The PGD/FGSM settings of the protocol (for the result's ``attack`` field), if it has any."""
        return None

    def notes(self) -> dict:
        return {}

    def title(self, eps: float, norm: str) -> str:
        """"PGD-10-1", "FGSM", "PGD-50-10+AutoAttack": the key of this protocol's figures."""
        return protocol_name(self.stages(eps, norm))


@EVAL_ATTACKS.register("pgd", PGDProtocolConfig)
class PGDProtocol(Protocol):
    def pgd_spec(self, eps, norm):
        return AttackSpec("pgd", eps, self.cfg.alpha, self.cfg.steps, self.cfg.restarts, norm, self.cfg.loss)

    def stages(self, eps, norm):
        return [PGDStage(self.pgd_spec(eps, norm))]


@EVAL_ATTACKS.register("fgsm")
class FGSMProtocol(Protocol):
    def pgd_spec(self, eps, norm):
        return AttackSpec("fgsm", eps, None, 1, 1, norm)

    def stages(self, eps, norm):
        return [PGDStage(self.pgd_spec(eps, norm))]


@EVAL_ATTACKS.register("autoattack", AutoAttackConfig)
class AutoAttackProtocol(Protocol):
    def stages(self, eps, norm):
        import_autoattack()   # a clear message before any work when the extra is missing
        return autoattack_stages(eps, norm, seed=self.cfg.seed)

    def notes(self) -> dict:
        return {"autoattack_note": "standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; pyautoattack) on the points "
                                   "correctly classified clean"}


@EVAL_ATTACKS.register("pgd+autoattack", PGDAutoAttackConfig)
class PGDThenAutoAttack(PGDProtocol):
    def stages(self, eps, norm):
        import_autoattack()
        return super().stages(eps, norm) + autoattack_stages(eps, norm, seed=self.cfg.seed)

    def notes(self) -> dict:
        return {"autoattack_note": "standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; pyautoattack) on the points "
                                   "still robust after PGD: robust_acc is the worst case over both"}


def protocol_name(stages: list) -> str:
    """"PGD-50-10", "AutoAttack", "PGD-50-10+AutoAttack": the stages' names, AutoAttack's four as one."""
    with_aa = any(isinstance(st, AutoAttackStage) for st in stages)
    return "+".join([st.name for st in stages if isinstance(st, PGDStage)] + (["AutoAttack"] * with_aa))


def pgd_protocol(steps: int, restarts: int = 1, alpha: float | None = None, loss: str = "ce") -> PGDProtocol:
    """PGD-steps-restarts (step ``alpha``, default eps/4) as a protocol, from already-validated settings."""
    return PGDProtocol(PGDProtocolConfig(name="pgd", steps=steps, restarts=restarts, alpha=alpha, loss=loss))


def fgsm_protocol() -> FGSMProtocol:
    return FGSMProtocol(ProtocolConfig(name="fgsm"))
