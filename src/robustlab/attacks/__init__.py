"""Attacks: one iterative loop (base.py), threat models (threat.py), the named attacks (gradient.py), and
the pieces evaluations are made of (accuracy.py)."""
from robustlab.attacks.accuracy import EVAL_SEED, AttackSpec, build_eval_attack, predict
from robustlab.attacks.base import IterativeAttack
from robustlab.attacks.gradient import FGSM, NFGSM, PGD, RSFGSM, GATAttack
from robustlab.attacks.modes import attack_mode
from robustlab.attacks.threat import L2, Linf, get_threat

__all__ = ["EVAL_SEED", "FGSM", "GATAttack", "IterativeAttack", "L2", "Linf", "NFGSM", "PGD", "RSFGSM", "AttackSpec",
           "attack_mode", "build_eval_attack", "get_threat", "predict"]
