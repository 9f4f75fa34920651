"""Loading models to evaluate: robustlab runs and checkpoints, or any model defined outside robustlab.

- :func:`load_run_model`: a run folder (``checkpoints/<which>.pt``) or a checkpoint file; the model is rebuilt
  from the config stored in the checkpoint and its weights are read with ``weights_only=True``.
- :func:`load_external_model`: ``"package.module:builder"`` (a callable returning an ``nn.Module`` that takes
  [0,1] inputs, normalisation inside, as RobustBench models do) plus a weights file: safetensors (extra
  ``safetensors``) or a torch state dict read with ``weights_only=True``. Importing the module runs its code,
  as importing any Python package does; the weights file never runs code.
"""
from __future__ import annotations

import dataclasses
import importlib
import pickle
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robustlab.config import Config, config_from_dict, migrate_format1
from robustlab.core.checkpoint import epoch_file, load_checkpoint
from robustlab.core.io import read_json
from robustlab.core.errors import ConfigError
from robustlab.core.weights import read_weights
from robustlab.data import build_data
from robustlab.models import build_model


EXPORT_FORMAT = "robustlab-export/1"   # robustlab export --format safetensors


@dataclass
class LoadedModel:
    model: nn.Module
    source: str                 # the checkpoint or weights file
    epoch: int | None = None
    config: Config | None = None    # a robustlab run's config (None for an external model)
    name: str = ""              # the model's name in reports
    weights: str | None = None  # an external model's weights file, or "none" (--weights none)


def resolve_checkpoint(path: Path, which: str) -> Path:
    """A run folder's ``which`` checkpoint (best, last), ``RUN@E`` (the weights kept after epoch E), or a file."""
    text = str(path)
    if "@" in text and not path.exists():
        run, _, epoch = text.rpartition("@")
        if not epoch.isdigit():
            raise ConfigError(f"{text}: expected RUN@EPOCH with a whole epoch number, e.g. runs/sgd@40")
        ckpt = Path(run) / "checkpoints" / epoch_file(int(epoch))
        if not ckpt.is_file():
            kept = sorted(p.stem.split("_")[1].lstrip("0") for p in (Path(run) / "checkpoints").glob("epoch_*.pt"))
            raise ConfigError(f"{text}: no weights kept after epoch {int(epoch)} (kept: {', '.join(kept) or 'none'}; "
                              "set train.keep_epochs or train.keep_every)")
        return ckpt
    if path.is_dir():
        ckpt = path / "checkpoints" / f"{which}.pt"
        if not ckpt.is_file():
            if not (path / "config.yaml").is_file():
                raise ConfigError(f"{path}: not a robustlab run folder (no config.yaml)")
            if which == "swa":
                raise ConfigError(f"--checkpoint swa: {path} has no SWA model (trained without train.swa, or stopped "
                                  "before averaging began); use best or last")
            raise ConfigError(f"--checkpoint {which}: {path} has no checkpoints/{which}.pt (no epoch finished yet?)")
        return ckpt
    if not path.is_file():
        raise ConfigError(f"{path}: not found; expected a run folder or a checkpoint file")
    return path


def load_run_model(path: str | Path, which: str = "best", device: str | torch.device = "cpu") -> LoadedModel:
    """A robustlab run's model (eval mode) from a run folder (``which``: best or last), a checkpoint file, or an
    export (``robustlab export``: ``.safetensors`` with its JSON)."""
    if Path(path).suffix == ".safetensors" and Path(path).is_file():
        return load_exported(path, device)
    ckpt_path = resolve_checkpoint(Path(path), which)
    try:
        ckpt = load_checkpoint(ckpt_path)
    except pickle.UnpicklingError as exc:       # a pickle with code in it: torch refused to run it
        raise ConfigError(f"{ckpt_path}: refused: it holds Python objects other than tensors ({str(exc).splitlines()[0]})") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    raw = ckpt["config"] if ckpt.get("format") != 1 else migrate_format1(ckpt["config"])   # written before the redesign
    cfg = config_from_dict(raw)
    data = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.shape, data.num_classes, data.mean, data.std)
    load_state_strictly(model, ckpt["model"], f"{ckpt_path}: its weights do not fit the model its config describes")
    return LoadedModel(model.to(device).eval(), str(ckpt_path), ckpt.get("epoch"), cfg, cfg.model.name)


NO_WEIGHTS = "none"   # --weights none: the builder's own initialisation, said so in the result


