"""robustlab: adversarial-robustness research in PyTorch.

Layers (data flows one way): data, models, attacks -> methods, optim -> engine (trainer) -> eval -> report -> cli.
"""
__version__ = "0.1.0"
