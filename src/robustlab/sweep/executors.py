"""Where trials run: the local executor, and what every executor shares (outcome lines, the running trials' log
tail, a trial's kernel path). The Ray executor is ``robustlab.sweep.ray_executor``.

``local``: a pool of at most N worker processes, one fresh ``python -m robustlab.sweep.worker`` process per trial,
CPU threads split between them, each on its trial's ``train.kernel_path`` (robustlab.core.kernel_paths). A worker
that crashes or is killed only loses its trial's current epoch: the trial is reported ``interrupted`` and the rerun
resumes it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from robustlab.core.kernel_paths import path_environment
from robustlab.sweep.study import Trial
from robustlab.sweep.worker import INTERRUPTED


STOPPED = "stopped by Ctrl-C or SIGTERM"


def interrupted_outcome(name: str, why: str, seconds: float = 0.0) -> dict:
    """The outcome of a trial that did not end (stopped, or its worker died): the next sweep resumes it."""
    return {"name": name, "status": "interrupted", "seconds": seconds, "message": f"{why}; rerun the sweep to resume"}


def describe_outcome(o: dict) -> str:
    if o.get("skipped"):
        return f"  {o['name']}: {o['status']} already"
    if o["status"] == "not started":
        return f"  {o['name']}: {o['message']}"
    if o["status"] == "claimed":
        return f"  {o['name']}: claimed by another live process; left to it"
    return f"  {o['name']}: {o['status']} ({o['seconds']:.0f} s)" + (f": {o['message']}" if o.get("message") else "")


class TrialLogTail:
    """Per-epoch lines of running trials: the lines each trial appends to its ``log.txt`` while it runs, prefixed
    with its name (a 30-epoch CIFAR trial would otherwise be silent for hours)."""

    def __init__(self, study_dir: Path, log: Callable[[str], None]):
        self.study_dir, self.log, self.offsets = study_dir, log, {}

    def _path(self, name: str) -> Path:
        from robustlab.core.layout import trial_dir
        return trial_dir(self.study_dir, name) / "log.txt"

    def begin(self, name: str) -> None:
        """Lines already there (an earlier, interrupted attempt) are not repeated."""
        path = self._path(name)
        self.offsets[name] = path.stat().st_size if path.is_file() else 0

    def poll(self, names) -> None:
        for name in names:
            path = self._path(name)
            try:
                size = path.stat().st_size
            except OSError:
                continue
            start = self.offsets.get(name, 0)
            if size <= start:
                continue
            with open(path, "rb") as fh:
                fh.seek(start)
                chunk = fh.read(size - start)
            complete = chunk.rfind(b"\n") + 1          # whole lines only; the rest waits for the next poll
            self.offsets[name] = start + complete
            for line in chunk[:complete].decode(errors="replace").splitlines():
                if line.strip():
                    self.log(f"  [{name}] {line}")


TAIL_EVERY_S = 1.0   # how often running trials' logs are read


def trial_kernel_path(trial: Trial) -> str:
    return trial.config.get("train", {}).get("kernel_path", "inherit")


def local_threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def run_local(study_dir: Path, trials: list[Trial], workers: int, log: Callable[[str], None],
              command: list[str] | None = None, hold: Callable[[Trial], str | None] | None = None) -> list[dict]:
    """Run trials in at most ``workers`` child processes at a time; ``hold(trial)``, when given, is asked as each
    trial's turn comes and gives a reason not to start it (``--deadline``: robustlab.sweep.deadline), or None.
    Ctrl-C or SIGTERM of this process (which the
    command line turns into KeyboardInterrupt) is passed on to the running workers as SIGINT: each records its
    trial as interrupted at its last checkpoint and exits, and only then is the interrupt raised again, so a sweep
    stopped by its own PID (a job scheduler, ``kill``) leaves no orphan worker training on."""
    threads = local_threads(workers)
    queue = list(trials)
    running: dict[subprocess.Popen, tuple[Trial, float, Path]] = {}
    outcomes = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    tail = TrialLogTail(study_dir, log)
    last_poll = 0.0

    def collect(proc: subprocess.Popen) -> None:
        trial, t0, out = running.pop(proc)
        tail.poll([trial.name])
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode == 0 and out.is_file():
            outcome = json.loads(out.read_text())
            out.unlink()
        else:
            why = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
            last = [ln for ln in err.strip().splitlines() if ln.strip()]
            message = (STOPPED if proc.returncode == INTERRUPTED else
                       f"worker process ended with {why}" + (f": {last[-1]}" if last else ""))
            outcome = interrupted_outcome(trial.name, message, time.perf_counter() - t0)
        outcomes.append(outcome)
        log(describe_outcome(outcome))

    try:
        while queue or running:
            while queue and len(running) < workers:
                trial = queue.pop(0)
                reason = hold(trial) if hold else None
                if reason:
                    outcomes.append({"name": trial.name, "status": "not started", "seconds": 0.0, "message": reason})
                    log(describe_outcome(outcomes[-1]))
                    continue
                # per sweep process: two sweeps may share a study folder (the claims keep trials apart)
                spec = study_dir / ".queue" / f"{trial.name}.{os.getpid()}.json"
                spec.parent.mkdir(parents=True, exist_ok=True)
                spec.write_text(json.dumps({"name": trial.name, "config": trial.config, "threads": threads,
                                            "command": command}))
                out = study_dir / ".queue" / f"{trial.name}.{os.getpid()}.out.json"
                out.unlink(missing_ok=True)
                proc = subprocess.Popen([sys.executable, "-m", "robustlab.sweep.worker", str(study_dir), str(spec), str(out)],
                                        env=path_environment(trial_kernel_path(trial), env), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
                tail.begin(trial.name)
                running[proc] = (trial, time.perf_counter(), out)
            time.sleep(0.05)
            if time.perf_counter() - last_poll >= TAIL_EVERY_S:
                last_poll = time.perf_counter()
                tail.poll([t.name for t, _, _ in running.values()])
            for proc in [p for p in running if p.poll() is not None]:
                collect(proc)
    except KeyboardInterrupt:
        stop_workers(list(running), log)
        mark_stopped(study_dir, [t.name for t, _, _ in running.values()])
        for proc in list(running):
            collect(proc)
        raise
    return outcomes


WORKER_STOP_S = 60.0   # how long an interrupted worker may take to record its trial before it is killed


def mark_stopped(study_dir: Path, names: list[str]) -> None:
    """After a stop, once the trials' workers are gone: a run whose worker was killed before it could record its end
    (the stop's timeout passed on a loaded machine) still says ``running``; it is marked interrupted, as the worker
    would have. Runs that recorded their own end are left as they are."""
    from robustlab.core.layout import trial_dir
    from robustlab.engine.run_folder import mark_interrupted
    for name in names:
        mark_interrupted(trial_dir(study_dir, name))


def stop_workers(procs: list[subprocess.Popen], log: Callable[[str], None], timeout: float = WORKER_STOP_S) -> None:
    """SIGINT to each live worker (it marks its run interrupted and exits), then wait; SIGKILL after ``timeout``
    seconds (the trial still resumes from its last epoch's checkpoint)."""
    live = [p for p in procs if p.poll() is None]
    if live:
        log(f"  stopping {len(live)} running trial(s); rerun the same command to resume")
    for proc in live:
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.perf_counter() + timeout
    for proc in live:
        while True:
            try:
                proc.wait(timeout=max(0.0, deadline - time.perf_counter()))
                break
            except subprocess.TimeoutExpired:
                proc.kill()
            except KeyboardInterrupt:     # a second Ctrl-C while waiting: stop waiting politely
                proc.kill()
