"""Training diagnostics computed from per-epoch metrics."""
from robustlab.diagnostics.catastrophic import co_onset, co_onset_in_metrics

__all__ = ["co_onset", "co_onset_in_metrics"]
