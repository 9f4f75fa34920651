"""What a run ran on: versions, device, threads, seed, git commit and command line."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import robustlab


def git_commit() -> str | None:
    here = Path(robustlab.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), with whether it has AVX-512 and AVX512_BF16."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = "AVX-512" + (" + BF16" if "avx512_bf16" in flags else "") if "avx512f" in flags else \
        "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name} ({isa})" if name else None


def kernel_path() -> dict:
    """Which CPU kernels this process runs: torch's dispatch level and the variables that select it. The same seed
    gives other trajectories on another path (docs: claims are counted over several paths)."""
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
            "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA")}


def environment(device: torch.device, seed: int, command: list[str] | None = None) -> dict:
    """This process's environment. ``command`` is the user's command line when it differs from this process's
    (a study trial runs in a worker process: its argv is kept as ``process_argv``)."""
    import numpy
    env = {"robustlab": robustlab.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
           "numpy": numpy.__version__, "platform": platform.platform(), "host": platform.node(),
           "processor": platform.processor(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "device": str(device), "seed": seed, "git_commit": git_commit(), "command": command or sys.argv,
           "kernel_path": kernel_path(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if command:
        env["process_argv"] = sys.argv
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


START_KEYS = ("started", "command", "host", "device", "gpu", "kernel_path", "torch_threads", "git_commit", "robustlab",
              "torch", "world_size")


def with_start_history(env: dict, previous: dict | None, resumed_after_epoch: int) -> dict:
    """``env`` (this start) plus ``starts``: every start of the run, oldest first, each with its command line,
    machine, kernel path and the epoch it resumed after (0: a fresh start). A run resumed on another machine or
    kernel path shows it here."""
    starts = list((previous or {}).get("starts") or ([] if not previous else
                                                     [{k: previous[k] for k in START_KEYS if k in previous}]))
    starts.append({**{k: env[k] for k in START_KEYS if k in env}, "resumed_after_epoch": resumed_after_epoch})
    return {**env, "starts": starts}
