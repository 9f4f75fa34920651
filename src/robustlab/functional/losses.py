r"""Per-sample losses of the robust-training objectives (pure functions; B points, K classes).

- KL to a reference distribution: :math:`\mathrm{KL}(p \,\Vert\, \mathrm{softmax}(z))_i = \sum_k p_{ik}(\log p_{ik} - \log\mathrm{softmax}(z)_{ik})`
  (TRADES, MART: p is the clean distribution; gradients flow through p when it is in the graph);
- MART's boosted cross-entropy: :math:`-\log p_y(x') - \log(1.0001 - p_{y''}(x'))`, y'' the most likely wrong class;
- the temporal-ensembling penalty: :math:`\frac{w}{K}\sum_k (\mathrm{softmax}(z)_{ik} - q_{ik})^2` (q constant).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_per_sample(p_ref: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || softmax(logits)) per sample (0 log 0 = 0)."""
    return F.kl_div(F.log_softmax(logits.float(), 1), p_ref.float(), reduction="none").sum(1)


def boosted_ce(logits_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MART's per-sample BCE: CE(f(x'), y) - log(1.0001 - p_{y''}(x')), y'' = the most likely wrong class at x'."""
    probs = F.softmax(logits_adv.float(), 1)
    wrong = probs.masked_fill(F.one_hot(y, probs.shape[1]).bool(), -1.0).argmax(1)
    ce = F.cross_entropy(logits_adv.float(), y, reduction="none")
    return ce - torch.log(1.0001 - probs.gather(1, wrong[:, None]).squeeze(1))


def te_penalty(logits: torch.Tensor, target: torch.Tensor, weight: float) -> torch.Tensor:
    """Temporal-ensembling penalty per sample: weight / K * sum_k (softmax(logits)_k - target_k)^2."""
    p = F.softmax(logits.float(), 1)
    return weight * (p - target).pow(2).mean(1)
