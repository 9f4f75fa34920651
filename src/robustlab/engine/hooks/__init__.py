"""Run hooks: every run-level feature around the trainer's loop (protocol and phases: :mod:`.base`).

:data:`RUN_HOOKS` is the order in which the hooks of a run are built and called in each phase; the per-epoch
measurements keep this order (the monitor first, then split-BN branches, SWA, diagnostics). A new run-level feature
is one module here and one entry in this tuple.
"""
from robustlab.engine.hooks.base import Diverged, RunHook
from robustlab.engine.hooks.branches import BranchMonitor
from robustlab.engine.hooks.co_action import CatastrophicOverfittingAction
from robustlab.engine.hooks.diagnostics import EpochDiagnostics
from robustlab.engine.hooks.final_eval import FinalEvaluation
from robustlab.engine.hooks.grad_norm import GradNormLog, squared_grad_norm
from robustlab.engine.hooks.kept_epochs import KeptEpochs
from robustlab.engine.hooks.monitor import EpochMonitor, measured_epoch, score, score_key
from robustlab.engine.hooks.swa import WeightAveraging
from robustlab.engine.hooks.trackers import Trackers

RUN_HOOKS = (EpochMonitor, BranchMonitor, WeightAveraging, EpochDiagnostics, GradNormLog,
             CatastrophicOverfittingAction, KeptEpochs, Trackers)


def build_hooks(cfg, run) -> list[RunHook]:
    """The hooks this config asks for, in :data:`RUN_HOOKS` order."""
    return [hook for hook in (cls.build(cfg, run) for cls in RUN_HOOKS) if hook is not None]


__all__ = ["RUN_HOOKS", "build_hooks", "Diverged", "RunHook", "FinalEvaluation", "EpochMonitor", "BranchMonitor",
           "WeightAveraging", "EpochDiagnostics", "GradNormLog", "CatastrophicOverfittingAction", "KeptEpochs",
           "Trackers", "score", "score_key", "squared_grad_norm"]
