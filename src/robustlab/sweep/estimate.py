"""How long a study's trials take: each unfinished trial's time left, estimated from the study's own finished trials
*like it* (the same overrides apart from ``seed`` and ``train.kernel_path``: the same method and setting, another
seed or kernel path). The estimate is the slowest of them (a started trial should end), times the share of epochs the
trial still has to run (an interrupted trial resumes after its last epoch). Used by ``robustlab sweep --deadline``
and ``robustlab status``; the status of a started trial with no finished trial like it falls back on its own
epochs' pace (:func:`own_pace_seconds_left`).
"""
from __future__ import annotations

from pathlib import Path

from robustlab.core.checkpoint import history_seconds
from robustlab.core.io import read_json, read_jsonl
from robustlab.core.layout import trial_dir
from robustlab.sweep.study import Trial

UNLIKE_KEYS = ("seed", "train.kernel_path")   # trials that differ only in these cost about the same


def trial_seconds(run_dir: Path) -> float | None:
    """A finished run's wall time: its ``train_seconds`` (start to final evaluation, over all its attempts) or the
    sum of its epochs' training and monitor seconds when that is larger (a run resumed by a robustlab that counted
    its last attempt only)."""
    try:
        res = read_json(run_dir / "results.json")
    except (OSError, ValueError):
        return None
    if res.get("status") != "finished":
        return None
    try:
        rows = read_jsonl(run_dir / "metrics.jsonl")
    except (OSError, ValueError):
        rows = []
    return max(float(res.get("train_seconds") or 0), history_seconds(rows)) or None


def epochs_done(run_dir: Path) -> int:
    """Epochs a run has completed: its metrics rows (a running run's results.json still says how far it was when this
    attempt began), or its results' count when larger."""
    try:
        done = int(read_json(run_dir / "results.json").get("epochs_completed") or 0)
    except (OSError, ValueError):
        done = 0
    try:
        return max(done, len(read_jsonl(run_dir / "metrics.jsonl")))
    except (OSError, ValueError):
        return done


def share_left(run_dir: Path, epochs: int) -> float:
    """The share of a trial's epochs still to run (1 for a trial not started)."""
    return max(0.0, (epochs - epochs_done(run_dir)) / epochs) if epochs else 1.0


def own_pace_seconds_left(run_dir: Path, epochs: int) -> float | None:
    """Seconds a started run still needs at the mean pace of its own recorded epochs (training plus monitor; its
    final evaluation not counted); None before its first epoch. For a trial with no finished trial like it yet."""
    try:
        rows = read_jsonl(run_dir / "metrics.jsonl")
    except (OSError, ValueError):
        return None
    if not rows or not epochs:
        return None
    return history_seconds(rows) / len(rows) * max(0, epochs - epochs_done(run_dir))


def _likeness(trial: Trial) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in trial.overrides.items() if k not in UNLIKE_KEYS))


def seconds_left(study_dir: Path, trials: list[Trial], trial: Trial) -> float | None:
    """Seconds ``trial`` still needs, from the slowest finished trial like it among ``trials``; None when none is."""
    key = _likeness(trial)
    times = [s for t in trials if t.name != trial.name and _likeness(t) == key
             for s in [trial_seconds(trial_dir(study_dir, t.name))] if s is not None]
    if not times:
        return None
    epochs = int(trial.config.get("train", {}).get("epochs") or 0)
    return max(times) * share_left(trial_dir(study_dir, trial.name), epochs)
