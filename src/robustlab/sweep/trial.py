"""Run one trial of a study: claim it, train it (resuming if it was interrupted), record the outcome.

A trial that raises is recorded in its run folder (``results.json`` status ``failed`` with the message,
``error.txt`` with the traceback) and does not stop the study.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path

from robustlab.core.io import write_json, write_text
from robustlab.core.layout import DONE, trial_dir, trial_status
from robustlab.core.locks import claim, study_locks


def run_trial(study_dir: str | Path, name: str, config: dict, threads: int | None = None,
              command: list[str] | None = None) -> dict:
    """Claim and run one trial. Returns {"name", "status", "seconds"}; never raises for a trial's error.
    ``command``: the user's ``robustlab sweep`` command line, recorded in the trial's env.json."""
    from robustlab.config import config_from_dict
    from robustlab.engine import train

    study_dir = Path(study_dir)
    run = trial_dir(study_dir, name)
    t0 = time.perf_counter()
    with claim(study_locks(study_dir), name) as mine:
        if not mine:
            return {"name": name, "status": "claimed", "seconds": 0.0}
        if (status := trial_status(study_dir, name)) in DONE:
            return {"name": name, "status": status, "seconds": 0.0, "skipped": True}
        if threads:
            config = {**config, "train": {**config.get("train", {}), "threads": config.get("train", {}).get("threads") or threads}}
        run.mkdir(parents=True, exist_ok=True)
        log_lines: list[str] = []

        def log(line: str) -> None:
            log_lines.append(line)
            with open(run / "log.txt", "a") as fh:
                fh.write(line + "\n")

        try:
            res = train(config_from_dict(config), run, log=log, command=command)
            status, message = res["status"], res.get("message", "")
        except Exception as exc:
            status, message = "failed", f"{type(exc).__name__}: {exc}"
            write_text(run / "error.txt", traceback.format_exc())
            write_json(run / "results.json", {"status": "failed", "message": message})
        return {"name": name, "status": status, "seconds": time.perf_counter() - t0, "message": message}
