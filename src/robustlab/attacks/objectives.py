"""Per-sample objectives an attack ascends, ``(logits, y, ref) -> [B]``, as loss hooks on the one attack loop.

``ref`` is the call's per-point reference (a dict of tensors travelling with the working set): ``p_clean`` (the
clean distribution, TRADES), ``te_target`` (the temporal-ensembling target q).

- :func:`cross_entropy`: PGD, MART's attack;
- :func:`kl_to_clean`: TRADES' attack, KL(p(x) || p(x')) with p(x) the clean eval-mode distribution;
- :class:`PlusTE`: any of them plus the temporal-ensembling penalty w/K sum_k (p_k(x') - q_k)^2 (PGD-AT+TE,
  TRADES+TE); ``scale`` multiplies the base term (TRADES+TE ascends beta KL + R_TE).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from robustlab.functional.losses import kl_per_sample, te_penalty


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, ref=None) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def kl_to_clean(logits: torch.Tensor, y: torch.Tensor, ref) -> torch.Tensor:
    return kl_per_sample(ref["p_clean"], logits)


@dataclass
class PlusTE:
    base: Callable
    weight: float
    scale: float = 1.0

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, ref) -> torch.Tensor:
        return self.scale * self.base(logits, y, ref) + te_penalty(logits, ref["te_target"], self.weight)
