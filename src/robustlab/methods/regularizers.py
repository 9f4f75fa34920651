r"""Local-linearity regularisers that compose with any single-step base attack (spec sections 1.2, 1.8, 6).

Each term is a pure function of a per-sample loss ``loss_fn(x) -> [B]`` (tested in closed form on a
quadratic loss) wrapped by a :class:`~robustlab.methods.base.Regularizer` that draws the random points
and applies the weight. Notation: B the batch, :math:`u \sim U[-\varepsilon,\varepsilon]^d`, :math:`\ell_i`
the per-sample cross-entropy.

- **ELLE** (Abad Rocamora et al., ICLR 2024):
  :math:`E_{lin} = \frac1B\sum_i [\ell_i(x_c) - ((1-\alpha_i)\ell_i(x_a) + \alpha_i\ell_i(x_b))]^2`,
  :math:`x_a = x+u_a,\ x_b = x+u_b,\ x_c = (1-\alpha)x_a + \alpha x_b,\ \alpha_i\sim U[0,1]`; the 3B points go
  through one forward pass; no input gradients (no double backprop). ``fuse_forward=True`` sends them through
  the method's training forward as well (one 4B pass, as the ELLE ImageNet code does; BatchNorm then
  normalises the adversarial and the triplet points together, where the CIFAR code uses two passes).
  ``triplet_passes=3`` sends x_a, x_b and x_c through three B-sized passes instead (the same values for a
  model without BatchNorm; faster on CPUs, where per-image cost grows with the batch; with BatchNorm each
  pass is normalised by its own statistics).
- **GradAlign** (Andriushchenko & Flammarion, NeurIPS 2020):
  :math:`1 - \frac1B\sum_i \cos(\nabla\ell_i(x), \nabla\ell_i(x+u))`, double backprop through the second
  gradient only; samples with a zero gradient are left out of the mean.
- **LLR**, random-point variant of the ELLE code (Qin et al., 2019 use an inner maximisation):
  :math:`\frac1B\sum_i [\ell_i(x_3) - \ell_i(x_2) - \langle x_3 - x_2, \nabla\ell_i(x_2)\rangle]^2`.
- **CURE**, as in the ELLE code (Moosavi-Dezfooli et al., 2019 use a finite difference along the gradient
  sign): :math:`\frac1B\sum_i \lVert\nabla\ell_i(x) - \nabla\ell_i(x')\rVert_2^2` with x' the attack point.

Reference-code quirk, not reproduced by default: the ELLE code takes LLR's and CURE's input gradients of
the *batch-mean* loss, so each per-sample gradient carries a factor 1/B (1/B^2 in CURE's square); its
published weights (LLR 200-5000, CURE 1000-50000) were tuned with that factor. ``mean_grad_quirk=True``
reproduces it. The ELLE code also does not clip the random points to [0, 1]; here they are clipped unless
``clip_box=False``. Other ELLE-code quirks, named here and not reproduced (spec section 1.7): its trainer
calls ``optimizer.step()`` twice per batch with the same gradients (around the scheduler step); its attack
points are never clipped to [0, 1] (robustlab's attacks always clip); an extra clean forward in train mode,
made only to log accuracy, updates the BatchNorm running statistics; the ImageNet variant uses a
smooth-L1 residual. In the co_features code GradAlign's first gradient is taken at the FGSM point, not at
the clean point as in the official GradAlign (robustlab: the clean point).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from robustlab.attacks.threat import uniform
from robustlab.methods.base import Regularizer

LossFn = Callable[[torch.Tensor], torch.Tensor]  # x -> per-sample loss [B]


def elle_points(x_a: torch.Tensor, x_b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The 3B points [x_a; x_b; x_c] with x_c = (1-alpha) x_a + alpha x_b, alpha per sample."""
    a = alpha.view(-1, *([1] * (x_a.ndim - 1)))
    return torch.cat([x_a, x_b, (1 - a) * x_a + a * x_b])


