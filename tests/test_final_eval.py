"""One evaluation engine (issue 24): a training run's final evaluation runs a registered protocol through the same
cascade as ``robustlab eval``, so a run configured with ``final_eval.protocol`` reports the figures ``robustlab eval
RUN --attack <protocol>`` gives on the same points; the per-epoch monitor's figures are that engine's too."""
import copy

import pytest
import torch

from helpers import trained_synthetic_model
from robustlab.config import ConfigError, config_from_dict
from robustlab.engine import train
from robustlab.eval import evaluate_model, load_run_model
from robustlab.protocols import PGDStage, evaluate, pgd_protocol, run_cascade


@pytest.mark.parametrize("protocol", ["pgd", "autoattack"])
def test_final_evaluation_equals_robustlab_eval_on_the_same_points(tmp_path, tiny_cfg, protocol):
    if protocol == "autoattack":
        pytest.importorskip("pyautoattack")
    cfg = copy.deepcopy(tiny_cfg)
    cfg["data"]["eval_batch_size"] = 24          # two chunks: the PGD generator is carried across them
    cfg["final_eval"] = {"points": 48, "protocol": protocol, "steps": 3, "restarts": 2}
    res = train(config_from_dict(cfg), tmp_path / "r", log=lambda s: None)
    fe = res["final_eval"]
    assert fe["protocol"] == ("PGD-3-2" if protocol == "pgd" else "AutoAttack") and fe["n_examples"] == 48
    attack = {"name": protocol, "steps": 3, "restarts": 2} if protocol == "pgd" else protocol
    for which in ("last", "best"):
        ev = evaluate_model(load_run_model(tmp_path / "r", which), n=48, attack=attack, batch_size=24, sanity=0)
        assert ev["protocol"] == fe["protocol"]
        assert (ev["clean_acc"], ev["robust_acc"]) == (fe[which]["clean_acc"], fe[which]["robust_acc"]), which
    assert 0 < fe["last"]["robust_acc"] < fe["last"]["clean_acc"]     # a figure an attack had to work for


def test_side_by_side_protocols_are_single_stage_cascades():
    """The monitor's engine (several protocols on the same points) gives, per protocol, the flags of that protocol's
    cascade run alone: one engine, whatever the caller."""
    model, x, y = trained_synthetic_model()
    weak, strong = pgd_protocol(2, 1), pgd_protocol(10, 2)
    both = evaluate(model, x, y, [weak, strong], eps=0.1, batch_size=40)
    for protocol in (weak, strong):
        alone = run_cascade(model, x, y, protocol.stages(0.1, "linf"), chunk=40, batch_size=40)
        assert torch.equal(both[protocol.title(0.1, "linf")]["robust"], alone["robust"])
    assert both["PGD-10-2"]["robust_acc"] <= both["PGD-2-1"]["robust_acc"]
    assert isinstance(weak.stages(0.1, "linf")[0], PGDStage)


def test_final_eval_protocol_is_checked(tiny_cfg):
    with pytest.raises(ConfigError, match="final_eval.protocol: got 'apgd'; allowed: pgd, autoattack, pgd\\+autoattack"):
        config_from_dict({**tiny_cfg, "final_eval": {"protocol": "apgd"}})
