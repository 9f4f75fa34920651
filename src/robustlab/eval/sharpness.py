"""``robustlab sharpness RUN[@E]``: the Hessian's top eigenvalue and trace of a checkpoint's training loss on a
fixed, seeded subset of its training split (robustlab.diagnostics.sharpness), written as JSON next to the run."""
from __future__ import annotations

import time
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.io import read_json, write_json
from robustlab.core.outputs import check_out_file, stamp
from robustlab.data import build_data
from robustlab.diagnostics.sharpness import fixed_subset, sharpness
from robustlab.eval.loading import load_run_model, resolve_checkpoint


def checkpoint_sharpness(path: str, which: str = "best", points: int = 1000, iters: int = 20, samples: int = 20,
                         tol: float = 1e-3, out: str | Path | None = None, reuse: bool = False,
                         log=lambda s: None) -> dict:
    """``reuse``: return the stored result when this checkpoint's file for this many points exists."""
    for key, value in (("--points", points), ("--iters", iters), ("--samples", samples)):
        if value < 1 or (key == "--samples" and value < 2):
            raise ConfigError(f"{key}: got {value}; must be >= {2 if key == '--samples' else 1}")
    if not tol > 0:
        raise ConfigError(f"--tol: got {tol}; must be > 0 (the relative change of the eigenvalue that stops the "
                          "power iteration)")
    ckpt = resolve_checkpoint(Path(path), which) if Path(path).suffix != ".safetensors" else Path(path)
    base = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    stored = base / "sharpness" / f"{ckpt.stem}-n{points}.json"
    if reuse and out is None and stored.is_file():
        return {**read_json(stored), "written_to": str(stored)}
    target = str(ckpt.absolute())
    if out is not None:             # a given --out is checked before anything is loaded or said
        check_out_file(out, "--out", "sharpness", target, owned="sharpness")
    loaded = load_run_model(path, which, "cpu")
    if loaded.config is None:
        raise ConfigError(f"{path}: sharpness needs a robustlab run (its training split and labels)")
    data = build_data(loaded.config.data, loaded.config.seed)
    if points > len(data.train):
        log(f"warning: --points {points}: the training split has {len(data.train)} points; using all {len(data.train)}")
    x, y = fixed_subset(data.train, min(points, len(data.train)), "cpu")
    dest = Path(out) if out else base / "sharpness" / f"{ckpt.stem}-n{len(y)}.json"
    if out is None:                 # the default file, named by the points used: checked before the Hessian work
        check_out_file(dest, "--out", "sharpness", target, owned="sharpness")
    t0 = time.perf_counter()
    res = {"checkpoint": loaded.source, "epoch": loaded.epoch, "dataset": loaded.config.data.name,
           **sharpness(loaded.model, x, y, iters, samples, tol), "loss": "mean cross-entropy, eval mode, training labels"}
    res["seconds"] = time.perf_counter() - t0
    res["written_by"] = stamp("sharpness", target)
    write_json(dest, res)
    res["written_to"] = str(dest)
    return res
