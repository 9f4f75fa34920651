r"""CURE, as in the ELLE code (Moosavi-Dezfooli et al., 2019 use a finite difference along the gradient sign):

.. math:: \frac1B\sum_i \lVert\nabla_x\ell_i(x) - \nabla_x\ell_i(x')\rVert_2^2

with x' the method's training (attack) point; the clean gradient is detached. ``mean_grad_quirk`` as in LLR
(a factor 1/B^2 in the square); published weights (1000 at 8/255, 50000 at 16/255, on/off) assume it.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

from robustlab.functional import ce_loss_fn, cure_term
from robustlab.methods.regularizers.base import REGULARIZERS, ELLECodeWeightsConfig, Regularizer

CURE_LAMBDA_PX = {8: 1000, 16: 50000}           # ELLE repo scripts (with the quirk), onoff


@dataclass
class CUREConfig(ELLECodeWeightsConfig):
    published: typing.ClassVar[dict] = CURE_LAMBDA_PX


@REGULARIZERS.register("cure", CUREConfig)
class CURE(Regularizer):
    def term(self, model, batch, ctx):
        value = cure_term(ce_loss_fn(model, batch.y), batch.x, ctx["x_train"], self.cfg.mean_grad_quirk)
        return value, {"cure_error": value.detach()}
