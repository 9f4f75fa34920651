"""Optimizers: base optimisers (base.py) inside minimisers behind ``step(closure)`` (minimizer.py), learning-rate
schedules (schedules.py) and fp16 loss scaling per closure pass (precision.py)."""
from robustlab.optim import awp, sam  # noqa: F401  (register the awp and SAM-family minimisers)
from robustlab.optim.base import OPTIMIZERS, OptimizerConfig, build_optimizer, set_hyperparameters
from robustlab.optim.minimizer import MINIMIZERS, Minimizer, MinimizerConfig, Plain
from robustlab.optim.precision import LossScaler
from robustlab.optim.schedules import LR_SCHEDULES, Schedule, ScheduleConfig

__all__ = ["LR_SCHEDULES", "MINIMIZERS", "OPTIMIZERS", "LossScaler", "Minimizer", "MinimizerConfig", "OptimizerConfig",
           "Plain", "Schedule", "ScheduleConfig", "build_optimizer", "set_hyperparameters"]
