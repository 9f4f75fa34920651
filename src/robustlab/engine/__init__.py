"""Training engine: trainer loop, run folders, checkpoint/resume, atomic I/O."""
from robustlab.engine.trainer import Trainer, train

__all__ = ["Trainer", "train"]