def elle_residual_from_losses(losses: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Residual from the per-sample losses [3B] at elle_points: l(x_c) - ((1-a) l(x_a) + a l(x_b))."""
    la, lb, lc = losses.view(3, -1)
    return lc - ((1 - alpha) * la + alpha * lb)


def elle_residual(loss_fn: LossFn, x_a: torch.Tensor, x_b: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Per-sample linear-interpolation residual l(x_c) - ((1-a) l(x_a) + a l(x_b)), one 3B pass."""
    return elle_residual_from_losses(loss_fn(elle_points(x_a, x_b, alpha)), alpha)


def input_grad(loss_fn: LossFn, x: torch.Tensor, create_graph: bool, mean: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-sample loss, its input gradient): the gradient of sum_i l_i, i.e. grad l_i for sample i
    (of the batch mean if ``mean``, the reference code's 1/B quirk)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x)
        total = loss.mean() if mean else loss.sum()
        (g,) = torch.autograd.grad(total, x, create_graph=create_graph)
    return loss, g


def gradalign_term(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """1 - mean cosine of per-sample gradients, over samples where both are non-zero."""
    a, b = g1.flatten(1), g2.flatten(1)
    ok = (a.norm(dim=1) > 0) & (b.norm(dim=1) > 0)
    if not bool(ok.any()):
        return g2.sum() * 0.0
    return 1.0 - F.cosine_similarity(a[ok], b[ok], dim=1).mean()


def llr_residual(loss_fn: LossFn, x2: torch.Tensor, x3: torch.Tensor, mean_grad_quirk: bool = False) -> torch.Tensor:
    """Per-sample first-order residual l(x3) - l(x2) - <x3 - x2, grad l(x2)> (gradient kept in the graph)."""
    l2, g = input_grad(loss_fn, x2, create_graph=True, mean=mean_grad_quirk)
    l3 = loss_fn(x3)
    return l3 - l2 - ((x3 - x2) * g).flatten(1).sum(1)


def cure_term(loss_fn: LossFn, x: torch.Tensor, x_adv: torch.Tensor, mean_grad_quirk: bool = False) -> torch.Tensor:
    """mean_i ||grad l_i(x) - grad l_i(x_adv)||^2 (clean gradient detached, adversarial one in the graph)."""
    _, g_clean = input_grad(loss_fn, x, create_graph=False, mean=mean_grad_quirk)
    _, g_adv = input_grad(loss_fn, x_adv, create_graph=True, mean=mean_grad_quirk)
    return (g_clean.detach() - g_adv).pow(2).flatten(1).sum(1).mean()


class OnOffWeight:
    r"""ELLE-A's adaptive weight (spec 1.3), kept on the device (no host sync per step).

    After each step with error E_t: if more than 2 values are in the history H and
    :math:`E_t > \mathrm{mean}(H) + s\,\mathrm{std}(H)` (population std) then :math:`\lambda \leftarrow \lambda_{max}`,
    else :math:`\lambda \leftarrow d\lambda`; then E_t joins H. lambda starts at 0 and applies from the next
    step on. H is unbounded (``window=0``, the CIFAR code) or the last ``window`` values (ImageNet code: 500).
    """

    def __init__(self, lam_max: float, sensitivity: float = 2.0, decay: float = 0.99, window: int = 0,
                 start: float = 0.0):
        self.lam_max, self.sensitivity, self.decay, self.window = lam_max, sensitivity, decay, window
        self.lam = torch.tensor(float(start))
        self.count = 0
        self.mean = torch.tensor(0.0)
        self.m2 = torch.tensor(0.0)
        self.buffer: torch.Tensor | None = None

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.window:
            h = self.buffer[: min(self.count, self.window)]
            return h.mean(), h.std(unbiased=False)
        return self.mean, (self.m2 / self.count).clamp_min(0).sqrt()

    def update(self, error: torch.Tensor) -> None:
        e = error.detach().float().reshape(())
        self.lam, self.mean, self.m2 = self.lam.to(e.device), self.mean.to(e.device), self.m2.to(e.device)
        if self.count > 2:
            mean, std = self._stats()
            self.lam = torch.where(e > mean + self.sensitivity * std, torch.full_like(e, self.lam_max), self.decay * self.lam)
        else:
            self.lam = self.decay * self.lam
        if self.window:
            if self.buffer is None:
                self.buffer = torch.zeros(self.window, device=e.device)
            self.buffer[self.count % self.window] = e
        self.count += 1
        delta = e - self.mean
        self.mean = self.mean + delta / self.count
        self.m2 = self.m2 + delta * (e - self.mean)

    def value(self) -> torch.Tensor:
        return self.lam

    def state_dict(self) -> dict:
        return {"lam": self.lam.detach().cpu().clone(), "count": self.count, "mean": self.mean.cpu().clone(),
                "m2": self.m2.cpu().clone(), "buffer": None if self.buffer is None else self.buffer.cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        self.lam, self.count = state["lam"].clone(), state["count"]
        self.mean, self.m2 = state["mean"].clone(), state["m2"].clone()
        self.buffer = None if state["buffer"] is None else state["buffer"].clone()


def gradalign_lambda(eps: float) -> float:
    """The official GradAlign law lambda = 0.02 * 10^(eps_px / 8), capped at 2.0 (eps on the 0-1 scale)."""
    return min(2.0, 0.02 * 10 ** (eps * 255 / 8))


def elle_lambda(eps: float) -> float:
    """ELLE's published constant lambda: 1000 for eps <= 8/255, 5000 for 10-20, 10000 for 22-26 (px)."""
    px = round(eps * 255)
    return 1000.0 if px <= 8 else 5000.0 if px <= 20 else 10000.0



# ---- the terms as Regularizer objects ----------------------------------------------------------------

LLR_LAMBDA_PX = {2: 200, 4: 200, 6: 200, 8: 200, 10: 500, 12: 500, 14: 1000, 16: 500, 18: 1000, 20: 500,
                 22: 2000, 24: 5000, 26: 2000}   # ELLE repo scripts (with the mean-gradient quirk), onoff
CURE_LAMBDA_PX = {8: 1000, 16: 50000}           # ELLE repo scripts (with the quirk), onoff


def ce_loss_fn(model, y: torch.Tensor) -> LossFn:
    """x -> per-sample cross-entropy of model(x); labels tiled when x stacks several copies of the batch."""
    def fn(x):
        logits = model(x).float()
        return F.cross_entropy(logits, y.repeat(len(x) // len(y)), reduction="none")
    return fn


def default_weight(cfg, eps: float) -> float:
    from robustlab.config import ConfigError
    if cfg.weight is not None:
        return cfg.weight
    px = round(eps * 255)
    if cfg.name == "elle":
        return elle_lambda(eps)
    if cfg.name == "elle_a":
        return 4000.0
    if cfg.name == "gradalign":
        return gradalign_lambda(eps)
    table = LLR_LAMBDA_PX if cfg.name == "llr" else CURE_LAMBDA_PX
    if cfg.mean_grad_quirk and px in table and abs(eps * 255 - px) < 1e-6:
        return float(table[px])
    raise ConfigError(f"method.regularizers[{cfg.name}].weight: no published value for eps={eps:.4g}"
                      + ("" if cfg.mean_grad_quirk else " without mean_grad_quirk (the published weights assume it)")
                      + f"; set weight explicitly (published, with the quirk: {table} at eps in px)")


class LinearityRegularizer(Regularizer):
    """Draws the random points, evaluates one term, applies a constant or on/off weight."""

    def __init__(self, cfg, eps: float, generator: torch.Generator | None = None):
        self.cfg, self.generator = cfg, generator
        self.name = cfg.name
        self.key = "elle" if cfg.name in ("elle", "elle_a") else cfg.name
        schedule = cfg.schedule or ("onoff" if cfg.name in ("elle_a", "llr", "cure") else "constant")
        weight = default_weight(cfg, eps)
        self.onoff = OnOffWeight(weight, cfg.sensitivity, cfg.decay, cfg.window) if schedule == "onoff" else None
        self.weight = weight
        self._last: torch.Tensor | None = None

    def _uniform(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        p = x + (2 * uniform(x.shape, x, self.generator) - 1) * eps
        return p.clamp(0, 1) if self.cfg.clip_box else p

    @property
    def fuses(self) -> bool:
        """ELLE's triplet joins the method's training forward (``fuse_forward``; the ImageNet code's 4B pass)."""
        return self.key == "elle" and self.cfg.fuse_forward

    def extra_inputs(self, batch, ctx) -> torch.Tensor:
        """ELLE's 3B points; the draws (x_a, x_b, alpha) are kept for :meth:`from_logits`."""
        x, eps = batch.x, float(ctx.get("eps", 0.0))
        xa, xb = self._uniform(x, eps), self._uniform(x, eps)
        self._alpha = uniform((len(x),), x, self.generator)
        return elle_points(xa, xb, self._alpha)

    def from_logits(self, logits, batch, ctx) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = F.cross_entropy(logits.float(), batch.y.repeat(3), reduction="none")
        value = elle_residual_from_losses(losses, self._alpha).pow(2).mean()
        return self._weighted(value, {"elle_error": value.detach()})

    def _weighted(self, value, metrics):
        self._last = value.detach()
        lam = self.onoff.value().to(value.device) if self.onoff is not None else torch.tensor(self.weight, device=value.device)
        metrics[f"{self.name}_lambda"] = lam.detach()
        return lam * value, metrics

    def __call__(self, model, batch, ctx) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, y, eps = batch.x, batch.y, float(ctx.get("eps", 0.0))
        loss_fn = ce_loss_fn(model, y)
        key = self.key
        if key == "elle":
            points = self.extra_inputs(batch, ctx)
            n = self.cfg.triplet_passes
            logits = model(points) if n == 1 else torch.cat([model(p) for p in points.chunk(n)])
            return self.from_logits(logits, batch, ctx)
        if key == "gradalign":
            _, g1 = input_grad(loss_fn, x, create_graph=False)
            _, g2 = input_grad(loss_fn, self._uniform(x, eps), create_graph=True)
            value = gradalign_term(g1.detach(), g2)
            metrics = {"gradalign_cos": 1 - value.detach()}
        elif key == "llr":
            value = llr_residual(loss_fn, self._uniform(x, eps), self._uniform(x, eps), self.cfg.mean_grad_quirk).pow(2).mean()
            metrics = {"llr_error": value.detach()}
        else:
            value = cure_term(loss_fn, x, ctx["x_train"], self.cfg.mean_grad_quirk)
            metrics = {"cure_error": value.detach()}
        return self._weighted(value, metrics)

    def after_step(self) -> None:
        if self.onoff is not None and self._last is not None:
            self.onoff.update(self._last)

    def state_dict(self) -> dict:
        return {"onoff": self.onoff.state_dict()} if self.onoff is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.onoff is not None and state.get("onoff"):
            self.onoff.load_state_dict(state["onoff"])
