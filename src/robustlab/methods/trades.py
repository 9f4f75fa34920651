r"""TRADES (Zhang et al., ICML 2019), as the reference code (docs/memorisation.md):

.. math::
    \min_\theta\ \frac1B\sum_i \Big[\ell(f(x_i), y_i) + \beta\,\mathrm{KL}\big(p(x_i)\,\Vert\,p(x'_i)\big)\Big],\qquad
    x' = \arg\max_{x'\in\mathcal B_\varepsilon(x)} \mathrm{KL}\big(p(x)\,\Vert\,p(x')\big)

- the attack runs in eval mode (``bn_mode: eval``) from x + 0.001 N(0, I) (``init_std``), ``steps`` sign steps of
  ``alpha`` (default eps/4: 2/255 at 8/255 as memorization-AT; the TRADES CIFAR script uses 0.007 at 0.031) on the
  KL to the clean eval-mode distribution, which is the per-call reference of the one attack loop (no state on the
  attack); the starting point is clipped to [0,1] (the reference clips from the first step on);
- the loss runs in train mode; the target p(x) is **not** detached: gradients flow through both distributions;
- ``beta`` 6 (1.0 in the MNIST recipe);
- with ``te`` (TRADES+TE, Dong et al., ICLR 2022): the attack ascends beta KL + R_TE at x', the loss adds R_TE at the clean point.

The trainer's ``train_acc`` is the accuracy at x'; ``train_clean_acc`` is logged beside it.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

import torch.nn.functional as F

from robustlab.attacks.objectives import PlusTE, kl_to_clean
from robustlab.core.schema import spec
from robustlab.functional.losses import kl_per_sample
from robustlab.methods.adversarial import NoiseStartConfig, TEMethod, noise_start_attack
from robustlab.methods.base import METHODS, LossOutput
from robustlab.methods.temporal_ensembling import TEConfig, clean_probabilities


@dataclass
class TRADESConfig(NoiseStartConfig):
    beta: float = spec(6.0, lo=0.0, doc="weight of the KL term (6 for CIFAR; 1.0 in the MNIST recipe)")
    te: typing.Optional[TEConfig] = spec(None, doc="temporal ensembling (TRADES+TE)")


@METHODS.register("trades")
class TRADES(TEMethod):
    Config = TRADESConfig

    def build_attack(self, cfg):
        return noise_start_attack(cfg, self.generator, kl_to_clean)

    def attack_reference(self, model, batch, ctx):
        p_clean = clean_probabilities(model, batch.x, self.cfg.bn_mode)   # the attack's reference, in the attack's mode
        q = self.te_targets(model, batch, ctx, p_clean)
        objective = None if q is None else PlusTE(kl_to_clean, ctx["te_weight"], scale=self.cfg.beta)
        return {"p_clean": p_clean, **({"te_target": q} if q is not None else {})}, objective

    def objective(self, model, batch, ctx, logits=None):
        logits_adv = model(ctx["x_train"]) if logits is None else logits
        logits_clean = model(batch.x)
        kl = kl_per_sample(F.softmax(logits_clean.float(), 1), logits_adv)      # p(x) in the graph
        ce = F.cross_entropy(logits_clean.float(), batch.y)
        out = LossOutput(ce + self.cfg.beta * kl.mean(), logits_adv,
                         {"trades_kl": kl.mean().detach(),
                          "train_clean_acc": (logits_clean.detach().argmax(1) == batch.y).float().mean()})
        return self.add_te(out, logits_clean, ctx)
