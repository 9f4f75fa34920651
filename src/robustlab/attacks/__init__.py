"""Attacks: one iterative loop (base.py), threat models (threat.py), and the named attacks."""
from robustlab.attacks.base import IterativeAttack
from robustlab.attacks.gradient import FGSM, NFGSM, PGD, RSFGSM, GATAttack
from robustlab.attacks.modes import attack_mode
from robustlab.attacks.threat import L2, Linf, get_threat

__all__ = ["FGSM", "GATAttack", "IterativeAttack", "L2", "Linf", "NFGSM", "PGD", "RSFGSM", "attack_mode", "get_threat"]
