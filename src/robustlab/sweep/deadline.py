"""``robustlab sweep --deadline``: start no trial that cannot end before a time (a job's wall-clock limit, the end of
a working session). Running trials are never stopped by it; trials it holds back stay pending, and a later sweep
runs them.

A trial's time is estimated from the study's own finished trials like it (:mod:`robustlab.sweep.estimate`); a trial
with nothing like it finished has no estimate and starts.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.sweep.estimate import seconds_left
from robustlab.sweep.study import Trial

FORMS = "a duration (90m, 2h, 1h30m, 45s), a clock time HH:MM (its next occurrence) or an ISO date-time " \
        "(2026-12-07T17:30)"
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_deadline(text: str, now: float | None = None) -> float:
    """The deadline as a POSIX time. A naive date-time or clock time is in the machine's local time zone."""
    now = time.time() if now is None else now
    value = text.strip()
    match = _DURATION.match(value)
    if value and match and any(match.groups()):
        h, m, s = (int(g or 0) for g in match.groups())
        return now + 3600 * h + 60 * m + s
    if re.fullmatch(r"\d{1,2}:\d{2}", value):
        hour, minute = (int(p) for p in value.split(":"))
        if hour > 23 or minute > 59:
            raise ConfigError(f"--deadline: got {text!r}; HH:MM needs hours 0-23 and minutes 0-59")
        local_now = dt.datetime.fromtimestamp(now)
        at = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if at.timestamp() <= now:
            at += dt.timedelta(days=1)
        return at.timestamp()
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--deadline: got {text!r}; expected {FORMS}") from None
    stamp = at.timestamp()       # naive: local time
    if stamp <= now:
        raise ConfigError(f"--deadline: got {text!r}, which has passed")
    return stamp


class StartDeadline:
    """Decides, when a worker is free, whether a trial may still start: ``hold(trial)`` gives the reason it may not,
    or None. Estimates are re-read at every call, so trials finished during the sweep inform later ones."""

    def __init__(self, study_dir: Path, trials: list[Trial], deadline: float, clock=time.time):
        self.study_dir, self.trials, self.deadline, self.clock = Path(study_dir), trials, deadline, clock

    def hold(self, trial: Trial) -> str | None:
        need = seconds_left(self.study_dir, self.trials, trial)
        left = self.deadline - self.clock()
        if need is None or need <= left:
            return None
        return (f"not started: needs ~{need / 60:.0f} min (the slowest finished trial like it), "
                f"{max(0.0, left) / 60:.0f} min left before the deadline")


def describe_deadline(deadline: float) -> str:
    return dt.datetime.fromtimestamp(deadline).isoformat(sep=" ", timespec="minutes")
