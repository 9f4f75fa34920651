"""Memorisation line (issue 11): TRADES, MART, AWP, temporal ensembling, gradient instability, robust overfitting."""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustlab.config import config_from_dict
from robustlab.core.context import BuildContext, EpochContext
from robustlab.data.loader import Batch
from robustlab.engine import train
from robustlab.methods import build_method
from robustlab.methods.temporal_ensembling import TEConfig, TemporalEnsemble, te_ramp
from robustlab.optim import build_optimizer


class Tiny(nn.Module):
    """Linear(4 -> 3) on a flattened 1x2x2 image, with a BatchNorm1d to check AWP leaves it alone."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        return self.bn(self.fc(x.flatten(1)))


def batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(n, 1, 2, 2, generator=g), torch.randint(0, 3, (n,), generator=g), torch.arange(n))


def method(raw, **ctx):
    cfg = config_from_dict({"method": raw}).method
    return build_method(cfg, BuildContext.standalone(generator=torch.Generator().manual_seed(0), eps=cfg.eps, **ctx))


def hand_kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def test_trades_loss_against_a_hand_computation():
    model, b = Tiny().train(), batch()
    m = method({"name": "trades", "eps": 0.1, "beta": 6.0, "steps": 2})
    ctx = {"x_train": (b.x + 0.3 * torch.randn(b.x.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1), "eps": 0.1}
    out = m.objective(model, b, ctx)
    with torch.no_grad():
        zc, za = model(b.x).double(), model(ctx["x_train"]).double()
    pc, pa = zc.softmax(1).tolist(), za.softmax(1).tolist()
    ce = sum(-math.log(pc[i][b.y[i]]) for i in range(6)) / 6
    kl = sum(hand_kl(pc[i], pa[i]) for i in range(6)) / 6
    assert kl > 1e-3 and out.loss.item() == pytest.approx(ce + 6.0 * kl, rel=1e-5)
    assert out.metrics["trades_kl"].item() == pytest.approx(kl, rel=1e-4)


def test_trades_gradient_flows_through_the_clean_distribution():
    """The KL target p(x) is not detached (reference behaviour): the parameter gradients equal those of
    CE + beta KL(p(x) || p(x')) with p(x) in the graph, and differ from the detached form."""
    b = batch()
    x_adv = (b.x + 0.3 * torch.randn(b.x.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    m = method({"name": "trades", "eps": 0.1, "beta": 6.0, "steps": 2})

    def grads(loss_fn):
        model = Tiny().train()
        model.zero_grad()
        loss_fn(model).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    def manual(detach):
        def fn(model):
            zc, za = model(b.x), model(x_adv)
            target = F.softmax(zc, 1).detach() if detach else F.softmax(zc, 1)
            return F.cross_entropy(zc, b.y) + 6.0 * F.kl_div(F.log_softmax(za, 1), target, reduction="batchmean")
        return fn

    ours = grads(lambda model: m.objective(model, b, {"x_train": x_adv, "eps": 0.1}).loss)
    assert torch.allclose(ours, grads(manual(False)), atol=1e-6)
    assert not torch.allclose(ours, grads(manual(True)), atol=1e-4)


def test_kl_attack_increases_the_kl_and_stays_in_the_ball():
    from helpers import trained_synthetic_model
    model, x, y = trained_synthetic_model()
    m = method({"name": "trades", "eps": 0.1, "steps": 10})
    b = Batch(x[:64], y[:64], torch.arange(64))
    ctx = m.prepare(model, b, 0.0)
    with torch.no_grad():
        p = F.softmax(model(b.x), 1)
        kl_adv = F.kl_div(F.log_softmax(model(ctx["x_train"]), 1), p, reduction="none").sum(1)
        noise = (b.x + 0.1 * torch.sign(torch.randn_like(b.x))).clamp(0, 1)
        kl_noise = F.kl_div(F.log_softmax(model(noise), 1), p, reduction="none").sum(1)
    assert kl_adv.mean() > 5 * kl_noise.mean()
    assert (ctx["x_train"] - b.x).abs().max() <= 0.1 + 1e-6 and model.training is False   # eval model untouched


def test_mart_loss_against_a_hand_computation():
    model, b = Tiny().train(), batch()
    m = method({"name": "mart", "eps": 0.1, "beta": 5.0, "steps": 2})
    ctx = {"x_train": (b.x + 0.3 * torch.randn(b.x.shape, generator=torch.Generator().manual_seed(6))).clamp(0, 1), "eps": 0.1}
    out = m.objective(model, b, ctx)
    with torch.no_grad():
        pc, pa = model(b.x).double().softmax(1).tolist(), model(ctx["x_train"]).double().softmax(1).tolist()
    total = 0.0
    for i in range(6):
        y = int(b.y[i])
        wrong = max((k for k in range(3) if k != y), key=lambda k: pa[i][k])
        bce = -math.log(pa[i][y]) - math.log(1.0001 - pa[i][wrong])
        total += bce + 5.0 * hand_kl(pc[i], pa[i]) * (1.0000001 - pc[i][y])
    assert out.loss.item() == pytest.approx(total / 6, rel=1e-5)


def awp_setup(gamma=0.01, warmup=0, lr=0.0):
    model, b = Tiny().train(), batch()
    cfg = config_from_dict({"optim": {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
                                      "minimizer": {"name": "awp", "gamma": gamma, "warmup_epochs": warmup}}}).optim
    opt = build_optimizer(cfg, model.parameters())
    for g in opt.param_groups:
        g["lr"] = lr
    seen = []

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(b.x), b.y)
        loss.backward()
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return loss
    return model, opt, closure, seen


def test_awp_perturbs_weights_only_by_gamma_norm_and_restores_them_exactly():
    model, opt, closure, seen = awp_setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt.step(closure)                                     # lr 0: the update is zero, only the perturbation moves w
    assert len(seen) == 2
    v = seen[1]["fc.weight"] - before["fc.weight"]
    assert v.norm().item() == pytest.approx(0.01 * before["fc.weight"].norm().item(), rel=1e-5)
    for k in ("fc.bias", "bn.weight", "bn.bias"):         # ndim <= 1: untouched
        assert torch.equal(seen[1][k], before[k])
    after = model.state_dict()
    assert torch.equal(after["fc.weight"], before["fc.weight"]) and torch.equal(after["fc.bias"], before["fc.bias"])


def test_awp_warmup_takes_plain_steps_and_the_gradient_is_taken_at_w_plus_v():
    model, opt, closure, seen = awp_setup(warmup=2, lr=0.1)
    opt.on_epoch_start(EpochContext(1, 0))
    opt.step(closure)
    assert len(seen) == 1                                 # warm-up: one pass
    opt.on_epoch_start(EpochContext(2, 0))
    w0 = model.fc.weight.detach().clone()
    opt.step(closure)
    assert len(seen) == 3
    # the applied update is the gradient at the perturbed point, applied at w (SAM's order)
    perturbed = Tiny()
    perturbed.load_state_dict(seen[2])
    perturbed.train()
    b = batch()
    F.cross_entropy(perturbed(b.x), b.y).backward()
    assert torch.allclose(model.fc.weight, w0 - 0.1 * perturbed.fc.weight.grad, atol=1e-7)


def test_te_ramp_matches_the_published_values():
    w = [300 * te_ramp(e, 90, 150) for e in (89, 90, 100, 120, 150, 151)]
    assert w[0] == 0.0 and w[1] == pytest.approx(2.02, abs=0.01) and w[2] == pytest.approx(9.3, abs=0.1)
    assert w[3] == pytest.approx(86.0, abs=0.5) and w[4] == 300 and w[5] == 300
    cfg = config_from_dict({"method": {"name": "pgd", "te": {}}}).method.te
    te = TemporalEnsemble(cfg, BuildContext.standalone(num_classes=3, epochs=200))
    assert (te.e_s, te.e_e) == pytest.approx((90.0, 150.0))  # 0.45 T and 0.75 T at T = 200
    te.on_epoch_start(89)                                     # 0-based 89 = epoch 90
    assert te.weight_now == pytest.approx(300 * math.exp(-5))


def test_te_memory_update_and_normalisation_on_a_scripted_sequence():
    bctx = BuildContext.standalone(num_classes=2, epochs=10)
    bctx.train_size = 3
    te = TemporalEnsemble(TEConfig(momentum=0.9), bctx)
    p1 = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    q = te.update(torch.tensor([0, 2]), p1)
    assert torch.allclose(q, p1)                              # first update: the target is the prediction itself
    assert torch.allclose(te.memory[1], torch.zeros(2))
    p2 = torch.tensor([[0.4, 0.6]])
    q = te.update(torch.tensor([0]), p2)
    mem = 0.9 * 0.1 * torch.tensor([0.8, 0.2]) + 0.1 * torch.tensor([0.4, 0.6])
    assert torch.allclose(te.memory[0], mem) and torch.allclose(q[0], mem / mem.sum())


def test_te_memory_is_gathered_across_ranks_with_gloo(tmp_path):
    """Two gloo ranks update disjoint, unequal slices; both end with the memory one process computes."""
    script = textwrap.dedent("""
        import os, sys, torch, torch.distributed as dist
        from robustlab.core.context import BuildContext
        from robustlab.core.distributed import DistContext
        from robustlab.methods.temporal_ensembling import TEConfig, TemporalEnsemble
        rank, world = int(sys.argv[1]), 2
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[2])
        dist.init_process_group("gloo", rank=rank, world_size=world)
        bctx = BuildContext.standalone(num_classes=3)
        bctx.train_size, bctx.dist = 8, DistContext(rank, world)
        te = TemporalEnsemble(TEConfig(), bctx)
        g = torch.Generator().manual_seed(0)
        probs = torch.softmax(torch.randn(5, 3, generator=g), 1)
        index = torch.tensor([6, 1, 3, 0, 5])
        part = slice(rank, None, world)                     # rank 0: 3 rows, rank 1: 2 rows
        q = te.update(index[part], probs[part])
        torch.save({"memory": te.memory, "q": q}, sys.argv[3] + f"/rank{rank}.pt")
        dist.destroy_process_group()
    """)
    (tmp_path / "te_ddp.py").write_text(script)
    port = str(29600 + os.getpid() % 300)
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "te_ddp.py"), str(r), port, str(tmp_path)]) for r in (0, 1)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    single = torch.zeros(8, 3)
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(5, 3, generator=g), 1)
    single[torch.tensor([6, 1, 3, 0, 5])] = 0.1 * probs
    assert torch.allclose(r0["memory"], single) and torch.equal(r0["memory"], r1["memory"])
    assert torch.allclose(r0["q"], probs[0::2]) and torch.allclose(r1["q"], probs[1::2])


