r"""MART (Wang et al., ICLR 2020, "Improving Adversarial Robustness Requires Revisiting Misclassified Examples"),
as the reference code computes it:

.. math::
    \frac1B\sum_i \Big[\underbrace{-\log p_{y_i}(x'_i) - \log\big(1.0001 - p_{y''_i}(x'_i)\big)}_{\text{boosted CE}}
    + \beta\,\mathrm{KL}\big(p(x_i)\,\Vert\,p(x'_i)\big)\,\big(1.0000001 - p_{y_i}(x_i)\big)\Big]

with y'' the most likely wrong class at x'. The attack ascends the **cross-entropy** (not the KL) in eval mode from
x + 0.001 N(0, I), ``steps`` steps of ``alpha`` (default eps/4; the reference's 0.007 at 0.031). p(x) is in the graph
(both in the KL and in the weight 1 - p_y(x)). ``beta`` 5 for ResNet-18 (6 for WRN-34-10).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from robustlab.attacks.objectives import cross_entropy
from robustlab.core.schema import spec
from robustlab.functional.losses import boosted_ce, kl_per_sample
from robustlab.methods.adversarial import AttackTraining, NoiseStartConfig, noise_start_attack
from robustlab.methods.base import METHODS, LossOutput


@dataclass
class MARTConfig(NoiseStartConfig):
    beta: float = spec(5.0, lo=0.0, doc="weight of the misclassification-aware KL (5 ResNet-18, 6 WRN-34-10)")


@METHODS.register("mart")
class MART(AttackTraining):
    Config = MARTConfig

    def build_attack(self, cfg):
        return noise_start_attack(cfg, self.generator, cross_entropy)

    def objective(self, model, batch, ctx, logits=None):
        logits_adv = model(ctx["x_train"]) if logits is None else logits
        logits_clean = model(batch.x)
        p_clean = F.softmax(logits_clean.float(), 1)
        bce = boosted_ce(logits_adv, batch.y).mean()
        kl = kl_per_sample(p_clean, logits_adv)
        weight = 1.0000001 - p_clean.gather(1, batch.y[:, None]).squeeze(1)
        robust = (kl * weight).mean()
        return LossOutput(bce + self.cfg.beta * robust, logits_adv,
                          {"mart_bce": bce.detach(), "mart_kl_weighted": robust.detach()})
