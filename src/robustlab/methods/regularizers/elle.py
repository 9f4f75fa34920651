r"""ELLE and ELLE-A (Abad Rocamora et al., ICLR 2024): penalise the local linearity error of the loss.

.. math::
    E_{lin} = \frac1B\sum_i \big[\ell_i(x_c) - ((1-\alpha_i)\ell_i(x_a) + \alpha_i\ell_i(x_b))\big]^2,\quad
    x_a, x_b \sim U(\mathcal B_\varepsilon(x)),\ x_c = (1-\alpha)x_a + \alpha x_b,\ \alpha_i \sim U[0,1]

The 3B points go through one forward pass; no input gradients (no double backprop). ELLE uses a constant
lambda (published: 1000 for eps <= 8/255, 5000 up to 20/255, 10000 up to 26/255); **ELLE-A** is ELLE with the
``onoff`` weight schedule (lambda_max 4000 published for CIFAR-10).

- ``fuse_forward``: the triplet joins the method's training forward (one 4B pass, as the ELLE ImageNet code;
  BatchNorm then normalises the adversarial and triplet points together, where the CIFAR code uses two passes).
- ``triplet_passes: 3``: x_a, x_b and x_c through three B-sized passes (the same values for a model without
  BatchNorm; faster on CPUs, where per-image cost grows with the batch).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlab.attacks.threat import uniform
from robustlab.core.errors import ConfigError
from robustlab.core.schema import spec
from robustlab.functional import elle_points, elle_residual_from_losses
from robustlab.methods.regularizers.base import REGULARIZERS, RandomPointsConfig, Regularizer


def elle_lambda(eps: float) -> float:
    """ELLE's published constant lambda: 1000 for eps <= 8/255, 5000 for 10-20, 10000 for 22-26 (px)."""
    px = round(eps * 255)
    return 1000.0 if px <= 8 else 5000.0 if px <= 20 else 10000.0


@dataclass
class ELLEConfig(RandomPointsConfig):
    fuse_forward: bool = spec(False, doc="the 3B triplet joins the training forward (one 4B pass)")
    triplet_passes: int = spec(1, choices=[1, 3], doc="the 3B triplet in one pass (reference) or three B-sized passes")

    def default_weight(self, eps: float, key: str) -> float:
        return elle_lambda(eps)

    def check(self, key: str) -> None:
        if self.fuse_forward and self.triplet_passes != 1:
            raise ConfigError(f"{key}triplet_passes: got {self.triplet_passes}; a fused forward is one pass "
                              "(allowed with fuse_forward: 1)")


@dataclass
class ELLEAConfig(ELLEConfig):
    default_schedule: typing.ClassVar[str] = "onoff"

    def default_weight(self, eps: float, key: str) -> float:
        return 4000.0


@REGULARIZERS.register("elle", ELLEConfig)
@REGULARIZERS.register("elle_a", ELLEAConfig)
class ELLE(Regularizer):
    @property
    def fuses(self) -> bool:
        return self.cfg.fuse_forward

    def extra_inputs(self, batch, ctx):
        """ELLE's 3B points and the per-sample alpha that :meth:`from_logits` needs."""
        x, eps = batch.x, float(ctx.get("eps", 0.0))
        xa, xb = self.random_point(x, eps), self.random_point(x, eps)
        alpha = uniform((len(x),), x, self.generator)
        return elle_points(xa, xb, alpha), alpha

    def from_logits(self, logits, batch, ctx, alpha):
        losses = F.cross_entropy(logits.float(), batch.y.repeat(3), reduction="none")
        value = elle_residual_from_losses(losses, alpha).pow(2).mean()
        return self.weighted(value, {"elle_error": value.detach()})

    def __call__(self, model, batch, ctx):
        points, alpha = self.extra_inputs(batch, ctx)
        n = self.cfg.triplet_passes
        logits = model(points) if n == 1 else torch.cat([model(p) for p in points.chunk(n)])
        return self.from_logits(logits, batch, ctx, alpha)
