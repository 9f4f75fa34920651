"""The tracker interface and registry."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from robustlab.core.registry import Registry
from robustlab.core.schema import spec


@dataclass
class TrackerConfig:
    name: str = spec("tensorboard")

    def preflight(self, key: str) -> None:
        """Checks that need the outside world (a server that answers), run by the trainer before any work; a
        ConfigError here stops the run before it starts. Config validation (``check``) stays offline."""


TRACKERS: Registry[type] = Registry("tracker", TrackerConfig)


@dataclass(frozen=True)
class RunIdentity:
    """What a sink names the run by: the run folder's name (a study trial's name), and the study it belongs to."""
    run_dir: Path
    name: str
    study: str | None = None


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; lists become their text (hyperparameter tables take
    scalars only)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


def numeric(row: dict) -> dict[str, float]:
    """The finite numbers of a metrics row (flags and nulls are left out)."""
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Tracker:
    """A sink. ``start`` once per process (with the epoch a resume continues after), ``log_epoch`` after every
    recorded epoch, ``finish`` with results.json's content; ``close`` always."""

    def __init__(self, cfg, identity: RunIdentity):
        self.cfg, self.identity = cfg, identity

    def start(self, config: dict, resumed_after_epoch: int) -> None:
        raise NotImplementedError

    def log_epoch(self, row: dict) -> None:
        raise NotImplementedError

    def finish(self, results: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def final_metrics(results: dict) -> dict[str, float]:
    """The figures a dashboard compares runs by: last epoch's monitor, final evaluation of last and best."""
    out = {f"last/{k}": v for k, v in numeric(results.get("last", {})).items() if k.endswith("_acc")}
    final = results.get("final_eval") or {}
    for which in ("last", "best"):
        for k, v in numeric(final.get(which, {})).items():
            if k.endswith("_acc"):
                out[f"final_{which}/{k}"] = v
    return out


def build_trackers(cfgs: list, identity: RunIdentity) -> list[Tracker]:
    return [TRACKERS.build(c, identity) for c in cfgs]


def preflight_trackers(cfgs: list) -> None:
    """Every sink's outside-world check (a server that must answer), before the run does any work."""
    for i, cfg in enumerate(cfgs):
        cfg.preflight(f"train.trackers[{i}].")
