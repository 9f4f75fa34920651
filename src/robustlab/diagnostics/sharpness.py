r"""Sharpness of the training loss: the Hessian's top eigenvalue and its trace (Gubri et al., "Going Further: Flatness at
the Rescue of Early Stopping for Adversarial Example Transferability": transfer peaks where sharpness drops), on a fixed, seeded subset of training examples, in eval mode (BatchNorm uses its running
statistics, no dropout), with the loss

.. math:: L(w) = \frac1n \sum_{i \le n} \mathrm{CE}(f_w(x_i), y_i)

over the model's parameters. Both use Hessian-vector products :math:`Hv = \nabla_w (\nabla_w L \cdot v)` (double
backpropagation, in batches; never the full Hessian):

- **top eigenvalue**: power iteration :math:`v \leftarrow Hv / \lVert Hv\rVert` from a seeded Gaussian v,
  :math:`\lambda = v^\top H v`, until the relative change is below ``tol`` or ``iters`` iterations (it finds the
  eigenvalue of largest magnitude: the top one near a minimum, where H is nearly positive semi-definite);
- **trace**: Hutchinson's estimator :math:`\mathrm{tr} H \approx \frac1m \sum_j z_j^\top H z_j` with seeded
  Rademacher :math:`z_j`, reported with its standard error over the m samples.

Cost: (iterations + samples) HVPs, each about two forward-backward passes over the n points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.modes import attack_mode
from robustlab.core.schema import spec
from robustlab.data import to_float
from robustlab.functional.linalg import list_dot
from robustlab.diagnostics.base import DIAGNOSTICS, Diagnostic, DiagnosticConfig

SHARPNESS_SEED = 2718


def _params(model: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, vec: list[torch.Tensor], batch_size: int = 256) -> list[torch.Tensor]:
    """H v of the mean cross-entropy over (x, y), accumulated over batches."""
    params = _params(model)
    out = [torch.zeros_like(p) for p in params]
    n = len(y)
    for i in range(0, n, batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        loss = F.cross_entropy(model(xb).float(), yb, reduction="sum") / n
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vec))
        hv = torch.autograd.grad(dot, params)
        torch._foreach_add_(out, [h.detach() for h in hv])
    return out


def _dot(a, b) -> float:
    return float(list_dot(a, b))


def top_eigenvalue(model: nn.Module, x, y, iters: int = 20, tol: float = 1e-3, seed: int = SHARPNESS_SEED,
                   batch_size: int = 256) -> tuple[float, int]:
    """(lambda_max, iterations used) by power iteration on Hessian-vector products."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen, device=x.device, dtype=p.dtype) for p in _params(model)]
    norm = math.sqrt(_dot(v, v))
    v = [t / norm for t in v]
    lam, used = 0.0, 0
    with attack_mode(model, "eval"):
        for used in range(1, iters + 1):
            hv = hvp(model, x, y, v, batch_size)
            new = _dot(v, hv)
            norm = math.sqrt(_dot(hv, hv))
            if norm == 0:
                return 0.0, used
            v = [t / norm for t in hv]
            if used > 1 and abs(new - lam) <= tol * max(abs(new), 1e-12):
                lam = new
                break
            lam = new
    return lam, used


def hutchinson_trace(model: nn.Module, x, y, samples: int = 20, seed: int = SHARPNESS_SEED + 1,
                     batch_size: int = 256) -> tuple[float, float]:
    """(trace estimate, its standard error) from ``samples`` Rademacher probes."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    values = []
    with attack_mode(model, "eval"):
        for _ in range(samples):
            z = [torch.randint(0, 2, p.shape, generator=gen, device=x.device).to(p.dtype) * 2 - 1 for p in _params(model)]
            values.append(_dot(z, hvp(model, x, y, z, batch_size)))
    mean = sum(values) / len(values)
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values)) if len(values) > 1 else math.nan
    return mean, se


def sharpness(model: nn.Module, x, y, iters: int = 20, samples: int = 20, tol: float = 1e-3, batch_size: int = 256) -> dict:
    lam, used = top_eigenvalue(model, x, y, iters, tol, batch_size=batch_size)
    tr, se = hutchinson_trace(model, x, y, samples, batch_size=batch_size)
    return {"hessian_top_eig": lam, "hessian_power_iters": used, "hessian_trace": tr, "hessian_trace_se": se,
            "sharpness_points": len(y)}


def fixed_subset(train, n: int, device, seed: int = SHARPNESS_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded subset of n training examples (the same for every epoch and checkpoint of a run)."""
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return to_float(train.x[idx].to(device)), train.y[idx].to(device)


@dataclass
class SharpnessConfig(DiagnosticConfig):
    every: int = spec(5, lo=1, doc="measure every k epochs (and at the last epoch)")
    points: int = spec(1000, lo=1, doc="training examples in the fixed, seeded subset")
    iters: int = spec(20, lo=1, doc="power iterations at most (top eigenvalue)")
    samples: int = spec(20, lo=2, doc="Hutchinson probes (trace)")
    tol: float = spec(1e-3, lo=0.0, doc="relative change that stops the power iteration")


@DIAGNOSTICS.register("sharpness", SharpnessConfig)
class Sharpness(Diagnostic):
    """:func:`sharpness` per epoch: ``diag_hessian_top_eig``, ``diag_hessian_trace`` (+ its standard error)."""

    def __init__(self, cfg, bctx):
        super().__init__(cfg, bctx)
        self.x, self.y = fixed_subset(bctx.data.train, min(cfg.points, len(bctx.data.train)), bctx.device)

    def measure(self, model, epoch):
        res = sharpness(model, self.x, self.y, self.cfg.iters, self.cfg.samples, self.cfg.tol)
        return {"diag_hessian_top_eig": res["hessian_top_eig"], "diag_hessian_trace": res["hessian_trace"],
                "diag_hessian_trace_se": res["hessian_trace_se"]}
