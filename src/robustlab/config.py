"""The experiment config: which components a run uses and their settings. YAML in, fully resolved YAML out.

``load_config(path, overrides)`` reads YAML with the safe loader (robustlab.core.yamlio: a key given twice is an error), applies dotted ``key=value`` overrides,
builds the tree (each component section validated by its own config class, chosen by ``name``), resolves
derived defaults (published weights, step sizes) and cross-checks, before any work starts. A bad value raises
:class:`ConfigError` with one line naming the key, the value and what is allowed.

``plugins: [mypkg.components]`` imports those modules first, so components they register can be named.
"""
from __future__ import annotations

import importlib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from robustlab.attacks.threat import default_step
from robustlab.core.errors import ConfigError
from robustlab.core.schema import build, component, components, parse_number, resolve, spec, to_dict
from robustlab.core.yamlio import read_yaml
from robustlab.diagnostics import DIAGNOSTICS, DiagnosticConfig
from robustlab.methods import METHODS, REGULARIZERS, MethodConfig
from robustlab.models import MODELS, ModelConfig
from robustlab.core.kernel_paths import CHOICES as KERNEL_PATH_CHOICES
from robustlab.optim import LR_SCHEDULES, OPTIMIZERS, OptimizerConfig
from robustlab.optim.swa import SWAConfig
from robustlab.tracking import TRACKERS, TrackerConfig

__all__ = ["Config", "ConfigError", "apply_overrides", "config_from_dict", "load_config", "parse_number", "spec"]


@dataclass
class InjectConfig:
    """Class-feature injection (Ortiz-Jimenez et al., 2023): x <- x + beta * v_y, on train and test sets."""
    kind: str = spec("none", choices=["none", "carriers", "orthogonal"],
                     doc="none; signed DCT class carriers; or carriers after projecting x off their span")
    beta: float = spec(0.0, lo=0.0, doc="strength on the 0-1 scale (8/255 accepted)")


@dataclass
class LabelConfig:
    """Label interventions on the training split (validation and test keep their labels)."""
    noise: float = spec(0.0, lo=0.0, hi=1.0, doc="symmetric noise rate; 1.0 = random labels (uniform over all K)")
    seed: typing.Optional[int] = spec(None, lo=0, doc="seed of the noisy labels (default: the run's seed)")


@dataclass
class DataConfig:
    name: str = spec("mnist5k", doc="a registered data set (robustlab list datasets)")
    root: typing.Optional[str] = spec(None, doc="folder with the on-disk files; default $ROBUSTLAB_DATA or ~/.cache/robustlab/data")
    val_size: int = spec(500, lo=0, doc="training images held out (seeded) for validation / early stopping")
    train_size: int = spec(0, lo=0, doc="train on a seeded subset of this many of the remaining images (0: all)")
    train_per_class: int = spec(0, lo=0, doc="train on a seeded, balanced subset: this many remaining images of every "
                                "class (0: all)")
    batch_size: int = spec(128, lo=1)
    eval_batch_size: int = spec(500, lo=1)
    crop_padding: int = spec(0, lo=0, doc="random crop with this zero padding (0: off)")
    flip: bool = spec(False, doc="random horizontal flip")
    inject: InjectConfig = spec(default_factory=InjectConfig)
    labels: LabelConfig = spec(default_factory=LabelConfig)

    def check(self, key: str) -> None:
        from robustlab.data import DATASETS
        if self.name not in DATASETS:
            raise ConfigError(f"{key}name: got {self.name!r}; allowed: {', '.join(DATASETS)}")
        if self.train_size and self.train_per_class:
            raise ConfigError(f"{key}train_per_class: give train_size or train_per_class, not both")


def _default_diagnostics() -> list:
    return [DIAGNOSTICS.config_class("linearity")(name="linearity")]


