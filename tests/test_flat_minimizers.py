"""The SAM family behind step(closure) (issue 13): perturbations against hand computations, GSAM's decomposition on a
quadratic, LookSAM's reuse of its stored component, BatchNorm statistics on the first pass only, exact resume."""
import copy

import pytest
import torch

import test_components  # noqa: F401  (registers test_bn_net)
from robustlab.config import config_from_dict
from robustlab.core.checkpoint import load_checkpoint
from robustlab.core.context import BuildContext
from robustlab.core.io import read_jsonl
from robustlab.core.schema import build, resolve
from robustlab.engine import Trainer, train
from robustlab.optim import MINIMIZERS


def minimizer(name, params, lr=1.0, model=None, **kw):
    """A minimiser over plain SGD (no momentum, no weight decay: the update is w - lr * direction)."""
    cfg = build(MINIMIZERS.config_class(name), {"name": name, **kw})
    resolve(cfg)
    base = torch.optim.SGD(params, lr=lr)
    opt = MINIMIZERS.build(cfg, base, BuildContext.standalone(model) if model is not None else None)
    opt.param_names = {id(p): n for n, p in model.named_parameters()} if model is not None else {}
    return opt


def closure_for(params, loss_fn, calls):
    def closure():
        for p in params:
            p.grad = None
        loss = loss_fn()
        loss.backward()
        calls.append([p.detach().clone() for p in params])   # where each pass was evaluated
        return loss
    return closure


C = torch.tensor([1.0, -2.0, 0.5])


def linear_quadratic(w):
    """L(w) = c.w + ||w||^2 / 2, so grad L(w) = c + w."""
    return (C * w).sum() + 0.5 * (w * w).sum()


def test_sam_perturbation_and_update_by_hand():
    w = torch.tensor([0.3, 0.1, -0.4], requires_grad=True)
    w0 = w.detach().clone()
    calls = []
    opt = minimizer("sam", [w], rho=0.1)
    opt.step(closure_for([w], lambda: linear_quadratic(w), calls))
    g = C + w0
    e = 0.1 * g / g.norm()
    assert torch.allclose(calls[1][0], w0 + e)                         # pass 1 at w + rho g/||g||
    assert torch.allclose(w.detach(), w0 - (C + w0 + e), atol=1e-6)    # updated with grad L(w + e), from w


@pytest.mark.parametrize("adaptive", ["all", "weights"])
def test_asam_both_conventions_by_hand(adaptive):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(8, 3)
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    calls = []
    opt = minimizer("sam", params, lr=0.1, model=model, rho=0.5, adaptive=adaptive)
    opt.step(closure_for(params, lambda: model(x).pow(2).mean(), calls))
    w, b = (s.clone().requires_grad_(True) for s in start)
    loss = (x @ w.t() + b).pow(2).mean()
    gw, gb = torch.autograd.grad(loss, [w, b])
    if adaptive == "all":      # davda54/sam: T = |p| on every parameter, eta 0
        tw, tb = start[0].abs(), start[1].abs()
    else:                      # official ASAM: T = |w| + 0.01 on 'weight' tensors, 1 on the bias
        tw, tb = start[0].abs() + 0.01, torch.ones_like(start[1])
    norm = torch.cat([(tw * gw).flatten(), (tb * gb).flatten()]).norm()
    assert torch.allclose(calls[1][0], start[0] + 0.5 * tw * tw * gw / norm, atol=1e-6)
    assert torch.allclose(calls[1][1], start[1] + 0.5 * tb * tb * gb / norm, atol=1e-6)


def test_gsam_decomposition_on_a_quadratic_and_rho_schedule():
    a = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
    w = torch.tensor([0.5, -1.0], requires_grad=True)
    w0 = w.detach().clone()
    calls = []
    opt = minimizer("gsam", [w], lr=0.1, rho_min=0.01, rho_max=0.2, alpha=0.3)
    assert opt.rho() == pytest.approx(0.2)                   # lr at its peak: rho_max
    opt.step(closure_for([w], lambda: 0.5 * w @ a @ w, calls))
    g = a @ w0
    e = 0.2 * g / g.norm()
    gs = a @ (w0 + e)
    parallel = (g @ gs) / (gs @ gs) * gs
    vertical = g - parallel
    assert abs(float(vertical @ gs)) < 1e-5                  # the decomposition is orthogonal to g_s
    assert torch.allclose(w.detach(), w0 - 0.1 * (gs - 0.3 * vertical), atol=1e-6)
    opt.base.param_groups[0]["lr"] = 0.05
    assert opt.rho() == pytest.approx(0.01 + 0.19 * 0.5)     # rho follows the lr linearly
    opt.base.param_groups[0]["lr"] = 0.0
    assert opt.rho() == pytest.approx(0.01)


