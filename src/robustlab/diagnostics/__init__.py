"""Training diagnostics: catastrophic-overfitting detection (rules on metric curves) and registered
per-epoch measurements of the model (:data:`DIAGNOSTICS`: ``linearity``)."""
from robustlab.diagnostics.base import DIAGNOSTICS, Diagnostic, DiagnosticConfig
from robustlab.diagnostics.catastrophic import (co_fires, co_onset, co_onset_in_metrics, collapse_verdict,
                                                collapse_verdict_in_metrics, linearity_lead, linearity_rise_epoch,
                                                robustness_lost_epoch)
from robustlab.diagnostics.linearity import Linearity, linearity_diagnostics
from robustlab.diagnostics.overfitting import robust_overfitting
from robustlab.diagnostics.sharpness import Sharpness, hutchinson_trace, sharpness, top_eigenvalue

__all__ = ["DIAGNOSTICS", "Diagnostic", "DiagnosticConfig", "Linearity", "collapse_verdict", "collapse_verdict_in_metrics",
           "co_fires", "co_onset", "co_onset_in_metrics", "linearity_diagnostics", "linearity_lead", "linearity_rise_epoch",
           "robustness_lost_epoch", "robust_overfitting", "Sharpness", "hutchinson_trace", "sharpness", "top_eigenvalue"]
