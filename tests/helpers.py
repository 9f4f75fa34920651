"""Small trained models shared by tests (trained once per session, seconds on CPU), and a run cut by SIGKILL."""
from __future__ import annotations

import functools
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


def train_killed_at(config_path, run_dir, epoch: int, step: int, env: dict | None = None) -> None:
    """``robustlab train CONFIG --out RUN_DIR`` SIGKILLed after optimiser step ``step`` of epoch ``epoch`` (1-based;
    tests/sigkill_at.py): a crash at a known point, whatever the machine's speed."""
    killer = Path(__file__).resolve().parent / "sigkill_at.py"
    proc = subprocess.run([sys.executable, str(killer), str(epoch), str(step), "train", str(config_path),
                           "--out", str(run_dir)], capture_output=True, env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]
