r"""Threat models as small strategy objects: random init, steepest-ascent step, projection.

- L-infinity: init U[-r, r]^d; step :math:`\alpha\,\mathrm{sign}(g)`; projection clip to [-eps, eps].
- L2: init uniform in the r-ball; step :math:`\alpha\, g/\lVert g\rVert_2`; projection
  :math:`\delta \cdot \min(1, \varepsilon/\lVert\delta\rVert_2)`.
"""
from __future__ import annotations

import torch


def default_step(eps: float) -> float:
    """The PGD step size robustlab uses when none is given: eps/4 (2/255 at 8/255, as in Rice et al. 2020 and the
    TRADES-AWP and memorisation-AT codes; README, "Evaluation"). The one place this default is written."""
    return eps / 4


def uniform(shape, like: torch.Tensor, generator=None) -> torch.Tensor:
    """U[0,1) samples on ``like``'s device and dtype, drawn from ``generator`` (or the global RNG)."""
    if generator is None:
        return torch.rand(shape, device=like.device, dtype=like.dtype)
    return torch.rand(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


def gaussian(shape, like: torch.Tensor, generator=None) -> torch.Tensor:
    """N(0, 1) samples on ``like``'s device and dtype, drawn from ``generator`` (or the global RNG)."""
    return _randn(shape, like, generator)


def _randn(shape, like: torch.Tensor, generator):
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


class Linf:
    name = "linf"

    def random_init(self, x: torch.Tensor, radius: float, generator=None) -> torch.Tensor:
        return (2 * uniform(x.shape, x, generator) - 1) * radius

    def step(self, grad: torch.Tensor, alpha: float) -> torch.Tensor:
        return alpha * grad.sign()

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        return delta.clamp(-eps, eps)

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().amax(dim=1)


class L2:
    name = "l2"

    def random_init(self, x: torch.Tensor, radius: float, generator=None) -> torch.Tensor:
        direction = _randn(x.shape, x, generator)
        direction = direction / _norms(direction).clamp_min(1e-12)
        d = x[0].numel()
        r = uniform((x.shape[0],), x, generator).pow(1.0 / d).view(-1, *([1] * (x.ndim - 1)))
        return direction * r * radius

    def step(self, grad: torch.Tensor, alpha: float) -> torch.Tensor:
        return alpha * grad / _norms(grad).clamp_min(1e-12)

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        return delta * (eps / _norms(delta).clamp_min(1e-12)).clamp(max=1.0)

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).norm(dim=1)


THREATS = {"linf": Linf(), "l2": L2()}


def get_threat(name: str):
    try:
        return THREATS[name]
    except KeyError:
        raise ValueError(f"norm: got {name!r}; allowed: {', '.join(THREATS)}") from None


def random_point(x: torch.Tensor, eps: float, norm: str = "linf", generator=None, clip: bool = True) -> torch.Tensor:
    """x plus a uniform draw from the threat model's eps-ball (L-inf: the cube, L2: the ball), clipped to [0,1]
    unless ``clip`` is False. Regularisers and diagnostics draw their random points here, so they honour the
    run's threat model."""
    p = x + get_threat(norm).random_init(x, eps, generator)
    return p.clamp(0, 1) if clip else p
