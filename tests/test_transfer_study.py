"""Transfer evaluation (issue 13): surrogates x targets, crafted once per surrogate, resumable per chunk, both
denominators, checked against a direct computation."""
import csv

import pytest
import torch
import yaml

from robustlab.attacks.accuracy import predict
from robustlab.config import config_from_dict
from robustlab.core.io import load_torch, read_json
from robustlab.engine import train
from robustlab.eval.transfer import TransferStudy, load_transfer_study
from robustlab.sweep import run_sweep
from robustlab.sweep.study import expand_study

BASE = {"seed": 0, "data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
        "model": {"name": "small_cnn"}, "method": {"name": "standard", "eps": 0.1}, "optim": {"lr": 0.05},
        "train": {"epochs": 2, "progress": "none", "threads": 1},
        "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []}, "final_eval": {"points": 0}}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    raw = {"name": "surrogates", "base": BASE, "grid": {"seed": [0, 1]}, "workers": 1,
           "list": [{"label": "SGD"}, {"label": "SAM", "optim.minimizer": {"name": "sam", "rho": 0.05}}]}
    run_sweep(expand_study(raw), root / "sur", log=lambda s: None)
    train(config_from_dict(BASE, {"model": {"name": "vgg", "depth": 11, "width": 0.25}, "seed": 5}), root / "vgg",
          log=lambda s: None)
    train(config_from_dict(BASE, {"model.name": "wong_mnist", "seed": 6}), root / "wong", log=lambda s: None)
    return root


def study_file(root, examples="all"):
    spec = {"name": "t", "surrogates": [{"study": "sur"}], "targets": [{"run": "vgg", "label": "VGG"}, {"run": "wong"}],
            "attacks": [{"label": "BIM", "eps": 0.1, "steps": 5},
                        {"label": "MI-DI-TI", "eps": 0.1, "steps": 5, "decay": 1.0, "di": {}, "ti": {"kernel": 5}}],
            "examples": examples, "points": 80, "chunk": 32, "batch_size": 32, "sharpness_points": 32}
    path = root / f"transfer_{examples}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_matrix_crafted_once_and_resumed_by_chunk(models, tmp_path):
    cfg = load_transfer_study(study_file(models))
    study = TransferStudy(cfg, tmp_path / "t", log=lambda s: None)
    res = study.run()
    assert study.crafted_chunks == 4 * 2 * 3            # 4 surrogates x 2 attacks x 3 chunks of 80 points
    m = res["attacks"]["BIM"]
    assert len(m["success_all"]) == 4 and len(m["success_all"][0]) == 2
    # one cell against a direct computation from the stored examples
    s, t = study.surrogates[1], study.targets[0]
    x, y, _ = study.points()
    adv = torch.cat([load_torch(p)["x_adv"] for p in sorted((tmp_path / "t" / "adv" / "BIM" / s.key).glob("chunk_*.pt"))])
    assert adv.shape == x.shape and (adv - x).abs().max() <= 0.1 + 1e-6
    fooled = predict(study.model(t), adv, 64) != y
    assert m["success_all"][1][0] == pytest.approx(fooled.float().mean().item())
    both = (predict(study.model(s), x, 64) == y) & (predict(study.model(t), x, 64) == y)
    assert m["success_correct"][1][0] == pytest.approx((fooled & both).sum().item() / both.sum().item())
    assert [e["label"] for e in res["surrogates"]] == ["SGD", "SGD", "SAM", "SAM"]
    assert set(res["sharpness"]) == {e.key for e in study.surrogates}
    rows = list(csv.reader((tmp_path / "t" / "matrix_BIM_all.csv").open()))
    assert rows[0][:2] == ["surrogate", "label"] and len(rows) == 5
    again = TransferStudy(load_transfer_study(study_file(models)), tmp_path / "t", log=lambda s: None)
    again.run()
    assert again.crafted_chunks == 0                    # a rerun crafts nothing
    (tmp_path / "t" / "adv" / "MI-DI-TI" / "s002" / "chunk_0001.pt").unlink()
    for p in (tmp_path / "t" / "judged" / "MI-DI-TI").glob("s002__*.json"):
        p.unlink()
    third = TransferStudy(load_transfer_study(study_file(models)), tmp_path / "t", log=lambda s: None)
    res3 = third.run()
    assert third.crafted_chunks == 1                    # only the missing chunk, and it is the same
    assert res3["attacks"] == res["attacks"]
    assert (tmp_path / "t" / "report" / "report.html").is_file()


