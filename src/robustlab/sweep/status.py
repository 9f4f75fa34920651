"""``robustlab status STUDY_DIR``: where a study stands, read from its folder alone (nothing is written): each
trial's state, the live ones' epoch and latest test accuracies, the time its unfinished trials still need
(:mod:`robustlab.sweep.estimate`; a running trial with no finished trial like it yet: from its own epochs' pace),
how far the study file's evaluations have got and, when the study has claims, their counts so far.

A trial whose results say ``running`` is *running* only while a process holds its claim
(:func:`robustlab.core.locks.is_claimed`); otherwise its process died before it could record the end
(SIGKILL, power loss): *stopped*, and the next sweep resumes it like an interrupted one.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Callable

from robustlab.core.io import read_jsonl
from robustlab.core.layout import load_manifest, trial_dir, trial_status
from robustlab.core.locks import is_claimed, study_locks
from robustlab.sweep.estimate import epochs_done, own_pace_seconds_left, seconds_left
from robustlab.sweep.study import Trial

SHOWN = ("test_clean_acc", "test_pgd_acc")   # the latest epoch's columns shown for a live trial
ORDER = ("finished", "diverged", "running", "stopped", "interrupted", "failed", "pending")


def trial_state(study_dir: Path, name: str) -> str:
    status = trial_status(study_dir, name)
    if status == "running" and not is_claimed(study_locks(study_dir), name):
        return "stopped"
    return status


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _live_line(study_dir: Path, trials: list[Trial], trial: Trial, now: float) -> str:
    run = trial_dir(study_dir, trial.name)
    rows = read_jsonl(run / "metrics.jsonl")
    epochs = trial.config.get("train", {}).get("epochs")
    text = f"  running  {trial.name}: epoch {epochs_done(run)}/{epochs}"
    if rows:
        text += "".join(f", {k} {rows[-1][k]:.3f}" for k in SHOWN if isinstance(rows[-1].get(k), (int, float)))
        text += f" (last epoch ended {_hours(now - (run / 'metrics.jsonl').stat().st_mtime)} ago)"
    left = seconds_left(study_dir, trials, trial)
    if left is not None:
        return text + f"; ~{_hours(left)} left"
    own = own_pace_seconds_left(run, int(epochs or 0))     # no finished trial like it yet
    return text + (f"; ~{_hours(own)} left at its own pace (its final evaluation not counted)" if own is not None else "")


def status_lines(study_dir: str | Path, workers: int | None = None, now: float | None = None,
                 evaluations: Callable[[Path], list[str]] | None = None) -> list[str]:
    """The lines ``robustlab status`` prints. ``workers``: trials at a time for the wall-clock figure (default: the
    study's); ``evaluations(study_dir)``: the lines on the study file's evaluations, placed before the claims (the
    CLI passes robustlab.eval.study.evaluation_status_lines)."""
    study_dir = Path(study_dir)
    now = time.time() if now is None else now
    manifest = load_manifest(study_dir)
    trials = [Trial(t["name"], t["overrides"], t["config"]) for t in manifest["trials"]]
    states = {t.name: trial_state(study_dir, t.name) for t in trials}
    tally = Counter(states.values())
    shown = sorted(tally, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))
    lines = [f"study {manifest.get('name')} ({study_dir}): {len(trials)} trials: "
             + ", ".join(f"{tally[s]} {s}" for s in shown)]
    lines += [_live_line(study_dir, trials, t, now) for t in trials if states[t.name] == "running"]
    lines += [f"  {states[t.name]:8} {t.name}" for t in trials if states[t.name] in ("stopped", "interrupted", "failed")]
    todo = [t for t in trials if states[t.name] not in ("finished", "diverged", "failed")]
    if todo:
        lines.append(_time_left_line(study_dir, trials, todo, workers or int(manifest.get("workers") or 1)))
    if evaluations is not None:
        lines += evaluations(study_dir)
    return lines + _claim_lines(study_dir)


def _time_left_line(study_dir: Path, trials: list[Trial], todo: list[Trial], workers: int) -> str:
    known = [s for t in todo for s in [seconds_left(study_dir, trials, t)] if s is not None]
    if not known:
        return f"time left: unknown (none of the {len(todo)} unfinished trials has a finished trial like it yet)"
    line = f"time left: ~{_hours(sum(known))} of one worker"
    if workers > 1:
        line += f" (~{_hours(sum(known) / workers)} with {workers} at a time)"
    line += f" for {len(known)} of the {len(todo)} unfinished trials (the slowest finished trial like each, scaled " \
            "by its epochs left)"
    if len(known) < len(todo):
        line += f"; {len(todo) - len(known)} have no finished trial like them yet"
    return line


def _claim_lines(study_dir: Path) -> list[str]:
    from robustlab.report.claims import claim_lines
    from robustlab.report.table import study_claims
    return ["claim " + line for line in claim_lines(study_claims(study_dir))]
