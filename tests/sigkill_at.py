"""Run the robustlab CLI with one more run hook that SIGKILLs the process after optimiser step STEP of epoch EPOCH
(both 1-based): a crash at a known point inside an epoch, so that the resume tests do not hang on timing (a fast CI
machine used to finish the run before a timed kill landed).

    python tests/sigkill_at.py EPOCH STEP train CONFIG --out RUN_DIR
"""
import os
import signal
import sys

from robustlab.cli import main
from robustlab.engine import hooks
from robustlab.engine.hooks import RunHook


class SigkillAt(RunHook):
    """Kills its own process, as a power cut or the OOM killer would, after every other hook's ``after_step``."""
    name = "sigkill_at"
    epoch, step = 0, 0

    def __init__(self):
        self.steps_in_epoch = {}

    def after_step(self, run, epoch, step, ctx):
        self.steps_in_epoch[epoch] = self.steps_in_epoch.get(epoch, 0) + 1
        if epoch + 1 == self.epoch and self.steps_in_epoch[epoch] == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    SigkillAt.epoch, SigkillAt.step = int(sys.argv[1]), int(sys.argv[2])
    hooks.RUN_HOOKS = hooks.RUN_HOOKS + (SigkillAt,)
    sys.exit(main(sys.argv[3:]))
