"""Child process of the local executor: ``python -m robustlab.sweep.worker STUDY_DIR SPEC.json OUT.json``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from robustlab.core.io import write_json
from robustlab.sweep.trial import run_trial


def main(argv: list[str]) -> int:
    study_dir, spec_path, out_path = argv
    spec = json.loads(Path(spec_path).read_text())
    outcome = run_trial(study_dir, spec["name"], spec["config"], spec.get("threads"), spec.get("command"))
    write_json(Path(out_path), outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
