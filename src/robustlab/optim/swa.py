r"""Stochastic weight averaging (Izmailov et al., 2018) for any method and any minimiser (``train.swa``), with
BatchNorm recalibration of the averaged model.

From epoch ``start_epoch`` (1-based) on, after every ``every_steps``-th optimiser step (the global step count), the
weights join an equal-weight running average (``torch.optim.swa_utils.AveragedModel``: after n snapshots,
:math:`\bar w \leftarrow \bar w + (w - \bar w)/(n+1)`). Parameters are averaged, BatchNorm statistics are not: before
the averaged model is evaluated (after every epoch once averaging has started), its running statistics are reset and
re-estimated as a cumulative average over one pass of the training split (no augmentation, in order) of

- adversarial examples (``recalibrate: adversarial``; the default for adversarial training): PGD-k at the run's eps,
  step eps/4, uniform start, crafted on the averaged model with batch statistics (its running statistics frozen
  while crafting), as ARAT's ``bn_update_adv`` re-estimates the deployed branch on PGD-10 training examples;
- clean examples (``recalibrate: clean``; the default for standard training), as ``torch.optim.swa_utils.update_bn``.

Not reproduced, named (docs/arat.md): ARAT's recalibration resets both BatchNorm branches but re-estimates only the
adversarial one, so its averaged model's clean branch keeps reset statistics; here every normalisation layer is
re-estimated. The recalibration draws its randomness from its own generator and reads the training tensors
directly, so it changes nothing in the run's trajectory. ``swa.pt`` holds the averaged, recalibrated weights;
``last.pt`` holds the average and its count, so a resume is exact.
"""
from __future__ import annotations

import copy
import typing
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from robustlab.attacks import PGD
from robustlab.attacks.modes import attack_mode, bn_statistics_frozen
from robustlab.attacks.threat import default_step
from robustlab.core.errors import ConfigError
from robustlab.core.schema import spec
from robustlab.data import to_float

SWA_RECAL_SEED = 9182


@dataclass
class SWAConfig:
    start_epoch: int = spec(1, lo=1, doc="average the weights from this epoch on (1-based)")
    every_steps: int = spec(1, lo=1, doc="one snapshot every k optimiser steps (ARAT: 500)")
    recalibrate: str = spec("auto", choices=["auto", "adversarial", "clean", "none"],
                            doc="BatchNorm re-estimation of the averaged model: auto = adversarial for adversarial "
                                "training, clean otherwise")
    attack_steps: int = spec(10, lo=1, doc="PGD steps of the adversarial recalibration (ARAT: 10)")
    points: int = spec(0, lo=0, doc="training points of one recalibration pass (0: the whole training split)")

    def check(self, key: str) -> None:
        if self.recalibrate == "adversarial" and self.attack_steps < 1:
            raise ConfigError(f"{key}attack_steps: must be >= 1")


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class WeightAverager:
    """The averaged model of a run (``train.swa``)."""

    def __init__(self, cfg: SWAConfig, model: nn.Module, eps: float, norm: str, adversarial_method: bool):
        self.cfg = cfg
        self.averaged = AveragedModel(model)
        self.eps, self.norm = eps, norm
        mode = cfg.recalibrate
        self.recal = ("adversarial" if adversarial_method and eps > 0 else "clean") if mode == "auto" else mode

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def snapshots(self) -> int:
        return int(self.averaged.n_averaged)

    def after_step(self, model: nn.Module, epoch: int, step: int) -> None:
        """``epoch`` 0-based, ``step`` the global count of steps taken so far."""
        if epoch + 1 >= self.cfg.start_epoch and step % self.cfg.every_steps == 0:
            self.averaged.update_parameters(model)

    @torch.no_grad()
    def recalibrate(self, x_train: torch.Tensor, y_train: torch.Tensor, batch_size: int, autocast, device) -> None:
        """Reset and re-estimate every BatchNorm layer's running statistics (cumulative average) on one pass over
        the training images (uint8, moved and converted batch by batch)."""
        net = self.module
        if self.recal == "none" or not _has_batchnorm(net):
            return
        layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in layers]
        for m in layers:
            m.reset_running_stats()
            m.momentum = None                      # cumulative moving average over the pass
        n = len(y_train) if self.cfg.points == 0 else min(self.cfg.points, len(y_train))
        gen = torch.Generator(device=device).manual_seed(SWA_RECAL_SEED)
        attack = PGD(net, self.eps, default_step(self.eps), self.cfg.attack_steps, norm=self.norm, mode="train", early_stop=False,
                     generator=gen) if self.recal == "adversarial" else None
        try:
            with attack_mode(net, "train"):
                for i in range(0, n, batch_size):
                    x, y = to_float(x_train[i:i + batch_size].to(device)), y_train[i:i + batch_size].to(device)
                    if attack is not None:
                        with bn_statistics_frozen(net), autocast():
                            x = attack.perturb(x, y)
                    with autocast():
                        net(x)
        finally:
            for m, mom in zip(layers, momenta):
                m.momentum = mom

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)


def build_averager(cfg: typing.Optional[SWAConfig], model: nn.Module, eps: float, norm: str,
                   adversarial_method: bool) -> WeightAverager | None:
    return None if cfg is None else WeightAverager(cfg, model, eps, norm, adversarial_method)


def averaged_copy(averager: WeightAverager) -> nn.Module:
    """A plain module with the averaged weights (what swa.pt and the evaluations use)."""
    return copy.deepcopy(averager.module)
