r"""Sharpness-aware minimisers behind ``step(closure)``: SAM, large-rho SAM, ASAM (both conventions), GSAM, LookSAM
(docs/transfer.md). Each composes with any base optimiser and any training method (SAM-AT is ``method: pgd`` with
``optim.minimizer: sam``); BatchNorm running statistics change on the closure's first pass only (the trainer's
rule); the weights are restored bit for bit after the perturbed pass.

With g = grad L(w) (pass 0) and the perturbation e (below), the update uses g_s = grad L(w + e) (pass 1):

- **SAM** (Foret et al., 2021): e = rho g / ||g||_2 (global norm over all parameters). ``large_rho_sam`` is the same
  minimiser with a larger default rho (the "l-SAM" of Gubri et al.; their rho is not published: docs/transfer.md).
- **ASAM** (Kwon et al., 2021): e = rho T^2 g / ||T g|| with T = diag(|w| + eta). Two conventions, named:
  ``adaptive: all`` (davda54/sam: every parameter, eta 0; README rho 2.0) and ``adaptive: weights`` (the official
  ASAM code: T = |w| + eta, eta 0.01, only for parameters whose name ends in ``weight``, T = 1 for the others;
  rho 0.5; the names are those given to ``build_optimizer`` (the trainer names the model's and the method's own
  modules' parameters; an unnamed parameter is an error). The two rho values are not interchangeable.
- **GSAM** (Zhuang et al., 2022): rho_t = rho_min + (rho_max - rho_min)(lr_t - lr_min)/(lr_max - lr_min) follows the
  lr; with g_s's direction u = g_s / ||g_s||, g = (g . u) u + g_perp; the update direction is g_s - alpha g_perp
  (descend the perturbed loss, ascend along the clean gradient's part orthogonal to it, shrinking the gap).
- **LookSAM** (Liu et al., 2022): every k-th step a SAM step that also stores g_v = g_s - (g_s . g/||g||^2) g, the
  part of the SAM gradient orthogonal to the plain one; in between one pass and the update
  g + alpha (||g|| / ||g_v||) g_v. The stored g_v is saved in checkpoints (exact resume).

Cost per step: SAM, ASAM, GSAM two forward-backward passes; LookSAM (1 + 1/k).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

import torch

from robustlab.core.errors import ConfigError
from robustlab.core.schema import spec
from robustlab.functional.linalg import list_dot, list_norm
from robustlab.optim.minimizer import MINIMIZERS, Minimizer, MinimizerConfig


@dataclass
class PerturbationConfig(MinimizerConfig):
    """What every minimiser of this family accepts: the neighbourhood's shape."""
    adaptive: str = spec("none", choices=["none", "all", "weights"],
                         doc="none: SAM; all: ASAM as davda54/sam (every parameter, eta 0); weights: ASAM as the "
                             "official code (|w| + eta on weight tensors only)")
    eta: typing.Optional[float] = spec(None, lo=0.0, doc="ASAM's eta (default: 0 for 'all', 0.01 for 'weights')")

    def resolve(self, parent, key: str) -> None:
        if self.eta is None:
            self.eta = 0.01 if self.adaptive == "weights" else 0.0

    def check(self, key: str) -> None:
        if self.adaptive == "none" and self.eta:
            raise ConfigError(f"{key}eta: got {self.eta:g}; eta belongs to ASAM (set adaptive: all or weights)")


@dataclass
class SAMConfig(PerturbationConfig):
    rho: float = spec(0.05, lo=0.0, doc="neighbourhood radius (SAM 0.05-0.1 on CIFAR; ASAM: 2.0 with adaptive: all, "
                                        "0.5 with adaptive: weights)")


@dataclass
class LargeRhoSAMConfig(SAMConfig):
    rho: float = spec(0.5, lo=0.0, doc="large neighbourhood radius (l-SAM; the paper's value is not published)")


@dataclass
class GSAMConfig(PerturbationConfig):
    rho_min: float = spec(0.02, lo=0.0, doc="rho at the smallest lr")
    rho_max: float = spec(0.04, lo=0.0, doc="rho at the peak lr (GSAM's ImageNet ResNet values 0.02 -> 0.04)")
    alpha: float = spec(0.01, lo=0.0, doc="ascent coefficient on the clean gradient's orthogonal part")
    lr_min: float = spec(0.0, lo=0.0, doc="the lr at which rho = rho_min")

    def check(self, key: str) -> None:
        super().check(key)
        if self.rho_max < self.rho_min:
            raise ConfigError(f"{key}rho_max: got {self.rho_max:g}; must be >= rho_min ({self.rho_min:g})")


@dataclass
class LookSAMConfig(SAMConfig):
    k: int = spec(5, lo=1, doc="a SAM gradient every k steps")
    alpha: float = spec(0.7, lo=0.0, doc="scale of the reused orthogonal component")


