"""Experiment-tracking sinks (``train.trackers``; :mod:`robustlab.tracking`) as a run hook, on rank 0 only.

Started with the resolved config, given each epoch's row after it is written to metrics.jsonl, the results at the
end, closed always. A sink that fails is reported and dropped: metrics.jsonl is the record and a dashboard a copy,
so a sink must never stop or lose a run."""
from __future__ import annotations

from robustlab.engine.hooks.base import RunHook


class Trackers(RunHook):
    def __init__(self):
        self.sinks = []

    @classmethod
    def build(cls, cfg, run):
        return cls() if cfg.train.trackers and run.dist.is_main else None

    def _call(self, run, call: str, *args) -> None:
        for sink in list(self.sinks):
            try:
                getattr(sink, call)(*args)
            except Exception as exc:
                first = str(exc).splitlines()[0] if str(exc) else ""
                run.log(f"{run.run_dir}: tracker {sink.cfg.name!r} failed in {call} ({type(exc).__name__}: {first}); "
                        "it is dropped for this run")
                self.sinks.remove(sink)

    def start(self, run, start_epoch: int) -> None:
        from robustlab.core.layout import load_manifest, study_of
        from robustlab.tracking import RunIdentity, build_trackers
        study = study_of(run.run_dir)
        study_name = load_manifest(study).get("name", study.name) if study else None
        self.sinks = build_trackers(run.cfg.train.trackers, RunIdentity(run.run_dir, run.run_dir.resolve().name, study_name))
        self._call(run, "start", run.cfg.to_dict(), start_epoch)

    def publish(self, run, epoch: int, row: dict) -> None:
        self._call(run, "log_epoch", row)

    def finish(self, run, results: dict) -> None:
        self._call(run, "finish", results)

    def close(self, run) -> None:
        self._call(run, "close")
