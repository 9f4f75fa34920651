"""Training methods by name: a method is one loss over a batch (see base.py); regularisers compose onto it."""
from robustlab.methods.adversarial import METHODS, build_method
from robustlab.methods.base import LossOutput, Method, Regularizer

__all__ = ["METHODS", "LossOutput", "Method", "Regularizer", "build_method"]
