"""Hessian sharpness (issue 13): power iteration and Hutchinson against torch.autograd.functional.hessian."""
import math

import pytest
import torch
import torch.nn.functional as F

from robustlab.diagnostics.sharpness import hutchinson_trace, top_eigenvalue


def tiny():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x = torch.randn(24, 4, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (24,), generator=torch.Generator().manual_seed(2))
    return model, x, y


def full_hessian(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(flat):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            parts[n] = flat[i:i + k].view(s)
            i += k
        return F.cross_entropy(torch.func.functional_call(model, parts, (x,)), y)
    return torch.autograd.functional.hessian(loss, flat0)


def test_top_eigenvalue_and_trace_against_the_full_hessian():
    model, x, y = tiny()
    h = full_hessian(model, x, y).double()
    eig = torch.linalg.eigvalsh(h)
    exact_top = eig[eig.abs().argmax()].item()     # power iteration finds the largest magnitude
    lam, used = top_eigenvalue(model, x, y, iters=200, tol=1e-7, batch_size=10)   # batches: the sum must be exact
    assert lam == pytest.approx(exact_top, rel=0.01) and used < 200
    trace, se = hutchinson_trace(model, x, y, samples=300, batch_size=7)
    exact = torch.trace(h).item()
    assert abs(trace - exact) <= 3 * se + 1e-6 and se < 0.2 * abs(exact)


def test_sharpness_is_seeded_and_eval_mode():
    model, x, y = tiny()
    model.train()
    a = top_eigenvalue(model, x, y, iters=5)
    b = top_eigenvalue(model, x, y, iters=5)
    assert a == b and model.training       # same value twice; the model's mode restored


def test_kept_epochs_are_addressable_and_measured(tmp_path):
    """train.keep_epochs / keep_every keep early-stopped surrogates; RUN@E loads them (eval, sharpness)."""
    import json
    import subprocess
    import sys

    from robustlab.config import config_from_dict
    from robustlab.core.checkpoint import load_checkpoint
    from robustlab.engine import train
    from robustlab.eval.loading import load_run_model
    raw = {"seed": 0, "data": {"name": "synthetic", "val_size": 64, "batch_size": 64}, "model": {"name": "wong_mnist"},
           "method": {"name": "standard", "eps": 0.1}, "optim": {"lr": 0.05},
           "train": {"epochs": 3, "progress": "none", "threads": 1, "keep_epochs": [1], "keep_every": 2},
           "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []}, "final_eval": {"points": 0}}
    train(config_from_dict(raw), tmp_path / "r", log=lambda s: None)
    kept = sorted(p.name for p in (tmp_path / "r" / "checkpoints").glob("epoch_*.pt"))
    assert kept == ["epoch_0001.pt", "epoch_0002.pt"]
    first = load_run_model(f"{tmp_path / 'r'}@1")
    assert first.epoch == 1
    last = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["model"]
    assert any(not torch.equal(first.model.state_dict()[k], last[k]) for k in last)   # the epoch-1 weights, not the last
    cli = [sys.executable, "-m", "robustlab", "sharpness"]
    ok = subprocess.run(cli + [f"{tmp_path / 'r'}@2", "--points", "64", "--iters", "3", "--samples", "3"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    res = json.loads((tmp_path / "r" / "sharpness" / "epoch_0002-n64.json").read_text())
    assert res["epoch"] == 2 and res["sharpness_points"] == 64 and math.isfinite(res["hessian_trace"])
    bad = subprocess.run(cli + [f"{tmp_path / 'r'}@3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no weights kept after epoch 3 (kept: 1, 2" in bad.stderr
