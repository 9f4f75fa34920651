"""A study file's ``evaluations:``: the separate evaluations its claims are judged on, run by ``robustlab sweep``
after its trials (each ended trial's checkpoints, as ``robustlab eval STUDY_DIR`` does), so that one command trains,
evaluates and judges a claim study::

    evaluations:
      - {checkpoint: last, n: 500}                                        # PGD-50-10 on 500 test points
      - {checkpoint: last, attack: pgd+autoattack, n: 100, sanity: 0, threads: 1}

Each entry takes ``robustlab eval``'s options by name (``checkpoint`` best or last, default both; ``attack`` a
registered protocol, default pgd; ``n``, ``sanity``, ``steps``, ``restarts``, ``alpha``, ``loss``, ``eps``, ``norm``,
``batch_size``, ``precision``; ``threads``, default 0: torch's own). They are checked here, when the study is
expanded, so a typo is an error before any training, not after it. They run in as many processes as the sweep
has workers, which share the trials (robustlab.eval.study.eval_study_in_processes). The figures land in the table as
``eval_<protocol>_n<N>_{best,last}_{clean,robust}_acc`` (docs: README, "Studies"), the columns claims name.
"""
from __future__ import annotations

from robustlab.core.errors import ConfigError
from robustlab.protocols import EVAL_ATTACKS

INTEGERS = {"n": 1, "sanity": 0, "steps": 1, "restarts": 1, "batch_size": 1, "threads": 0}   # key: least value
CHOICES = {"checkpoint": ("best", "last"), "norm": ("linf", "l2"), "precision": ("fp32", "bf16"),
           "attack": tuple(EVAL_ATTACKS)}
OTHERS = ("alpha", "loss", "eps")           # checked by the protocol's config where the request is built
EVALUATION_KEYS = (*CHOICES, *INTEGERS, *OTHERS)


def parse_evaluations(raw) -> list[dict]:
    """The study's ``evaluations:`` list, checked (key names, choices, integer ranges); [] when absent."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise ConfigError(f"study.evaluations: got {raw!r}; expected a list of mappings, e.g. [{{checkpoint: last, n: 500}}]")
    for i, entry in enumerate(raw):
        where = f"study.evaluations[{i}]"
        for key, value in entry.items():
            if key not in EVALUATION_KEYS:
                raise ConfigError(f"{where}.{key}: unknown key; allowed: {', '.join(sorted(EVALUATION_KEYS))}")
            if key in CHOICES and value not in CHOICES[key]:
                raise ConfigError(f"{where}.{key}: got {value!r}; allowed: {', '.join(CHOICES[key])}")
            if key in INTEGERS and (isinstance(value, bool) or not isinstance(value, int) or value < INTEGERS[key]):
                raise ConfigError(f"{where}.{key}: got {value!r}; must be an integer >= {INTEGERS[key]}")
    return [dict(e) for e in raw]
