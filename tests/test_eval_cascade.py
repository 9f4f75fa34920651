"""The resumable evaluation cascade and the sanity checks (issue 5)."""
import pytest
import torch
from torch import nn

from helpers import trained_synthetic_model
from robustlab.protocols.cascade import PGDStage, StateMismatch, run_cascade
from robustlab.attacks.accuracy import AttackSpec
from robustlab.eval.sanity import sanity_checks


class Interrupt(Exception):
    pass


def stages(eps=0.1):
    return [PGDStage(AttackSpec("pgd", eps, None, 5, 1)), PGDStage(AttackSpec("pgd", eps, None, 20, 2))]


def test_cascade_worst_case_and_resume(tmp_path):
    model, x, y = trained_synthetic_model()
    full = run_cascade(model, x, y, stages(), tmp_path / "a.json", chunk=32)
    assert 0 < full["robust_acc"] < full["clean_acc"]
    assert not (full["robust"] & ~full["clean"]).any()                       # robust implies clean-correct
    first, second = (full["fooled_by"][s.name] for s in stages())
    assert not (first & second).any()                                        # later stages only see survivors
    assert full["robust_acc"] == pytest.approx(full["stages"][-1]["robust_acc"])
    assert full["stages"][0]["robust_acc"] >= full["stages"][1]["robust_acc"]
    calls = []

    def stop_after_three():
        calls.append(1)
        if len(calls) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_cascade(model, x, y, stages(), tmp_path / "b.json", chunk=32, after_chunk=stop_after_three)
    resumed_calls = []
    again = run_cascade(model, x, y, stages(), tmp_path / "b.json", chunk=32, after_chunk=lambda: resumed_calls.append(1))
    total_chunks = len(calls) - 1 + len(resumed_calls) + 1
    assert torch.equal(again["robust"], full["robust"]) and torch.equal(again["clean"], full["clean"])
    assert total_chunks == sum(-(-int(n) // 32) for n in [full["clean"].sum(), (full["clean"] & ~first).sum()])
    with pytest.raises(StateMismatch):
        run_cascade(model, x, y, stages(eps=0.2), tmp_path / "b.json", chunk=32)
    model.train()            # attacks run in eval mode and hand the model back as they found it
    try:
        in_train = run_cascade(model, x, y, stages(), chunk=32)
        assert all(m.training for m in model.modules()) and torch.equal(in_train["robust"], full["robust"])
    finally:
        model.eval()


class Quantize(nn.Module):
    """An input-quantising front end: piecewise constant, so every input gradient is exactly zero."""

    def forward(self, x):
        return torch.round(x * 4) / 4


def flagged(flags):
    return {f["check"] for f in flags if not f["passed"]}


def test_sanity_flags_a_gradient_masked_model_and_not_a_clean_one():
    model, x, y = trained_synthetic_model()
    assert flagged(sanity_checks(model, x, y, 0.1, n=128)) == set()
    masked = nn.Sequential(Quantize(), model).eval()
    bad = flagged(sanity_checks(masked, x, y, 0.1, n=128))
    assert {"zero_gradients", "large_eps"} <= bad        # all-zero gradients; PGD cannot move it at eps 0.5
    model.train()
    try:
        assert "train_mode" in flagged(sanity_checks(model, x, y, 0.1, n=64))
    finally:
        model.eval()


def test_autoattack_stage_runs_the_reference_apgd():
    """One standard-AutoAttack component (APGD-CE, 100 iterations) through the reference code, as a cascade
    stage: within the clean-correct points, at least as strong as PGD-5 up to a point, and deterministic."""
    pytest.importorskip("pyautoattack")
    from robustlab.protocols.cascade import AutoAttackStage
    model, x, y = trained_synthetic_model()
    x, y = x[:24], y[:24]
    aa = run_cascade(model, x, y, [AutoAttackStage("apgd-ce", 0.1)])
    pgd = run_cascade(model, x, y, stages()[:1])
    assert not (aa["robust"] & ~aa["clean"]).any()
    assert aa["robust_acc"] <= pgd["robust_acc"] + 1 / 24
    assert torch.equal(run_cascade(model, x, y, [AutoAttackStage("apgd-ce", 0.1)])["robust"], aa["robust"])


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_autoattack_cascade_equals_the_reference_standard_run(norm, eps):
    """The four standard components as cascade stages give the same per-point verdicts as pyautoattack's own
    run_standard_evaluation, L-inf and L2 (some points must survive, so every stage runs)."""
    pyautoattack = pytest.importorskip("pyautoattack")
    from robustlab.protocols.cascade import autoattack_stages
    model, x, y = trained_synthetic_model()
    x, y = x[:32], y[:32]
    ours = run_cascade(model, x, y, autoattack_stages(eps, norm))
    assert 0 < ours["robust_acc"] < ours["clean_acc"]
    ref = pyautoattack.AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard", seed=0)
    ref.apgd_targeted.n_target_classes = ref.fab.n_target_classes = 3      # 4 classes
    _, y_adv = ref.run_standard_evaluation(x, y, batch_size=32)
    assert torch.equal(ours["robust"], y_adv == y)


def test_progress_lines_per_chunk_and_per_step():
    """A long evaluation reports progress: per chunk (points, robust so far, ETA) and, inside a chunk, the restart
    and step (issue 15, section 3)."""
    from helpers import trained_synthetic_model
    from robustlab.attacks import AttackSpec
    from robustlab.protocols.cascade import PGDStage, run_cascade
    model, x, y = trained_synthetic_model()
    lines = []
    run_cascade(model, x[:96], y[:96], [PGDStage(AttackSpec("pgd", 0.1, None, 3, 2))], chunk=32, batch_size=32,
                log=lines.append, progress_every=0.0)
    first, rest = lines[0], lines[1:]
    todo, chunks = int(first.split()[1]), int(first.split(" in ")[1].split()[0])
    assert first.startswith("PGD-3-2: ") and chunks == -(-todo // 32)
    chunk_lines = [line for line in rest if "robust so far" in line]
    assert len(chunk_lines) == chunks
    assert chunk_lines[-1].startswith(f"PGD-3-2: {todo}/{todo} points") and "ETA" not in chunk_lines[-1]
    if chunks > 1:
        assert "ETA" in chunk_lines[0]
    step_lines = [line for line in rest if "restart" in line]
    assert any("chunk 1/" in line and "restart 1/2, step 1/3" in line for line in step_lines)


def test_autoattack_stage_reports_progress_inside_a_chunk():
    """The reference code runs a chunk in one call: its forward passes are counted and reported at most every
    ``progress_every`` seconds (0 here: every pass), and the verdicts are those of a run without reporting."""
    pytest.importorskip("pyautoattack")
    from robustlab.protocols.cascade import AutoAttackStage
    model, x, y = trained_synthetic_model()
    lines = []
    with_log = run_cascade(model, x[:24], y[:24], [AutoAttackStage("apgd-ce", 0.1)], log=lines.append,
                           progress_every=0.0)
    quiet = run_cascade(model, x[:24], y[:24], [AutoAttackStage("apgd-ce", 0.1)])
    passes = [int(line.split(", ")[1].split()[0]) for line in lines if "forward passes so far" in line]
    assert len(passes) >= 100 and passes == sorted(passes)          # APGD-CE: 100 iterations
    assert torch.equal(with_log["robust"], quiet["robust"])
