r"""Loss scaling for fp16 that works through ``step(closure)``, however many passes the closure makes.

torch's ``GradScaler.step`` refuses closures ("Closure use is not currently supported if GradScaler is
enabled"), and its ``unscale_`` may run once per step, so a minimiser that calls the closure twice (SAM,
GSAM, LookSAM, AWP) cannot use it. :class:`LossScaler` applies GradScaler's rule with torch's own amp kernels,
per closure pass:

- each pass back-propagates ``scale * loss`` and unscales its gradients at once
  (``_amp_foreach_non_finite_check_and_unscale_``), so the minimiser always sees true gradients;
- any non-finite gradient in any pass marks the step: the minimiser's final base-optimiser update is skipped
  (:meth:`finite` is its guard);
- after the step, the scale is updated as GradScaler does (``_amp_update_scale_``: x0.5 on overflow, x2 after
  2000 clean steps).

With ``enabled=False`` (fp32, bf16) every method is the identity and no check is made.
"""
from __future__ import annotations

import torch


class LossScaler:
    def __init__(self, enabled: bool, device: torch.device, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000):
        self.enabled = enabled
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self.scale_ = torch.full((1,), float(init_scale), dtype=torch.float32, device=device)
        self.growth_tracker = torch.zeros(1, dtype=torch.int32, device=device)
        self.found_inf = torch.zeros(1, dtype=torch.float32, device=device)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_.to(loss.dtype) if self.enabled else loss

    def unscale_(self, params) -> None:
        """Divide this pass's gradients by the scale; remember whether any is non-finite."""
        if not self.enabled:
            return
        inv = self.scale_.double().reciprocal().float()
        by_device: dict = {}
        for p in params:
            if p.grad is not None:
                by_device.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        for grads in by_device.values():
            found = torch.zeros_like(self.found_inf, device=grads[0].device)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found, inv.to(grads[0].device))
            self.found_inf += found.to(self.found_inf.device)

    def finite(self) -> bool:
        """Guard of the base-optimiser update: False when a pass of this step overflowed (one host sync)."""
        return not self.enabled or float(self.found_inf.item()) == 0.0

    def update(self) -> None:
        if not self.enabled:
            return
        torch._amp_update_scale_(self.scale_, self.growth_tracker, self.found_inf, self.growth_factor,
                                 self.backoff_factor, self.growth_interval)
        self.found_inf.zero_()

    def state_dict(self) -> dict:
        return {"scale": self.scale_.cpu().clone(), "growth_tracker": self.growth_tracker.cpu().clone()} if self.enabled else {}

    def load_state_dict(self, state: dict) -> None:
        if self.enabled and state:
            self.scale_.copy_(state["scale"])
            self.growth_tracker.copy_(state["growth_tracker"])
