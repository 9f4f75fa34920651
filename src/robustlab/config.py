"""Typed, validated experiment configuration: YAML in, YAML out.

A config is a tree of dataclasses. ``load_config(path, overrides)`` reads YAML with ``yaml.safe_load``,
applies dotted ``key=value`` overrides, and checks every key, type and range before any work starts.
A bad value raises :class:`ConfigError` whose message is one line naming the key, the value and what is
allowed. Numbers on the 0-1 pixel scale may be written as fractions (``8/255``); they are parsed with a
regular expression, never evaluated.
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range (one-line message)."""


def spec(default=dataclasses.MISSING, *, choices=None, lo=None, hi=None, lo_open=False, doc="",
         default_factory=dataclasses.MISSING):
    """A dataclass field with validation metadata: allowed ``choices`` or a range [lo, hi]."""
    meta = {"choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open, "doc": doc}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


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
    name: str = spec("mnist5k", doc="a registered data set (see robustlab.data.DATASETS)")
    root: typing.Optional[str] = spec(None, doc="folder with the on-disk files; default $ROBUSTLAB_DATA or ~/.cache/robustlab/data")
    val_size: int = spec(500, lo=0, doc="training images held out (seeded) for validation / early stopping")
    batch_size: int = spec(128, lo=1)
    eval_batch_size: int = spec(500, lo=1)
    crop_padding: int = spec(0, lo=0, doc="random crop with this zero padding (0: off)")
    flip: bool = spec(False, doc="random horizontal flip")
    inject: InjectConfig = spec(default_factory=InjectConfig)
    labels: LabelConfig = spec(default_factory=LabelConfig)


@dataclass
class ModelConfig:
    name: str = spec("wong_mnist", doc="a registered model (see robustlab.models.MODELS)")
    normalize: bool = spec(True, doc="put the data set's mean/std Normalize module in front of the model")
    depth: int = spec(28, lo=10, doc="WideResNet depth (6n+4)")
    widen: int = spec(10, lo=1, doc="WideResNet widening factor")
    dropout: float = spec(0.0, lo=0.0, hi=1.0)
    lowpass: int = spec(0, lo=0, doc="keep the b x b lowest 2-D DCT frequencies of the input (0: off)")


@dataclass
class RegularizerConfig:
    """A term added to the method's loss (see robustlab.methods.regularizers)."""
    name: str = spec("elle", choices=["elle", "elle_a", "gradalign", "llr", "cure"])
    weight: typing.Optional[float] = spec(None, lo=0.0, doc="lambda (lambda_max for onoff); default: the published value for eps")
    schedule: typing.Optional[str] = spec(None, choices=["constant", "onoff"], doc="default: onoff for elle_a, llr, cure")
    sensitivity: float = spec(2.0, lo=0.0, doc="onoff: fire when E > mean + sensitivity * std")
    decay: float = spec(0.99, lo=0.0, hi=1.0, doc="onoff: lambda *= decay otherwise")
    window: int = spec(0, lo=0, doc="onoff: history length (0: unbounded, the CIFAR code)")
    clip_box: bool = spec(True, doc="clip the random points to [0,1] (the ELLE CIFAR code does not)")
    mean_grad_quirk: bool = spec(False, doc="llr/cure: batch-mean input gradients, as the ELLE code (its weights assume it)")
    fuse_forward: bool = spec(False, doc="elle/elle_a: the 3B triplet joins the training forward (one 4B pass)")
    triplet_passes: int = spec(1, choices=[1, 3], doc="elle/elle_a: the 3B triplet in one pass (reference) or three B-sized passes")


@dataclass
class MethodConfig:
    name: str = spec("fgsm", doc="a registered training method (see robustlab.methods.METHODS)")
    eps: float = spec(8 / 255, lo=0.0, doc="attack radius on the 0-1 scale")
    alpha: typing.Optional[float] = spec(None, lo=0.0, doc="step size; default per method")
    steps: int = spec(10, lo=1, doc="attack iterations (multi-step methods)")
    init_scale: typing.Optional[float] = spec(None, lo=0.0, doc="random init U[-k eps, k eps]: k; default per method")
    norm: str = spec("linf", choices=["linf", "l2"])
    bn_mode: str = spec("train", choices=["train", "eval"], doc="BatchNorm/dropout mode while the training attack runs")
    eps_ramp_epochs: int = spec(0, lo=0, doc="grow eps and alpha linearly from 0 over this many epochs")
    regularizers: typing.List[RegularizerConfig] = spec(default_factory=list, doc="terms added to the loss")


@dataclass
class OptimConfig:
    name: str = spec("sgd", choices=["sgd", "adamw"])
    lr: float = spec(0.1, lo=0.0, lo_open=True, doc="peak learning rate")
    momentum: float = spec(0.9, lo=0.0, hi=1.0)
    nesterov: bool = spec(False)
    weight_decay: float = spec(5e-4, lo=0.0)
    betas: typing.List[float] = spec(default_factory=lambda: [0.9, 0.999], doc="AdamW betas")
    schedule: str = spec("cyclic", choices=["cyclic", "multistep", "cosine", "constant"])
    peak_at: float = spec(0.5, lo=0.0, hi=1.0, doc="cyclic: fraction of training spent rising")
    milestones: typing.List[float] = spec(default_factory=list, doc="multistep: epochs at which lr *= gamma")
    gamma: float = spec(0.1, lo=0.0)
    warmup_epochs: float = spec(0.0, lo=0.0, doc="linear warm-up from 0 (multistep, cosine, constant)")
    cycle_momentum: bool = spec(False, doc="cyclic: move momentum 0.9->0.8->0.9 against the lr, as torch's CyclicLR does")


@dataclass
class MonitorConfig:
    """Per-epoch evaluation on fixed subsets of the validation and test sets."""
    eval_points: int = spec(1000, lo=0, doc="test points evaluated each epoch")
    val_points: int = spec(0, lo=0, doc="validation points evaluated each epoch (0: the whole split)")
    attack_steps: int = spec(10, lo=1)
    attack_restarts: int = spec(1, lo=1)
    attack_alpha: typing.Optional[float] = spec(None, lo=0.0, doc="default eps/4")
    fgsm: bool = spec(True, doc="also report FGSM accuracy (shows catastrophic overfitting)")
    diagnostics: int = spec(256, lo=0, doc="training images for the linearity diagnostics (0: off)")
    co_action: str = spec("none", choices=["none", "stop", "rollback"],
                          doc="when the live CO rule fires: record only; stop; stop and make the best checkpoint final")


@dataclass
class FinalEvalConfig:
    """Evaluation of the last and best checkpoints when training ends (default PGD-50-10, step eps/4)."""
    points: int = spec(1000, lo=0, doc="test points (0: skip)")
    steps: int = spec(50, lo=1)
    restarts: int = spec(10, lo=1)
    alpha: typing.Optional[float] = spec(None, lo=0.0)


@dataclass
class TrainConfig:
    epochs: int = spec(10, lo=1)
    precision: str = spec("fp32", choices=["fp32", "bf16", "fp16"])
    channels_last: bool = spec(False)
    device: str = spec("auto", choices=["auto", "cpu", "cuda"])
    threads: int = spec(0, lo=0, doc="torch CPU threads (0: torch's default)")
    compile: bool = spec(False, doc="torch.compile the model")
    progress: str = spec("auto", choices=["auto", "bar", "lines", "none"])
    cpu_keep_heap: bool = spec(True, doc="on CPU (Linux/glibc): keep freed activation memory for reuse instead of unmapping it (faster; keeps peak memory)")


@dataclass
class Config:
    seed: int = spec(0, lo=0)
    data: DataConfig = spec(default_factory=DataConfig)
    model: ModelConfig = spec(default_factory=ModelConfig)
    method: MethodConfig = spec(default_factory=MethodConfig)
    optim: OptimConfig = spec(default_factory=OptimConfig)
    train: TrainConfig = spec(default_factory=TrainConfig)
    monitor: MonitorConfig = spec(default_factory=MonitorConfig)
    final_eval: FinalEvalConfig = spec(default_factory=FinalEvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_FRACTION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")


def parse_number(value: Any, key: str) -> float:
    """A float from a number or a fraction string such as ``"8/255"`` (parsed, never evaluated)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: got {value!r}; expected a number (e.g. 0.1 or 8/255)")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        m = _FRACTION.match(value)
        if m:
            den = float(m.group(2))
            if den == 0:
                raise ConfigError(f"{key}: got {value!r}; the denominator must not be 0")
            return float(m.group(1)) / den
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: got {value!r}; expected a number (e.g. 0.1 or 8/255)")


def _coerce(value: Any, tp: Any, key: str, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, meta)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: got {value!r}; expected a mapping with keys {_names(tp)}")
        return _build(tp, value, key + ".")
    if origin in (list, typing.List):
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: got {value!r}; expected a list")
        return [_coerce(v, item_tp, f"{key}[{i}]", meta) for i, v in enumerate(value)]
    if value is None:
        raise ConfigError(f"{key}: got null; expected a {tp.__name__}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: got {value!r}; expected true or false")
        out = value
    elif tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{key}: got {value!r}; expected an integer")
        out = int(value)
    elif tp is float:
        out = parse_number(value, key)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: got {value!r}; expected a string")
        out = value
    else:  # pragma: no cover - schema error, not user error
        raise TypeError(f"unsupported config type {tp} for {key}")
    choices = meta.get("choices")
    if choices is not None and out not in choices:
        raise ConfigError(f"{key}: got {value!r}; allowed: {', '.join(map(str, choices))}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (out < lo or (meta.get("lo_open") and out == lo)):
        rel = ">" if meta.get("lo_open") else ">="
        raise ConfigError(f"{key}: got {value!r}; must be {rel} {lo:g}")
    if hi is not None and out > hi:
        raise ConfigError(f"{key}: got {value!r}; must be <= {hi:g}")
    return out


def _names(cls) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls))


def _build(cls, raw: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for k in raw:
        if k not in known:
            raise ConfigError(f"{prefix}{k}: unknown key; allowed keys here: {_names(cls)}")
    kwargs = {}
    for name, f in known.items():
        if name in raw:
            kwargs[name] = _coerce(raw[name], hints[name], prefix + name, dict(f.metadata))
    return cls(**kwargs)


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
    Unknown keys are caught by validation."""
    raw = _deepcopy(raw)
    pairs = ([(k.split("."), v) for k, v in overrides.items()] if isinstance(overrides, dict)
             else [parse_override(t) for t in overrides])
    for path, value in pairs:
        node = raw
        for i, part in enumerate(path[:-1]):
            nxt = node.setdefault(part, {})
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


def config_from_dict(raw: dict | None, overrides: typing.Iterable[str] | dict = ()) -> Config:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    cfg = _build(Config, apply_overrides(raw, overrides))
    check_config(cfg)
    return cfg


def load_config(path: str | Path, overrides: typing.Iterable[str] = ()) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML") from None
    return config_from_dict(raw, overrides)


def check_config(cfg: Config) -> None:
    """Cross-field checks, and names that must exist in the registries."""
    from robustlab.data import DATASETS
    from robustlab.methods import METHODS
    from robustlab.models import MODELS

    for key, name, registry in (("data.name", cfg.data.name, DATASETS), ("model.name", cfg.model.name, MODELS),
                                ("method.name", cfg.method.name, METHODS)):
        if name not in registry:
            raise ConfigError(f"{key}: got {name!r}; allowed: {', '.join(sorted(registry))}")
    if cfg.method.name != "standard" and cfg.method.eps <= 0:
        raise ConfigError(f"method.eps: got {cfg.method.eps!r}; method {cfg.method.name!r} needs eps > 0")
    if cfg.train.precision == "fp16" and cfg.train.device == "cpu":
        raise ConfigError("train.precision: got 'fp16'; fp16 with gradient scaling needs CUDA (use bf16 on CPU)")
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas: got {cfg.optim.betas!r}; expected two numbers")
    if sorted(cfg.optim.milestones) != list(cfg.optim.milestones):
        raise ConfigError(f"optim.milestones: got {cfg.optim.milestones!r}; must be increasing")
    from robustlab.methods.regularizers import default_weight
    for reg in cfg.method.regularizers:
        default_weight(reg, cfg.method.eps)  # a missing weight without a published default fails here
        if reg.fuse_forward and reg.triplet_passes != 1:
            raise ConfigError(f"method.regularizers[{reg.name}].triplet_passes: got {reg.triplet_passes}; a fused "
                              "forward is one pass (allowed with fuse_forward: 1)")
        if reg.fuse_forward and reg.name not in ("elle", "elle_a"):
            raise ConfigError(f"method.regularizers[{reg.name}].fuse_forward: got true; only elle and elle_a "
                              "have a forward-only term to fuse (allowed: elle, elle_a)")
    if cfg.model.name == "wide_resnet" and (cfg.model.depth - 4) % 6 != 0:
        raise ConfigError(f"model.depth: got {cfg.model.depth}; WideResNet needs depth = 6n+4 (16, 28, 34, 40)")
