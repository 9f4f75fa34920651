import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import BNNet, trained_synthetic_model
from robustlab.attacks import FGSM, NFGSM, PGD, RSFGSM, IterativeAttack, attack_mode
from robustlab.protocols import evaluate, pgd_protocol

EPS = 0.1


def attacks(model):
    return {
        "fgsm": FGSM(model, EPS),
        "rs_fgsm": RSFGSM(model, EPS),
        "pgd_linf": PGD(model, EPS, EPS / 4, 7, restarts=2),
        "pgd_linf_train_mode": PGD(model, EPS, EPS / 4, 5, mode="train"),
        "pgd_l2": PGD(model, 0.5, 0.15, 7, restarts=2, norm="l2"),
        "fgsm_l2": FGSM(model, 0.5, norm="l2"),
    }


@pytest.mark.parametrize("name", ["fgsm", "rs_fgsm", "pgd_linf", "pgd_linf_train_mode", "pgd_l2", "fgsm_l2"])
def test_result_in_ball_and_box_no_param_grads_modes_restored(name):
    model, x, y = trained_synthetic_model()
    model.train()
    model.drop.eval()   # a mixed set of flags must come back exactly
    flags = [m.training for m in model.modules()]
    atk = attacks(model)[name]
    x_adv = atk(x, y)
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if "l2" in name:
        assert delta.norm(dim=1).max() <= atk.eps + 1e-5
    else:
        assert delta.abs().max() <= atk.eps + 1e-6
    model.eval()


def test_nfgsm_is_not_projected_but_stays_in_its_reach_and_box():
    model, x, y = trained_synthetic_model()
    x_adv = NFGSM(model, EPS, k=2.0)(x, y)
    d = (x_adv - x).abs().flatten(1).amax(1)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert d.max() <= 3 * EPS + 1e-6 and d.max() > EPS * 1.5  # beyond eps: no projection


def test_fgsm_on_linear_model_is_closed_form():
    """For logits W x + b, the CE input-gradient is W^T (softmax - onehot): FGSM must step eps * its sign."""
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x = torch.rand(5, 1, 3, 4) * 0.6 + 0.2   # inside (0.2, 0.8): no box clipping at eps 0.1
    y = torch.tensor([0, 1, 2, 1, 0])
    W = lin[1].weight.detach()
    p = F.softmax(lin(x), 1).detach()
    grad = (p - F.one_hot(y, 3).float()) @ W
    expected = x + EPS * grad.sign().view_as(x)
    assert torch.allclose(FGSM(lin, EPS)(x, y), expected, atol=1e-7)


def test_pgd_reduces_accuracy_and_restarts_are_at_least_as_strong_per_sample():
    model, x, y = trained_synthetic_model()
    clean = (model(x).argmax(1) == y)
    assert clean.float().mean() > 0.9
    one = PGD(model, 0.15, 0.04, 5, restarts=1, generator=torch.Generator().manual_seed(0))
    many = PGD(model, 0.15, 0.04, 5, restarts=4, generator=torch.Generator().manual_seed(0))
    rob1 = model(one(x, y)).argmax(1) == y
    rob4 = model(many(x, y)).argmax(1) == y
    assert rob1.float().mean() < clean.float().mean() - 0.2
    # same generator: restart 1 of `many` is exactly `one`, so every point `one` breaks stays broken
    assert not (rob4 & ~rob1).any()


def test_early_stop_keeps_first_fooling_iterate_and_matches_or_beats_plain_pgd():
    model, x, y = trained_synthetic_model()
    plain = PGD(model, 0.12, 0.03, 10, early_stop=False, generator=torch.Generator().manual_seed(1))
    early = PGD(model, 0.12, 0.03, 10, early_stop=True, generator=torch.Generator().manual_seed(1))
    rob_plain = model(plain(x, y)).argmax(1) == y
    rob_early = model(early(x, y)).argmax(1) == y
    assert not (rob_early & ~rob_plain).any()


def test_attack_mode_restores_and_rejects_unknown():
    m = BNNet()
    m.eval()
    m.bn.train()
    with attack_mode(m, "train"):
        assert all(mod.training for mod in m.modules())
    assert m.bn.training and not m.conv.training and not m.training
    with pytest.raises(ValueError, match="allowed: train, eval, keep"):
        with attack_mode(m, "bogus"):
            pass
    with pytest.raises(RuntimeError):
        with attack_mode(m, "eval"):
            raise RuntimeError("boom")
    assert m.bn.training and not m.training


def test_train_mode_attack_updates_bn_stats_eval_mode_does_not():
    model, x, y = trained_synthetic_model()
    before = model.bn.running_mean.clone()
    PGD(model, EPS, EPS / 4, 2, mode="eval")(x, y)
    assert torch.equal(model.bn.running_mean, before)
    model2 = BNNet()
    model2.load_state_dict(model.state_dict())
    PGD(model2, EPS, EPS / 4, 2, mode="train")(x, y)
    assert not torch.equal(model2.bn.running_mean, before)


def test_bad_attack_arguments():
    with pytest.raises(ValueError, match="steps >= 1"):
        IterativeAttack(nn.Identity(), 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="allowed: linf, l2"):
        PGD(nn.Identity(), norm="l1")


