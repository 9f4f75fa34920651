r"""Standard training and adversarial training with the single-step and multi-step attacks.

Every adversarial method minimises :math:`\frac1B\sum_i \ell(f_\theta(x'_i), y_i)` where :math:`x'` is the
method's attack point (computed with the BatchNorm mode ``method.bn_mode``, default train as in the fast-AT
codes). ``method.eps_ramp_epochs`` grows eps and alpha linearly from 0 (the SVHN recipes).
"""
from __future__ import annotations

import torch.nn.functional as F

from robustlab.attacks import FGSM, NFGSM, PGD, RSFGSM, GATAttack
from robustlab.data.loader import Batch
from robustlab.methods.base import Method
from robustlab.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


@METHODS.register("standard")
class StandardTraining(Method):
    r"""Empirical risk minimisation: :math:`\min_\theta \frac1B\sum_i \ell(f_\theta(x_i), y_i)`."""
    name = "standard"


class AttackTraining(Method):
    """Adversarial training on the points of ``self.attack`` (built by subclasses)."""

    def __init__(self, cfg, generator=None):
        super().__init__(cfg, generator)
        self.attack = self.build_attack(cfg)
        self._alpha_ratio = self.attack.alpha / self.attack.eps

    def build_attack(self, cfg):
        raise NotImplementedError

    def eps_at(self, epoch: float) -> float:
        ramp = self.cfg.eps_ramp_epochs
        return self.cfg.eps * min(1.0, epoch / ramp) if ramp else self.cfg.eps

    def prepare(self, model, batch: Batch, epoch: float) -> dict:
        eps = self.eps_at(epoch)
        if eps == 0:
            return {"x_train": batch.x, "eps": 0.0}
        self.attack.model = model
        self.attack.eps, self.attack.alpha = eps, eps * self._alpha_ratio
        return {"x_train": self.attack(batch.x, batch.y), "eps": eps}


@METHODS.register("fgsm")
class FGSMTraining(AttackTraining):
    r"""FGSM-AT (Goodfellow et al., 2015; Wong et al., 2020): :math:`x' = \Pi_{[0,1]}(x+\varepsilon\,\mathrm{sign}\nabla_x\ell)`."""
    name = "fgsm"

    def build_attack(self, cfg):
        return FGSM(None, cfg.eps, norm=cfg.norm, mode=cfg.bn_mode, generator=self.generator)


@METHODS.register("rs_fgsm")
class RSFGSMTraining(AttackTraining):
    r"""RS-FGSM-AT (Wong et al., 2020, "Fast is better than free"): init U[-eps, eps], one step alpha = 1.25 eps,
    projected to the eps-ball and [0,1]."""
    name = "rs_fgsm"

    def build_attack(self, cfg):
        return RSFGSM(None, cfg.eps, cfg.alpha, norm=cfg.norm, mode=cfg.bn_mode, generator=self.generator)


@METHODS.register("n_fgsm")
class NFGSMTraining(AttackTraining):
    r"""N-FGSM-AT (de Jorge et al., NeurIPS 2022): init U[-k eps, k eps] (k = ``init_scale``, default 2), one step
    alpha = eps (default), no eps-projection, clip to [0,1]."""
    name = "n_fgsm"

    def build_attack(self, cfg):
        k = 2.0 if cfg.init_scale is None else cfg.init_scale
        return NFGSM(None, cfg.eps, cfg.alpha, k, norm=cfg.norm, mode=cfg.bn_mode, generator=self.generator)


@METHODS.register("pgd")
class PGDTraining(AttackTraining):
    r"""PGD-AT (Madry et al., 2018): :math:`\min_\theta \mathbb E \max_{\lVert\delta\rVert\le\varepsilon} \ell(f_\theta(x+\delta), y)`,
    inner max by PGD with ``steps`` steps of alpha (default 2.5 eps / steps, i.e. 2/255 for 8/255 and 10 steps)
    from a uniform random start."""
    name = "pgd"

    def build_attack(self, cfg):
        alpha = 2.5 * cfg.eps / cfg.steps if cfg.alpha is None else cfg.alpha
        start = True if cfg.init_scale is None else cfg.init_scale > 0
        return PGD(None, cfg.eps, alpha, cfg.steps, random_start=start, norm=cfg.norm, mode=cfg.bn_mode,
                   early_stop=False, generator=self.generator)


@METHODS.register("gat")
class GATTraining(AttackTraining):
    r"""GAT (Sriramanan et al., NeurIPS 2020), as in the ELLE code: the :class:`GATAttack` point x', and
    :math:`\ell(f(x'), y) + 10\cdot\frac1B\sum_i\lVert p(x_i) - p(x'_i)\rVert_2^2` with gradients through both
    probability vectors."""
    name = "gat"
    weight = 10.0

    def build_attack(self, cfg):
        return GATAttack(None, cfg.eps, self.weight, mode=cfg.bn_mode, generator=self.generator)

    def objective(self, model, batch, ctx, logits=None):
        out = super().objective(model, batch, ctx, logits)
        p_adv = F.softmax(out.logits.float(), 1)
        p_clean = F.softmax(model(batch.x).float(), 1)
        gap = (p_clean - p_adv).pow(2).sum(1).mean()
        out.loss = out.loss + self.weight * gap
        out.metrics["gat_prob_gap"] = gap.detach()
        return out


def build_method(cfg, generator=None) -> Method:
    return METHODS.get(cfg.name)(cfg, generator)
