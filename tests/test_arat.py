"""ARAT (issue 12): stop-gradient checked with autograd, the loss against a hand computation, auto-balance on a
scripted accuracy, predictors optimised / checkpointed / resumed, the reference's aliasing only behind its flag."""
import pytest
import torch
import torch.nn.functional as F

from robustlab.config import config_from_dict
from robustlab.core.checkpoint import load_checkpoint
from robustlab.core.io import read_jsonl
from robustlab.engine import Trainer, train
from robustlab.models import SplitBatchNorm2d, bn_branch

LAYERS = ["1.features.23", "1.features.26"]      # the last two normalisation layers of VGG-11


def raw(epochs=1, **method):
    return {"seed": 0, "data": {"name": "synthetic", "val_size": 64, "batch_size": 32, "train_size": 96},
            "model": {"name": "vgg", "depth": 11, "width": 0.0625, "norm_layer": {"name": "split_batchnorm"}},
            "method": {"name": "arat", "eps": 0.1, "steps": 2, "layers": LAYERS, "weight": 30.0, **method},
            "optim": {"lr": 0.05, "schedule": "constant"},
            "train": {"epochs": epochs, "progress": "none", "threads": 1},
            "monitor": {"eval_points": 32, "attack_steps": 2, "diagnostics": []}, "final_eval": {"points": 0}}


def built(tmp_path, **method):
    t = Trainer(config_from_dict(raw(**method)), tmp_path / "r", log=lambda s: None)
    t._build()
    return t


def branch_params(model, branch):
    return [p for m in model.modules() if isinstance(m, SplitBatchNorm2d) for p in getattr(m, branch).parameters()]


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_the_invariance_term_sends_no_gradient_into_the_clean_features(tmp_path, stop_gradient):
    t = built(tmp_path, auto_balance=False, ce_weights=[0.0, 0.0], stop_gradient=stop_gradient)
    batch = next(iter(t.loader))
    ctx = t.method.prepare(t.model, batch, 0.0)
    t.model.train()
    out = t.method.objective(t.model, batch, ctx)        # = lambda * invariance only
    out.loss.backward()
    clean = [p.grad for p in branch_params(t.model, "clean")]
    adv = [p.grad for p in branch_params(t.model, "adv")]
    assert any(g is not None and g.abs().sum() > 0 for g in adv)
    reaches_clean = any(g is not None and g.abs().sum() > 0 for g in clean)
    assert reaches_clean is (not stop_gradient)
    assert all(p.grad is not None for p in t.method.heads.parameters())   # the predictors learn from it


def test_loss_against_a_hand_computation(tmp_path):
    t = built(tmp_path, auto_balance=False, ce_weights=[0.6, 0.4])
    batch = next(iter(t.loader))
    ctx = t.method.prepare(t.model, batch, 0.0)
    t.model.train()
    torch.manual_seed(0)
    got = t.method.objective(t.model, batch, ctx).loss
    # by hand: hooks on the two layers, ReLU + global average pooling, the predictors, 1 - cosine, CE weights
    feats = {}
    modules = dict(t.model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: feats.__setitem__(n, o)) for n in LAYERS]
    with bn_branch(t.model, "clean"):
        lc = t.model(ctx["x_clean"])
    zc = [F.relu(feats[n]).mean((2, 3)) for n in LAYERS]
    with bn_branch(t.model, "adv"):
        la = t.model(ctx["x_train"])
    za = [F.relu(feats[n]).mean((2, 3)) for n in LAYERS]
    for h in hooks:
        h.remove()
    inv = sum(1 - F.cosine_similarity(t.method.heads[str(i)](za[i]), zc[i].detach(), dim=1).mean()
              for i in range(2)) / 2
    expected = 0.6 * F.cross_entropy(la, batch.y) + 0.4 * F.cross_entropy(lc, batch.y) + 30.0 * inv
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_auto_balance_follows_the_clean_branch_accuracy(tmp_path, monkeypatch):
    t = built(tmp_path)
    monkeypatch.setattr(t.method, "clean_accuracy", lambda: 0.7)
    t.method.on_epoch_start(type("E", (), {"epoch": 0, "step": 0, "model": t.model})())
    assert t.method.ce_weights() == pytest.approx((0.7, 0.3))
    monkeypatch.undo()
    x, y, _ = t.method.balance                              # the real measurement: clean branch, eval mode
    with torch.no_grad(), bn_branch(t.model, "clean"):
        t.model.eval()
        direct = (t.model(x.float() / 255).argmax(1) == y).float().mean().item()
    assert t.method.clean_accuracy() == pytest.approx(direct)


