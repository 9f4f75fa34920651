r"""The one iterative attack loop. Every gradient attack in robustlab is this loop with other settings or
with a hook overridden (``init_delta``, ``transform``, ``loss``, ``ascent_direction``, ``project``).

For each restart r = 1..R and step t = 1..T:

.. math::
    \delta_0 &= \mathrm{init}(\text{zero} \mid U[-k\varepsilon, k\varepsilon] \mid \sigma\,\mathcal N(0, I)),\\
    g_t &= \nabla_\delta\, \ell\big(f(\mathrm{transform}(x+\delta_t)), y\big),\\
    \delta_{t+1} &= \Pi_{[0,1]-x}\,\Pi_{\varepsilon}\big(\delta_t + \mathrm{step}(g_t, \alpha)\big)

(:math:`\Pi_\varepsilon` is skipped when ``project=False``, as in N-FGSM). The result is per-sample worst
case over restarts: a point misclassified by any restart stays misclassified; otherwise the restart with the
highest loss is kept. With ``early_stop`` (the default in eval mode, where a sample's output does not depend
on the rest of the batch) a point is frozen at the first iterate that misclassifies it and dropped from the
batch, which saves compute and can only make the robust-accuracy verdict stronger than plain PGD's.

Attacks never leave gradients on model parameters (only the input gradient is taken) and restore every
module's train/eval flag on exit. They are re-entrant: an attack object holds settings only; per-call data
(a reference the loss compares against, such as GAT's clean probabilities or TRADES' clean distribution) is
passed as ``ref`` (a tensor or a dict of tensors, one row per point) and travels with the working set;
:meth:`IterativeAttack.bind` returns a copy for another model, radius or objective (a training method binds its
attack to the current model and ramped eps each batch). The ascended quantity is the per-sample ``objective(logits,
y, ref)`` (default cross-entropy; robustlab.attacks.objectives has the KL, MART and temporal-ensembling ones).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.modes import attack_mode
from robustlab.attacks.threat import gaussian, get_threat


def rows_of(ref, index):
    """Rows ``index`` of a per-point reference: a tensor, a dict of tensors, or None."""
    if ref is None:
        return None
    if isinstance(ref, dict):
        return {k: v[index] for k, v in ref.items()}
    return ref[index]



def misclassified(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per row: the prediction is not ``y``, or the logits are not all finite (argmax of a NaN row would name a
    class; a model that outputs NaN classifies nothing)."""
    return (logits.argmax(1) != y) | ~torch.isfinite(logits).all(1)

