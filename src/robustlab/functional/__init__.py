"""Pure tensor math shared by methods, regularisers and diagnostics (no state, no registries)."""
from robustlab.functional.linearity import (ce_loss_fn, cure_term, elle_points, elle_residual,
                                            elle_residual_from_losses, gradalign_term, input_grad, llr_residual)

__all__ = ["ce_loss_fn", "cure_term", "elle_points", "elle_residual", "elle_residual_from_losses", "gradalign_term",
           "input_grad", "llr_residual"]
