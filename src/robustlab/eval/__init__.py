"""Evaluation as a library and a command: any model, any registered protocol (PGD, AutoAttack, cascades),
sanity checks, resumable state. ``evaluate_model`` returns the object ``robustlab eval`` writes."""
from robustlab.attacks.accuracy import AttackSpec, build_eval_attack, predict
from robustlab.eval.library import evaluate_model, eval_markdown, test_points, write_result
from robustlab.eval.loading import LoadedModel, load_exported, load_external_model, load_model, load_run_model
from robustlab.protocols import EVAL_ATTACKS, evaluate

__all__ = ["EVAL_ATTACKS", "AttackSpec", "LoadedModel", "build_eval_attack", "eval_markdown", "evaluate", "evaluate_model",
           "load_exported", "load_external_model", "load_model", "load_run_model", "predict", "test_points", "write_result"]
