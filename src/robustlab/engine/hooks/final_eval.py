"""The final evaluation (``final_eval``): when training ends normally, the last and the best checkpoints (and every
model a hook offers, e.g. SWA's averaged model) are evaluated on the first ``final_eval.points`` test points by the
registered protocol ``final_eval.protocol`` (PGD-``steps``-``restarts`` with step ``alpha``, default PGD-50-10 at
eps/4; the standard AutoAttack; or PGD then AutoAttack), each split-BN branch beside the deployed one, in fp32 whatever
the training precision, in chunks of ``data.eval_batch_size`` points: the figures ``robustlab eval RUN --attack
<protocol> --n <points> --batch-size <eval_batch_size>`` gives. ``best_minus_last`` is the robust-overfitting gap
under this protocol (Rice et al., 2020). The model is left holding the last weights."""
from __future__ import annotations

from robustlab.core import checkpoint as ckpt_io
from robustlab.engine.hooks.branches import auxiliary_branches
from robustlab.models.split_bn import bn_branch


class FinalEvaluation:
    """Not a phase hook: the trainer calls :meth:`evaluate` once, when training ended normally."""

    @classmethod
    def build(cls, cfg, run):
        return cls() if min(cfg.final_eval.points, len(run.data.test)) > 0 and cfg.method.eps > 0 else None

    def evaluate(self, run, hooks) -> dict:
        fe, eps, norm = run.cfg.final_eval, run.cfg.method.eps, run.cfg.method.norm
        n = min(fe.points, len(run.data.test))
        protocol = fe.build_protocol()
        spec = protocol.pgd_spec(eps, norm)
        x, y = run.on_device(run.data.test, n)
        out = {"attack": spec.to_dict() if spec is not None else None, "protocol": protocol.title(eps, norm),
               "n_examples": n, **protocol.notes()}

        def figures(model=None):
            res = run.evaluate(x, y, [protocol], model=model, run_precision=False)
            return {"clean_acc": res["clean"], "robust_acc": res["robust"][0], "seconds": res["seconds"]}

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