@dataclass
class MonitorConfig:
    """Per-epoch evaluation on fixed subsets of the validation and test sets, and per-epoch diagnostics."""
    eval_points: int = spec(1000, lo=0, doc="test points evaluated each epoch")
    val_points: int = spec(0, lo=0, doc="validation points evaluated each epoch (0: the whole split)")
    attack_steps: int = spec(10, lo=1)
    attack_restarts: int = spec(1, lo=1)
    attack_alpha: typing.Optional[float] = spec(None, lo=0.0, doc="default eps/4")
    fgsm: bool = spec(True, doc="also report FGSM accuracy (shows catastrophic overfitting)")
    every: int = spec(1, lo=1, doc="measure after every k-th epoch and the last (as a diagnostic's every): the "
                                   "accuracies, split-BN branches and SWA; best.pt and the live CO rule see only "
                                   "the measured epochs")
    train_points: int = spec(0, lo=0, doc="training points (with their training labels, noisy or random) evaluated "
                                           "each epoch: trainset_clean_acc, trainset_pgd_acc (memorisation)")
    grad_norm: bool = spec(True, doc="log the squared global gradient norm sum_p ||dL/dp||^2 of every step: epoch "
                                     "mean and max (gradient instability)")
    grad_norm_trace: bool = spec(False, doc="also write every step's value to grad_norm_trace.jsonl")
    diagnostics: list[DiagnosticConfig] = components(DIAGNOSTICS, "measured after epochs (robustlab list diagnostics)",
                                                     default_factory=_default_diagnostics)
    co_action: str = spec("none", choices=["none", "stop", "rollback"],
                          doc="when the live CO rule fires: record only; stop; stop and make the best checkpoint final")

    def resolve(self, parent, key: str) -> None:
        self.attack_alpha = default_step(parent.method.eps) if self.attack_alpha is None else self.attack_alpha

    def uses_total_epochs(self) -> bool:
        """With ``every`` > 1 the last epoch is measured because it is the last: a longer run would skip it."""
        return self.every > 1


@dataclass
class FinalEvalConfig:
    """Evaluation of the last and best checkpoints when training ends, by a registered protocol (default PGD-50-10,
    step eps/4), on the points and chunks ``robustlab eval RUN --attack <protocol> --n <points>`` uses."""
    points: int = spec(1000, lo=0, doc="test points (0: skip)")
    protocol: str = spec("pgd", choices=["pgd", "autoattack", "pgd+autoattack"],
                         doc="pgd: PGD-steps-restarts; autoattack: the standard AutoAttack (extra autoattack); "
                             "pgd+autoattack: PGD, then AutoAttack on the points PGD left robust")
    steps: int = spec(50, lo=1, doc="PGD iterations (pgd, pgd+autoattack)")
    restarts: int = spec(10, lo=1, doc="PGD restarts (pgd, pgd+autoattack)")
    alpha: typing.Optional[float] = spec(None, lo=0.0, doc="PGD step size (default eps/4)")
    seed: int = spec(0, lo=0, doc="AutoAttack's seed (autoattack, pgd+autoattack)")

    def resolve(self, parent, key: str) -> None:
        self.alpha = default_step(parent.method.eps) if self.alpha is None else self.alpha

    def check(self, key: str) -> None:
        if "autoattack" in self.protocol and self.points:
            from robustlab.protocols.cascade import import_autoattack
            try:
                import_autoattack()
            except ImportError as exc:
                raise ConfigError(f"{key}protocol: {self.protocol!r}: {exc}") from None

    def build_protocol(self):
        """The registered protocol (robustlab.protocols) these settings describe."""
        from robustlab.protocols import EVAL_ATTACKS
        fields = {"name": self.protocol, "steps": self.steps, "restarts": self.restarts, "alpha": self.alpha,
                  "seed": self.seed}
        cls = EVAL_ATTACKS.config_class(self.protocol)
        return EVAL_ATTACKS.build(cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__}))


