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

from robustlab.core.errors import ConfigError
from robustlab.core.schema import spec
from robustlab.functional import ce_loss_fn, llr_residual
from robustlab.methods.regularizers.base import REGULARIZERS, RandomPointsConfig, Regularizer

LLR_LAMBDA_PX = {2: 200, 4: 200, 6: 200, 8: 200, 10: 500, 12: 500, 14: 1000, 16: 500, 18: 1000, 20: 500,
                 22: 2000, 24: 5000, 26: 2000}   # ELLE repo scripts (with the mean-gradient quirk), onoff


def published_weight(table: dict, quirk: bool, eps: float, key: str) -> float:
    """The ELLE scripts' weight for eps (a whole number of 255ths, with the mean-gradient quirk), or an error."""
    px = round(eps * 255)
    if quirk and px in table and abs(eps * 255 - px) < 1e-6:
        return float(table[px])
    raise ConfigError(f"{key}weight: no published value for eps={eps:.4g}"
                      + ("" if quirk else " without mean_grad_quirk (the published weights assume it)")
                      + f"; set weight explicitly (published, with the quirk: {table} at eps in px)")


@dataclass
class LLRConfig(RandomPointsConfig):
    mean_grad_quirk: bool = spec(False, doc="batch-mean input gradients, as the ELLE code (its weights assume it)")
    default_schedule: typing.ClassVar[str] = "onoff"

    def default_weight(self, eps: float, key: str) -> float:
        return published_weight(LLR_LAMBDA_PX, self.mean_grad_quirk, eps, key)


@REGULARIZERS.register("llr", LLRConfig)
class LLR(Regularizer):
    def term(self, model, batch, ctx):
        x, eps = batch.x, float(ctx.get("eps", 0.0))
        loss_fn = ce_loss_fn(model, batch.y)
        value = llr_residual(loss_fn, self.random_point(x, eps), self.random_point(x, eps),
                             self.cfg.mean_grad_quirk).pow(2).mean()
        return value, {"llr_error": value.detach()}
