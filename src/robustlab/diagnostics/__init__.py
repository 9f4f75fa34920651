"""Training diagnostics: catastrophic-overfitting detection and local-linearity measurements."""
from robustlab.diagnostics.catastrophic import co_fires, co_onset, co_onset_in_metrics

__all__ = ["co_fires", "co_onset", "co_onset_in_metrics"]
