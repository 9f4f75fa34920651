"""A signal at a known optimiser step, for the crash and interrupt tests (a timed kill used to miss on a fast CI
machine, which finished the run first).

Python imports ``sitecustomize`` at start-up from the first folder on its path that has one; the tests put this
folder on ``PYTHONPATH`` (``helpers.signal_at_env``), so it reaches every process a command starts, a sweep's
worker processes included. With ``ROBUSTLAB_TEST_SIGNAL_AT="SIGNAL EPOCH STEP [RUN]"`` set, every robustlab run
(or only those whose run folder's path contains RUN) gets one more run hook that sends SIGNAL (SIGKILL: a power cut
or the OOM killer; SIGTERM: a scheduler's stop) to its own process after optimiser step STEP of epoch EPOCH (both
1-based), after every other hook's ``after_step``. Without the variable this file does nothing.
"""
import os

_SPEC = os.environ.get("ROBUSTLAB_TEST_SIGNAL_AT")

if _SPEC:
    import signal

    from robustlab.engine import hooks
    from robustlab.engine.hooks import RunHook

    _name, _epoch, _step, *_run = _SPEC.split()

    class SignalAt(RunHook):
        name = "signal_at"
        signum, epoch, step, run_part = signal.Signals[_name], int(_epoch), int(_step), (_run or [""])[0]

        @classmethod
        def build(cls, cfg, run):
            return cls() if cls.run_part in str(run.run_dir) else None

        def __init__(self):
            self.steps_in_epoch = {}

        def after_step(self, run, epoch, step, ctx):
            self.steps_in_epoch[epoch] = self.steps_in_epoch.get(epoch, 0) + 1
            if epoch + 1 == self.epoch and self.steps_in_epoch[epoch] == self.step:
                os.kill(os.getpid(), self.signum)

    hooks.RUN_HOOKS = hooks.RUN_HOOKS + (SignalAt,)
