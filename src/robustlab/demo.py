"""``robustlab demo``: the main job on embedded data, a CPU-scale study of catastrophic overfitting.

Trains every method of ``configs/demo.yaml`` for every seed (a local pool of worker processes), then
writes one report with per-epoch clean, PGD and FGSM accuracy of every method and a final table.
Rerunning resumes: finished runs are skipped, interrupted ones continue from their checkpoints.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from importlib import resources
from pathlib import Path

import yaml

from robustlab.config import ConfigError, config_from_dict
from robustlab.diagnostics import co_onset

DEMO_KEYS = {"title", "seeds", "workers", "base", "methods"}


def load_demo_spec(text: str | None = None) -> dict:
    raw = yaml.safe_load(text if text is not None else resources.files("robustlab").joinpath("configs/demo.yaml").read_text())
    unknown = set(raw) - DEMO_KEYS
    if unknown:
        raise ConfigError(f"demo: unknown key(s) {sorted(unknown)}; allowed: {sorted(DEMO_KEYS)}")
    return raw


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def demo_runs(spec: dict, seeds=None) -> list[tuple[str, str, dict]]:
    """(method label, run name, validated config dict) for every method x seed."""
    seed_list = list(range(seeds)) if seeds is not None else list(spec["seeds"])
    runs = []
    for label, over in spec["methods"].items():
        for seed in seed_list:
            cfg = config_from_dict(_merge(_merge(spec["base"], over), {"seed": seed}))
            runs.append((label, f"{label}-seed{seed}", cfg.to_dict()))
    return runs


def _train_one(cfg_dict: dict, run_dir: str) -> str:
    from robustlab.engine import train
    res = train(config_from_dict(cfg_dict), run_dir, log=lambda s: None)
    return res["status"]


def co_flag(run) -> bool:
    return co_onset([m.get("test_pgd_acc") for m in run.metrics]) is not None


def run_demo(out: str | Path = "runs/demo", seeds: int | None = None, log=print, spec: dict | None = None) -> Path:
    from robustlab.report import write_comparison_report

    spec = spec or load_demo_spec()
    out = Path(out)
    runs = demo_runs(spec, seeds)
    workers = max(1, min(int(spec.get("workers", 1)), os.cpu_count() or 1, len(runs)))
    log(f"robustlab demo: {len(runs)} runs ({len(spec['methods'])} methods x {len(runs) // len(spec['methods'])} seeds), "
        f"{workers} worker(s), into {out}")
    t0 = time.perf_counter()
    groups: dict[str, list[Path]] = {}
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {}
        for label, name, cfg in runs:
            groups.setdefault(label, []).append(out / "runs" / name)
        # the most expensive runs (more attack steps) first, so that two workers finish together
        for label, name, cfg in sorted(runs, key=lambda r: -r[2]["method"]["steps"] * (r[2]["method"]["name"] == "pgd")):
            futures[pool.submit(_train_one, cfg, str(out / "runs" / name))] = name
        for fut in cf.as_completed(futures):
            log(f"  {futures[fut]}: {fut.result()} ({time.perf_counter() - t0:.0f} s)")
    notes = (f"{spec['title']}. Curves: mean over seeds, shaded min-max. 'CO runs': runs whose test PGD accuracy "
             "fell below a quarter of its earlier peak and stayed there (robustlab.diagnostics.co_onset). "
             f"Wall time {time.perf_counter() - t0:.0f} s.")
    report = write_comparison_report(out, groups, "robustlab demo: catastrophic overfitting", notes, collapsed=co_flag)
    log(f"report: {report / 'report.html'}")
    return report
