"""robustlab: adversarial-robustness research in PyTorch.

Layers, each importing only those below it (pyproject.toml [tool.importlinter]; docs/architecture.md):
core -> functional -> data, models, attacks -> diagnostics -> methods, optim, report -> config -> engine ->
eval, sweep -> demo -> cli.
"""
__version__ = "0.1.0"
