"""Inner products and norms over lists of tensors (a model's parameters or gradients as one long vector), in
double precision so that sums over millions of entries do not lose the small terms."""
from __future__ import annotations

import torch


def list_dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """sum_k <a_k, b_k> as a float64 scalar tensor."""
    return sum(((x.double() * y.double()).sum() for x, y in zip(a, b)), torch.zeros((), dtype=torch.float64))


def list_norm(a: list[torch.Tensor]) -> torch.Tensor:
    """||concat(a)||_2 as a float64 scalar tensor."""
    if not a:
        return torch.zeros((), dtype=torch.float64)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(a)).double())
