"""The one evaluation engine: registered protocols (registry.py: pgd, fgsm, autoattack, pgd+autoattack) run as a
resumable cascade of stages (cascade.py); several protocols side by side on the same points (accuracy.py). Every
evaluation robustlab makes runs here: the per-epoch monitor, SWA's evaluation, the final evaluation, the sanity checks,
``robustlab eval`` and studies' evaluations."""
from robustlab.protocols.accuracy import evaluate
from robustlab.protocols.cascade import AutoAttackStage, PGDStage, StateMismatch, autoattack_stages, run_cascade
from robustlab.protocols.registry import (EVAL_ATTACKS, AutoAttackConfig, FGSMProtocol, PGDAutoAttackConfig,
                                          PGDProtocol, PGDProtocolConfig, Protocol, ProtocolConfig, fgsm_protocol,
                                          pgd_protocol, protocol_name)

__all__ = ["EVAL_ATTACKS", "AutoAttackConfig", "AutoAttackStage", "FGSMProtocol", "PGDAutoAttackConfig", "PGDProtocol",
           "PGDProtocolConfig", "PGDStage", "Protocol", "ProtocolConfig", "StateMismatch", "autoattack_stages",
           "evaluate", "fgsm_protocol", "pgd_protocol", "protocol_name", "run_cascade"]
