"""Optimisers and learning-rate schedules.

Every optimiser step goes through ``optimizer.step(closure)``: plain SGD/AdamW call the closure once;
SAM-type minimisers (the flat-surrogate issue) call it twice behind the same interface.
"""
from __future__ import annotations

import torch

from robustlab.optim.schedules import lr_at, momentum_at


def build_optimizer(cfg, params) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov, weight decay) or AdamW from an OptimConfig. The lr is set every step."""
    params = list(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name: got {cfg.name!r}; allowed: sgd, adamw")


def set_hyperparameters(optimizer, cfg, t: int, total: int, per_epoch: int) -> float:
    """Write the scheduled lr (and cyclic momentum) of iteration ``t`` into every param group."""
    lr = lr_at(cfg, t, total, per_epoch)
    mom = momentum_at(cfg, t, total, per_epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if mom is not None and "momentum" in group:
            group["momentum"] = mom
    return lr


__all__ = ["build_optimizer", "lr_at", "momentum_at", "set_hyperparameters"]
