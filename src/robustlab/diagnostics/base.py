"""What a diagnostic is: a measurement of the model taken after an epoch, logged in ``metrics.jsonl``.

Diagnostics are components (``monitor.diagnostics: [{name: linearity, points: 256, every: 1}]``), built from
the run's :class:`~robustlab.core.context.BuildContext`; ``measure(model, epoch)`` returns named floats
(prefixed ``diag_``). A diagnostic may keep state (``state_dict``), checkpointed with the run.
Add one by subclassing :class:`Diagnostic` and registering it in :data:`DIAGNOSTICS`.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from robustlab.core.context import BuildContext
from robustlab.core.registry import Registry
from robustlab.core.schema import spec


def due_epoch(epoch: int, every: int, epochs: int) -> bool:
    """Whether a measurement taken every ``every`` epochs and at the last is due after 0-based ``epoch`` of a run of
    ``epochs`` (diagnostics' ``every``, and the monitor's ``monitor.every``)."""
    return (epoch + 1) % every == 0 or epoch + 1 == epochs


@dataclass
class DiagnosticConfig:
    name: str = spec("linearity")
    every: int = spec(1, lo=1, doc="measure every k epochs (and at the last epoch)")

    def uses_total_epochs(self) -> bool:
        """With ``every`` > 1 the last epoch is measured because it is the last: a longer run would skip it."""
        return self.every > 1


DIAGNOSTICS: Registry[type["Diagnostic"]] = Registry("diagnostic", DiagnosticConfig)


class Diagnostic:
    Config = DiagnosticConfig

    def __init__(self, cfg, bctx: BuildContext):
        self.cfg = cfg
        self.bctx = bctx

    def due(self, epoch: int) -> bool:
        """Whether to measure after 0-based ``epoch``."""
        return due_epoch(epoch, self.cfg.every, self.bctx.epochs)

    def measure(self, model: nn.Module, epoch: int) -> dict[str, float]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
