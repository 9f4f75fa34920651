r"""Per-epoch local-linearity diagnostics on a fixed batch of training images (eval mode, fixed randomness):

- ``diag_elle_error``: ELLE's linearity error :math:`\frac1B\sum_i[\ell_i(x_c) - ((1-\alpha_i)\ell_i(x_a)+\alpha_i\ell_i(x_b))]^2`;
- ``diag_gradalign_cos``: mean cosine between :math:`\nabla\ell_i(x)` and :math:`\nabla\ell_i(x+u)`, u uniform in the eps-ball;
- ``diag_fgsm_acc``, ``diag_pgd_acc`` and their gap ``diag_fgsm_pgd_gap`` (PGD-10, step eps/4).

Random points are drawn from the run's threat model (L-inf cube or L2 ball). The ELLE paper (Fig. 2) shows
the linearity error jumping, and the gradient cosine dropping, at the epoch FGSM-AT collapses; a large
FGSM-PGD gap is CO's signature.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robustlab.attacks import FGSM, PGD
from robustlab.attacks.modes import attack_mode
from robustlab.attacks.threat import random_point, uniform
from robustlab.core.schema import spec
from robustlab.data import to_float
from robustlab.diagnostics.base import DIAGNOSTICS, Diagnostic, DiagnosticConfig
from robustlab.functional import ce_loss_fn, elle_residual, gradalign_term, input_grad

DIAG_SEED = 4321


def linearity_diagnostics(model, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf") -> dict:
    gen = torch.Generator(device=x.device).manual_seed(DIAG_SEED)
    with attack_mode(model, "eval"):
        loss_fn = ce_loss_fn(model, y)
        with torch.no_grad():
            xa = random_point(x, eps, norm, gen)
            xb = random_point(x, eps, norm, gen)
            alpha = uniform((len(x),), x, gen)
            elle = elle_residual(loss_fn, xa, xb, alpha).pow(2).mean()
        _, g1 = input_grad(loss_fn, x, create_graph=False)
        _, g2 = input_grad(loss_fn, xa, create_graph=False)
        cos = 1 - gradalign_term(g1, g2)
        with torch.no_grad():
            fgsm_acc = (model(FGSM(model, eps, norm=norm)(x, y)).argmax(1) == y).float().mean()
            _, fooled = PGD(model, eps, eps / 4, 10, norm=norm, generator=gen).perturb_with_verdict(x, y)
            pgd_acc = (~fooled).float().mean()
    return {"diag_elle_error": float(elle), "diag_gradalign_cos": float(cos), "diag_fgsm_acc": float(fgsm_acc),
            "diag_pgd_acc": float(pgd_acc), "diag_fgsm_pgd_gap": float(fgsm_acc - pgd_acc)}


@dataclass
class LinearityConfig(DiagnosticConfig):
    points: int = spec(256, lo=0, doc="the first N training images (0: off)")


@DIAGNOSTICS.register("linearity", LinearityConfig)
class Linearity(Diagnostic):
    """:func:`linearity_diagnostics` on the first ``points`` training images at the run's eps and norm."""

    def __init__(self, cfg, bctx):
        super().__init__(cfg, bctx)
        train = bctx.data.train
        n = min(cfg.points, len(train))
        self.x = to_float(train.x[:n].to(bctx.device))
        self.y = train.y[:n].to(bctx.device)

    def measure(self, model, epoch):
        if len(self.y) == 0 or self.bctx.eps <= 0:
            return {}
        return linearity_diagnostics(model, self.x, self.y, self.bctx.eps, self.bctx.norm)
