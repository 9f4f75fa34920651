"""Where things live in a study folder (every layer that reads studies uses these, nothing else)::

    STUDY/study.json          the expansion: trials, their overrides and full configs (the manifest)
    STUDY/trials/<name>/      one ordinary run folder per trial
    STUDY/table.csv, report/  the results table and the study report
"""
from __future__ import annotations

from pathlib import Path

from robustlab.core.io import read_json

DONE = ("finished", "diverged")   # statuses a rerun of the study leaves alone


def trial_dir(study_dir: Path, name: str) -> Path:
    return Path(study_dir) / "trials" / name


def is_study_dir(path: str | Path) -> bool:
    return (Path(path) / "study.json").is_file()


def study_of(run_dir: str | Path) -> Path | None:
    """The study folder a run folder is a trial of, or None for a lone run."""
    parent = Path(run_dir).resolve().parent
    return parent.parent if parent.name == "trials" and is_study_dir(parent.parent) else None


def load_manifest(study_dir: Path) -> dict:
    path = Path(study_dir) / "study.json"
    if not path.is_file():
        raise FileNotFoundError(f"{study_dir}: no study.json; is this a study folder?")
    return read_json(path)


def trial_status(study_dir: Path, name: str) -> str:
    res = trial_dir(study_dir, name) / "results.json"
    if not res.is_file():
        return "pending"
    try:
        return read_json(res).get("status", "unknown")
    except ValueError:
        return "unknown"