def test_predictors_are_optimised_checkpointed_and_resumed(tmp_path):
    t = built(tmp_path)
    head_ids = {id(p) for p in t.method.heads.parameters()}
    assert head_ids <= {id(p) for p in t.optimizer.params()}
    train(config_from_dict(raw(epochs=1)), tmp_path / "a", log=lambda s: None)
    train(config_from_dict(raw(epochs=2)), tmp_path / "a", log=lambda s: None)     # resumed
    train(config_from_dict(raw(epochs=2)), tmp_path / "b", log=lambda s: None)
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt") for d in ("a", "b"))
    heads = a["components"]["method"]["modules"]["predictors"]
    assert heads and all(torch.equal(heads[k], b["components"]["method"]["modules"]["predictors"][k]) for k in heads)
    drop = ("seconds", "eval_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(tmp_path / "a" / "metrics.jsonl")] == \
        [{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")]


def test_reference_aliasing_only_behind_its_flag(tmp_path):
    for flag in (False, True):
        t = built(tmp_path / str(flag), reference_aliasing=flag)
        batch = next(iter(t.loader))
        ctx = t.method.prepare(t.model, batch, 0.0)
        dist = (ctx["x_train"] - batch.x).abs().amax().item()
        if flag:      # the clean branch sees x + U[-eps, eps]; PGD is centred there: up to 2 eps from x
            assert not torch.equal(ctx["x_clean"], batch.x) and 0.1 < dist <= 0.2 + 1e-6
        else:
            assert torch.equal(ctx["x_clean"], batch.x) and dist <= 0.1 + 1e-6


def test_default_taps_of_the_paper_models(tmp_path):
    """ResNet-18: layer4.{0,1}.bn{1,2}; WRN-34: block 3's bn1 / bn2 (ReLU in the tap) and the final bn: 11 features."""
    from robustlab.core.context import BuildContext
    from robustlab.methods import build_method
    from robustlab.models import build_model
    for model_cfg, n in (({"name": "resnet18", "norm_layer": {"name": "split_batchnorm"}}, 4),
                         ({"name": "wide_resnet", "depth": 34, "widen": 1, "norm_layer": {"name": "split_batchnorm"}}, 11)):
        cfg = config_from_dict({"model": model_cfg, "method": {"name": "arat", "auto_balance": False}})
        model = build_model(cfg.model, (3, 32, 32), 10)
        method = build_method(cfg.method, BuildContext.standalone(model, input_shape=(3, 32, 32), num_classes=10))
        assert len(method.layers) == n and len(method.heads) == n


def test_the_auxiliary_branch_is_measured_beside_the_deployed_one(tmp_path):
    import json
    import subprocess
    import sys
    cfg = raw(epochs=1)
    cfg["final_eval"] = {"points": 32, "steps": 2, "restarts": 1}
    train(config_from_dict(cfg), tmp_path / "r", log=lambda s: None)
    row = read_jsonl(tmp_path / "r" / "metrics.jsonl")[-1]
    assert 0 <= row["test_clean_branch_clean_acc"] <= 1 and 0 <= row["test_clean_branch_pgd_acc"] <= 1
    last = json.loads((tmp_path / "r" / "results.json").read_text())["final_eval"]["last"]
    assert set(last["branches"]) == {"clean"}
    # robustlab eval: the deployed branch by default, another by --branch; each records every branch's clean accuracy
    outs = {}
    for branch in (None, "clean"):
        out = tmp_path / f"eval-{branch}.json"
        proc = subprocess.run([sys.executable, "-m", "robustlab", "eval", str(tmp_path / "r"), "--checkpoint", "last",
                               "--n", "32", "--steps", "2", "--restarts", "1", "--sanity", "0", "--out", str(out),
                               *(["--branch", branch] if branch else [])], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        outs[branch] = json.loads(out.read_text())
    assert outs[None]["split_bn"]["evaluated"] == "adv" and outs["clean"]["split_bn"]["evaluated"] == "clean"
    assert outs[None]["split_bn"]["clean_acc"] == outs["clean"]["split_bn"]["clean_acc"]
    assert outs["clean"]["clean_acc"] == pytest.approx(outs[None]["split_bn"]["clean_acc"]["clean"])
    assert outs[None]["clean_acc"] == pytest.approx(outs[None]["split_bn"]["clean_acc"]["adv"])
    assert outs[None]["clean_acc"] == pytest.approx(last["clean_acc"]) and \
        outs["clean"]["clean_acc"] == pytest.approx(last["branches"]["clean"]["clean_acc"])
    bad = subprocess.run([sys.executable, "-m", "robustlab", "eval", str(tmp_path / "r"), "--branch", "dirty",
                          "--n", "8", "--out", str(tmp_path / "x.json")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--branch: got 'dirty'; this model's branches: clean, adv" in bad.stderr


def test_the_feature_probe_follows_the_model_dtype(tmp_path):
    """ARAT measures its tapped layers' widths with a probe forward pass in the model's own dtype: a float64 model
    builds (the probe used the default dtype before)."""
    t = built(tmp_path)
    dims = t.method._feature_dims(t.bctx)
    t.method.plain.double()
    seen = []
    hook = t.method.plain.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    try:
        assert t.method._feature_dims(t.bctx) == dims
    finally:
        hook.remove()
    assert seen == [torch.float64]          # the probe itself is float64 (not promoted on the way by Normalize)