@dataclass
class TrainConfig:
    epochs: int = spec(10, lo=1)
    precision: str = spec("fp32", choices=["fp32", "bf16", "fp16"])
    channels_last: bool = spec(False)
    device: str = spec("auto", choices=["auto", "cpu", "cuda"])
    threads: int = spec(0, lo=0, doc="torch CPU threads (0: torch's default)")
    kernel_path: str = spec("inherit", choices=list(KERNEL_PATH_CHOICES),
                            doc="CPU numeric path (robustlab.core.kernel_paths): inherit the environment's, or set "
                                "machine, default (ATEN_CPU_CAPABILITY=default) or avx2; a study key like any other")
    compile: bool = spec(False, doc="torch.compile the model")
    progress: str = spec("auto", choices=["auto", "bar", "lines", "none"])
    trackers: list[TrackerConfig] = components(TRACKERS, "experiment-tracking sinks, e.g. [tensorboard, mlflow] "
                                               "(robustlab list trackers)", default_factory=list)
    swa: typing.Optional[SWAConfig] = spec(None, doc="stochastic weight averaging (robustlab.optim.swa): "
                                                   "{start_epoch, every_steps, recalibrate, attack_steps, points}")
    keep_epochs: list[int] = spec(default_factory=list, doc="also keep the weights after these epochs "
                                  "(checkpoints/epoch_NNNN.pt; address them as RUN@N): early-stopped surrogates")
    keep_every: int = spec(0, lo=0, doc="also keep the weights every k epochs (0: off)")
    init_from: typing.Optional[str] = spec(None, doc="start from these weights (a robustlab checkpoint, a torch state "
                                                    "dict or a .safetensors file): fine-tuning")
    cpu_keep_heap: bool = spec(True, doc="on CPU (Linux/glibc): keep freed activation memory for reuse instead of unmapping it (faster; keeps peak memory)")

    def check(self, key: str) -> None:
        if self.precision == "fp16" and self.device == "cpu":
            raise ConfigError(f"{key}precision: got 'fp16'; fp16 with gradient scaling needs CUDA (use bf16 on CPU)")


@dataclass
class Config:
    seed: int = spec(0, lo=0)
    plugins: list[str] = spec(default_factory=list, doc="Python modules imported first (they register components)")
    data: DataConfig = spec(default_factory=DataConfig)
    model: ModelConfig = component(MODELS, "wong_mnist", doc="robustlab list models")
    method: MethodConfig = component(METHODS, "fgsm", doc="robustlab list methods")
    optim: OptimizerConfig = component(OPTIMIZERS, "sgd", doc="robustlab list optimizers")
    train: TrainConfig = spec(default_factory=TrainConfig)
    monitor: MonitorConfig = spec(default_factory=MonitorConfig)
    final_eval: FinalEvalConfig = spec(default_factory=FinalEvalConfig)

    def to_dict(self) -> dict:
        return to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def epoch_dependent_keys(node, key: str = "") -> list[str]:
    """The config sections whose values depend on ``train.epochs`` (a component declares it with a
    ``uses_total_epochs()`` method): such a run cannot be extended without changing its past."""
    import dataclasses
    found = []
    if dataclasses.is_dataclass(node):
        uses = getattr(node, "uses_total_epochs", None)
        if uses is not None and uses():
            found.append(f"{key.rstrip('.')} ({getattr(node, 'name', type(node).__name__)!s})")
        for f in dataclasses.fields(node):
            found += epoch_dependent_keys(getattr(node, f.name), f"{key}{f.name}.")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += epoch_dependent_keys(item, f"{key.rstrip('.')}[{i}].")
    return found


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.05"`` -> (["optim", "lr"], 0.05). The value is read as YAML (safe loader)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. method.eps=8/255")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: the key must be dotted names, e.g. optim.lr")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict, overrides: typing.Iterable[str] | dict) -> dict:
    """Apply dotted overrides (``"a.b=1"`` strings, or a ``{"a.b": 1}`` mapping) to a raw config mapping.
    Unknown keys are caught by validation. A section written as a bare name (``schedule: cyclic``) becomes
    ``{name: cyclic}`` when an override sets a key inside it."""
    raw = _deepcopy(raw)
    pairs = ([(k.split("."), v) for k, v in overrides.items()] if isinstance(overrides, dict)
             else [parse_override(t) for t in overrides])
    for path, value in pairs:
        node = raw
        for i, part in enumerate(path[:-1]):
            nxt = node.setdefault(part, {})
            if isinstance(nxt, str):
                nxt = node[part] = {"name": nxt}
            if not isinstance(nxt, dict):
                raise ConfigError(f"{'.'.join(path[:i + 1])}: is a value, not a section; cannot set {'.'.join(path)}")
            node = nxt
        node[path[-1]] = value
    return raw


