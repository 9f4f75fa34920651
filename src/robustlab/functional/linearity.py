r"""Local-linearity terms as pure functions of a per-sample loss ``loss_fn(x) -> [B]`` (tested in closed form
on a quadratic loss). Notation: B the batch, :math:`\ell_i` the per-sample loss.

- ELLE residual: :math:`\ell_i(x_c) - ((1-\alpha_i)\ell_i(x_a) + \alpha_i\ell_i(x_b))`, :math:`x_c = (1-\alpha)x_a + \alpha x_b`;
- GradAlign: :math:`1 - \frac1B\sum_i \cos(g_{1,i}, g_{2,i})` over samples with non-zero gradients;
- LLR residual: :math:`\ell_i(x_3) - \ell_i(x_2) - \langle x_3 - x_2, \nabla\ell_i(x_2)\rangle`;
- CURE: :math:`\frac1B\sum_i \lVert\nabla\ell_i(x) - \nabla\ell_i(x')\rVert_2^2`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor], torch.Tensor]  # x -> per-sample loss [B]


def ce_loss_fn(model, y: torch.Tensor) -> LossFn:
    """x -> per-sample cross-entropy of model(x); labels tiled when x stacks several copies of the batch."""
    def fn(x):
        logits = model(x).float()
        return F.cross_entropy(logits, y.repeat(len(x) // len(y)), reduction="none")
    return fn


def elle_points(x_a: torch.Tensor, x_b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The 3B points [x_a; x_b; x_c] with x_c = (1-alpha) x_a + alpha x_b, alpha per sample."""
    a = alpha.view(-1, *([1] * (x_a.ndim - 1)))
    return torch.cat([x_a, x_b, (1 - a) * x_a + a * x_b])


def elle_residual_from_losses(losses: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Residual from the per-sample losses [3B] at elle_points: l(x_c) - ((1-a) l(x_a) + a l(x_b))."""
    la, lb, lc = losses.view(3, -1)
    return lc - ((1 - alpha) * la + alpha * lb)


def elle_residual(loss_fn: LossFn, x_a: torch.Tensor, x_b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Per-sample linear-interpolation residual l(x_c) - ((1-a) l(x_a) + a l(x_b)), one 3B pass."""
    return elle_residual_from_losses(loss_fn(elle_points(x_a, x_b, alpha)), alpha)


def input_grad(loss_fn: LossFn, x: torch.Tensor, create_graph: bool, mean: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample loss, its input gradient): the gradient of sum_i l_i, i.e. grad l_i for sample i
    (of the batch mean if ``mean``, the ELLE code's 1/B quirk)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x)
        total = loss.mean() if mean else loss.sum()
        (g,) = torch.autograd.grad(total, x, create_graph=create_graph)
    return loss, g


def gradalign_term(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine of per-sample gradients, over samples where both are non-zero."""
    a, b = g1.flatten(1), g2.flatten(1)
    ok = (a.norm(dim=1) > 0) & (b.norm(dim=1) > 0)
    if not bool(ok.any()):
        return g2.sum() * 0.0
    return 1.0 - F.cosine_similarity(a[ok], b[ok], dim=1).mean()


def llr_residual(loss_fn: LossFn, x2: torch.Tensor, x3: torch.Tensor, mean_grad_quirk: bool = False) -> torch.Tensor:
    """Per-sample first-order residual l(x3) - l(x2) - <x3 - x2, grad l(x2)> (gradient kept in the graph)."""
    l2, g = input_grad(loss_fn, x2, create_graph=True, mean=mean_grad_quirk)
    l3 = loss_fn(x3)
    return l3 - l2 - ((x3 - x2) * g).flatten(1).sum(1)


def cure_term(loss_fn: LossFn, x: torch.Tensor, x_adv: torch.Tensor, mean_grad_quirk: bool = False) -> torch.Tensor:
    """mean_i ||grad l_i(x) - grad l_i(x_adv)||^2 (clean gradient detached, adversarial one in the graph)."""
    _, g_clean = input_grad(loss_fn, x, create_graph=False, mean=mean_grad_quirk)
    _, g_adv = input_grad(loss_fn, x_adv, create_graph=True, mean=mean_grad_quirk)
    return (g_clean.detach() - g_adv).pow(2).flatten(1).sum(1).mean()