class IterativeAttack:
    def __init__(self, model: nn.Module, eps: float, alpha: float, steps: int, *, norm: str = "linf",
                 random_init: float = 0.0, project: bool = True, clip_box: bool = True, restarts: int = 1,
                 mode: str = "eval", early_stop: bool | None = None, generator: torch.Generator | None = None,
                 init_std: float = 0.0, objective=None):
        if eps < 0 or alpha < 0 or steps < 1 or restarts < 1:
            raise ValueError(f"attack: need eps >= 0, alpha >= 0, steps >= 1, restarts >= 1; got eps={eps}, "
                             f"alpha={alpha}, steps={steps}, restarts={restarts}")
        self.model = model
        self.eps, self.alpha, self.steps = float(eps), float(alpha), int(steps)
        self.threat = get_threat(norm)
        self.random_init = float(random_init)  # init radius as a multiple of eps (0: start at x)
        self.project_to_ball = project
        self.clip_box = clip_box
        self.restarts = int(restarts)
        self.mode = mode
        self.early_stop = (mode == "eval") if early_stop is None else early_stop
        self.generator = generator
        self.init_std = float(init_std)      # > 0: start at sigma N(0, I) (TRADES, MART), whatever the threat model
        self.objective = objective           # per-sample (logits, y, ref) -> [B]; None: cross-entropy
        self.on_step = None                  # optional callable(restart, step): progress of long evaluations

    def bind(self, model: nn.Module | None = None, eps: float | None = None, alpha: float | None = None,
             objective=None) -> "IterativeAttack":
        """A copy of this attack for ``model`` and/or another radius, step or objective (settings otherwise shared)."""
        out = copy.copy(self)
        if model is not None:
            out.model = model
        if eps is not None:
            out.eps = float(eps)
        if alpha is not None:
            out.alpha = float(alpha)
        if objective is not None:
            out.objective = objective
        return out

    def __repr__(self) -> str:
        """The settings, as torchattacks prints them: ``PGD(eps=0.03137, alpha=0.007843, steps=50, ...)``."""
        objective = "cross_entropy" if self.objective is None else getattr(
            self.objective, "__name__", type(self.objective).__name__)
        start = f"init_std={self.init_std:g}" if self.init_std > 0 else f"random_init={self.random_init:g}"
        return (f"{type(self).__name__}(eps={self.eps:.5g}, alpha={self.alpha:.5g}, steps={self.steps}, "
                f"norm={self.threat.name}, {start}, restarts={self.restarts}, mode={self.mode}, "
                f"early_stop={self.early_stop}, objective={objective})")

    # ---- hooks -------------------------------------------------------------------------------------
    def init_delta(self, x: torch.Tensor) -> torch.Tensor:
        if self.init_std > 0:
            return self.init_std * gaussian(x.shape, x, self.generator)
        if self.random_init == 0:
            return torch.zeros_like(x)
        return self.threat.random_init(x, self.random_init * self.eps, self.generator)

    def transform(self, x_adv: torch.Tensor) -> torch.Tensor:
        """Input transformation before the forward pass (identity; DI overrides it)."""
        return x_adv

    def loss(self, logits: torch.Tensor, y: torch.Tensor, ref=None) -> torch.Tensor:
        """Per-sample quantity to ascend: ``objective(logits, y, ref)``, cross-entropy by default; ``ref`` is the
        per-sample reference given to the call."""
        if self.objective is not None:
            return self.objective(logits, y, ref)
        return F.cross_entropy(logits.float(), y, reduction="none")

    def ascent_direction(self, grad: torch.Tensor, state: dict) -> torch.Tensor:
        """Gradient processing before the step (identity; MI/TI override it, ``state`` persists per run)."""
        return grad

    def project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.project_to_ball:
            delta = self.threat.project(delta, self.eps)
        if self.clip_box:
            delta = (x + delta).clamp_(0.0, 1.0) - x
        return delta

    # ---- the loop ----------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        return self.perturb(x, y, ref)

    @torch.no_grad()
    def perturb(self, x: torch.Tensor, y: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial points (per-sample worst case over restarts)."""
        if self.restarts == 1 and not self.early_stop:
            with attack_mode(self.model, self.mode):
                return x.detach() + self._run(x.detach(), y.detach(), ref)[0]
        return self.perturb_with_verdict(x, y, ref)[0]

    @torch.no_grad()
    def perturb_with_verdict(self, x: torch.Tensor, y: torch.Tensor,
                             ref: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial points, fooled): ``fooled[i]`` says whether the model, in the attack's mode,
        misclassifies the returned point i (established by the forward pass that found it)."""
        x, y = x.detach(), y.detach()
        with attack_mode(self.model, self.mode):
            best = torch.zeros_like(x)
            robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
            best_loss = torch.full((len(x),), -float("inf"), device=x.device)
            for restart in range(self.restarts):
                idx = robust.nonzero().squeeze(1) if self.early_stop else torch.arange(len(x), device=x.device)
                if len(idx) == 0:
                    break
                delta, fooled, loss = self._run(x[idx], y[idx], rows_of(ref, idx), final_check=True, restart=restart)
                take = fooled | (robust[idx] & (loss > best_loss[idx]))
                best[idx[take]] = delta[take]
                best_loss[idx] = torch.where(take, loss, best_loss[idx])
                robust[idx[fooled]] = False
            return x + best, ~robust

    def _forward_loss(self, x, delta, y, ref):
        logits = self.model(self.transform(x + delta))
        return logits, self.loss(logits, y, ref)

    def _run(self, x, y, ref=None, final_check: bool = False, restart: int = 0):
        """One restart: init, then per step gradient, step, project. Returns (delta, fooled flags, per-sample loss at
        the returned point; the last two only with ``final_check``). The points still attacked and their
        bookkeeping (early stopping) are a :class:`WorkingSet`."""
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        loss_out = torch.full((len(x),), float("inf"), device=x.device)
        ws = WorkingSet(x, y, ref, self.project(self.init_delta(x), x))
        for t in range(self.steps):
            if self.on_step is not None:
                self.on_step(restart, t)
            logits, grad = self._gradient(ws)
            step = self.threat.step(self.ascent_direction(grad, ws.state), self.alpha)
            if self.early_stop:
                step = ws.freeze(misclassified(logits, ws.y), fooled, step)
                if ws.empty:
                    break
            ws.delta = self.project(ws.delta + step, ws.x)
        delta = ws.full_delta()
        if final_check:
            rest = ws.unfrozen_positions()
            if len(rest):
                logits, loss = self._forward_loss(x[rest], delta[rest], y[rest], rows_of(ref, rest))
                fooled[rest] = misclassified(logits, y[rest])
                loss_out[rest] = loss.float()
        return delta, fooled, loss_out

    def _gradient(self, ws: "WorkingSet"):
        """Logits at the working set's points and the input gradient of the summed per-sample objective."""
        delta = ws.delta.detach().requires_grad_(True)
        with torch.enable_grad():
            logits, loss = self._forward_loss(ws.x, delta, ws.y, ws.ref)
            (grad,) = torch.autograd.grad(loss.sum(), delta)
        ws.delta = delta.detach()
        return logits.detach(), grad


class WorkingSet:
    """The points one restart still attacks: their inputs ``x``, labels ``y``, references ``ref``, perturbations
    ``delta`` and the ascent state (``state``: per-point tensors such as MI's momentum, one row per point, plus
    settings that are not tensors), with ``ids`` mapping them to positions in the full batch (None while the working
    set is the whole batch).

    Early stopping (:meth:`freeze`): a point is frozen at the iterate that first fools it (its step is masked to
    zero); the set is compacted only once a quarter of it is frozen, so a robust model pays no gather/scatter per
    step and a weak one stops paying for its fooled points."""

    def __init__(self, x, y, ref, delta):
        self.n, self.device = len(x), x.device
        self.x, self.y, self.ref, self.delta = x, y, ref, delta
        self.ids, self.frozen, self.state = None, None, {}
        self._full = delta          # the full batch's perturbations, written back at compaction and at the end

    @property
    def empty(self) -> bool:
        return self.ids is not None and len(self.ids) == 0

    def positions(self) -> torch.Tensor:
        return torch.arange(self.n, device=self.device) if self.ids is None else self.ids

    def freeze(self, hit: torch.Tensor, fooled: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Freeze the points ``hit`` fools (marking them in the full batch's ``fooled``); returns the step for the
        points that remain: compacted with them, or with the frozen points' rows zeroed."""
        self.frozen = hit if self.frozen is None else self.frozen | hit
        n_frozen = int(self.frozen.sum())
        if not n_frozen:
            return step
        ids = self.positions()
        fooled[ids[self.frozen]] = True
        if 4 * n_frozen < len(self.y):
            return torch.where(self.frozen.view(-1, *([1] * (step.ndim - 1))), 0.0, step)
        if self.ids is None:
            self._full = self.delta.clone()     # delta may still share storage with the initial perturbation
        else:
            self._full[ids] = self.delta
        keep = ~self.frozen
        self.state = {k: v[keep] if torch.is_tensor(v) else v for k, v in self.state.items()}
        self.ids, self.x, self.y, self.delta, self.frozen = ids[keep], self.x[keep], self.y[keep], self.delta[keep], None
        self.ref = rows_of(self.ref, keep)
        return step[keep]

    def full_delta(self) -> torch.Tensor:
        """The full batch's perturbations: each point's latest iterate (the fooling one for a frozen point)."""
        if self.ids is None:
            return self.delta
        if len(self.ids):
            self._full[self.ids] = self.delta
        return self._full

    def unfrozen_positions(self) -> torch.Tensor:
        """Positions in the full batch of the points not frozen (not known to be fooled)."""
        ids = self.positions()
        return ids if self.frozen is None else ids[~self.frozen]
