"""Evaluation: clean and robust accuracy under named protocols (default PGD-50-10, step eps/4)."""
from robustlab.eval.robust import AttackSpec, build_eval_attack, evaluate, predict

__all__ = ["AttackSpec", "build_eval_attack", "evaluate", "predict"]
