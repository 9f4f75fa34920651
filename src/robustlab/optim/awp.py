r"""AWP, adversarial weight perturbation (Wu et al., NeurIPS 2020), as a minimiser: it composes with any method
(PGD-AT, TRADES, MART, single-step methods) and any base optimiser, as the AT-AWP and TRADES-AWP reference code (docs/memorisation.md).

Per step, with L the method's own loss (the closure):

1. g = grad L(w) (pass 0). The reference takes one plain SGD step of a proxy copy that *ascends* L (lr 0.01, no
   momentum): diff = 0.01 g, and normalises it per tensor, so the proxy's lr cancels: for every weight tensor with
   ndim > 1 (no BatchNorm, no bias), :math:`v_l = \gamma\,\lVert w_l\rVert\, g_l / \lVert g_l\rVert`;
2. w <- w + v; the gradient of L at w + v (pass 1);
3. w <- w (the saved tensors, restored bit for bit), then the base optimiser's update with that gradient.

``gamma`` 1e-2 for AT-AWP, 5e-3 for TRADES-AWP with ``warmup_epochs`` 10 (plain steps before). Cost: one extra
forward-backward of the training loss per step (PGD-10-AT: 12 passes instead of 11).

Differences from the reference, named: (a) the reference steps the base optimiser at w + v and subtracts v
afterwards, so its weight decay and momentum act on w + v and float rounding leaves w off by an ulp; robustlab
restores w exactly and steps from there (SAM's order). (b) The reference's proxy pass updates the proxy's BatchNorm
statistics only and the perturbed pass the model's; here pass 0 updates the model's statistics and pass 1 is frozen
(robustlab's rule for every multi-pass minimiser: each batch is seen once). (c) The reference's first attack of
each epoch runs in eval mode by accident (a mode left by its evaluation); not reproduced. (d) ``warmup_epochs: k``
runs k plain epochs and perturbs from epoch k + 1 (counted from 1); the TRADES-AWP reference counts its epochs from 1
and perturbs once ``epoch >= awp_warmup``, i.e. after k - 1 plain epochs: its ``awp_warmup 10`` is ``warmup_epochs: 9``
here (docs/memorisation.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robustlab.core.schema import spec
from robustlab.optim.minimizer import MINIMIZERS, Minimizer, MinimizerConfig


@dataclass
class AWPConfig(MinimizerConfig):
    gamma: float = spec(1e-2, lo=0.0, doc="relative size of the weight perturbation (AT-AWP 1e-2, TRADES-AWP 5e-3)")
    warmup_epochs: int = spec(0, lo=0, doc="plain steps for this many epochs first (TRADES-AWP: 10)")


def perturbation(params: list[torch.Tensor], grads: list[torch.Tensor], gamma: float) -> list[torch.Tensor]:
    """v_l = gamma ||w_l|| g_l / ||g_l|| per tensor (zero where the gradient is zero)."""
    w_norms = torch._foreach_norm(params)
    g_norms = torch._foreach_norm(grads)
    return [gamma * wn * g / gn.clamp_min(1e-20) for g, wn, gn in zip(grads, w_norms, g_norms)]


@MINIMIZERS.register("awp", AWPConfig)
class AWP(Minimizer):
    def __init__(self, cfg, base, bctx=None):
        super().__init__(cfg, base, bctx)
        self.epoch = 0

    def on_epoch_start(self, ectx) -> None:
        self.epoch = ectx.epoch

    def perturbed(self) -> list[torch.nn.Parameter]:
        """The weight tensors AWP perturbs: ndim > 1 (convolution and linear weights), with a gradient."""
        return [p for p in self.params() if p.ndim > 1 and p.grad is not None]

    def step(self, closure):
        with torch.enable_grad():
            loss = closure()                                    # pass 0: g at w
        if self.epoch < self.cfg.warmup_epochs:
            self.base_step()
            return loss
        params = self.perturbed()
        self.pass_at(closure, params, perturbation(params, [p.grad for p in params], self.cfg.gamma))   # pass 1: at w + v
        self.base_step()
        return loss
