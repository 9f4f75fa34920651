"""Optimizers (minimisers behind ``step(closure)``), learning-rate schedules and fp16 loss scaling."""
from robustlab.optim.minimizer import (OPTIMIZERS, AdamW, Minimizer, OptimizerConfig, SGD, build_optimizer,
                                       set_hyperparameters)
from robustlab.optim.precision import LossScaler
from robustlab.optim.schedules import LR_SCHEDULES, Schedule, ScheduleConfig

__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "AdamW", "LossScaler", "Minimizer", "OptimizerConfig", "SGD", "Schedule",
           "ScheduleConfig", "build_optimizer", "set_hyperparameters"]
