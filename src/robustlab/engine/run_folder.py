"""The run folder around a training run: whether a folder may take this run (same config, a finished run, or an
extension of it to more epochs), the files that describe the run (config.yaml, labels.pt, env.json), fine-tuning
weights, and the mark a dead run leaves. The folder's layout is described in :mod:`robustlab.engine.trainer`."""
from __future__ import annotations

import time
from pathlib import Path

from robustlab.config import Config, ConfigError, config_from_dict, epoch_dependent_keys
from robustlab.core import checkpoint as ckpt_io
from robustlab.core.io import read_json, save_torch, write_json, write_text
from robustlab.core.yamlio import read_yaml
from robustlab.engine.env import environment, with_start_history


def finished_results(run_dir: Path, cfg: Config, log) -> dict | None:
    """Refuse a folder holding another config; return the results if the run already finished."""
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file():
        try:
            stored = config_from_dict(read_yaml(cfg_path, "config file"))
        except ConfigError as exc:
            raise ConfigError(f"{run_dir}: holds a run whose config.yaml this robustlab cannot read ({exc}); "
                              "choose another --out") from None
        if stored.to_dict() != cfg.to_dict():
            if not is_extension(run_dir, stored, cfg, log):
                raise ConfigError(f"{run_dir}: holds a run with a different config; choose another --out "
                                  "or delete the folder")
            return None
    res_path = run_dir / "results.json"
    if res_path.is_file():
        res = read_json(res_path)
        if res.get("status") == "finished":
            return res
    return None


def is_extension(run_dir: Path, stored: Config, cfg: Config, log) -> bool:
    """True when ``cfg`` only raises ``train.epochs`` of the stored run and the run can go on: the lr schedule and
    every other component must not depend on the total epoch count (their values for the epochs already trained
    would change) and the run must not have stopped early. Raises with the reason otherwise."""
    old, new = stored.train.epochs, cfg.train.epochs
    if config_from_dict(stored.to_dict(), {"train.epochs": new}).to_dict() != cfg.to_dict():
        return False
    if new < old:
        raise ConfigError(f"train.epochs: got {new}; {run_dir} holds a run of {old} epochs and a run can "
                          "only be extended; choose another --out")
    blockers = epoch_dependent_keys(cfg)
    if blockers:
        raise ConfigError(f"train.epochs: cannot extend {run_dir} from {old} to {new} epochs: {'; '.join(blockers)} "
                          "depends on the total epoch count, so the epochs already trained would have run with other "
                          "values; start a new run (train.init_from: <run>/checkpoints/last.pt fine-tunes from it)")
    res_path = run_dir / "results.json"
    res = read_json(res_path) if res_path.is_file() else {}
    if res.get("status") == "finished" and res.get("epochs_completed", old) < old:
        raise ConfigError(f"train.epochs: cannot extend {run_dir}: it stopped early after epoch "
                          f"{res['epochs_completed']} ({res.get('message') or 'stopped'})")
    log(f"{run_dir}: extending from {old} to {new} epochs")
    return True


def write_run_files(run, start_epoch: int) -> None:
    """config.yaml (an extension's new epochs too), the noisy labels when they are part of the run, and env.json
    with the history of the run's starts. Rank 0 writes (``run.write``)."""
    if run.dist.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
    run.write(write_text, run.run_dir / "config.yaml", run.cfg.to_yaml())
    if run.cfg.data.labels.noise > 0:
        run.write(save_torch, run.run_dir / "labels.pt", {"train_labels": run.data.train.y.cpu(),
                                                          "original_train_labels": run.data.original_train_labels})
    env = environment(run.device, run.cfg.seed, run.command)
    env["world_size"] = run.dist.world
    env_path = run.run_dir / "env.json"
    run.write(write_json, env_path, with_start_history(env, _read_or_none(env_path), start_epoch))


def load_initial_weights(model, path: str, model_name: str, log, run_dir: Path) -> None:
    """Fine-tuning: the model starts from the weights in ``train.init_from`` (a checkpoint or safetensors file)."""
    from robustlab.core.weights import read_weights
    state = read_weights(path, key="train.init_from")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"train.init_from: {path} does not fit model {model_name!r} "
                          f"({str(exc).strip().splitlines()[-1].strip()})") from None
    log(f"{run_dir}: weights initialised from {path}")


def load_resumable(path: Path, device) -> dict:
    """The state in ``checkpoints/last.pt``, or a ConfigError saying why the run cannot resume from it."""
    try:
        state = ckpt_io.load_checkpoint(path, map_location=device)
    except ValueError as exc:
        raise ConfigError(f"{exc}; the run cannot resume from it (delete {path} to restart the run from scratch)") from None
    if state["format"] != ckpt_io.FORMAT:
        raise ConfigError(f"{path}: written by an older robustlab (checkpoint format {state['format']}); it can be "
                          f"evaluated but not resumed; choose another --out")
    return state


def write_report(run_dir: Path, log) -> None:
    """The run's report (report/); a failure is logged, never raised: a report must never lose a trained run."""
    try:
        from robustlab.report import write_run_report
        write_run_report(run_dir)
    except Exception as exc:
        log(f"{run_dir}: report failed ({type(exc).__name__}: {exc})")


def mark_interrupted(run_dir: Path) -> None:
    """A run stopped by Ctrl-C or SIGTERM must not look alive: status ``interrupted`` (rerun to resume)."""
    path = run_dir / "results.json"
    if path.is_file():
        res = read_json(path)
        if res.get("status") == "running":
            res.update(status="interrupted", interrupted_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       message="interrupted; rerun the same command to resume from the last epoch's checkpoint")
            write_json(path, res)


def _read_or_none(path: Path) -> dict | None:
    try:
        return read_json(path) if path.is_file() else None
    except ValueError:      # a torn env.json from an old writer: the history starts again
        return None
