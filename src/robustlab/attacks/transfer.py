r"""Transfer attacks: BIM / I-FGSM and its momentum (MI), input-diversity (DI) and translation-invariance (TI)
variants, as settings of the one attack loop (hooks ``transform`` and ``ascent_direction``; docs/transfer.md).

Per step t, from delta_0 = 0 (no random start):

.. math::
    g_t &= \nabla_\delta\, \mathrm{CE}\big(f(\mathrm{DI}(x + \delta_t)), y\big)  \quad\text{(per sample)},\\
    g_t &\leftarrow W * g_t \quad\text{(TI: depth-wise convolution with a normalised Gaussian kernel)},\\
    m_t &= g_t / \mathrm{mean}|g_t| + \mu\, m_{t-1} \quad\text{(MI; } \mu = 0 \text{: plain BIM)},\\
    \delta_{t+1} &= \Pi_{[0,1]-x}\,\Pi_\varepsilon(\delta_t + \alpha\,\mathrm{sign}(m_t)).

DI transforms the input with probability p: ``shrink_pad`` (torchattacks: resize to r x r with r uniform in
[rate H, H), then zero-pad back to H at a random offset) or ``enlarge_resize`` (TransferAttack: resize to r in
[H, rate H), zero-pad to rate H, resize back to H); the coin is drawn once per batch (torchattacks) or per sample.
Crafting never stops early: a point fooled on the surrogate keeps being pushed (transfer needs margin, not a
first flip). Defaults are the LGV protocol: L-inf 4/255, step eps/10, 50 iterations, mu 0 (BIM).
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustlab.attacks.base import IterativeAttack
from robustlab.core.errors import ConfigError
from robustlab.core.registry import Registry
from robustlab.core.schema import spec


@dataclass
class DIConfig:
    """Input diversity (Xie et al., CVPR 2019): with probability ``prob`` the input is resized and padded."""
    prob: float = spec(0.5, lo=0.0, hi=1.0, doc="probability of transforming")
    rate: float = spec(0.9, lo=0.0, lo_open=True, doc="< 1: shrink_pad's smallest size; > 1: enlarge_resize's largest")
    mode: str = spec("shrink_pad", choices=["shrink_pad", "enlarge_resize"],
                     doc="shrink_pad (torchattacks) | enlarge_resize (TransferAttack)")
    per_sample: bool = spec(False, doc="one coin per sample instead of one per batch")

    def check(self, key: str) -> None:
        if (self.rate < 1) != (self.mode == "shrink_pad"):
            raise ConfigError(f"{key}rate: got {self.rate:g}; shrink_pad needs a rate < 1, enlarge_resize > 1")


@dataclass
class TIConfig:
    """Translation invariance (Dong et al., CVPR 2019): the gradient smoothed by a normalised Gaussian kernel."""
    kernel: int = spec(15, lo=1, doc="kernel side (odd)")
    nsig: float = spec(3.0, lo=0.0, lo_open=True, doc="the kernel spans +- nsig standard deviations")

    def check(self, key: str) -> None:
        if self.kernel % 2 == 0:
            raise ConfigError(f"{key}kernel: got {self.kernel}; must be odd")


def gaussian_kernel(size: int, nsig: float) -> torch.Tensor:
    """The normalised 2-D Gaussian of TI (torchattacks' ``gkern``: outer product of N(0,1) densities on
    linspace(-nsig, nsig, size)), computed in float64."""
    x = torch.linspace(-nsig, nsig, size, dtype=torch.float64)
    k1 = torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    k2 = torch.outer(k1, k1)
    return (k2 / k2.sum()).float()


class TransferAttack(IterativeAttack):
    """BIM (``decay=0``, no DI, no TI), MI-FGSM (``decay=1``), DI, TI and their combinations (MI-DI-TI)."""

    def __init__(self, model, eps: float = 4 / 255, alpha: float | None = None, steps: int = 50, *, decay: float = 0.0,
                 di: DIConfig | None = None, ti: TIConfig | None = None, norm: str = "linf", mode: str = "eval",
                 generator: torch.Generator | None = None):
        super().__init__(model, eps, eps / 10 if alpha is None else alpha, steps, norm=norm, random_init=0.0,
                         project=True, restarts=1, mode=mode, early_stop=False, generator=generator)
        self.decay, self.di, self.ti = float(decay), di, ti
        self._kernel = gaussian_kernel(ti.kernel, ti.nsig) if ti is not None else None

    def __repr__(self) -> str:
        parts = [f"eps={self.eps:.5g}", f"alpha={self.alpha:.5g}", f"steps={self.steps}", f"norm={self.threat.name}",
                 f"decay={self.decay:g}"]
        if self.di is not None:
            parts.append(f"di=({self.di.mode}, rate={self.di.rate:g}, prob={self.di.prob:g}, "
                         f"{'per sample' if self.di.per_sample else 'per batch'})")
        if self.ti is not None:
            parts.append(f"ti=(gaussian {self.ti.kernel}x{self.ti.kernel}, nsig={self.ti.nsig:g})")
        return f"{self.name()}({', '.join(parts)})"

    def name(self) -> str:
        tags = (["MI"] if self.decay > 0 else []) + (["DI"] if self.di else []) + (["TI"] if self.ti else [])
        return "-".join(tags) + "-FGSM" if tags else "BIM"

    def _randint(self, lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (1,), generator=self.generator))

    def transform(self, x_adv: torch.Tensor) -> torch.Tensor:
        di = self.di
        if di is None:
            return x_adv
        size = x_adv.shape[-1]
        if di.mode == "shrink_pad":
            lo, hi = int(size * di.rate), size
        else:
            lo, hi = size, int(size * di.rate)
        if hi <= lo:
            return x_adv
        r = self._randint(lo, hi)           # the draw order of torchattacks: size, top, left, then the coin
        out = F.interpolate(x_adv, size=[r, r], mode="bilinear", align_corners=False)
        top, left = self._randint(0, hi - r), self._randint(0, hi - r)
        out = F.pad(out, [left, hi - r - left, top, hi - r - top], value=0.0)
        if di.mode == "enlarge_resize":
            out = F.interpolate(out, size=[size, size], mode="bilinear", align_corners=False)
        if di.per_sample:
            coin = torch.rand(len(x_adv), generator=self.generator) < di.prob
            return torch.where(coin.to(x_adv.device).view(-1, 1, 1, 1), out, x_adv)
        return out if float(torch.rand(1, generator=self.generator)) < di.prob else x_adv

    def ascent_direction(self, grad: torch.Tensor, state: dict) -> torch.Tensor:
        if self._kernel is not None:
            c = grad.shape[1]
            w = self._kernel.to(grad.device, grad.dtype).expand(c, 1, *self._kernel.shape)
            grad = F.conv2d(grad, w, padding="same", groups=c)
        if self.decay == 0:
            return grad
        grad = grad / grad.abs().mean(dim=tuple(range(1, grad.ndim)), keepdim=True)
        momentum = grad + self.decay * state["m"] if "m" in state else grad
        state["m"] = momentum
        return momentum


def bim(model, eps: float = 4 / 255, alpha: float | None = None, steps: int = 50, **kw) -> TransferAttack:
    """BIM / I-FGSM with the LGV protocol's defaults (L-inf 4/255, step eps/10, 50 iterations, no random start)."""
    return TransferAttack(model, eps, alpha, steps, **kw)


