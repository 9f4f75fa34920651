"""Small trained models shared by tests (trained once per session, seconds on CPU), and runs stopped by a signal at a known step."""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.data.offline import make_synthetic


class BNNet(nn.Module):
    """A tiny conv net with BatchNorm and dropout, to check mode handling."""

    def __init__(self, c=1, k=4, side=8):
        super().__init__()
        self.conv = nn.Conv2d(c, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(8 * side * side, k)

    def forward(self, x):
        return self.fc(self.drop(F.relu(self.bn(self.conv(x)))).flatten(1))


@functools.lru_cache(maxsize=None)
def trained_synthetic_model(seed: int = 0):
    """A BNNet trained (standard training) on the synthetic set; returns (model, x_test, y_test)."""
    torch.manual_seed(seed)
    train, test = make_synthetic(n_train=512, n_test=256, seed=seed)
    model = BNNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(15):
        for i in range(0, 512, 64):
            opt.zero_grad()
            F.cross_entropy(model(train.x[i:i + 64]), train.y[i:i + 64]).backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, test.x, test.y


def signal_at_env(signum: str, epoch: int, step: int, run: str = "", env: dict | None = None) -> dict:
    """``env`` (default: this process's environment) set so that the robustlab runs it starts (only those whose run
    folder's path contains ``run``, when given) send ``signum`` to their own process after optimiser step ``step`` of
    epoch ``epoch`` (1-based; tests/signal_at/sitecustomize.py): a crash or a stop at a known point, whatever the
    machine's speed, reaching a sweep's worker processes too."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).resolve().parent / "signal_at"),
                                                    env.get("PYTHONPATH", "")] if p)
    env["ROBUSTLAB_TEST_SIGNAL_AT"] = f"{signum} {epoch} {step} {run}".strip()
    return env


def train_killed_at(config_path, run_dir, epoch: int, step: int, env: dict | None = None) -> None:
    """``robustlab train CONFIG --out RUN_DIR`` SIGKILLed after optimiser step ``step`` of epoch ``epoch``
    (1-based; :func:`signal_at_env`): a crash at a known point, whatever the machine's speed."""
    proc = subprocess.run([sys.executable, "-m", "robustlab", "train", str(config_path), "--out", str(run_dir)],
                          capture_output=True, env=signal_at_env("SIGKILL", epoch, step, env=env), timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
