r"""Standard training and adversarial training with the single-step and multi-step attacks.

Every adversarial method minimises :math:`\frac1B\sum_i \ell(f_\theta(x'_i), y_i)` where :math:`x'` is the
method's attack point, crafted with the BatchNorm mode ``bn_mode`` (default train, as in the fast-AT codes).
``eps_ramp_epochs`` grows eps and alpha linearly from 0 (the SVHN recipes). Each method binds its attack to
the model and the ramped radius per batch (:meth:`IterativeAttack.bind`): the attack object is never mutated.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

import torch.nn.functional as F

from robustlab.attacks import FGSM, NFGSM, PGD, RSFGSM, GATAttack, IterativeAttack
from robustlab.attacks.objectives import PlusTE, cross_entropy
from robustlab.attacks.threat import default_step
from robustlab.core.errors import ConfigError
from robustlab.core.schema import spec
from robustlab.data.loader import Batch
from robustlab.functional.losses import te_penalty
from robustlab.methods.base import METHODS, LossOutput, Method, MethodConfig
from robustlab.methods.temporal_ensembling import TEConfig, TemporalEnsemble, clean_probabilities


@METHODS.register("standard")
class StandardTraining(Method):
    r"""Empirical risk minimisation: :math:`\min_\theta \frac1B\sum_i \ell(f_\theta(x_i), y_i)`."""


@dataclass
class AttackConfig(MethodConfig):
    """Keys of every adversarial-training method."""
    bn_mode: str = spec("train", choices=["train", "eval"], doc="BatchNorm/dropout mode while the training attack runs")
    eps_ramp_epochs: int = spec(0, lo=0, doc="grow eps and alpha linearly from 0 over this many epochs")

    def check(self, key: str) -> None:
        super().check(key)
        if self.eps <= 0:
            raise ConfigError(f"{key}eps: got {self.eps!r}; method {self.name!r} needs eps > 0")


@dataclass
class NoiseStartConfig(AttackConfig):
    """TRADES and MART attack: ``steps`` steps of ``alpha`` (default eps/4) from x + ``init_std`` N(0, I), eval mode."""
    steps: int = spec(10, lo=1, doc="attack iterations")
    alpha: typing.Optional[float] = spec(None, lo=0.0, doc="attack step (default eps/4)")
    init_std: float = spec(0.001, lo=0.0, doc="attack start x + init_std N(0, I)")
    bn_mode: str = spec("eval", choices=["train", "eval"], doc="BatchNorm/dropout mode while the attack runs")

    def resolve(self, parent, key: str) -> None:
        self.alpha = default_step(self.eps) if self.alpha is None else self.alpha


def noise_start_attack(cfg: NoiseStartConfig, generator, objective) -> IterativeAttack:
    """Sign (L-inf) or normalised (L2) ascent on a per-sample objective from x + init_std N(0, I), projected."""
    return IterativeAttack(None, cfg.eps, cfg.alpha, cfg.steps, norm=cfg.norm, project=True, mode=cfg.bn_mode,
                           early_stop=False, generator=generator, init_std=cfg.init_std, objective=objective)


class AttackTraining(Method):
    """Adversarial training on the points of ``self.attack`` (built by subclasses)."""
    Config = AttackConfig

    def __init__(self, cfg, bctx):
        super().__init__(cfg, bctx)
        self.attack = self.build_attack(cfg)
        self._alpha_ratio = self.attack.alpha / self.attack.eps

    def build_attack(self, cfg):
        raise NotImplementedError

    def eps_at(self, progress: float) -> float:
        ramp = self.cfg.eps_ramp_epochs
        return self.cfg.eps * min(1.0, progress / ramp) if ramp else self.cfg.eps

    def attack_reference(self, model, batch: Batch, ctx: dict):
        """(per-point reference, objective) for this batch's attack; (None, None): the attack's own. Subclasses
        put what their loss needs into ``ctx`` too (TRADES: the clean distribution; TE: the targets)."""
        return None, None

    def prepare(self, model, batch: Batch, progress: float) -> dict:
        eps = self.eps_at(progress)
        ctx = {"eps": eps}
        ref, objective = self.attack_reference(model, batch, ctx)
        if eps == 0:
            ctx["x_train"] = batch.x
            return ctx
        attack = self.attack.bind(model, eps, eps * self._alpha_ratio, objective=objective)
        ctx["x_train"] = attack(batch.x, batch.y, ref)
        return ctx


@METHODS.register("fgsm")
class FGSMTraining(AttackTraining):
    r"""FGSM-AT (Goodfellow et al., 2015; Wong et al., 2020): :math:`x' = \Pi_{[0,1]}(x+\varepsilon\,\mathrm{sign}\nabla_x\ell)`."""

    def build_attack(self, cfg):
        return FGSM(None, cfg.eps, norm=cfg.norm, mode=cfg.bn_mode, generator=self.generator)


@dataclass
class RSFGSMConfig(AttackConfig):
    alpha: typing.Optional[float] = spec(None, lo=0.0, doc="step size (default 1.25 eps)")

    def resolve(self, parent, key: str) -> None:
        self.alpha = 1.25 * self.eps if self.alpha is None else self.alpha


@METHODS.register("rs_fgsm")
class RSFGSMTraining(AttackTraining):
    r"""RS-FGSM-AT (Wong et al., 2020, "Fast is better than free"): init U[-eps, eps], one step alpha = 1.25 eps,
    projected to the eps-ball and [0,1]."""
    Config = RSFGSMConfig

    def build_attack(self, cfg):
        return RSFGSM(None, cfg.eps, cfg.alpha, norm=cfg.norm, mode=cfg.bn_mode, generator=self.generator)


@dataclass
class NFGSMConfig(AttackConfig):
    alpha: typing.Optional[float] = spec(None, lo=0.0, doc="step size (default eps)")
    init_scale: float = spec(2.0, lo=0.0, doc="noise U[-k eps, k eps]: k")

    def resolve(self, parent, key: str) -> None:
        self.alpha = self.eps if self.alpha is None else self.alpha


@METHODS.register("n_fgsm")
class NFGSMTraining(AttackTraining):
    r"""N-FGSM-AT (de Jorge et al., NeurIPS 2022): init U[-k eps, k eps] (k = ``init_scale``, default 2), one step
    alpha = eps (default), no eps-projection, clip to [0,1]."""
    Config = NFGSMConfig

    def build_attack(self, cfg):
        return NFGSM(None, cfg.eps, cfg.alpha, cfg.init_scale, norm=cfg.norm, mode=cfg.bn_mode, generator=self.generator)


class TEMethod(AttackTraining):
    """An adversarial method with optional temporal ensembling (``te``): the memory is updated with the clean
    eval-mode probabilities of every batch from the first TE epoch on, and the targets go into ``ctx``."""

    def __init__(self, cfg, bctx):
        super().__init__(cfg, bctx)
        self.te = TemporalEnsemble(cfg.te, bctx) if getattr(cfg, "te", None) is not None else None

    def te_targets(self, model, batch: Batch, ctx: dict, p_clean=None):
        """Update the memory, put the targets and the weight into ``ctx``; returns the targets (None if inactive)."""
        if self.te is None or not self.te.active:
            return None
        p_clean = clean_probabilities(model, batch.x) if p_clean is None else p_clean
        ctx["te_target"], ctx["te_weight"] = self.te.update(batch.index, p_clean), self.te.weight_now
        return ctx["te_target"]

    def add_te(self, out: LossOutput, logits, ctx: dict) -> LossOutput:
        """R_TE = w/(BK) sum_ik (softmax(logits) - q)^2 added to the loss, when TE is active."""
        if "te_target" in ctx:
            term = te_penalty(logits, ctx["te_target"], ctx["te_weight"]).mean()
            out.loss = out.loss + term
            out.metrics["te_term"] = term.detach()
        if self.te is not None:
            out.metrics["te_weight"] = self.te.weight_tensor
        return out

    def on_epoch_start(self, ectx):
        super().on_epoch_start(ectx)
        if self.te is not None:
            self.te.on_epoch_start(ectx.epoch)

    def state_dict(self) -> dict:
        return {**super().state_dict(), **({"te": self.te.state_dict()} if self.te is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.te is not None:
            self.te.load_state_dict(state["te"])


@dataclass
class PGDConfig(AttackConfig):
    steps: int = spec(10, lo=1, doc="attack iterations")
    alpha: typing.Optional[float] = spec(None, lo=0.0, doc="step size (default 2.5 eps / steps: 2/255 at 8/255, 10 steps)")
    random_start: bool = spec(True, doc="start from a uniform point of the eps-ball")
    te: typing.Optional[TEConfig] = spec(None, doc="temporal ensembling (PGD-AT+TE): {weight, momentum, start, end, unit}")

    def resolve(self, parent, key: str) -> None:
        self.alpha = 2.5 * self.eps / self.steps if self.alpha is None else self.alpha


@METHODS.register("pgd")
class PGDTraining(TEMethod):
    r"""PGD-AT (Madry et al., 2018): :math:`\min_\theta \mathbb E \max_{\lVert\delta\rVert\le\varepsilon} \ell(f_\theta(x+\delta), y)`,
    inner max by PGD with ``steps`` steps of ``alpha`` from a uniform random start. With ``te`` (PGD-AT+TE, spec
    2.3): the attack ascends CE + R_TE at x', and the loss adds R_TE at x_adv."""
    Config = PGDConfig

    def build_attack(self, cfg):
        return PGD(None, cfg.eps, cfg.alpha, cfg.steps, random_start=cfg.random_start, norm=cfg.norm,
                   mode=cfg.bn_mode, early_stop=False, generator=self.generator)

    def attack_reference(self, model, batch, ctx):
        q = self.te_targets(model, batch, ctx)
        return (None, None) if q is None else ({"te_target": q}, PlusTE(cross_entropy, ctx["te_weight"]))

    def objective(self, model, batch, ctx, logits=None):
        out = super().objective(model, batch, ctx, logits)
        return self.add_te(out, out.logits, ctx)


