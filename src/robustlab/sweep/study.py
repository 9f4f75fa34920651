"""A study: a base config and a grid and/or list of overrides, expanded to one trial per combination.

Study file (YAML)::

    name: co_map                       # optional (default: the file's stem)
    title: CO map on mnist5k           # optional, for reports
    base: ../configs/mnist5k_fgsm.yaml # a config file (relative to the study file) or an inline mapping
    overrides: {train.epochs: 10}      # optional, applied to every trial
    grid:                              # cartesian product
      method.eps: [0.1, 0.2]
      seed: [0, 1, 2]
    list:                              # optional; each entry is combined with every grid point
      - {method.name: fgsm}
      - {label: PGD-5-AT, method.name: pgd, method.steps: 5}   # label: optional group name
    resources: {cpus: 1, gpus: 0}      # what each trial asks of the executor
    workers: 2                         # default for --workers
    claims: [...]                      # optional: what the runs must show (robustlab.report.claims)
    evaluations: [{checkpoint: last, n: 500}]   # optional: run after the trials (robustlab.sweep.evaluations)

Every trial's config is validated when the study is expanded, before any work starts. Trials are
named readably from their overrides (``003-name-fgsm_eps-0.1_seed-0``).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from robustlab.config import ConfigError, config_from_dict, load_config
from robustlab.core.yamlio import read_yaml
from robustlab.report.claims import parse_claims
from robustlab.sweep.evaluations import parse_evaluations

STUDY_KEYS = {"name", "title", "base", "overrides", "grid", "list", "resources", "workers", "claims", "evaluations"}
LABEL = "label"  # a list entry may name itself (e.g. label: FGSM-AT); it is not a config key


@dataclass
class Trial:
    name: str
    overrides: dict          # the varying overrides (grid point + list entry), dotted keys
    config: dict             # the full, validated config

    def to_dict(self) -> dict:
        return {"name": self.name, "overrides": self.overrides, "config": self.config}


@dataclass
class Study:
    name: str
    trials: list[Trial]
    keys: list[str]                       # the varying keys, in order
    resources: dict = field(default_factory=lambda: {"cpus": 1, "gpus": 0})
    workers: int = 1
    source: str = ""
    title: str = ""
    claims: list = field(default_factory=list)   # raw claim mappings (robustlab.report.claims), checked at expansion
    evaluations: list = field(default_factory=list)   # robustlab.sweep.evaluations, checked at expansion

    def fingerprint(self) -> str:
        blob = json.dumps([t.to_dict() for t in self.trials], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "keys": self.keys, "resources": self.resources, "workers": self.workers,
                "source": self.source, "fingerprint": self.fingerprint(), "claims": self.claims,
                "evaluations": self.evaluations,
                "trials": [t.to_dict() for t in self.trials]}


def _value_text(v) -> str:
    text = str(v).replace("/", "_").replace(" ", "")
    return re.sub(r"[^A-Za-z0-9._+-]", "", text) or "x"


def trial_name(index: int, overrides: dict) -> str:
    parts = [f"{k.split('.')[-1]}-{_value_text(v)}" for k, v in overrides.items()]
    return f"{index:03d}-" + ("_".join(parts) if parts else "base")


def _mapping(raw, key: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"study.{key}: got {raw!r}; expected a mapping of dotted config keys")
    return raw


def expand_study(raw: dict, base_dir: Path = Path("."), source: str = "") -> Study:
    """Validate a study mapping and expand it into trials."""
    if not isinstance(raw, dict):
        raise ConfigError("study: expected a mapping at the top level")
    unknown = set(raw) - STUDY_KEYS
    if unknown:
        raise ConfigError(f"study.{sorted(unknown)[0]}: unknown key; allowed: {', '.join(sorted(STUDY_KEYS))}")
    base = raw.get("base", {})
    if isinstance(base, str):   # the file's own mapping (validated here): defaults resolve after the overrides
        load_config(base_dir / base)
        base_cfg = read_yaml(base_dir / base, "config file")
    elif isinstance(base, dict):
        base_cfg = base
    else:
        raise ConfigError(f"study.base: got {base!r}; expected a config file path or a mapping")
    fixed = _mapping(raw.get("overrides"), "overrides")
    grid = _mapping(raw.get("grid"), "grid")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"study.grid.{k}: got {v!r}; expected a non-empty list of values")
    entries = raw.get("list") or [{}]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("study.list: expected a list of mappings of dotted config keys")
    resources = {"cpus": 1, "gpus": 0, **_mapping(raw.get("resources"), "resources")}
    for k, v in resources.items():
        if k not in ("cpus", "gpus") or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"study.resources.{k}: got {v!r}; allowed keys cpus, gpus with numbers >= 0")
    workers = raw.get("workers", 1)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"study.workers: got {workers!r}; must be an integer >= 1")
    keys: list[str] = []
    for k in [*(k for e in entries for k in e), *grid]:
        if k not in keys:
            keys.append(k)
    if LABEL in keys:  # the label names a trial first
        keys.remove(LABEL)
        keys.insert(0, LABEL)
    trials, seen = [], set()
    for entry in entries:
        for point in itertools.product(*grid.values()):
            over = {**entry, **dict(zip(grid, point))}
            over = {k: over[k] for k in keys if k in over}
            name = trial_name(len(trials), over)
            try:
                cfg = config_from_dict(base_cfg, {**fixed, **{k: v for k, v in over.items() if k != LABEL}}).to_dict()
            except ConfigError as exc:
                raise ConfigError(f"study trial {name}: {exc}") from None
            fp = json.dumps(cfg, sort_keys=True)
            if fp in seen:
                raise ConfigError(f"study trial {name}: same config as an earlier trial; remove the duplicate")
            seen.add(fp)
            trials.append(Trial(name, over, cfg))
    parse_claims(raw.get("claims"))
    return Study(str(raw.get("name") or Path(source).stem or "study"), trials, keys, resources, workers, source,
                 str(raw.get("title") or ""), list(raw.get("claims") or []), parse_evaluations(raw.get("evaluations")))


def load_study(path: str | Path) -> Study:
    path = Path(path)
    return expand_study(read_yaml(path, "study file"), path.parent, str(path))


def _dotted(tree: dict, key: str):
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return KeyError
        tree = tree[part]
    return tree


def select_trials(study: "Study", selections: list[str]) -> list[Trial]:
    """``--select KEY=VALUE`` (repeatable): the trials whose ``KEY`` (``label`` or a dotted config key, e.g. ``seed``,
    ``train.kernel_path``) equals ``VALUE``; several values of one key select any of them, several keys all. A study
    run over several sessions runs a part in each (the folder and its report hold the whole study)."""
    import yaml
    wanted: dict[str, list] = {}
    for text in selections:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ConfigError(f"--select: got {text!r}; expected KEY=VALUE, e.g. seed=0 or label=FGSM-AT")
        wanted.setdefault(key.strip(), []).append(value.strip())

    def value_of(trial: Trial, key: str):
        return trial.overrides.get(LABEL, KeyError) if key == LABEL else _dotted(trial.config, key)

    for key in wanted:
        if all(value_of(t, key) is KeyError for t in study.trials):
            raise ConfigError(f"--select: {key!r} is not a key of this study's trials (e.g. {', '.join(study.keys) or 'seed'})")

    def matches(trial: Trial, key: str, values: list) -> bool:
        have = value_of(trial, key)
        return any(str(have) == v or have == yaml.safe_load(v) for v in values)
    chosen = [t for t in study.trials if all(matches(t, k, vs) for k, vs in wanted.items())]
    if not chosen:
        raise ConfigError(f"--select: {' '.join(selections)} matches none of the study's {len(study.trials)} trials")
    return chosen
