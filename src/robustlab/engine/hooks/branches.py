"""Split-BN branch monitoring (ARAT; :mod:`robustlab.models.split_bn`): a model with one BatchNorm branch per input
kind deploys one branch; the others are measured beside it on the monitor's test points each epoch
(``test_{branch}_branch_clean_acc``, ``test_{branch}_branch_{attack}_acc``)."""
from __future__ import annotations

from robustlab.engine.hooks.base import RunHook
from robustlab.engine.hooks.monitor import accuracy_columns, measured_epoch, monitor_protocols
from robustlab.models.split_bn import bn_branch, split_layers


def auxiliary_branches(model) -> list[str]:
    """The branches of a split-BN model that are not deployed; [] for any other model."""
    layers = split_layers(model)
    return [b for b in layers[0].branches if b != layers[0].deployed] if layers else []


class BranchMonitor(RunHook):
    @classmethod
    def build(cls, cfg, run):
        return cls() if auxiliary_branches(run.model) else None

    def measure(self, run, epoch: int, row: dict) -> None:
        if "test" not in run.eval_sets or not len(run.data.test) or not measured_epoch(run.cfg, epoch):
            return
        x, y = run.eval_sets["test"]
        protocols = monitor_protocols(run.cfg)
        for branch in auxiliary_branches(run.model):
            with bn_branch(run.model, branch):
                res = run.evaluate(x, y, protocols)
            row.update(accuracy_columns(res, protocols, f"test_{branch}_branch"))