def test_looksam_reuses_its_stored_orthogonal_component():
    a = torch.diag(torch.tensor([4.0, 1.0, 0.5]))
    w = torch.tensor([1.0, -1.0, 2.0], requires_grad=True)
    calls = []
    opt = minimizer("looksam", [w], lr=0.01, rho=0.3, k=3, alpha=0.7)
    closure = closure_for([w], lambda: 0.5 * w @ a @ w, calls)
    w0 = w.detach().clone()
    opt.step(closure)                                         # step 0: a SAM step that stores g_v
    assert len(calls) == 2
    g = a @ w0
    gs = a @ (w0 + 0.3 * g / g.norm())
    g_v = gs - (gs @ g) / (g @ g) * g
    assert torch.allclose(opt.g_v[0], g_v, atol=1e-6) and abs(float(g_v @ g)) < 1e-4
    for step in (1, 2):                                       # reuse: one pass, g + alpha ||g||/||g_v|| g_v
        before = w.detach().clone()
        opt.step(closure)
        assert len(calls) == 2 + step
        g = a @ before
        expected = before - 0.01 * (g + 0.7 * g.norm() / g_v.norm() * g_v)
        assert torch.allclose(w.detach(), expected, atol=1e-6)
    opt.step(closure)                                         # step 3 = k: a SAM step again
    assert len(calls) == 6


MINIMIZER_CONFIGS = {"sam": {"name": "sam", "rho": 0.05}, "asam": {"name": "sam", "rho": 0.5, "adaptive": "weights"},
                     "gsam": {"name": "gsam", "rho_min": 0.01, "rho_max": 0.05, "alpha": 0.1},
                     "looksam": {"name": "looksam", "rho": 0.05, "k": 3}, "large_rho_sam": {"name": "large_rho_sam"}}


def bn_config(minimizer_cfg, epochs):
    return {"seed": 0, "plugins": ["test_components"], "data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
            "model": {"name": "test_bn_net"}, "method": {"name": "fgsm", "eps": 0.1},
            "optim": {"name": "sgd", "lr": 0.05, "schedule": "constant", "minimizer": minimizer_cfg},
            "train": {"epochs": epochs, "progress": "none", "threads": 1},
            "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []}, "final_eval": {"points": 0}}


@pytest.mark.parametrize("which", ["sam", "gsam", "looksam"])
def test_batchnorm_statistics_change_on_the_first_pass_only(tmp_path, which):
    raw = bn_config(MINIMIZER_CONFIGS[which], 1)
    raw["method"] = {"name": "standard", "eps": 0.1}
    trainer = Trainer(config_from_dict(raw), tmp_path / "run", log=lambda s: None)
    trainer._build()
    batch = next(iter(trainer.loader))
    reference = copy.deepcopy(trainer.model).train()
    with torch.no_grad():
        reference(batch.x)
    trainer.train_model.train()
    trainer._step(batch, 0.0)
    bn, ref = trainer.model[1].bn, reference[1].bn
    assert int(bn.num_batches_tracked) == 1
    assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)


@pytest.mark.parametrize("which", list(MINIMIZER_CONFIGS))
def test_resume_is_exact_for_every_minimizer(tmp_path, which):
    """One epoch, then the same run extended to two (a resume from last.pt: base optimiser momentum and the
    minimiser's own state, e.g. LookSAM's stored component, come back) equals two epochs straight."""
    cfg = MINIMIZER_CONFIGS[which]
    train(config_from_dict(bn_config(cfg, 1)), tmp_path / "resumed", log=lambda s: None)
    train(config_from_dict(bn_config(cfg, 2)), tmp_path / "resumed", log=lambda s: None)
    train(config_from_dict(bn_config(cfg, 2)), tmp_path / "straight", log=lambda s: None)
    drop = ("seconds", "eval_seconds")
    rows = [[{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(tmp_path / d / "metrics.jsonl")]
            for d in ("resumed", "straight")]
    assert rows[0] == rows[1]
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("resumed", "straight"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    if which == "looksam":
        assert a["optimizer"]["own"]["g_v"] is not None


def test_sam_at_is_a_config_and_names_bad_keys():
    cfg = config_from_dict(bn_config({"name": "sam", "rho": 0.1}, 1), {"method.name": "pgd", "method.steps": 2})
    assert cfg.optim.minimizer.rho == 0.1 and cfg.method.name == "pgd"
    from robustlab.config import ConfigError
    with pytest.raises(ConfigError, match="optim.minimizer.eta: got 0.01; eta belongs to ASAM"):
        config_from_dict(bn_config({"name": "sam", "eta": 0.01}, 1))
    with pytest.raises(ConfigError, match="optim.minimizer.adaptive: got 'yes'; allowed: none, all, weights"):
        config_from_dict(bn_config({"name": "sam", "adaptive": "yes"}, 1))


def test_asam_by_name_covers_method_modules_and_refuses_unnamed_parameters(tmp_path):
    """The official ASAM convention picks 'weight' tensors by name: the trainer names the method's own modules too
    (ARAT's predictors get T = |w| + eta, not plain-SAM scaling), and a parameter without a name is an error."""
    from test_arat import raw
    from robustlab.core.errors import ConfigError
    cfg = raw()
    cfg["optim"]["minimizer"] = {"name": "sam", "adaptive": "weights"}
    trainer = Trainer(config_from_dict(cfg), tmp_path / "r", log=lambda s: None)
    trainer._build()
    predictors = [p for m in trainer.method_modules.values() for p in m.parameters()]
    assert predictors and all(id(p) in trainer.optimizer.param_names for p in predictors)
    weights = [p for p in predictors if p.ndim > 1]
    assert weights and all(trainer.optimizer.is_weight(p) for p in weights)
    w = torch.nn.Parameter(torch.ones(2))
    opt = minimizer("sam", [w], rho=0.5, adaptive="weights")
    with pytest.raises(ConfigError, match="'weights' picks parameters by name, and a parameter has none"):
        opt.step(closure_for([w], lambda: (w * w).sum(), []))
