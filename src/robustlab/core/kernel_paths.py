"""CPU numeric (kernel) paths: which vectorised kernels torch and oneDNN run, chosen by environment variables.

Training is chaotic: a run is deterministic for one kernel path, but the same seed gives another trajectory on
another path (AVX-512 vs AVX2 vs scalar kernels round differently). A scientific claim is therefore counted over
seeds *and* paths. ``train.kernel_path`` makes the path a config key, so that a study can vary it like any other:

- ``inherit`` (default): whatever the process's environment says (nothing is checked);
- ``machine``: the best path this CPU has (neither variable set);
- ``default``: ``ATEN_CPU_CAPABILITY=default`` (ATen's non-vectorised kernels; oneDNN as the machine);
- ``avx2``: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` (on an AVX-512 CPU this reproduces an AVX2-only
  machine's figures exactly: docs/co-claims.md);

torch reads these variables once per process, before its first kernel runs, so a path is set on a *new* process:
the sweep executors start each trial with its path's variables, and ``robustlab train`` restarts itself under
them. :func:`check_kernel_path` refuses a run whose process cannot be on the requested path.
"""
from __future__ import annotations

import os

from robustlab.core.errors import ConfigError

VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
KERNEL_PATHS: dict[str, dict[str, str | None]] = {
    "machine": {"ATEN_CPU_CAPABILITY": None, "ONEDNN_MAX_CPU_ISA": None},
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": None},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
CHOICES = ("inherit", *KERNEL_PATHS)


def path_environment(name: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the variables of path ``name`` set or removed."""
    env = dict(os.environ if base is None else base)
    if name == "inherit":
        return env
    if name not in KERNEL_PATHS:
        raise ConfigError(f"train.kernel_path: got {name!r}; allowed: {', '.join(CHOICES)}")
    for var, value in KERNEL_PATHS[name].items():
        if value is None:
            env.pop(var, None)
        else:
            env[var] = value
    return env


def on_path(name: str, environ: dict[str, str] | None = None) -> bool:
    """Whether ``environ`` (default: this process's) already selects path ``name``."""
    environ = os.environ if environ is None else environ
    if name == "inherit":
        return True
    return all(environ.get(var) == path_environment(name, environ).get(var) for var in VARIABLES)


def check_kernel_path(name: str) -> None:
    """Raise unless this process runs on path ``name`` (its variables must have been set before it started)."""
    if on_path(name):
        return
    want = " ".join(f"{k}={v}" for k, v in KERNEL_PATHS[name].items() if v is not None) or \
        "neither ATEN_CPU_CAPABILITY nor ONEDNN_MAX_CPU_ISA set"
    have = " ".join(f"{k}={os.environ[k]}" for k in VARIABLES if k in os.environ) or "neither variable set"
    raise ConfigError(f"train.kernel_path: got {name!r}, but this process has {have}; torch reads the path when a "
                      f"process starts: start it with {want} (robustlab train and robustlab sweep do this), "
                      f"or set train.kernel_path=inherit")


def check_compile(compile: bool, device_type: str, environ: dict[str, str] | None = None) -> None:
    """Refuse ``train.compile`` for a CPU run on the ``default`` path: under ``ATEN_CPU_CAPABILITY=default``
    torch.compile's C++ back end (inductor, torch 2.13) emits vectorised code that its own build then rejects
    (``'at::vec' has not been declared``) for PreActResNet-18's training step (benchmarks/RESULTS.md section 24);
    the run would otherwise fail at its first step with a page of compiler output."""
    environ = os.environ if environ is None else environ
    if compile and device_type == "cpu" and environ.get("ATEN_CPU_CAPABILITY") == "default":
        raise ConfigError("train.compile: torch.compile's CPU back end fails to build its kernels under "
                          "ATEN_CPU_CAPABILITY=default (train.kernel_path: default); set train.compile: false, or "
                          "run on another kernel path (avx2 or machine)")
