"""Regularisers against closed forms on a loss that is exactly quadratic in x, and ELLE-A's rule against
a plain re-statement of the reference code's list-based loop."""
import numpy as np
import pytest
import torch

from robustlab.functional import cure_term, elle_residual, gradalign_term, input_grad, llr_residual
from robustlab.methods.regularizers import OnOffWeight, elle_lambda, gradalign_lambda

torch.manual_seed(0)
D, B = 6, 5
M = torch.randn(D, D, dtype=torch.float64)
A = M @ M.T + torch.eye(D, dtype=torch.float64)     # symmetric positive definite
b = torch.randn(D, dtype=torch.float64)


def quad(x):
    """l_i(x) = 1/2 x_i^T A x_i + b^T x_i, per sample; grad = A x + b; Hessian A."""
    x = x.flatten(1)
    return 0.5 * ((x @ A) * x).sum(1) + x @ b


def test_elle_residual_closed_form():
    xa, xb = torch.randn(B, D, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64)
    alpha = torch.rand(B, dtype=torch.float64)
    d = xa - xb
    expected = -0.5 * alpha * (1 - alpha) * ((d @ A) * d).sum(1)
    assert torch.allclose(elle_residual(quad, xa, xb, alpha), expected)


def test_llr_residual_closed_form_and_quirk():
    x2, x3 = torch.randn(B, D, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64)
    d = x3 - x2
    # exact second-order remainder of a quadratic: 1/2 d^T A d
    assert torch.allclose(llr_residual(quad, x2, x3), 0.5 * ((d @ A) * d).sum(1))
    g = x2 @ A + b
    quirk = quad(x3) - quad(x2) - (d * g).sum(1) / B
    assert torch.allclose(llr_residual(quad, x2, x3, mean_grad_quirk=True), quirk)


def test_cure_closed_form_and_gradient_flows_through_adv_only():
    x, xadv = torch.randn(B, D, dtype=torch.float64), torch.randn(B, D, dtype=torch.float64)
    d = (x - xadv) @ A                        # grad difference A(x - x')
    assert torch.allclose(cure_term(quad, x, xadv), (d * d).sum(1).mean())
    assert torch.allclose(cure_term(quad, x, xadv, mean_grad_quirk=True), (d * d).sum(1).mean() / B ** 2)


def test_gradalign_cosines():
    g1 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    g2 = torch.tensor([[1.0, 1.0], [0.0, -1.0], [3.0, 1.0]])
    # third sample has a zero gradient and is left out: mean of cos 45deg and cos 180deg
    assert gradalign_term(g1, g2).item() == pytest.approx(1 - (2 ** -0.5 - 1) / 2)
    _, g = input_grad(quad, torch.zeros(B, D, dtype=torch.float64), create_graph=False)
    assert torch.allclose(g, b.expand(B, D))


def reference_onoff(errors, lam_max, s=2.0, d=0.99, window=0):
    """The reference code's loop with a Python list and numpy's population std."""
    lam, hist, trace = 0.0, [], []
    for e in errors:
        h = hist[-window:] if window else hist
        if len(hist) > 2 and e > np.mean(h) + s * np.std(h):
            lam = lam_max
        else:
            lam = d * lam
        hist.append(e)
        trace.append(lam)
    return trace


@pytest.mark.parametrize("window", [0, 4])
def test_elle_a_weight_trace_on_a_scripted_sequence(window):
    errors = [1.0, 1.1, 0.9, 1.0, 5.0, 1.0, 1.05, 0.95, 8.0, 1.0, 1.0, 2.5, 1.0] + [1.0] * 20
    w = OnOffWeight(4000.0, window=window)
    trace = []
    for e in errors:
        w.update(torch.tensor(e))
        trace.append(w.value().item())
    ref = reference_onoff(errors, 4000.0, window=window)
    assert trace == pytest.approx(ref, rel=1e-5)
    assert trace[4] == 4000.0 and trace[5] == pytest.approx(3960.0) and trace[3] == 0.0
    state = w.state_dict()
    w2 = OnOffWeight(4000.0, window=window)
    w2.load_state_dict(state)
    w.update(torch.tensor(50.0))
    w2.update(torch.tensor(50.0))
    assert w.value().item() == w2.value().item() == 4000.0


def test_published_lambda_tables():
    assert gradalign_lambda(8 / 255) == pytest.approx(0.2)
    assert gradalign_lambda(2 / 255) == pytest.approx(0.02 * 10 ** 0.25)
    assert gradalign_lambda(16 / 255) == 2.0 and gradalign_lambda(26 / 255) == 2.0
    assert [elle_lambda(k / 255) for k in (2, 8, 10, 20, 22, 26)] == [1000, 1000, 5000, 5000, 10000, 10000]


