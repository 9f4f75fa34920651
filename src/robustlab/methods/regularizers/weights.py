"""Weight schedules of regularisers, as components: ``constant`` (lambda) and ``onoff`` (ELLE-A's adaptive rule).

A schedule gives the weight in force (``value``) and learns from each step's unweighted term (``update``,
called after the optimiser step with the first pass's value). Values stay on the device: no host sync."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robustlab.core.registry import Registry
from robustlab.core.schema import spec


@dataclass
class WeightScheduleConfig:
    name: str = spec("constant")


@dataclass
class OnOffConfig(WeightScheduleConfig):
    sensitivity: float = spec(2.0, lo=0.0, doc="fire when E > mean + sensitivity * std")
    decay: float = spec(0.99, lo=0.0, hi=1.0, doc="lambda *= decay otherwise")
    window: int = spec(0, lo=0, doc="history length (0: unbounded, the CIFAR code; the ImageNet code: 500)")


WEIGHT_SCHEDULES: Registry[type] = Registry("weight schedule", WeightScheduleConfig)


@WEIGHT_SCHEDULES.register("constant")
class ConstantWeight:
    """lambda, always."""

    def __init__(self, cfg, lam: float):
        self.lam = float(lam)
        self._on: dict = {}                 # device -> lambda as a tensor, made once (no copy per step)

    def value(self, device) -> torch.Tensor:
        key = torch.device(device)
        if key not in self._on:
            self._on[key] = torch.tensor(self.lam, device=key)
        return self._on[key]

    def update(self, error: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class OnOffWeight:
    r"""ELLE-A's adaptive weight (Abad Rocamora et al., ICLR 2024, "Efficient local linearity regularization to
    overcome catastrophic overfitting", as their CIFAR code), kept on the device (no host sync per step).

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



@WEIGHT_SCHEDULES.register("onoff", OnOffConfig)
class OnOffSchedule(OnOffWeight):
    """ELLE-A's on/off weight as a schedule component (``lam`` is lambda_max)."""

    def __init__(self, cfg, lam: float):
        super().__init__(lam, cfg.sensitivity, cfg.decay, cfg.window)

    def value(self, device=None) -> torch.Tensor:
        lam = super().value()
        return lam if device is None else lam.to(device)