def test_correct_on_targets_examples_and_bad_files(models, tmp_path):
    study = TransferStudy(load_transfer_study(study_file(models, "correct_on_targets")), tmp_path / "c",
                          log=lambda s: None)
    study.prepare()
    x, y, idx = study.points()
    for t in study.targets:
        assert bool((predict(study.model(t), x, 64) == y).all())
    assert read_json(tmp_path / "c" / "points.json")["indices"] == idx
    from robustlab.config import ConfigError
    bad = models / "bad.yaml"
    bad.write_text(yaml.safe_dump({"surrogates": [{"run": "vgg", "model": "x:y"}], "targets": [{"run": "wong"}]}))
    with pytest.raises(ConfigError, match=r"surrogates\[0\]: give exactly one of run, study, model \(got run, model\)"):
        load_transfer_study(bad)
    bad.write_text(yaml.safe_dump({"surrogates": [{"run": "vgg"}], "targets": [{"run": "wong"}],
                                   "attacks": [{"di": {"rate": 1.1}}]}))
    with pytest.raises(ConfigError, match=r"attacks\[bim\]\.di\.rate: got 1.1; shrink_pad needs a rate < 1"):
        load_transfer_study(bad)


def test_the_transfer_demo_config_is_valid():
    """robustlab demo transfer: its three steps validate before any work (the demo itself takes minutes)."""
    from robustlab.core.schema import build, resolve
    from robustlab.demo import demo_study_raw
    from robustlab.eval.transfer import TransferStudyConfig
    raw = demo_study_raw("transfer")
    assert len(expand_study(raw["targets"]).trials) == 3 and len(expand_study(raw["surrogates"]).trials) == 6
    cfg = build(TransferStudyConfig, raw["transfer"])
    resolve(cfg)
    assert cfg.surrogates[0].epochs == [2, 10, 14, 30] and cfg.attacks[0].eps == pytest.approx(0.2)
    assert [c.group for c in cfg.claims] == ["SAM@30", "SAM@30", "l-SAM@30", "SGD@14"] and cfg.min_target_accuracy == 0.8


def test_the_cifar_transfer_demo_is_seed_0_of_the_cifar_study():
    """robustlab demo cifar-transfer trains the CIFAR study's targets and seed 0 of its surrogates (threads, progress
    and kernel path aside) and runs its transfer study with the same attack, points and claims."""
    from pathlib import Path
    from robustlab.demo import demo_study_raw
    from robustlab.sweep import load_study
    configs = Path(__file__).resolve().parent.parent / "configs" / "transfer"
    raw = demo_study_raw("cifar-transfer")

    def training(cfg):
        cfg = dict(cfg)
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in ("threads", "progress", "kernel_path")}
        return cfg

    def by_label(study, keep=lambda t: True):
        return {t.overrides.get("label"): training(t.config) for t in study.trials if keep(t)}
    assert by_label(expand_study(raw["targets"])) == by_label(load_study(configs / "cifar10_cpu_targets.yaml"))
    study_seed0 = by_label(load_study(configs / "cifar10_cpu_surrogates.yaml"),
                           lambda t: t.config["seed"] == 0 and t.overrides["train.kernel_path"] == "default")
    assert by_label(expand_study(raw["surrogates"])) == study_seed0 and list(study_seed0) == ["SGD", "SAM", "l-SAM"]
    study = yaml.safe_load((configs / "cifar10_cpu_transfer.yaml").read_text())
    demo = raw["transfer"]
    assert {k: v for k, v in demo.items() if k not in ("surrogates", "targets")} == \
        {k: v for k, v in study.items() if k not in ("surrogates", "targets")}
    assert demo["surrogates"][0]["epochs"] == study["surrogates"][0]["epochs"] == [10, 12, 20]


