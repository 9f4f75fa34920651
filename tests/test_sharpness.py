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
