"""``robustlab demo``: the main job on embedded data, a CPU-scale study of catastrophic overfitting.

The demo is an ordinary study (``configs/demo.yaml`` inside the package): FGSM-AT, N-FGSM-AT, FGSM +
GradAlign, FGSM + ELLE, FGSM + ELLE-A and PGD-5-AT, 2 seeds each (``seeds=3``: the recorded evidence), on injected-feature mnist5k (the
weights were searched at this scale: docs/demo-setting.md); ``robustlab sweep`` machinery runs it and the
study report draws it (curves, linearity diagnostics with CO onsets, table). Rerunning resumes: finished runs are skipped, interrupted ones continue.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from robustlab.sweep import expand_study, run_sweep


def demo_study_raw() -> dict:
    return yaml.safe_load(resources.files("robustlab").joinpath("configs/demo.yaml").read_text())


def run_demo(out: str | Path = "runs/demo", seeds: int | None = None, log=print, raw: dict | None = None,
             workers: int | None = None) -> Path:
    raw = raw or demo_study_raw()
    if seeds is not None:
        raw = {**raw, "grid": {**raw.get("grid", {}), "seed": list(range(seeds))}}
    study = expand_study(raw, source="demo")
    summary = run_sweep(study, out, workers=workers, log=log)
    return Path(summary["report"]).parent
