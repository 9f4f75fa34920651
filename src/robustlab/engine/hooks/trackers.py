"""Experiment-tracking sinks (``train.trackers``; :mod:`robustlab.tracking`) as a run hook, on rank 0 only.

Started with the resolved config, given each epoch's row after it is written to metrics.jsonl, the results at the
end, closed always. A sink that fails is reported and dropped: metrics.jsonl is the record and a dashboard a copy,
so a sink must never stop or lose a run.

A kill can land after an epoch is recorded (last.pt, metrics.jsonl) and before its row reached the sinks; the resumed
run does not retrain that epoch. So the hook keeps ``trackers_published.json`` (``{"epoch": k}``, written atomically
after every publish): on resume the sinks are started "after epoch k" and given the recorded rows k+1.. again.
TensorBoard purges what it holds from step k+1 on (``purge_step``), so its scalars equal an uninterrupted run's; an
MLflow row sent in the instant between the sink's answer and the marker's write is sent twice."""
from __future__ import annotations

from robustlab.core.io import read_json, write_json
from robustlab.engine.hooks.base import RunHook

PUBLISHED_FILE = "trackers_published.json"


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

    def _published(self, run, start_epoch: int) -> int:
        """The last epoch whose row reached the sinks; a run folder from before this record trusts its checkpoint."""
        path = run.run_dir / PUBLISHED_FILE
        if not path.is_file():
            return start_epoch
        try:
            return max(0, min(int(read_json(path)["epoch"]), start_epoch))
        except (ValueError, KeyError, TypeError):       # a damaged record: send every recorded row again
            return 0

    def _mark(self, run, epoch: int) -> None:
        write_json(run.run_dir / PUBLISHED_FILE, {"epoch": epoch})

    def start(self, run, start_epoch: int) -> None:
        from robustlab.core.layout import load_manifest, study_of
        from robustlab.tracking import RunIdentity, build_trackers
        study = study_of(run.run_dir)
        study_name = load_manifest(study).get("name", study.name) if study else None
        self.sinks = build_trackers(run.cfg.train.trackers, RunIdentity(run.run_dir, run.run_dir.resolve().name, study_name))
        published = self._published(run, start_epoch)
        self._call(run, "start", run.cfg.to_dict(), published)
        for row in run.state.history[published:start_epoch]:
            self._call(run, "log_epoch", row)
        self._mark(run, start_epoch)

    def publish(self, run, epoch: int, row: dict) -> None:
        self._call(run, "log_epoch", row)
        self._mark(run, epoch + 1)

    def finish(self, run, results: dict) -> None:
        self._call(run, "finish", results)

    def close(self, run) -> None:
        self._call(run, "close")