def test_gradient_norm_equals_a_direct_computation(tmp_path, tiny_cfg, monkeypatch):
    """The logged value is sum_p ||dL/dp||^2 of each step's (pass-0) gradient, averaged and maxed over the epoch."""
    from robustlab.engine import Trainer
    tiny_cfg["train"]["epochs"] = 1
    tiny_cfg["method"] = {"name": "standard", "eps": 0.1}
    tiny_cfg["monitor"]["grad_norm_trace"] = True
    direct = []
    original = Trainer._step

    def spy(self, batch, progress):
        out, ctx = original(self, batch, progress)
        direct.append(sum(float(p.grad.pow(2).sum()) for p in self.model.parameters() if p.grad is not None))
        return out, ctx

    monkeypatch.setattr(Trainer, "_step", spy)
    res = train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    row = res["last"]
    assert row["grad_norm_sq_mean"] == pytest.approx(sum(direct) / len(direct), rel=1e-5)
    assert row["grad_norm_sq_max"] == pytest.approx(max(direct), rel=1e-5)
    import json
    trace = [json.loads(line) for line in (tmp_path / "run" / "grad_norm_trace.jsonl").read_text().splitlines()]
    assert trace[0]["epoch"] == 1 and trace[0]["grad_norm_sq"] == pytest.approx(direct, rel=1e-5)


