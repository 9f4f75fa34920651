r"""GradAlign (Andriushchenko & Flammarion, NeurIPS 2020): align input gradients at x and at a random point.

.. math:: 1 - \frac1B\sum_i \cos\big(\nabla_x\ell_i(x),\ \nabla_x\ell_i(x+u)\big),\quad u \sim U(\mathcal B_\varepsilon)

Double backprop through the second gradient only; samples with a zero gradient are left out of the mean.
Published weight (official code): lambda = 0.02 * 10^(eps_px / 8), capped at 2.0. In the co_features code the
first gradient is taken at the FGSM point; here (and in the official code) at the clean point.
"""
from __future__ import annotations

from dataclasses import dataclass

from robustlab.functional import ce_loss_fn, gradalign_term, input_grad
from robustlab.methods.regularizers.base import REGULARIZERS, RandomPointsConfig, Regularizer


def gradalign_lambda(eps: float) -> float:
    """The official GradAlign law lambda = 0.02 * 10^(eps_px / 8), capped at 2.0 (eps on the 0-1 scale)."""
    return min(2.0, 0.02 * 10 ** (eps * 255 / 8))


@dataclass
class GradAlignConfig(RandomPointsConfig):
    def default_weight(self, eps: float, key: str) -> float:
        return gradalign_lambda(eps)


@REGULARIZERS.register("gradalign", GradAlignConfig)
class GradAlign(Regularizer):
    def term(self, model, batch, ctx):
        x, eps = batch.x, float(ctx.get("eps", 0.0))
        loss_fn = ce_loss_fn(model, batch.y)
        _, g1 = input_grad(loss_fn, x, create_graph=False)
        _, g2 = input_grad(loss_fn, self.random_point(x, eps), create_graph=True)
        value = gradalign_term(g1.detach(), g2)
        return value, {"gradalign_cos": 1 - value.detach()}
