"""Typed views of a run folder for the reports: what config.yaml, results.json and metrics.jsonl say, read once
into named fields (a report never indexes the raw files by string). Old or partial folders read as far as they go:
a field a folder does not hold is None (a run still in its first epoch has no results yet)."""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.io import read_json, read_jsonl
from robustlab.core.yamlio import read_yaml

Number = typing.Optional[float]


def _mapping(value, what: Path) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what}: damaged, not a {'config' if what.suffix == '.yaml' else 'results'} mapping")
    return value


@dataclass(frozen=True)
class Figures:
    """Clean and robust accuracy of one model under one protocol."""
    clean_acc: Number = None
    robust_acc: Number = None
    snapshots: typing.Optional[int] = None      # SWA: how many weight snapshots the averaged model holds

    @classmethod
    def read(cls, raw: dict | None) -> "Figures | None":
        return None if not raw else cls(raw.get("clean_acc"), raw.get("robust_acc"), raw.get("snapshots"))


@dataclass(frozen=True)
class FinalEvaluation:
    """The training run's final evaluation (results.json ``final_eval``)."""
    protocol: str = "final evaluation"
    eps: float = 0.0
    n_examples: typing.Optional[int] = None
    last: Figures | None = None
    best: Figures | None = None
    swa: Figures | None = None

    @classmethod
    def read(cls, raw: dict | None) -> "FinalEvaluation":
        raw = raw or {}
        return cls(raw.get("protocol", "final evaluation"), (raw.get("attack") or {}).get("eps", 0.0),
                   raw.get("n_examples"), Figures.read(raw.get("last")), Figures.read(raw.get("best")),
                   Figures.read(raw.get("swa")))

    def checkpoints(self) -> list[tuple[str, Figures]]:
        return [(name, f) for name, f in (("last", self.last), ("best", self.best), ("swa", self.swa)) if f]

    def text(self) -> str:
        """'PGD-50-10, eps 0.3, first 1000 test points'."""
        return f"{self.protocol}, eps {self.eps:.4g}, first {self.n_examples if self.n_examples is not None else '?'} test points"


@dataclass(frozen=True)
class MonitorDescription:
    """What the per-epoch accuracies were measured with (results.json ``monitor``, else the config's monitor)."""
    attacks: list[str]
    eps: Number
    test_points: typing.Optional[int]

    def text(self) -> str:
        eps = f"{self.eps:.4g}" if isinstance(self.eps, (int, float)) else "?"
        return f"{' and '.join(self.attacks)}, eps {eps}, {self.test_points if self.test_points is not None else '?'} test points"


@dataclass
class RunView:
    path: Path
    metrics: list[dict]                 # metrics.jsonl: one row per epoch, columns by name
    seed: typing.Optional[int] = None
    method: str = "?"
    eps: Number = None
    data: str = "?"
    epochs: typing.Optional[int] = None          # planned
    status: str = "unknown"
    message: str = ""
    epochs_completed: typing.Optional[int] = None
    best_epoch: typing.Optional[int] = None
    final: FinalEvaluation = field(default_factory=FinalEvaluation)
    monitor: MonitorDescription = field(default_factory=lambda: MonitorDescription([], None, None))


def load_run(run_dir: str | Path) -> RunView:
    """The view of one run folder; a damaged file is a one-line error (nothing is written)."""
    run_dir = Path(run_dir)
    cfg_path, res_path = run_dir / "config.yaml", run_dir / "results.json"
    config = _mapping(read_yaml(cfg_path, "config file") if cfg_path.is_file() else None, cfg_path)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    results = _mapping(read_json(res_path) if res_path.is_file() else None, res_path)
    method, train, mon = config.get("method") or {}, config.get("train") or {}, config.get("monitor") or {}
    recorded = results.get("monitor") or {}
    attacks = recorded.get("attacks") or ([f"PGD-{mon.get('attack_steps', '?')}-{mon.get('attack_restarts', '?')}"]
                                          + (["FGSM"] if mon.get("fgsm") else []))
    monitor = MonitorDescription(attacks, recorded.get("eps", method.get("eps")),
                                 (recorded.get("points") or {}).get("test", mon.get("eval_points")))
    return RunView(run_dir, metrics, config.get("seed"), method.get("name", "?"), method.get("eps"),
                   (config.get("data") or {}).get("name", "?"), results.get("epochs", train.get("epochs")),
                   results.get("status", "unknown"), results.get("message") or "",
                   results.get("epochs_completed", len(metrics)), results.get("best_epoch"),
                   FinalEvaluation.read(results.get("final_eval")), monitor)