def import_entry(entry: str, flag: str = "--model"):
    """The callable ``builder`` of ``"package.module:builder"``. The working directory is on the import path, as for
    ``python -m`` (a ``mynets.py`` in the folder the command runs from imports as ``mynets``)."""
    import sys
    module_name, sep, attr = entry.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{flag}: got {entry!r}; expected package.module:builder")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{flag}: cannot import {module_name!r} from {Path.cwd()} or the installed packages "
                          f"({exc})") from None
    builder = getattr(module, attr, None)
    if not callable(builder):
        raise ConfigError(f"{flag}: {module_name!r} has no callable {attr!r}")
    return builder


def state_dict_mismatch(model: nn.Module, state: dict) -> str | None:
    """What keeps ``state`` from loading strictly into ``model``, in one line (missing and unexpected keys, the
    first shape mismatch), or None when it fits."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in state and torch.is_tensor(state[k]) and tuple(state[k].shape) != tuple(v.shape)]

    def names(keys):
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
    parts = ([f"missing {len(missing)} key(s): {names(missing)}"] if missing else []) + \
            ([f"unexpected {len(unexpected)} key(s): {names(unexpected)}"] if unexpected else []) + \
            ([f"{shapes[0][0]} has shape {list(shapes[0][1])} in the file, {list(shapes[0][2])} in the model"
              + (f" (and {len(shapes) - 1} more shape mismatches)" if len(shapes) > 1 else "")] if shapes else [])
    return "; ".join(parts) or None


def load_state_strictly(model: nn.Module, state: dict, what: str) -> None:
    """``model.load_state_dict(state)`` with a one-line ConfigError naming the keys and shapes that do not fit."""
    problem = state_dict_mismatch(model, state)
    if problem is None:
        try:
            model.load_state_dict(state)
            return
        except RuntimeError as exc:
            problem = str(exc).strip().splitlines()[-1].strip()
    raise ConfigError(f"{what} ({problem})")


def load_external_model(entry: str, weights: str | Path | None = None, device: str | torch.device = "cpu",
                        flag: str = "--weights") -> LoadedModel:
    """``"package.module:builder"`` -> builder() with the weights file loaded (strictly) into it, in eval mode.
    ``weights`` is required: a file, or ``"none"`` for the builder's own initialisation (recorded as such)."""
    module_name, sep, attr = entry.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--model: got {entry!r}; expected package.module:builder")
    if weights is None:
        raise ConfigError(f"{flag}: required with a model defined elsewhere (a .safetensors file or a torch state "
                          f"dict); give {flag} none to evaluate the builder's freshly initialised network")
    builder = import_entry(entry)
    try:
        model = builder()
    except Exception as exc:
        raise ConfigError(f"--model: {entry}() failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                          "the builder is called with no arguments: wrap it, e.g. def build(): return Net(depth=18)") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model: {entry} returned a {type(model).__name__}, not a torch.nn.Module")
    if str(weights) == NO_WEIGHTS:
        source = f"{entry} (no weights: the builder's initialisation)"
    else:
        load_state_strictly(model, read_weights(weights), f"{flag}: {weights} does not fit {entry}")
        source = str(weights)
    loaded = LoadedModel(model.to(device).eval(), source, None, None, entry)
    return dataclasses.replace(loaded, weights="none" if str(weights) == NO_WEIGHTS else str(weights))


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A model exported with ``--format safetensors``, rebuilt from its JSON (beside it, or in the header)."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        info = read_json(sidecar)
    else:
        from safetensors import safe_open
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
        if "robustlab" not in meta:
            raise ConfigError(f"{path}: no {sidecar.name} beside it and no robustlab header; for a model defined "
                              "elsewhere use --model package.module:builder --weights FILE")
        info = json.loads(meta["robustlab"])
    if info.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{path}: export format {info.get('format')!r}; this robustlab reads {EXPORT_FORMAT}")
    cfg = config_from_dict(info["config"])
    norm = info["normalization"]
    model = build_model(cfg.model, tuple(info["input_shape"]), info["num_classes"], tuple(norm["mean"]), tuple(norm["std"]))
    load_state_strictly(model, read_weights(path), f"{path}: its weights do not fit the model its JSON describes")
    return LoadedModel(model.to(device).eval(), str(path), info.get("epoch"), cfg, cfg.model.name)


def load_model(path_or_entry: str | Path, weights: str | Path | None = None, which: str = "best",
               device: str | torch.device = "cpu") -> LoadedModel:
    """A run folder / checkpoint, or (with ``weights``, or a ``module:builder`` entry) an external model."""
    text = str(path_or_entry)
    if weights is not None or (":" in text and not Path(text).exists()):
        return load_external_model(text, weights, device)
    return load_run_model(text, which, device)
