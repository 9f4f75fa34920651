"""The final evaluation (``final_eval``): when training ends normally, the last and the best checkpoints (and every
model a hook offers, e.g. SWA's averaged model) are evaluated on the first ``final_eval.points`` test points with
PGD-``steps``-``restarts`` (step ``alpha``, default eps/4; PGD-50-10 by default), each split-BN branch beside the
deployed one, in fp32 whatever the training precision. ``best_minus_last`` is the robust-overfitting gap under this
protocol (Rice et al., 2020). The model is left holding the last weights."""
from __future__ import annotations

from robustlab.attacks import AttackSpec
from robustlab.core import checkpoint as ckpt_io
from robustlab.engine.hooks.branches import auxiliary_branches
from robustlab.models.split_bn import bn_branch


class FinalEvaluation:
    """Not a phase hook: the trainer calls :meth:`evaluate` once, when training ended normally."""

    @classmethod
    def build(cls, cfg, run):
        return cls() if min(cfg.final_eval.points, len(run.data.test)) > 0 and cfg.method.eps > 0 else None

    def evaluate(self, run, hooks) -> dict:
        fe = run.cfg.final_eval
        n = min(fe.points, len(run.data.test))
        spec = AttackSpec("pgd", run.cfg.method.eps, fe.alpha, fe.steps, fe.restarts, run.cfg.method.norm)
        x, y = run.on_device(run.data.test, n)
        out = {"attack": spec.to_dict(), "protocol": spec.describe(), "n_examples": n}

        def figures(model=None):
            res = run.evaluate(x, y, [spec], model=model, run_precision=False)
            return {"clean_acc": res["clean"], "robust_acc": res[spec.describe()], "seconds": res["seconds"]}

        for which in ("last", "best"):
            if which == "best":
                path = run.ckpt_dir / "best.pt"
                if not path.is_file():
                    continue
                run.model.load_state_dict(ckpt_io.load_checkpoint(path, run.device)["model"])
            out[which] = figures()
            for branch in auxiliary_branches(run.model):
                with bn_branch(run.model, branch):
                    res = figures()
                out[which].setdefault("branches", {})[branch] = {k: res[k] for k in ("clean_acc", "robust_acc")}
        for hook in hooks:
            for name, (model, extra) in hook.final_models(run).items():
                out[name] = {**figures(model), **extra}
        if "best" in out and "last" in out:
            out["best_minus_last"] = out["best"]["robust_acc"] - out["last"]["robust_acc"]
        run.model.load_state_dict(ckpt_io.load_checkpoint(run.ckpt_dir / "last.pt", run.device)["model"])
        return out