@dataclass
class TransferAttackConfig:
    """One transfer attack of a transfer study (``attacks[]``), selected by ``name`` (default bim); DI and TI are typed
    blocks that any of them takes (``di: {}`` for the defaults)."""
    name: str = spec("bim")
    label: str = spec("BIM", doc="the name in tables")
    eps: float = spec(4 / 255, lo=0.0, lo_open=True, doc="radius (LGV: 4/255)")
    alpha: typing.Optional[float] = spec(None, lo=0.0, doc="step (default eps/10)")
    steps: int = spec(50, lo=1)
    norm: str = spec("linf", choices=["linf", "l2"])
    decay: float = spec(0.0, lo=0.0, doc="MI's momentum decay mu (0: BIM)")
    di: typing.Optional[DIConfig] = spec(None, doc="input diversity: {} for the defaults, or {prob, rate, mode, "
                                                   "per_sample}")
    ti: typing.Optional[TIConfig] = spec(None, doc="translation invariance (Gaussian-smoothed gradient): {} or "
                                                   "{kernel, nsig}")
    seed: int = spec(0, lo=0, doc="seed of DI's draws")

    def check(self, key: str) -> None:
        if self.norm == "linf" and self.eps > 1:
            raise ConfigError(f"{key}eps: got {self.eps:g}; an L-inf radius above 1 covers the whole [0,1] image box")


@dataclass
class MIConfig(TransferAttackConfig):
    label: str = spec("MI", doc="the name in tables")
    decay: float = spec(1.0, lo=0.0, doc="momentum decay mu (Dong et al.: 1.0)")


TRANSFER_ATTACKS: Registry[typing.Callable] = Registry("transfer attack", TransferAttackConfig)
"""Transfer attacks by name: ``build(cfg, surrogate) -> attack`` (robustlab list transfer-attacks). A new one (e.g.
a variance-tuned or a skip-gradient attack) is a function registered here with its config class."""


@TRANSFER_ATTACKS.register("bim", TransferAttackConfig)
def build_bim(cfg: TransferAttackConfig, surrogate) -> TransferAttack:
    """BIM / I-FGSM (Kurakin et al., 2017), with MI's momentum when ``decay`` > 0, DI and TI when given."""
    return TransferAttack(surrogate, cfg.eps, cfg.alpha, cfg.steps, decay=cfg.decay, di=cfg.di, ti=cfg.ti,
                          norm=cfg.norm, generator=torch.Generator().manual_seed(cfg.seed))


@TRANSFER_ATTACKS.register("mi", MIConfig)
def build_mi(cfg: MIConfig, surrogate) -> TransferAttack:
    """MI-FGSM (Dong et al., CVPR 2018): BIM with the momentum of normalised gradients, decay 1.0 by default."""
    return build_bim(cfg, surrogate)
