"""Where trials run.

- ``local``: a pool of at most N worker processes, one fresh ``python -m robustlab.sweep.worker`` process
  per trial, CPU threads split between them. A worker that crashes or is killed only loses its trial's
  current epoch: the trial is reported ``interrupted`` and the rerun resumes it.
- ``ray`` (optional extra): each trial is a Ray task asking for the study's ``resources`` (CPUs, GPUs).
  Each trial runs on its ``train.kernel_path`` (robustlab.core.kernel_paths): the local executor sets the
  path's variables on the trial's process, Ray through the task's runtime_env.
  With no address a local Ray cluster is started and shut down; with an address an existing cluster is
  joined (robustlab must be installed on its nodes and the study folder visible to them).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from robustlab.core.errors import ConfigError
from robustlab.core.kernel_paths import KERNEL_PATHS, path_environment
from robustlab.sweep.study import Study, Trial
from robustlab.sweep.worker import INTERRUPTED


def describe_outcome(o: dict) -> str:
    if o.get("skipped"):
        return f"  {o['name']}: {o['status']} already"
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


def _ray_task(task, trial: Trial):
    """The trial's task, in worker processes on its CPU kernel path (Ray keeps one worker pool per set of
    environment variables)."""
    name = trial_kernel_path(trial)
    if name == "inherit":
        return task
    env = {k: v for k, v in KERNEL_PATHS[name].items() if v is not None}
    # Ray can only add variables: a path that unsets one (machine) runs where the cluster was started
    return task.options(runtime_env={"env_vars": env}) if env else task


def local_threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def run_local(study_dir: Path, trials: list[Trial], workers: int, log: Callable[[str], None],
              command: list[str] | None = None) -> list[dict]:
    """Run trials in at most ``workers`` child processes at a time. Ctrl-C or SIGTERM of this process (which the
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
            message = ("stopped by Ctrl-C or SIGTERM" if proc.returncode == INTERRUPTED else
                       f"worker process ended with {why}" + (f": {last[-1]}" if last else ""))
            outcome = {"name": trial.name, "status": "interrupted", "seconds": time.perf_counter() - t0,
                       "message": message + "; rerun the sweep to resume"}
        outcomes.append(outcome)
        log(describe_outcome(outcome))

    try:
        while queue or running:
            while queue and len(running) < workers:
                trial = queue.pop(0)
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
        for proc in list(running):
            collect(proc)
        raise
    return outcomes


WORKER_STOP_S = 60.0   # how long an interrupted worker may take to record its trial before it is killed


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


RAY_CONNECT_TIMEOUT_S = 10.0


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fail fast and clearly before ``ray.init`` (which retries an unreachable address for minutes): a ``ray://``
    address needs Ray's client (``ray[client]``, in the ``ray`` extra); ``host:port`` must accept a connection
    within ``timeout`` seconds. ``auto`` and ``local`` are left to Ray."""
    import importlib.util

    from robustlab.core.net import unreachable
    if address in ("auto", "local"):
        return
    target = address
    if address.startswith("ray://"):
        if importlib.util.find_spec("grpc") is None:
            raise ConfigError(f"--address: {address!r} needs Ray's client (grpcio): pip install 'robustlab[ray]' "
                              "(or 'ray[client]')")
        target = address[len("ray://"):]
    host, sep, port = target.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"--address: got {address!r}; expected HOST:PORT, ray://HOST:PORT or auto")
    why = unreachable(host, int(port), timeout)
    if why is not None:
        raise ConfigError(f"--address: no Ray cluster answers at {target} ({why}); start one with `ray start --head` "
                          "or drop --address for a local one")


def run_ray(study_dir: Path, study: Study, trials: list[Trial], address: str | None, workers: int,
            log: Callable[[str], None], command: list[str] | None = None) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray: Ray is not installed: pip install 'robustlab[ray]'") from None
    from robustlab.sweep.trial import run_trial

    started = not ray.is_initialized()
    on_sigterm = signal.getsignal(signal.SIGTERM)
    if started:
        if address:
            check_ray_address(address)
            try:
                ray.init(address=address, log_to_driver=False)
            except ConnectionError as exc:
                raise ConfigError(f"--address: got {address!r}; could not connect to a Ray cluster there ({exc}); "
                                  "use the address `ray start --head` printed, or 'auto'") from None
        else:
            ray.init(num_cpus=workers * int(max(1, study.resources["cpus"])), include_dashboard=False,
                     log_to_driver=False)
    if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
        # ray.init installs a native SIGTERM handler that aborts the driver (SIGABRT), leaving the runs looking
        # alive: keep the command line's (SIGTERM stops like Ctrl-C), so the tasks are cancelled politely below
        signal.signal(signal.SIGTERM, on_sigterm)
    pending: dict = {}
    outcomes: list[dict] = []
    try:
        task = ray.remote(num_cpus=study.resources["cpus"], num_gpus=study.resources["gpus"], max_retries=0)(run_trial)
        threads = max(1, int(study.resources["cpus"]))
        for t in trials:
            pending[_ray_task(task, t).remote(str(study_dir.resolve()), t.name, t.config, threads, command)] = t
        tail = TrialLogTail(study_dir, log)   # where the study folder is shared with the driver
        for t in trials:
            tail.begin(t.name)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=TAIL_EVERY_S)
            tail.poll([t.name for t in pending.values()])
            if not done:
                continue
            trial = pending.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except Exception as exc:  # a worker died: the trial resumes on the next sweep
                outcome = {"name": trial.name, "status": "interrupted", "seconds": 0.0,
                           "message": f"{type(exc).__name__}; rerun the sweep to resume"}
            outcomes.append(outcome)
            log(describe_outcome(outcome))
        return outcomes
    except KeyboardInterrupt:
        for trial, outcome in stop_ray_tasks(ray, pending, log):
            outcomes.append(outcome)
            log(describe_outcome(outcome))
        raise
    finally:
        if started:
            ray.shutdown()


def stop_ray_tasks(ray, pending: dict, log: Callable[[str], None], timeout: float = WORKER_STOP_S):
    """Ctrl-C or SIGTERM of a Ray sweep: ``ray.cancel`` raises KeyboardInterrupt inside each running task (its run is
    marked interrupted at its last checkpoint, as ``robustlab train`` does) and drops queued ones; tasks still
    running after ``timeout`` seconds are force-cancelled (their trials still resume from the last checkpoint).
    Yields (trial, outcome) for every pending task."""
    if not pending:
        return
    log(f"  stopping {len(pending)} trial(s) (running or queued on Ray); rerun the same command to resume")
    refs = list(pending)
    for ref in refs:
        ray.cancel(ref, force=False)
    try:
        done, left = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    except KeyboardInterrupt:             # a second Ctrl-C while waiting: stop waiting politely
        done, left = [], refs
    for ref in left:
        ray.cancel(ref, force=True)
    for ref in refs:
        trial = pending[ref]
        try:
            outcome = ray.get(ref, timeout=0) if ref in done else None
        except Exception:                 # TaskCancelledError and the like: the run was stopped
            outcome = None
        yield trial, outcome or {"name": trial.name, "status": "interrupted", "seconds": 0.0,
                                 "message": "stopped by Ctrl-C or SIGTERM; rerun the sweep to resume"}
