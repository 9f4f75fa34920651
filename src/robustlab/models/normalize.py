r"""What sits in front of every model: per-channel normalisation (x - mean) / std, so models take [0,1]
inputs, and optionally a 2-D DCT low-pass filter (Ortiz-Jimenez et al., 2023: applied after normalisation).

The low-pass keeps the b x b lowest frequencies of each channel's orthonormal 2-D DCT-II:
:math:`x' = C_H^T (M_b \odot C_H x C_W^T) C_W` with :math:`M_b[u, v] = 1` iff u < b and v < b. (The reference code's
mask ``mask[:, :b, :b]`` on a [B, C, H, W] tensor keeps b *channels* and b rows: it filters one axis only.)
Its matrices are not saved in checkpoints, so a model with and without the filter shares one state dict;
``apply_filter = False`` evaluates without it.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix C (rows are frequencies): X = C x, x = C^T X."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c.float()


class DCTLowPass(nn.Module):
    def __init__(self, bandwidth: int, height: int, width: int):
        super().__init__()
        self.bandwidth = bandwidth
        self.apply_filter = True
        self.register_buffer("ch", dct_matrix(height), persistent=False)
        self.register_buffer("cw", dct_matrix(width), persistent=False)
        mask = torch.zeros(height, width)
        mask[:bandwidth, :bandwidth] = 1
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.apply_filter:
            return x
        freq = self.ch @ x @ self.cw.T
        return self.ch.T @ (freq * self.mask) @ self.cw


class Normalize(nn.Module):
    def __init__(self, mean, std, lowpass: DCTLowPass | None = None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.lowpass = lowpass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.lowpass(x) if self.lowpass is not None else x