def test_evaluate_counts_clean_errors_as_non_robust():
    model, x, y = trained_synthetic_model()
    y_wrong = (y + 1) % 4
    res = evaluate(model, x, y_wrong, [pgd_protocol(3, 1)], eps=0.05, batch_size=100)
    assert res["PGD-3-1"]["robust_acc"] <= res["clean_acc"]
    assert not (res["PGD-3-1"]["robust"] & ~res["clean_correct"]).any()


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 0.15, 0.02), ("l2", 1.0, 0.2)])
def test_cross_check_with_torchattacks_pgd(norm, eps, alpha):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = trained_synthetic_model()
    steps = 20
    attack = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    ta = attack(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    torch.manual_seed(0)
    ta_acc = (model(ta(x, y)).argmax(1) == y).float().mean().item()
    res = evaluate(model, x, y, [pgd_protocol(steps, 1, alpha)], eps=eps, norm=norm, batch_size=256)
    ours = res[f"PGD-{steps}-1"]["robust_acc"]
    assert ta_acc < 0.9  # the comparison is meaningful: the attack does something
    assert ours <= ta_acc + 0.005


@pytest.mark.parametrize("restarts,early", [(1, True), (3, True), (2, False)])
def test_verdicts_match_an_independent_prediction(restarts, early):
    model, x, y = trained_synthetic_model()
    atk = PGD(model, 0.15, 0.04, 12, restarts=restarts, early_stop=early, generator=torch.Generator().manual_seed(2))
    x_adv, fooled = atk.perturb_with_verdict(x, y)
    assert torch.equal(fooled, model(x_adv).argmax(1) != y)
    assert (x_adv - x).abs().max() <= 0.15 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert 0 < fooled.float().mean() < 1


def test_gat_attack_reach_box_and_loss_hook():
    from robustlab.attacks import GATAttack
    model, x, y = trained_synthetic_model()
    atk = GATAttack(model, 0.05, generator=torch.Generator().manual_seed(0))
    settings = dict(vars(atk))
    x_adv = atk(x, y)
    d = (x_adv - x).abs().flatten(1).amax(1)
    assert x_adv.min() >= 0 and x_adv.max() <= 1 and d.max() <= 0.1 + 1e-6
    inner = (x > 0.1) & (x < 0.9)                  # away from the box the step is +-eps on top of +-eps
    steps = (x_adv - x)[inner].abs()
    assert torch.all((steps < 1e-6) | ((steps - 0.1).abs() < 1e-6))
    assert vars(atk) == settings          # re-entrant: a call leaves no state on the attack object
    with torch.no_grad():
        p_clean = torch.softmax(model(x).float(), 1)
    again = GATAttack(model, 0.05, generator=torch.Generator().manual_seed(0))(x, y, ref=p_clean)
    assert torch.equal(again, x_adv)      # the clean probabilities are the call's ref


def test_early_stop_when_most_points_fall_at_the_random_start():
    """Regression: compaction at the first step, while the working set is still the whole batch
    (wrong labels: nearly every point counts as fooled at the random start)."""
    model, x, y = trained_synthetic_model()
    y_wrong = (y + 1) % 4
    for restarts in (1, 2):
        atk = PGD(model, 0.05, 0.02, 5, restarts=restarts, generator=torch.Generator().manual_seed(0))
        x_adv, fooled = atk.perturb_with_verdict(x, y_wrong)
        assert fooled.float().mean() > 0.9
        assert torch.equal(fooled, model(x_adv).argmax(1) != y_wrong)


def test_dlr_and_targeted_dlr_equal_autoattacks_definitions():
    """DLR and targeted DLR against the reference code's own functions (pyautoattack 0.2.0, as fra31/auto-attack)."""
    pytest.importorskip("pyautoattack")
    from types import SimpleNamespace

    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    from robustlab.attacks.objectives import dlr, ranked_targets, targeted_dlr
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 10, generator=g) * 3
    y = torch.randint(0, 10, (64,), generator=g)
    y[:8] = z[:8].argmax(1)          # both branches of the reference's "is the top class y" switch
    assert torch.allclose(dlr(z, y), APGDAttack.dlr_loss(None, z, y), atol=1e-6)
    t = ranked_targets(z, y, 2)
    ref = APGDAttack_targeted.dlr_loss_targeted(SimpleNamespace(y_target=t), z, y)
    assert torch.allclose(targeted_dlr(z, y, {"target": t}), ref, atol=1e-6)
    # ranked targets: k = 1 is the most likely class other than y
    masked = z.clone()
    masked[torch.arange(64), y] = -1e9
    assert torch.equal(ranked_targets(z, y, 1), masked.argmax(1))


def test_cw_margin_and_targeted_ce_by_hand():
    from robustlab.attacks.objectives import cw_margin, targeted_cross_entropy
    z = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    y = torch.tensor([1, 0])
    assert cw_margin(z, y).tolist() == [-3.0, 3.0]     # max other - true
    t = torch.tensor([2, 2])
    expected = torch.log_softmax(z, 1)[torch.arange(2), t]
    assert torch.allclose(targeted_cross_entropy(z, y, {"target": t}), expected)


def test_targeted_pgd_reaches_its_target_and_repr_names_settings():
    from robustlab.attacks import PGD
    from robustlab.attacks.objectives import ranked_targets, targeted_cross_entropy
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 5))
    x = torch.rand(32, 1, 4, 4)
    y = model(x).argmax(1)
    t = ranked_targets(model(x), y, 3)       # the third most likely wrong class: not where CE would go first
    attack = PGD(model, eps=1.0, alpha=0.1, steps=60, restarts=1, early_stop=False, objective=targeted_cross_entropy)
    x_adv = attack.perturb(x, y, {"target": t})
    assert (model(x_adv).argmax(1) == t).float().mean() > 0.9
    text = repr(attack)
    assert text.startswith("PGD(eps=1, alpha=0.1, steps=60, norm=linf, random_init=1, restarts=1, mode=eval")
    assert "objective=targeted_cross_entropy" in text