def test_best_last_gap_in_results_and_table(tmp_path):
    from robustlab.diagnostics import robust_overfitting
    hist = [{"epoch": 1, "test_pgd_acc": 0.2}, {"epoch": 2, "test_pgd_acc": 0.5}, {"epoch": 3, "test_pgd_acc": 0.5},
            {"epoch": 4, "test_pgd_acc": 0.3}]
    assert robust_overfitting(hist) == {"metric": "test_pgd_acc", "best": 0.5, "best_epoch": 2, "last": 0.3,
                                        "gap": pytest.approx(0.2)}


@pytest.mark.parametrize("raw", [
    {"method": {"name": "trades", "eps": 0.1, "steps": 2}},
    {"method": {"name": "mart", "eps": 0.1, "steps": 2}},
    {"method": {"name": "pgd", "eps": 0.1, "steps": 2, "te": {"start": 0.3, "end": 0.6}}},
    {"method": {"name": "trades", "eps": 0.1, "steps": 2, "te": {"start": 1, "end": 2, "unit": "epoch"}}},
    {"method": {"name": "pgd", "eps": 0.1, "steps": 2}, "optim": {"lr": 0.05, "minimizer": {"name": "awp", "gamma": 0.01}}},
    {"method": {"name": "fgsm", "eps": 0.1}, "optim": {"lr": 0.05, "minimizer": {"name": "awp", "gamma": 0.005, "warmup_epochs": 1}}},
])
def test_every_method_trains_on_random_labels_with_the_memorisation_recipe(tmp_path, tiny_cfg, raw):
    """Random labels (noise 1.0), no augmentation, weight decay 0, step schedule: each combination trains, logs the
    instability signal and the training-set accuracies, and resumes exactly."""
    tiny_cfg.update(raw)
    tiny_cfg["optim"] = {"lr": 0.05, "weight_decay": 0.0, "schedule": {"name": "multistep", "milestones": [2]},
                         **raw.get("optim", {})}
    tiny_cfg["data"]["labels"] = {"noise": 1.0}
    tiny_cfg["monitor"]["train_points"] = 64
    tiny_cfg["train"]["epochs"] = 3
    res = train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    assert res["status"] == "finished" and res["robust_overfitting"]["metric"] == "test_pgd_acc"
    last = res["last"]
    assert last["grad_norm_sq_mean"] > 0 and 0 <= last["trainset_pgd_acc"] <= last["trainset_clean_acc"] <= 1
