"""Training methods by name: a method is one loss over a batch (base.py); regularisers compose onto it
(regularizers/). Add a method by subclassing :class:`Method` and registering it in :data:`METHODS`."""
from robustlab.methods import arat, mart, trades  # noqa: F401  (register arat, trades, mart)
from robustlab.methods.adversarial import build_method
from robustlab.methods.base import METHODS, LossOutput, Method, MethodConfig
from robustlab.methods.regularizers import REGULARIZERS, Regularizer, RegularizerConfig

__all__ = ["METHODS", "REGULARIZERS", "LossOutput", "Method", "MethodConfig", "Regularizer", "RegularizerConfig",
           "build_method"]
