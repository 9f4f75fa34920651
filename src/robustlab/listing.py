"""``robustlab list [KIND]``: every registered component with the keys its config accepts and their defaults, read
from the registries (so plug-ins imported with ``plugins:`` would show too)."""
from __future__ import annotations

import dataclasses

from robustlab.attacks.transfer import TRANSFER_ATTACKS
from robustlab.config import config_from_dict  # noqa: F401  (importing the config fills every registry)
from robustlab.data import DATASETS
from robustlab.diagnostics import DIAGNOSTICS
from robustlab.methods import METHODS, REGULARIZERS
from robustlab.methods.regularizers import WEIGHT_SCHEDULES
from robustlab.models import MODELS, NORM_LAYERS
from robustlab.optim import LR_SCHEDULES, MINIMIZERS, OPTIMIZERS
from robustlab.protocols import EVAL_ATTACKS
from robustlab.tracking import TRACKERS

KINDS = {"methods": METHODS, "regularizers": REGULARIZERS, "weight-schedules": WEIGHT_SCHEDULES,
         "optimizers": OPTIMIZERS, "minimizers": MINIMIZERS, "lr-schedules": LR_SCHEDULES, "diagnostics": DIAGNOSTICS,
         "attacks": EVAL_ATTACKS, "models": MODELS, "norm-layers": NORM_LAYERS, "datasets": DATASETS,
         "trackers": TRACKERS, "transfer-attacks": TRANSFER_ATTACKS}


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return getattr(value, "name", type(value).__name__)
    return repr(value)


def describe(kind: str) -> str:
    registry = KINDS[kind]
    lines = [f"{kind}:"]
    for name in registry:
        if kind == "datasets":
            lines.append(f"  {name}")
            continue
        cls = registry.config_class(name)
        keys = ", ".join(f"{f.name}={_default(f)}" for f in dataclasses.fields(cls) if f.name != "name")
        lines.append(f"  {name}" + (f"  ({keys})" if keys else ""))
    return "\n".join(lines)


def describe_registries(kind: str | None = None) -> str:
    return "\n".join(describe(k) for k in ([kind] if kind else KINDS))
