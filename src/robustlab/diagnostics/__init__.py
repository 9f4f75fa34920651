"""Training diagnostics computed from per-epoch metrics."""
from robustlab.diagnostics.catastrophic import co_onset

__all__ = ["co_onset"]
