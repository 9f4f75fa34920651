"""The Ray executor (optional extra ``robustlab[ray]``): each trial is a Ray task asking for the study's
``resources`` (CPUs, GPUs), on its ``train.kernel_path`` through the task's runtime_env. With no address a local Ray
cluster is started and shut down; with an address an existing cluster is joined (robustlab must be installed on its
nodes and the study folder visible to them). Ctrl-C or SIGTERM of the driver cancels the tasks as the local executor
stops its workers: each run is marked interrupted and resumes.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Callable

from robustlab.core.errors import ConfigError
from robustlab.core.kernel_paths import KERNEL_PATHS
from robustlab.sweep.executors import (STOPPED, TAIL_EVERY_S, WORKER_STOP_S, TrialLogTail, describe_outcome,
                                      interrupted_outcome, mark_stopped, trial_kernel_path)
from robustlab.sweep.study import Study, Trial


def _ray_task(task, trial: Trial):
    """The trial's task, in worker processes on its CPU kernel path (Ray keeps one worker pool per set of
    environment variables)."""
    name = trial_kernel_path(trial)
    if name == "inherit":
        return task
    env = {k: v for k, v in KERNEL_PATHS[name].items() if v is not None}
    # Ray can only add variables: a path that unsets one (machine) runs where the cluster was started
    return task.options(runtime_env={"env_vars": env}) if env else task


RAY_CONNECT_TIMEOUT_S = 10.0
FORCED_STOP_S = 10.0      # how long force-cancelled tasks may take to die before their runs are marked


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
                outcome = interrupted_outcome(trial.name, type(exc).__name__)
            outcomes.append(outcome)
            log(describe_outcome(outcome))
        return outcomes
    except KeyboardInterrupt:
        for outcome in stop_ray_tasks(ray, pending, log, study_dir):
            outcomes.append(outcome)
            log(describe_outcome(outcome))
        raise
    finally:
        if started:
            ray.shutdown()


def stop_ray_tasks(ray, pending: dict, log: Callable[[str], None], study_dir: Path,
                   timeout: float = WORKER_STOP_S):
    """Ctrl-C or SIGTERM of a Ray sweep: ``ray.cancel`` raises KeyboardInterrupt inside each running task (its run is
    marked interrupted at its last checkpoint, as ``robustlab train`` does) and drops queued ones; tasks still
    running after ``timeout`` seconds are force-cancelled (their trials still resume from the last checkpoint, and
    the driver marks their runs interrupted: :func:`~robustlab.sweep.executors.mark_stopped`).
    Yields the outcome of every pending task."""
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
    if left:                              # let the killed workers go before their runs are marked
        ray.wait(left, num_returns=len(left), timeout=FORCED_STOP_S)
    mark_stopped(study_dir, [t.name for t in pending.values()])
    for ref in refs:
        trial = pending[ref]
        try:
            outcome = ray.get(ref, timeout=0) if ref in done else None
        except Exception:                 # TaskCancelledError and the like: the run was stopped
            outcome = None
        yield outcome or interrupted_outcome(trial.name, STOPPED)
