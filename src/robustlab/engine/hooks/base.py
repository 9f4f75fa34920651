"""The run-hook protocol: a run-level feature around the trainer's loop, in fixed phases.

The trainer owns the loop, the step (``optimizer.step(closure)``) and the checkpoint. Everything else a run does is
a hook, built from its own part of the config (``build`` returns None when the config does not ask for it). Per
epoch the phases run in this order, each over the hooks in :data:`robustlab.engine.hooks.RUN_HOOKS` order:

1. ``after_step``  after every optimiser step (SWA snapshots, gradient norms);
2. ``measure``     the epoch's row gets its measured columns (monitor, split-BN branches, SWA, diagnostics);
3. ``decide``      the row is complete and appended to the history; the trainer has picked the best checkpoint by
                   the monitor's score (:func:`robustlab.engine.hooks.monitor.score_key`); hooks add decisions
                   (the CO rule's ``co_fired``);
4. ``persist``     files of the hook's own (kept epochs, swa.pt, the gradient-norm trace), written before the
                   epoch is recorded (``best.pt``, ``last.pt``, metrics.jsonl), so that a crash between the two
                   reruns the epoch and rewrites them;
5. ``publish``     after the epoch is recorded: copies of the row elsewhere (trackers), once per epoch;
6. ``stop``        a hook may end training early (the CO action) by returning the message for results.json.

Around the loop: ``start`` once before the first epoch; when training ended normally the final evaluation
(:mod:`robustlab.engine.hooks.final_eval`) evaluates the last and best checkpoints and every model a hook offers in
``final_models`` (SWA's averaged model); ``finish`` with the results; ``close`` always. A hook with state returns it from
``state_dict`` (kept in ``last.pt`` under ``components[hook.name]``) and is given it back on resume.

What a hook may use of the run it is handed (the trainer): ``cfg``, ``model``, ``data``, ``eval_sets``
(``{"val"|"test"|"trainset": (x, y)}`` on the device), ``device``, ``dist``, ``autocast``, ``run_dir``,
``ckpt_dir``, ``log``, ``write(fn, *args)`` (rank 0 writes), ``evaluate(x, y, protocols, model=None)``,
``on_device(split, n)``, ``save_last()`` and ``state`` (history, best, epoch, step).
"""
from __future__ import annotations


class Diverged(RuntimeError):
    """Training produced non-finite numbers: the run stops as ``diverged`` and keeps its last good checkpoint."""


class RunHook:
    """Every phase does nothing by default; a hook overrides the phases it takes part in."""
    name: str = ""          # key of the hook's state in the checkpoint's components

    @classmethod
    def build(cls, cfg, run) -> "RunHook | None":
        """The hook this config asks for (built after the run's model, data and method), or None."""
        return cls()

    def start(self, run, start_epoch: int) -> None: ...
    def after_step(self, run, epoch: int, step: int, ctx: dict) -> None: ...
    def measure(self, run, epoch: int, row: dict) -> None: ...
    def decide(self, run, epoch: int, row: dict, history: list[dict], score_key: str | None) -> None: ...
    def persist(self, run, epoch: int, row: dict) -> None: ...
    def publish(self, run, epoch: int, row: dict) -> None: ...
    def stop(self, run, epoch: int, row: dict) -> str | None: ...

    def final_models(self, run) -> dict:
        """``{name: (model, extra figures)}`` the final evaluation also evaluates (``final_eval[name]``)."""
        return {}

    def finish(self, run, results: dict) -> None: ...
    def close(self, run) -> None: ...

    def state_dict(self):
        return None

    def load_state_dict(self, state) -> None: ...