@dataclass
class GATConfig(AttackConfig):
    weight: float = spec(10.0, lo=0.0, doc="weight of the probability-gap term, in the attack and the loss")

    def check(self, key: str) -> None:
        super().check(key)
        if self.norm != "linf":
            raise ConfigError(f"{key}norm: got {self.norm!r}; gat is L-inf only (its attack starts at a signed "
                              "corner of the L-inf ball); allowed: linf")


@METHODS.register("gat")
class GATTraining(AttackTraining):
    r"""GAT (Sriramanan et al., NeurIPS 2020), as in the ELLE code: the :class:`GATAttack` point x', and
    :math:`\ell(f(x'), y) + w\cdot\frac1B\sum_i\lVert p(x_i) - p(x'_i)\rVert_2^2` with gradients through both
    probability vectors (w = 10)."""
    Config = GATConfig

    def build_attack(self, cfg):
        return GATAttack(None, cfg.eps, cfg.weight, mode=cfg.bn_mode, generator=self.generator)

    def objective(self, model, batch, ctx, logits=None):
        out = super().objective(model, batch, ctx, logits)
        p_adv = F.softmax(out.logits.float(), 1)
        p_clean = F.softmax(model(batch.x).float(), 1)
        gap = (p_clean - p_adv).pow(2).sum(1).mean()
        out.loss = out.loss + self.cfg.weight * gap
        out.metrics["gat_prob_gap"] = gap.detach()
        return out


def build_method(cfg, bctx) -> Method:
    return METHODS.build(cfg, bctx)