def test_claims_weak_targets_and_changed_weights(models, tmp_path):
    """Claims over surrogate labels are counted pair by pair (same seed and kernel path) against a direct count;
    a target below min_target_accuracy is flagged; a surrogate retrained in place is refused by name."""
    import shutil
    spec = yaml.safe_load(study_file(models).read_text())
    spec["claims"] = [{"says": "SAM beats SGD", "group": "SAM", "versus": ["SGD"], "above": ["success_BIM_all"],
                       "at_least": 0.5}]
    spec["min_target_accuracy"] = 0.999
    path = models / "claims.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = TransferStudy(load_transfer_study(path), tmp_path / "t", log=lambda s: None).run()
    rows = {(r["label"], r["seed"]): r["success_BIM_all"] for r in res["surrogate_rows"]}
    wins = sum(rows[("SAM", s)] > rows[("SGD", s)] for s in (0, 1))
    (claim,) = res["claims"]
    assert (claim["met"], claim["runs"], claim["holds"]) == (wins, 2, wins >= 1)
    assert all(r["kernel_path"] for r in res["surrogate_rows"])
    # sharpness against transfer, pooled over the 4 surrogates (2 per seed: too few for per-seed rows)
    from scipy import stats
    sr = res["surrogate_rows"]
    rho = stats.spearmanr([r["hessian_top_eig"] for r in sr], [r["success_BIM_all"] for r in sr])[0]
    assert res["sharpness_transfer"]["n_BIM_top_eig"] == 4 and res["rank_rows"] == []
    assert res["sharpness_transfer"]["rank_BIM_top_eig"] == pytest.approx(rho, nan_ok=True)
    assert "Spearman's rho between sharpness and success" in (tmp_path / "t" / "report" / "report.md").read_text()
    accuracy = res["target_accuracy"]
    assert set(accuracy) == {"t000", "t001"} and all(0 <= a <= 1 for a in accuracy.values())
    assert len(res["weak_targets"]) == sum(a < 0.999 for a in accuracy.values())
    assert "Claim " in (tmp_path / "t" / "report" / "report.md").read_text()
    # retrain one surrogate in place: its weights differ, and the study refuses to mix old and new examples
    run = models / "sur" / "trials"
    victim = sorted(p for p in run.iterdir() if p.is_dir())[0]
    saved = victim.with_name("saved")
    shutil.copytree(victim, saved)
    try:
        ckpt = torch.load(victim / "checkpoints" / "last.pt", weights_only=True)
        ckpt["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
        torch.save(ckpt, victim / "checkpoints" / "last.pt")
        from robustlab.config import ConfigError
        with pytest.raises(ConfigError, match=r"the weights of s000 \(SGD\) changed"):
            TransferStudy(load_transfer_study(path), tmp_path / "t", log=lambda s: None).run()
    finally:
        shutil.rmtree(victim)
        saved.rename(victim)


def test_transfer_attacks_are_registered_components(tmp_path, monkeypatch):
    """attacks[] entries are chosen by name from TRANSFER_ATTACKS (bim when none is given); mi is BIM with decay 1;
    an outside attack registered with its config class is usable from a study file; an unknown name lists the known."""
    from dataclasses import dataclass

    from robustlab.attacks.transfer import TRANSFER_ATTACKS, TransferAttackConfig, build_bim
    from robustlab.config import ConfigError
    from robustlab.core.schema import spec

    @dataclass
    class HalfStepConfig(TransferAttackConfig):
        label: str = spec("half-step BIM")

    def half_step(cfg, surrogate):
        attack = build_bim(cfg, surrogate)
        attack.alpha = attack.alpha / 2
        return attack
    monkeypatch.setitem(TRANSFER_ATTACKS._items, "half_step", half_step)
    monkeypatch.setitem(TRANSFER_ATTACKS._configs, "half_step", HalfStepConfig)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"surrogates": [{"run": "a"}], "targets": [{"run": "b"}],
                                    "attacks": [{"eps": 0.1, "steps": 10}, {"name": "mi", "eps": 0.1, "steps": 10},
                                                {"name": "bim", "label": "B1", "eps": 0.1, "steps": 10, "decay": 1.0},
                                                {"name": "half_step", "eps": 0.1, "steps": 10}]}))
    bim, mi, bim_momentum, half = load_transfer_study(path).attacks
    assert (bim.name, bim.label, bim.decay, mi.label, mi.decay, half.label) == ("bim", "BIM", 0.0, "MI", 1.0, "half-step BIM")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).eval()
    x, y = torch.rand(32, 1, 4, 4), torch.arange(32) % 3
    run = {a.label: TRANSFER_ATTACKS.build(a, net)(x, y) for a in (bim, mi, bim_momentum, half)}
    assert torch.equal(run["MI"], run["B1"]) and not torch.equal(run["MI"], run["BIM"])
    assert TRANSFER_ATTACKS.build(half, net).alpha == pytest.approx(0.1 / 10 / 2)
    path.write_text(yaml.safe_dump({"surrogates": [{"run": "a"}], "targets": [{"run": "b"}], "attacks": [{"name": "vmi"}]}))
    with pytest.raises(ConfigError, match=r"attacks\[vmi\]\.name: got 'vmi'; allowed: bim, half_step, mi"):
        load_transfer_study(path)
