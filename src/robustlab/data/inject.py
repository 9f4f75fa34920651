r"""Discriminative non-robust class features (Ortiz-Jimenez, de Jorge et al., TMLR 2023, "Catastrophic
overfitting can be induced with discriminative non-robust features"; docs/co-map.md).

Each class y gets a carrier :math:`v_y \in \{\pm 1\}^{C\times H\times W}`, the sign pattern of one 2-D DCT
basis image (unnormalised DCT-III, same on every channel); injection adds it with strength beta:

.. math::  \tilde x = x + \beta\, v_y \qquad (\lVert v_y\rVert_\infty = 1;\ \text{no clipping, as the reference code})

The orthogonal variant first projects x off the carriers' span. For 10 classes the reference scheme is used: classes 0-4 take DCT indices (0,1), (1,0), (1,1), (2,1), (1,2)
with sign +1 and classes 5-9 the same indices with sign -1 (the carriers span rank 5). For other class
counts each class takes its own index in zigzag order, skipping DC. beta is on the 0-1 scale (the paper's
beta/255), like every eps in robustlab.
"""
from __future__ import annotations

import math

import torch

from robustlab.data.dataset import ImageSet, to_float

TEN_CLASS_INDICES = [(0, 1), (1, 0), (1, 1), (2, 1), (1, 2)]


def dct_sign_pattern(u: int, v: int, height: int, width: int) -> torch.Tensor:
    """sign(cos(pi (2m+1) u / 2H) cos(pi (2n+1) v / 2W)) as an [H, W] tensor of +-1 (sign(0) := +1)."""
    m = torch.arange(height, dtype=torch.float64)
    n = torch.arange(width, dtype=torch.float64)
    basis = torch.cos(math.pi * (2 * m + 1) * u / (2 * height))[:, None] * torch.cos(math.pi * (2 * n + 1) * v / (2 * width))[None, :]
    return torch.where(basis >= 0, 1.0, -1.0).float()


def zigzag_indices(height: int, width: int):
    """DCT indices (u, v) in JPEG zigzag order, DC first."""
    order = []
    for s in range(height + width - 1):
        diag = [(u, s - u) for u in range(max(0, s - width + 1), min(s, height - 1) + 1)]
        order.extend(diag if s % 2 else diag[::-1])
    return order


def class_carriers(num_classes: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """[K, C, H, W] carriers of +-1 entries, one per class (see module docstring)."""
    c, h, w = shape
    if num_classes == 10:
        indices = TEN_CLASS_INDICES * 2
        signs = [1.0] * 5 + [-1.0] * 5
    else:
        zz = zigzag_indices(h, w)[1:]
        if num_classes > len(zz):
            raise ValueError(f"{num_classes} classes need more DCT indices than a {h}x{w} image has")
        indices, signs = zz[:num_classes], [1.0] * num_classes
    pats = [s * dct_sign_pattern(u, v, h, w) for (u, v), s in zip(indices, signs)]
    return torch.stack(pats)[:, None].expand(-1, c, -1, -1).contiguous()


def inject_carriers(data: ImageSet, carriers: torch.Tensor, beta: float, orthogonal: bool = False) -> ImageSet:
    """x + beta * v_y as float images (not clipped to [0,1]).

    ``orthogonal``: first remove from x its projection onto span{v_1..v_K}, using an orthonormal basis of
    the span's true rank (5 for the 10-class scheme; the reference code's 10-column QR of a rank-5 matrix
    projects out 5 arbitrary extra directions)."""
    x = to_float(data.x)
    if orthogonal:
        q = carrier_basis(carriers)
        flat = x.flatten(1)
        x = (flat - (flat @ q) @ q.T).view_as(x)
    return ImageSet(x + beta * carriers[data.y], data.y)


def carrier_basis(carriers: torch.Tensor) -> torch.Tensor:
    """[d, r] orthonormal basis of the carriers' span, r its numerical rank."""
    v = carriers.flatten(1).double().T                     # d x K
    u, s, _ = torch.linalg.svd(v, full_matrices=False)
    rank = int((s > s.max() * 1e-9).sum())
    return u[:, :rank].float()