class SAM(Minimizer):
    """SAM / ASAM: e from pass 0's gradient, pass 1 at w + e, w restored, the base update with pass 1's gradient."""
    Config = SAMConfig

    def is_weight(self, p) -> bool:
        """The official ASAM code's test, on the parameter's name (given to build_optimizer as named parameters). A
        parameter without a name is an error, never plain-SAM scaling by accident."""
        name = self.param_names.get(id(p))
        if name is None:
            raise ConfigError("optim.minimizer.adaptive: 'weights' picks parameters by name, and a parameter has none; "
                              "build the optimiser from named parameters (build_optimizer(cfg, model.named_parameters()))")
        return name.endswith("weight")

    def with_grad(self) -> list[torch.nn.Parameter]:
        return [p for p in self.params() if p.grad is not None]

    def scales(self, params) -> list[torch.Tensor] | None:
        """T per parameter for ASAM (None: SAM)."""
        mode = self.cfg.adaptive
        if mode == "none":
            return None
        if mode == "all":
            return [p.detach().abs() + self.cfg.eta for p in params]
        return [p.detach().abs() + self.cfg.eta if self.is_weight(p) else torch.ones_like(p) for p in params]

    def perturbation(self, params, grads, rho: float) -> list[torch.Tensor]:
        t = self.scales(params)
        if t is None:
            norm = list_norm(grads)
            return [rho * g / norm.clamp_min(1e-12).to(g.dtype) for g in grads]
        tg = [ti * g for ti, g in zip(t, grads)]
        norm = list_norm(tg)
        return [rho * ti * x / norm.clamp_min(1e-12).to(x.dtype) for ti, x in zip(t, tg)]

    def rho(self) -> float:
        return self.cfg.rho

    def step(self, closure):
        with torch.enable_grad():
            loss = closure()                                     # pass 0: g at w
        params = self.with_grad()
        grads = [p.grad.detach().clone() for p in params]
        self.pass_at(closure, params, self.perturbation(params, grads, self.rho()))   # p.grad = g_s
        self.combine(params, grads)
        self.base_step()
        return loss

    def combine(self, params, clean_grads) -> None:
        """The update direction from g_s (in p.grad) and g (SAM: g_s itself)."""


MINIMIZERS.register("sam", SAMConfig)(SAM)
MINIMIZERS.register("large_rho_sam", LargeRhoSAMConfig)(SAM)


@MINIMIZERS.register("gsam", GSAMConfig)
class GSAM(SAM):
    def rho(self) -> float:
        lr = self.base.param_groups[0]["lr"]
        lr_max, lr_min = self.base.defaults["lr"], self.cfg.lr_min
        if lr_max <= lr_min:
            return self.cfg.rho_max
        frac = min(1.0, max(0.0, (lr - lr_min) / (lr_max - lr_min)))
        return self.cfg.rho_min + (self.cfg.rho_max - self.cfg.rho_min) * frac

    def combine(self, params, clean_grads) -> None:
        perturbed = [p.grad for p in params]
        coef = (list_dot(clean_grads, perturbed) / list_dot(perturbed, perturbed).clamp_min(1e-24))
        with torch.no_grad():
            for p, g, gs in zip(params, clean_grads, perturbed):
                vertical = g - coef.to(g.dtype) * gs
                p.grad = gs - self.cfg.alpha * vertical


@MINIMIZERS.register("looksam", LookSAMConfig)
class LookSAM(SAM):
    def __init__(self, cfg, base, bctx=None):
        super().__init__(cfg, base, bctx)
        self.t = 0
        self.g_v: list[torch.Tensor] | None = None

    def step(self, closure):
        with torch.enable_grad():
            loss = closure()                                     # pass 0: g at w
        params = self.with_grad()
        grads = [p.grad.detach().clone() for p in params]
        if self.t % self.cfg.k == 0 or self.g_v is None or len(self.g_v) != len(params):
            self.pass_at(closure, params, self.perturbation(params, grads, self.rho()))
            g_s = [p.grad for p in params]
            coef = list_dot(g_s, grads) / list_dot(grads, grads).clamp_min(1e-24)
            self.g_v = [(gs - coef.to(g.dtype) * g).detach().clone() for gs, g in zip(g_s, grads)]
        else:                                                    # reuse: g + alpha ||g|| / ||g_v|| g_v
            scale = self.cfg.alpha * list_norm(grads) / list_norm(self.g_v).clamp_min(1e-24)
            with torch.no_grad():
                for p, g, v in zip(params, grads, self.g_v):
                    p.grad = g + scale.to(g.dtype) * v
        self.t += 1
        self.base_step()
        return loss

    def extra_state(self) -> dict:
        return {"t": self.t, "g_v": self.g_v}

    def load_extra_state(self, state: dict) -> None:
        self.t = state.get("t", 0)
        self.g_v = state.get("g_v")