def _deepcopy(d):
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def import_plugins(names) -> None:
    """Import the modules a config names under ``plugins`` (they register components on import)."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"plugins: got {names!r}; expected a list of module names, e.g. [mypkg.components]")
    for i, name in enumerate(names):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"plugins[{i}]: cannot import {name!r} ({exc})") from None


def config_from_dict(raw: dict | None, overrides: typing.Iterable[str] | dict = ()) -> Config:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    import_plugins(raw.get("plugins", []))
    cfg = build(Config, raw)
    resolve(cfg)
    return cfg


def load_config(path: str | Path, overrides: typing.Iterable[str] = ()) -> Config:
    path = Path(path)
    raw = read_yaml(path, "config file")
    if raw is None:
        raise ConfigError(f"config file {path}: empty; write the keys to set (an empty mapping {{}} takes every default)")
    return config_from_dict(raw, overrides)


def migrate_format1(raw: dict) -> dict:
    """A config stored by robustlab before the component redesign (checkpoint format 1: flat sections) in today's
    shape, so old runs can still be evaluated. Component sections keep the keys their component accepts; the lr
    schedule and the regularisers' on/off settings move into their own components; ``monitor.diagnostics: N``
    becomes the linearity diagnostic on N images."""
    import dataclasses
    raw = _deepcopy(raw)

    def keep(section: dict, cls) -> dict:
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in section.items() if k in names and v is not None}

    model = raw.get("model", {})
    raw["model"] = keep(model, MODELS.config_class(model.get("name", "wong_mnist")))
    optim = raw.get("optim", {})
    sched_name = optim.get("schedule") or "cyclic"
    sched = keep({k: optim.get(k) for k in ("peak_at", "cycle_momentum", "milestones", "gamma", "warmup_epochs")},
                 LR_SCHEDULES.config_class(sched_name))
    raw["optim"] = {**keep({k: v for k, v in optim.items() if k != "schedule"}, OPTIMIZERS.config_class(optim.get("name", "sgd"))),
                    "schedule": {"name": sched_name, **sched}}
    method = raw.get("method", {})
    regs = []
    for r in method.get("regularizers", []):
        schedule = r.get("schedule")
        entry = keep({k: v for k, v in r.items() if k != "schedule"}, REGULARIZERS.config_class(r["name"]))
        if schedule == "onoff" or (schedule is None and r["name"] in ("elle_a", "llr", "cure")):
            entry["schedule"] = {"name": "onoff", **{k: r[k] for k in ("sensitivity", "decay", "window") if k in r}}
        elif schedule is not None:
            entry["schedule"] = {"name": schedule}
        regs.append(entry)
    cls = METHODS.config_class(method.get("name", "fgsm"))
    new_method = keep({k: v for k, v in method.items() if k != "regularizers"}, cls)
    if method.get("name") == "pgd" and method.get("init_scale") is not None:
        new_method["random_start"] = method["init_scale"] > 0
    raw["method"] = {**new_method, "regularizers": regs}
    monitor = raw.get("monitor", {})
    if isinstance(monitor.get("diagnostics"), int):
        n = monitor["diagnostics"]
        monitor["diagnostics"] = [{"name": "linearity", "points": n}] if n else []
    return raw
