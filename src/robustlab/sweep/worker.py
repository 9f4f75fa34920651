"""Child process of the local executor: ``python -m robustlab.sweep.worker STUDY_DIR SPEC.json OUT.json``.

The first SIGINT or SIGTERM (Ctrl-C in the terminal reaches the sweep and its workers together, and the sweep
passes it on once more) stops the trial as Ctrl-C stops ``robustlab train``: its run is marked interrupted and
resumes from the last epoch's checkpoint; later signals are ignored while that is recorded. Exit status 130.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from robustlab.core.io import write_json
from robustlab.sweep.trial import run_trial

INTERRUPTED = 130


def _interrupt_once(signum, frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    study_dir, spec_path, out_path = argv
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGTERM, _interrupt_once)
    spec = json.loads(Path(spec_path).read_text())
    try:
        outcome = run_trial(study_dir, spec["name"], spec["config"], spec.get("threads"), spec.get("command"))
    except KeyboardInterrupt:
        return INTERRUPTED
    write_json(Path(out_path), outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
