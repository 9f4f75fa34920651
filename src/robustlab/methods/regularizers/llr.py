r"""LLR, the random-point variant of the ELLE code (Qin et al., 2019 use an inner maximisation):

.. math:: \frac1B\sum_i \big[\ell_i(x_3) - \ell_i(x_2) - \langle x_3 - x_2, \nabla\ell_i(x_2)\rangle\big]^2,\quad
          x_2, x_3 \sim U(\mathcal B_\varepsilon(x))

Reference-code quirk (``mean_grad_quirk``): the ELLE code takes the input gradient of the *batch-mean* loss
(a factor 1/B per sample); its published weights (200-5000, on/off schedule) were tuned with that factor,
so they are the default only with the quirk on.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

from robustlab.functional import ce_loss_fn, llr_residual
from robustlab.methods.regularizers.base import REGULARIZERS, ELLECodeWeightsConfig, RandomPointsConfig, Regularizer

LLR_LAMBDA_PX = {2: 200, 4: 200, 6: 200, 8: 200, 10: 500, 12: 500, 14: 1000, 16: 500, 18: 1000, 20: 500,
                 22: 2000, 24: 5000, 26: 2000}   # ELLE repo scripts (with the mean-gradient quirk), onoff


@dataclass
class LLRConfig(RandomPointsConfig, ELLECodeWeightsConfig):
    published: typing.ClassVar[dict] = LLR_LAMBDA_PX


@REGULARIZERS.register("llr", LLRConfig)
class LLR(Regularizer):
    def term(self, model, batch, ctx):
        x, eps = batch.x, float(ctx.get("eps", 0.0))
        loss_fn = ce_loss_fn(model, batch.y)
        value = llr_residual(loss_fn, self.random_point(x, eps), self.random_point(x, eps),
                             self.cfg.mean_grad_quirk).pow(2).mean()
        return value, {"llr_error": value.detach()}
