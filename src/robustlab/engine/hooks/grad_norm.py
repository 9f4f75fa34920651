r"""Gradient instability (memorisation in AT; Dong et al., ICLR 2022, "Exploring memorization in adversarial
training", section 4): the squared global gradient norm :math:`\sum_p \|\partial L/\partial p\|^2` of every step,
measured in the step's closure on its first pass (``ctx["grad_norm_sq"]``, before the optimiser moves the weights).

``monitor.grad_norm``: the epoch's mean and max as ``grad_norm_sq_mean`` / ``grad_norm_sq_max``;
``monitor.grad_norm_trace``: every step's value in ``grad_norm_trace.jsonl``, one line per epoch (a rerun of an
epoch after a resume replaces its line). Values stay on the device until the epoch ends (no host sync per step).
"""
from __future__ import annotations

import torch

from robustlab.core.io import read_jsonl, write_jsonl
from robustlab.engine.hooks.base import RunHook


def squared_grad_norm(params) -> torch.Tensor:
    """sum_p ||dL/dp||^2 over the parameters that have a gradient, on the device (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.stack(torch._foreach_norm(grads)).float().pow(2).sum()


class GradNormLog(RunHook):
    def __init__(self, device, trace: bool):
        self.device, self.keep_trace = device, trace
        self._reset()

    @classmethod
    def build(cls, cfg, run):
        return cls(run.device, cfg.monitor.grad_norm_trace) if cfg.monitor.grad_norm else None

    def _reset(self) -> None:
        self.total, self.largest = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        self.steps, self.trace = 0, []

    def after_step(self, run, epoch: int, step: int, ctx: dict) -> None:
        self.steps += 1
        value = ctx["grad_norm_sq"]
        self.total += value
        self.largest = torch.maximum(self.largest, value)
        if self.keep_trace:
            self.trace.append(value)

    def measure(self, run, epoch: int, row: dict) -> None:
        # every rank holds the same all-reduced gradients: no reduction needed
        row["grad_norm_sq_mean"], row["grad_norm_sq_max"] = (self.total / self.steps).item(), self.largest.item()

    def persist(self, run, epoch: int, row: dict) -> None:
        if self.trace:
            path = run.run_dir / "grad_norm_trace.jsonl"
            rows = [r for r in read_jsonl(path) if r["epoch"] < epoch + 1]
            run.write(write_jsonl, path, rows + [{"epoch": epoch + 1, "grad_norm_sq": torch.stack(self.trace).tolist()}])
        self._reset()
