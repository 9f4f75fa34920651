"""Every optimiser step goes through step(closure): loss scaling per pass, BatchNorm statistics on the first
pass only, the overflow guard, and the resolved config."""
import copy

import pytest
import torch
import yaml

import test_components  # noqa: F401  (registers test_twopass, test_bn_net)
from robustlab.config import config_from_dict
from robustlab.core.io import read_jsonl
from robustlab.engine import Trainer, train
from robustlab.engine import trainer as trainer_module
from robustlab.optim import LossScaler


def two_pass_config(epochs=2):
    return {"seed": 0, "plugins": ["test_components"],
            "data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
            "model": {"name": "test_bn_net"}, "method": {"name": "fgsm", "eps": 0.1},
            "optim": {"name": "sgd", "lr": 0.05, "minimizer": {"name": "test_twopass", "rho": 0.05}},
            "train": {"epochs": epochs, "progress": "none", "threads": 1},
            "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []}, "final_eval": {"points": 0}}


def test_loss_scaling_through_a_two_pass_closure_is_exact(tmp_path, monkeypatch):
    """With a power-of-two scale, scaling the loss and unscaling each pass's gradients is exact: a two-pass
    minimiser trained with the fp16 loss-scaling path (here in fp32 on CPU) gives the unscaled run's weights
    bit for bit, so the minimiser saw true gradients in both passes."""
    cfg = config_from_dict(two_pass_config())
    train(cfg, tmp_path / "plain", log=lambda s: None)
    monkeypatch.setattr(trainer_module, "LossScaler", lambda enabled, device: LossScaler(True, device))
    train(cfg, tmp_path / "scaled", log=lambda s: None)
    a = torch.load(tmp_path / "plain" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "scaled" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["components"]["loss_scaler"]["scale"].item() == 2.0 ** 16      # no overflow, no growth yet
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "plain" / "metrics.jsonl")) == strip(read_jsonl(tmp_path / "scaled" / "metrics.jsonl"))


def test_overflow_skips_the_update_and_backs_off_the_scale():
    p = torch.nn.Parameter(torch.ones(3))
    from robustlab.optim import build_optimizer
    opt = build_optimizer(config_from_dict({"optim": {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}}).optim, [p])
    scaler = LossScaler(True, torch.device("cpu"), init_scale=8.0)
    opt.guard = scaler.finite

    def closure(value):
        def run():
            opt.zero_grad()
            scaler.scale((p * value).sum()).backward()
            scaler.unscale_([p])
            return p.sum()
        return run

    opt.step(closure(2.0))
    scaler.update()
    assert torch.allclose(p.detach(), torch.full((3,), 0.8))        # 1 - 0.1 * 2: true (unscaled) gradient
    opt.step(closure(float("inf")))
    scaler.update()
    assert torch.allclose(p.detach(), torch.full((3,), 0.8))        # skipped
    assert scaler.scale_.item() == 4.0                               # backed off
    state = scaler.state_dict()
    other = LossScaler(True, torch.device("cpu"))
    other.load_state_dict(state)
    assert other.scale_.item() == 4.0


def test_batchnorm_statistics_see_each_batch_once(tmp_path):
    """A two-pass step updates BatchNorm running statistics on the first pass only (standard training: the
    closure's first forward is the only train-mode forward of the step)."""
    raw = two_pass_config(epochs=1)
    raw["method"] = {"name": "standard", "eps": 0.1}
    trainer = Trainer(config_from_dict(raw), tmp_path / "run", log=lambda s: None)
    trainer._build()
    batch = next(iter(trainer.loader))
    reference = copy.deepcopy(trainer.model).train()
    with torch.no_grad():
        reference(batch.x)                     # one train-mode forward at the pre-step weights
    trainer.train_model.train()
    trainer._step(batch, 0.0)
    assert trainer.optimizer.passes == 2
    bn, ref = trainer.model[1].bn, reference[1].bn
    assert int(bn.num_batches_tracked) == 1
    assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)
    assert bn.track_running_stats                                   # restored after the second pass


def test_saved_config_is_fully_resolved(tmp_path, tiny_cfg):
    tiny_cfg["method"] = {"name": "pgd", "eps": "8/255", "steps": 4, "regularizers": [{"name": "elle_a"}, {"name": "gradalign"}]}
    tiny_cfg["train"]["epochs"] = 1
    train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    m = saved["method"]
    assert m["alpha"] == pytest.approx(2.5 * (8 / 255) / 4) and m["random_start"] is True
    assert m["regularizers"][0]["weight"] == 4000.0 and m["regularizers"][0]["schedule"]["name"] == "onoff"
    assert m["regularizers"][0]["schedule"]["decay"] == 0.99
    assert m["regularizers"][1]["weight"] == pytest.approx(0.2) and m["regularizers"][1]["schedule"] == {"name": "constant"}
    assert saved["monitor"]["attack_alpha"] == pytest.approx(8 / 255 / 4)
    assert saved["final_eval"]["alpha"] == pytest.approx(8 / 255 / 4)
    assert config_from_dict(saved).to_dict() == saved               # resolving a resolved config changes nothing


def test_l2_runs_draw_l2_points_and_gat_refuses_l2(tmp_path, tiny_cfg):
    from robustlab.attacks.threat import random_point
    from robustlab.config import ConfigError
    from robustlab.core.context import BuildContext
    from robustlab.methods import build_method
    x = torch.rand(64, 1, 8, 8) * 0.5 + 0.25
    eps = 0.5
    cfg = config_from_dict({"method": {"name": "fgsm", "eps": eps, "norm": "l2",
                                       "regularizers": [{"name": "elle", "weight": 1.0, "clip_box": False}]}}).method
    method = build_method(cfg, BuildContext.standalone(generator=torch.Generator().manual_seed(0), eps=eps, norm="l2"))
    d = method.regularizers[0].random_point(x, eps) - x
    assert (d.flatten(1).norm(dim=1) <= eps + 1e-5).all()             # in the L2 ball
    cube = random_point(x, eps, "linf", torch.Generator().manual_seed(0), clip=False) - x
    assert (cube.flatten(1).norm(dim=1) > eps).all()                  # an L-inf draw would leave it
    tiny_cfg["method"] = {"name": "fgsm", "eps": 0.5, "norm": "l2", "regularizers": [{"name": "elle", "weight": 1.0}]}
    tiny_cfg["train"]["epochs"] = 1
    assert train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)["status"] == "finished"
    with pytest.raises(ConfigError, match=r"^method\.norm: got 'l2'; gat is L-inf only .*allowed: linf$"):
        config_from_dict({"method": {"name": "gat", "eps": 0.5, "norm": "l2"}})
