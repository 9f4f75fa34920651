"""The live catastrophic-overfitting rule and what a run does when it fires (``monitor.co_action``).

After each epoch the rule (:func:`robustlab.diagnostics.co_fires`) looks at the monitor's score column (a PGD
accuracy) and its clean twin: ``co_fired`` is true when the newest PGD accuracy fell below 0.25 x the best earlier
one (itself >= 0.2) while clean accuracy kept >= 0.9 of its level at that best epoch (README, "CO rule"). The flag is
always recorded; ``co_action: stop`` ends training after that epoch, ``rollback`` also makes the best checkpoint the
final model (``last.pt`` then holds the best weights, and the final evaluation's "last" is that model).
"""
from __future__ import annotations

from robustlab.core import checkpoint as ckpt_io
from robustlab.diagnostics import co_fires
from robustlab.engine.hooks.base import RunHook


class CatastrophicOverfittingAction(RunHook):
    def __init__(self, action: str):
        self.action = action

    @classmethod
    def build(cls, cfg, run):
        return cls(cfg.monitor.co_action)

    def decide(self, run, epoch: int, row: dict, history: list[dict], score_key: str | None) -> None:
        row["co_fired"] = bool(score_key and score_key.endswith("pgd_acc") and co_fires(
            [r.get(score_key) for r in history], [r.get(score_key.replace("pgd", "clean")) for r in history]))

    def stop(self, run, epoch: int, row: dict) -> str | None:
        if not (row["co_fired"] and self.action != "none"):
            return None
        message = f"CO detected at epoch {epoch + 1}; stopped"
        best = run.ckpt_dir / "best.pt"
        if self.action == "rollback" and best.is_file():
            run.model.load_state_dict(ckpt_io.load_checkpoint(best, run.device)["model"])
            run.save_last()
            message += f" and rolled back to the best checkpoint (epoch {run.state.best['epoch']})"
            run.dist.barrier()
        run.log(f"{run.run_dir}: {message}")
        return message
