"""The one build context every component receives: what it may need to know about the run, nothing more."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from robustlab.core.distributed import DistContext


@dataclass
class BuildContext:
    model: nn.Module                    # the plain model (not compiled, not DDP-wrapped)
    num_classes: int
    input_shape: tuple                  # (C, H, W)
    train_size: int                     # training examples (this process sees all of them)
    steps_per_epoch: int
    epochs: int
    device: torch.device
    dist: DistContext = field(default_factory=DistContext)
    generators: dict = field(default_factory=dict)   # the run's seeded generators ("attack", "data", ...)
    eps: float = 0.0                    # the run's threat radius (method.eps)
    norm: str = "linf"                  # the run's threat model (method.norm)
    data: object = None                 # the run's DataBundle (train / val / test splits), when there is one

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @classmethod
    def standalone(cls, model: nn.Module | None = None, generator: torch.Generator | None = None, *, eps: float = 0.0,
                   norm: str = "linf", num_classes: int = 0, input_shape: tuple = (), epochs: int = 1,
                   steps_per_epoch: int = 1, device: str | torch.device = "cpu") -> "BuildContext":
        """A context for using a component outside the trainer (a notebook, a test): one seeded attack generator."""
        gens = {"attack": generator} if generator is not None else {}
        return cls(model=model, num_classes=num_classes, input_shape=input_shape, train_size=0,
                   steps_per_epoch=steps_per_epoch, epochs=epochs, device=torch.device(device), generators=gens,
                   eps=eps, norm=norm)


@dataclass
class StepContext:
    """Handed to ``after_step`` hooks: where training is, in steps and epochs."""
    epoch: int          # 0-based epoch being trained
    step: int           # global optimiser steps done (after this one)
    epoch_progress: float   # epoch + fraction of it done


@dataclass
class EpochContext:
    """Handed to ``on_epoch_start`` / ``on_epoch_end`` hooks."""
    epoch: int          # 0-based epoch
    step: int           # global optimiser steps done so far
    model: nn.Module | None = None
    metrics: dict = field(default_factory=dict)   # on_epoch_end: the epoch's row so far (components may add to it)
