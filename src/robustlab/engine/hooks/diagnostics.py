"""Per-epoch diagnostics (``monitor.diagnostics``; the registry :data:`robustlab.diagnostics.DIAGNOSTICS`): each one
due after an epoch adds its columns to the row; their states (e.g. a linearity trace) live in the checkpoint."""
from __future__ import annotations

from robustlab.diagnostics import DIAGNOSTICS
from robustlab.engine.hooks.base import RunHook


class EpochDiagnostics(RunHook):
    name = "diagnostics"

    def __init__(self, diagnostics: list):
        self.diagnostics = diagnostics

    @classmethod
    def build(cls, cfg, run):
        return cls([DIAGNOSTICS.build(d, run.bctx) for d in cfg.monitor.diagnostics])

    def measure(self, run, epoch: int, row: dict) -> None:
        for diag in self.diagnostics:
            if diag.due(epoch):
                row.update(diag.measure(run.model, epoch))

    def state_dict(self):
        return [d.state_dict() for d in self.diagnostics]

    def load_state_dict(self, state) -> None:
        for diag, st in zip(self.diagnostics, state):
            diag.load_state_dict(st)
