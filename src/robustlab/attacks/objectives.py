"""Per-sample objectives an attack ascends, ``(logits, y, ref) -> [B]``, as loss hooks on the one attack loop.

``ref`` is the call's per-point reference (a dict of tensors travelling with the working set): ``p_clean`` (the
clean distribution, TRADES), ``te_target`` (the temporal-ensembling target q).

- :func:`cross_entropy`: PGD, MART's attack;
- :func:`cw_margin`: the Carlini-Wagner margin max_{j != y} z_j - z_y (PGD-CW; scale-free in the loss, not the logits);
- :func:`dlr`: the difference of logits ratio of Croce & Hein (2020),
  -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), pi the logits sorted descending (invariant to shifts and
  scales of the logits);
- :func:`targeted_cross_entropy`, :func:`targeted_dlr`: a targeted attack ascends -CE(z, t) or
  -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12), the target ``t`` per point in ``ref["target"]``
  (:func:`ranked_targets` gives the k-th most likely wrong class, as APGD-T chooses them);
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


def _margin_parts(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = logits.float()
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(1)
    return true, other


def cw_margin(logits: torch.Tensor, y: torch.Tensor, ref=None) -> torch.Tensor:
    true, other = _margin_parts(logits, y)
    return other - true


def dlr(logits: torch.Tensor, y: torch.Tensor, ref=None) -> torch.Tensor:
    true, other = _margin_parts(logits, y)
    top = logits.float().sort(1, descending=True).values
    return -(true - other) / (top[:, 0] - top[:, 2] + 1e-12)


def targeted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, ref) -> torch.Tensor:
    return -F.cross_entropy(logits.float(), ref["target"], reduction="none")


def targeted_dlr(logits: torch.Tensor, y: torch.Tensor, ref) -> torch.Tensor:
    z = logits.float()
    top = z.sort(1, descending=True).values
    true, target = z.gather(1, y[:, None]).squeeze(1), z.gather(1, ref["target"][:, None]).squeeze(1)
    return -(true - target) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def ranked_targets(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th most likely class other than y (k = 1: the runner-up), per point."""
    order = logits.float().scatter(1, y[:, None], float("-inf")).argsort(1, descending=True)
    return order[:, k - 1]


OBJECTIVES = {"ce": cross_entropy, "cw": cw_margin, "dlr": dlr}   # untargeted losses by name (eval --loss)


def kl_to_clean(logits: torch.Tensor, y: torch.Tensor, ref) -> torch.Tensor:
    return kl_per_sample(ref["p_clean"], logits)


@dataclass
class PlusTE:
    base: Callable
    weight: float
    scale: float = 1.0

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, ref) -> torch.Tensor:
        return self.scale * self.base(logits, y, ref) + te_penalty(logits, ref["te_target"], self.weight)
