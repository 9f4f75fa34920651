"""FGSM, RS-FGSM, N-FGSM and PGD: the one loop of :mod:`robustlab.attacks.base` with their settings.

Call shape: ``atk = PGD(model, eps=8/255, alpha=2/255, steps=10, restarts=1); x_adv = atk(x, y)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from robustlab.attacks.base import IterativeAttack
from robustlab.attacks.modes import attack_mode
from robustlab.attacks.threat import uniform


class FGSM(IterativeAttack):
    r"""FGSM (Goodfellow et al., 2015): :math:`x' = \Pi_{[0,1]}(x + \varepsilon\,\mathrm{sign}\nabla_x\ell(x, y))`."""

    def __init__(self, model, eps: float = 8 / 255, *, norm: str = "linf", mode: str = "eval", generator=None):
        super().__init__(model, eps, eps, 1, norm=norm, random_init=0.0, project=True, mode=mode,
                         early_stop=False, generator=generator)


class RSFGSM(IterativeAttack):
    r"""RS-FGSM (Wong et al., 2020): :math:`\eta\sim U[-\varepsilon,\varepsilon]`,
    :math:`x' = \Pi_{[0,1]}(x + \Pi_\varepsilon(\eta + \alpha\,\mathrm{sign}\nabla\ell(x+\eta)))`, alpha = 1.25 eps."""

    def __init__(self, model, eps: float = 8 / 255, alpha: float | None = None, *, norm: str = "linf",
                 mode: str = "eval", generator=None):
        super().__init__(model, eps, 1.25 * eps if alpha is None else alpha, 1, norm=norm, random_init=1.0,
                         project=True, mode=mode, early_stop=False, generator=generator)


class NFGSM(IterativeAttack):
    r"""N-FGSM (de Jorge et al., 2022): :math:`\eta\sim U[-k\varepsilon, k\varepsilon]` (k = 2),
    :math:`x' = \Pi_{[0,1]}(x + \eta + \alpha\,\mathrm{sign}\nabla\ell(x+\eta))`, alpha = eps, **no** eps-projection
    (so :math:`\lVert x'-x\rVert_\infty` can reach (k+1) eps); box clip as in the official code."""

    def __init__(self, model, eps: float = 8 / 255, alpha: float | None = None, k: float = 2.0, *,
                 norm: str = "linf", mode: str = "eval", generator=None):
        super().__init__(model, eps, eps if alpha is None else alpha, 1, norm=norm, random_init=k, project=False,
                         mode=mode, early_stop=False, generator=generator)


class PGD(IterativeAttack):
    r"""PGD (Madry et al., 2018): uniform random start in the eps-ball, ``steps`` projected steepest-ascent steps
    of size ``alpha`` on the cross-entropy, ``restarts`` restarts with the per-sample worst case kept."""

    def __init__(self, model, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10, restarts: int = 1, *,
                 random_start: bool = True, norm: str = "linf", mode: str = "eval", early_stop: bool | None = None,
                 generator=None, objective=None):
        super().__init__(model, eps, alpha, steps, norm=norm, random_init=1.0 if random_start else 0.0,
                         project=True, restarts=restarts, mode=mode, early_stop=early_stop, generator=generator,
                         objective=objective)


class GATAttack(IterativeAttack):
    r"""The single-step attack of GAT (Sriramanan et al., NeurIPS 2020), as in the ELLE code: init
    :math:`\delta_0 = \pm\varepsilon` per pixel (random sign), one step of eps along the sign of
    :math:`\nabla_\delta [\ell(f(x+\delta), y) + w\lVert p(x) - p(x+\delta)\rVert_2^2]`, no eps-projection (so
    :math:`\lVert\delta\rVert_\infty` can reach 2 eps), clip to [0,1]. ``w`` = 10. L-inf only (its init is a
    signed corner of the L-inf ball). The clean probabilities p(x) are the per-call ``ref`` of the loop."""

    def __init__(self, model, eps: float = 8 / 255, weight: float = 10.0, *, mode: str = "eval", generator=None):
        super().__init__(model, eps, eps, 1, random_init=1.0, project=False, mode=mode, early_stop=False,
                         generator=generator)
        self.weight = weight

    def init_delta(self, x):
        bits = uniform(x.shape, x, self.generator) < 0.5
        return torch.where(bits, self.eps, -self.eps).to(x.dtype)

    def loss(self, logits, y, ref=None):
        ce = F.cross_entropy(logits.float(), y, reduction="none")
        return ce + self.weight * (F.softmax(logits.float(), 1) - ref).pow(2).sum(1)

    @torch.no_grad()
    def perturb(self, x, y, ref=None):
        """``ref`` defaults to the clean probabilities p(x) in the attack's mode."""
        if ref is None:
            with attack_mode(self.model, self.mode):
                ref = F.softmax(self.model(x).float(), 1)
        return super().perturb(x, y, ref)
