"""Progress lines with an ETA for long work that has no bar: evaluation stages, sanity checks, study trials.

:class:`Progress` counts units of work (points, steps) and reports ``done/total``, elapsed time and the ETA
(elapsed / done x remaining) through a ``log`` callable, at most once every ``every`` seconds except when asked
to (``force``) and when the work completes."""
from __future__ import annotations

import time
from typing import Callable


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Progress:
    def __init__(self, label: str, total: int, log: Callable[[str], None], every: float = 10.0, unit: str = "points",
                 clock: Callable[[], float] = time.perf_counter):
        self.label, self.total, self.log, self.every, self.unit, self.clock = label, int(total), log, every, unit, clock
        self.done = 0
        self.start = clock()
        self.last = self.start

    def eta(self) -> float | None:
        elapsed = self.clock() - self.start
        return elapsed / self.done * (self.total - self.done) if self.done else None

    def line(self, detail: str = "") -> str:
        eta = self.eta()
        parts = [f"{self.label}: {self.done}/{self.total} {self.unit}", f"{duration(self.clock() - self.start)} elapsed"]
        if eta is not None and self.done < self.total:
            parts.append(f"ETA {duration(eta)}")
        return ", ".join(parts) + (f"; {detail}" if detail else "")

    def advance(self, k: int = 1, detail: str = "", force: bool = False) -> None:
        self.done += k
        now = self.clock()
        if force or self.done >= self.total or now - self.last >= self.every:
            self.last = now
            self.log(self.line(detail))