@pytest.mark.parametrize("reg", [{"name": "elle"}, {"name": "elle_a"}, {"name": "gradalign"},
                                 {"name": "llr", "weight": 1.0}, {"name": "cure", "weight": 1.0}])
def test_regularized_training_logs_its_term(tmp_path, tiny_cfg, reg):
    from robustlab.config import config_from_dict
    from robustlab.engine import train
    tiny_cfg["method"]["regularizers"] = [reg]
    tiny_cfg["train"]["epochs"] = 2
    res = train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    assert res["status"] == "finished"
    key = {"elle": "elle_error", "elle_a": "elle_error", "gradalign": "gradalign_cos", "llr": "llr_error",
           "cure": "cure_error"}[reg["name"]]
    assert key in res["last"] and f"{reg['name']}_lambda" in res["last"]
    if reg["name"] == "elle":
        assert res["last"]["elle_lambda"] == elle_lambda(0.1) == 10000.0 and res["last"]["elle_error"] > 0


def test_regularizer_config_errors():
    from robustlab.config import ConfigError, config_from_dict
    with pytest.raises(ConfigError, match=r"llr\]\.weight: no published value"):
        config_from_dict({"method": {"eps": "8/255", "regularizers": [{"name": "llr"}]}})
    cfg = config_from_dict({"method": {"eps": "8/255", "regularizers": [{"name": "llr", "mean_grad_quirk": True}]}})
    assert cfg.method.regularizers[0].mean_grad_quirk
    with pytest.raises(ConfigError, match=r"regularizers\[nope\]\.name: got .nope.; allowed: cure, elle, elle_a, gradalign, llr"):
        config_from_dict({"method": {"regularizers": [{"name": "nope"}]}})


@pytest.mark.parametrize("name", ["elle", "elle_a"])
def test_fused_elle_forward_equals_two_passes_without_batchnorm(name):
    """fuse_forward sends [x_adv; x_a; x_b; x_c] through one pass: same draws, same loss and gradients as the
    two-pass form for a model without BatchNorm; with BatchNorm (train mode) the statistics differ."""
    from robustlab.config import config_from_dict
    from robustlab.data.loader import Batch
    from robustlab.core.context import BuildContext
    from robustlab.methods import build_method
    from helpers import BNNet

    def run(fuse, model, passes=1):
        cfg = config_from_dict({"method": {"name": "fgsm", "eps": 0.1, "regularizers": [
            {"name": name, "weight": 50.0, "fuse_forward": fuse, "triplet_passes": passes}]}})
        method = build_method(cfg.method, BuildContext.standalone(generator=torch.Generator().manual_seed(3), eps=0.1))
        weight = method.regularizers[0].weight
        if hasattr(weight, "lam_max"):                  # ELLE-A: switch the on/off weight on
            weight.lam = torch.tensor(50.0)
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
        batch = Batch(x, y, torch.arange(16))
        ctx = method.prepare(model, batch, 5.0)
        out = method.loss(model, batch, ctx)
        model.zero_grad()
        out.loss.backward()
        return out.loss.detach(), out.metrics["elle_error"], [p.grad.clone() for p in model.parameters()]

    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 64, 4)).double().float()
    (l1, e1, g1), (l2, e2, g2) = run(False, plain), run(True, plain)
    assert e1 > 0 and torch.allclose(l1, l2, atol=1e-6) and torch.allclose(e1, e2, rtol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))
    l3, e3, g3 = run(False, plain, passes=3)              # three B-sized triplet passes: same values
    assert torch.allclose(l1, l3, atol=1e-6) and torch.allclose(e1, e3, rtol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g3))
    bn = BNNet(side=8).eval()
    bn.bn.train()
    (l1, _, _), (l2, _, _) = run(False, bn), run(True, bn)
    assert not torch.allclose(l1, l2, atol=1e-6)


def test_fuse_forward_only_for_elle():
    from robustlab.config import ConfigError, config_from_dict
    with pytest.raises(ConfigError, match=r"triplet_passes: got 3; a fused forward is one pass"):
        config_from_dict({"method": {"regularizers": [{"name": "elle", "fuse_forward": True, "triplet_passes": 3}]}})
    with pytest.raises(ConfigError, match=r"triplet_passes.*allowed: 1, 3"):
        config_from_dict({"method": {"regularizers": [{"name": "elle", "triplet_passes": 2}]}})
    with pytest.raises(ConfigError, match=r"gradalign\]\.fuse_forward: unknown key; allowed keys here: name, weight, "
                                          r"schedule, clip_box"):
        config_from_dict({"method": {"regularizers": [{"name": "gradalign", "fuse_forward": True}]}})
