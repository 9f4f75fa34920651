"""A transfer study file, parsed and validated (the format: :mod:`robustlab.eval.transfer`): the models (surrogates
and targets, each a run, a study's trials or an outside model), the transfer attacks (BIM / MI / DI / TI,
:mod:`robustlab.attacks.transfer`), the examples and the claims."""
from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

from robustlab.attacks.transfer import TRANSFER_ATTACKS, TransferAttackConfig
from robustlab.core.errors import ConfigError
from robustlab.core.schema import build, components, resolve, spec
from robustlab.core.yamlio import read_yaml
from robustlab.report.claims import Claim


@dataclass
class ModelRef:
    """One model, or every trial of a study: exactly one of ``run``, ``study``, ``model``."""
    run: typing.Optional[str] = spec(None, doc="a run folder, RUN@EPOCH, a checkpoint or an exported .safetensors")
    study: typing.Optional[str] = spec(None, doc="a study folder: every finished trial")
    model: typing.Optional[str] = spec(None, doc="package.module:builder (a model robustlab did not train)")
    weights: typing.Optional[str] = spec(None, doc="with model: its weights file")
    checkpoint: str = spec("last", choices=["best", "last", "swa"], doc="which checkpoint of a run folder")
    label: typing.Optional[str] = spec(None, doc="the name in tables; models sharing a label are pooled (seeds)")
    epochs: list[int] = spec(default_factory=list, doc="with run or study: the weights kept after these epochs "
                                                       "(train.keep_epochs / keep_every) instead of checkpoint; each "
                                                       "is its own surrogate, labelled '<label>@<epoch>'")

    def check(self, key: str) -> None:
        given = [k for k in ("run", "study", "model") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError(f"{key.rstrip('.')}: give exactly one of run, study, model (got {', '.join(given) or 'none'})")
        if self.weights is not None and self.model is None:
            raise ConfigError(f"{key}weights: goes with model: package.module:builder")


@dataclass
class TransferStudyConfig:
    name: str = spec("transfer")
    surrogates: list[ModelRef] = spec(default_factory=list)
    targets: list[ModelRef] = spec(default_factory=list)
    attacks: list[TransferAttackConfig] = components(TRANSFER_ATTACKS, "transfer attacks (robustlab list "
                                                     "transfer-attacks); an entry without a name is bim",
                                                     default_factory=lambda: [TransferAttackConfig()], default="bim")
    data: typing.Optional[str] = spec(None, doc="data set of the test points (default: the first surrogate run's data)")
    examples: str = spec("correct_on_targets", choices=["correct_on_targets", "all"],
                         doc="correct_on_targets: the first N test points every target classifies correctly (LGV)")
    points: int = spec(1000, lo=1)
    chunk: int = spec(250, lo=1, doc="points crafted and stored per resumable chunk")
    batch_size: int = spec(250, lo=1)
    sharpness_points: int = spec(500, lo=0, doc="training points for each surrogate's sharpness (0: skip)")
    min_target_accuracy: float = spec(0.8, lo=0.0, hi=1.0, doc="targets below this clean accuracy on the test split "
                                      "are flagged in the results and the report")
    claims: list[Claim] = spec(default_factory=list, doc="what the study must show (robustlab.eval.transfer_claims): "
                        "[{says, group, versus, above, at_least}] over the surrogates' labels")

    def check(self, key: str) -> None:
        for what in ("surrogates", "targets"):
            if not getattr(self, what):
                raise ConfigError(f"{key}{what}: empty; name at least one model")
        labels = [a.label for a in self.attacks]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{key}attacks: labels must differ (got {labels})")


def load_transfer_study(path: str | Path) -> TransferStudyConfig:
    path = Path(path)
    raw = read_yaml(path, "transfer study file")
    if not isinstance(raw, dict):
        raise ConfigError(f"transfer study file {path}: expected a mapping")
    cfg = build(TransferStudyConfig, raw)
    resolve(cfg)
    base = path.parent
    for ref in cfg.surrogates + cfg.targets:     # paths relative to the study file
        for attr in ("run", "study", "weights"):
            value = getattr(ref, attr)
            if value is not None and not Path(value.split("@")[0]).is_absolute():
                candidate = base / value
                if Path(candidate.as_posix().split("@")[0]).exists() or candidate.exists():
                    setattr(ref, attr, str(candidate))
    return cfg
