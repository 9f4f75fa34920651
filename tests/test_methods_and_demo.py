import pytest
import torch

from helpers import trained_synthetic_model
from robustlab.config import config_from_dict
from robustlab.core.context import BuildContext
from robustlab.data.loader import Batch
from robustlab.demo import demo_study_raw, run_demo
from robustlab.sweep import expand_study
from robustlab.diagnostics import collapse_verdict, co_onset
from robustlab.methods import METHODS, build_method


def method(**kw):
    cfg = config_from_dict({"method": kw}).method
    return build_method(cfg, BuildContext.standalone(generator=torch.Generator().manual_seed(0), eps=cfg.eps, norm=cfg.norm))


def test_registry_names():
    assert set(METHODS) >= {"standard", "fgsm", "rs_fgsm", "n_fgsm", "pgd", "gat"}


def test_eps_ramp_and_default_step_sizes():
    m = method(name="rs_fgsm", eps=0.2, eps_ramp_epochs=4)
    assert m.eps_at(0) == 0 and m.eps_at(1) == pytest.approx(0.05) and m.eps_at(6) == pytest.approx(0.2)
    assert m.attack.alpha == pytest.approx(0.25)
    assert method(name="pgd", eps=8 / 255, steps=10).attack.alpha == pytest.approx(2 / 255)
    assert method(name="n_fgsm", eps=0.1).attack.random_init == 2.0
    assert method(name="n_fgsm", eps=0.1, init_scale=3).attack.random_init == 3.0


def test_prepare_then_loss_uses_attack_points_and_ramped_eps():
    model, x, y = trained_synthetic_model()
    batch = Batch(x[:32], y[:32], torch.arange(32))
    m = method(name="fgsm", eps=0.1, eps_ramp_epochs=2)
    ctx = m.prepare(model, batch, progress=1.0)   # half-way through the ramp: eps 0.05
    assert ctx["eps"] == pytest.approx(0.05)
    assert (ctx["x_train"] - batch.x).abs().max() <= 0.05 + 1e-6
    out = m.loss(model, batch, ctx)
    expected = torch.nn.functional.cross_entropy(model(ctx["x_train"]), batch.y)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert method(name="standard").prepare(model, batch, 0)["x_train"] is batch.x


def test_co_onset():
    assert co_onset([0.1, 0.4, 0.6, 0.5, 0.05, 0.04, 0.06]) == 5
    assert co_onset([0.1, 0.4, 0.6, 0.05, 0.3, 0.5]) is None        # recovered: not CO
    assert co_onset([0.1, 0.15, 0.02, 0.01]) is None                # never robust
    assert co_onset([0.1, 0.4, 0.6, 0.05, 0.3, 0.5, 0.01]) == 7
    assert co_onset([0.8, 0.82, 0.85]) is None
    clean = [0.9, 0.95, 0.97, 0.96, 0.98, 0.99, 0.99]
    assert co_onset([0.1, 0.4, 0.6, 0.5, 0.05, 0.04, 0.06], clean) == 5
    # the model fell apart (clean accuracy 0.1) at epoch 5: training failure, not CO; clean back up later
    # while PGD stays down: CO sets in at epoch 6, measured against the clean accuracy at the PGD peak
    assert co_onset([0.1, 0.4, 0.6, 0.5, 0.05, 0.04, 0.06], [0.9, 0.95, 0.97, 0.96, 0.1, 0.99, 0.99]) == 6
    assert co_onset([0.1, 0.4, 0.6, 0.05, 0.05], [0.9, 0.95, 0.97, 0.1, 0.1]) is None
    # clean accuracy held at the onset (0.9 >= 0.9 * 0.97 = 0.873) but fell by the end (0.85): not CO
    assert co_onset([0.1, 0.4, 0.6, 0.05, 0.05], [0.9, 0.95, 0.97, 0.9, 0.85]) is None
    assert co_onset([0.1, 0.4, 0.6, 0.05, 0.05], [0.9, 0.95, 0.97, 0.9, 0.88]) == 4


def test_collapse_verdict():
    pgd = [0.1, 0.4, 0.6, 0.05, 0.05]
    assert collapse_verdict(pgd, [0.9, 0.95, 0.97, 0.96, 0.97]) == ("co", 4)
    assert collapse_verdict(pgd, [0.9, 0.95, 0.97, 0.96, 0.5]) == ("failure", 4)   # clean fell by the end
    assert collapse_verdict([0.1, 0.4, 0.6, 0.55, 0.5], [0.9] * 5) == ("none", None)


def test_embedded_demo_config_is_valid():
    study = expand_study(demo_study_raw())
    assert len(study.trials) == 18
    assert {t.config["method"]["name"] for t in study.trials} == {"fgsm", "n_fgsm", "pgd"}
    regs = {r["name"]: r["weight"] for t in study.trials for r in t.config["method"]["regularizers"]}
    assert regs == {"gradalign": 1.0, "elle": 1000.0, "elle_a": 300.0}     # the search's best weights at eps 0.3
    assert {t.config["seed"] for t in study.trials} == {0, 1, 2}
    assert all(t.config["data"]["inject"]["kind"] == "none" and t.config["method"]["eps"] == 0.3 for t in study.trials)
    assert {c["group"] for c in study.claims} == {"FGSM-AT", "PGD-5-AT", "N-FGSM-AT", "FGSM+GradAlign", "FGSM+ELLE",
                                                  "FGSM+ELLE-A"}


def test_demo_on_two_kernel_paths_makes_the_path_a_study_key(tmp_path, monkeypatch):
    import robustlab.demo as demo
    seen = {}
    monkeypatch.setattr(demo, "run_sweep", lambda study, out, workers=None, log=None: seen.update(study=study) or
                        {"report": str(tmp_path / "report" / "report.html")})
    demo.run_demo(tmp_path / "d", seeds=2, kernel_paths=["default", "avx2"], log=lambda s: None)
    trials = seen["study"].trials
    assert len(trials) == 6 * 2 * 2 and "train.kernel_path" in seen["study"].keys
    assert {t.config["train"]["kernel_path"] for t in trials} == {"default", "avx2"}


def test_small_demo_end_to_end(tmp_path):
    raw = {"name": "tiny", "workers": 2, "grid": {"seed": [0]},
           "list": [{"label": "FGSM-AT", "method.name": "fgsm"}, {"label": "PGD-AT", "method.name": "pgd", "method.steps": 2}],
           "base": {"data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
                    "model": {"name": "wong_mnist"}, "method": {"eps": 0.1},
                    "train": {"epochs": 2, "threads": 1, "progress": "none"},
                    "monitor": {"eval_points": 64, "attack_steps": 2}, "final_eval": {"points": 0}}}
    report = run_demo(tmp_path / "demo", raw=raw, log=lambda s: None)
    md = (report / "report.md").read_text()
    assert (report / "curves.png").is_file() and (report / "report.html").is_file()
    assert "| FGSM-AT | 1 |" in md and "| PGD-AT | 1 |" in md
    assert (tmp_path / "demo" / "trials" / "001-label-PGD-AT_name-pgd_steps-2_seed-0" / "results.json").is_file()


def test_named_demos_list_and_validate():
    import subprocess
    import sys
    from robustlab.demo import DEMOS, PIPELINES
    out = subprocess.run([sys.executable, "-m", "robustlab", "demo", "--list"], capture_output=True, text=True)
    assert out.returncode == 0 and all(name in out.stdout for name in DEMOS) and "(default)" in out.stdout
    for name in DEMOS:                        # every embedded demo is a valid study (pipelines: tested on their own)
        if name not in PIPELINES:
            assert len(expand_study(demo_study_raw(name)).trials) >= (2 if name == "cifar" else 3)
    bad = subprocess.run([sys.executable, "-m", "robustlab", "demo", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "demo: got 'nope'; allowed: co, memorisation, arat, transfer, cifar, cifar-arat, cifar-transfer" in bad.stderr


def demo_and_study_seed_0(demo_name: str, study_file: str, aside: str | None):
    """The study file's labels at seed 0 on the default path, and per demo trial (label, the demo's config as it
    trains, the study's trial of that label as it trains, the demo trial): ``aside`` (a top-level key the demo sets its
    own way) and the train keys that change no figure (threads, progress display, kernel path) left out."""
    from pathlib import Path
    from robustlab.sweep import load_study
    study = load_study(Path(__file__).resolve().parent.parent / "configs" / study_file)

    def training(cfg):
        cfg = {k: v for k, v in cfg.items() if k != aside}
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in ("threads", "progress", "kernel_path")}
        return cfg
    seed_0 = {t.overrides["label"]: t for t in study.trials
              if t.config["seed"] == 0 and t.overrides["train.kernel_path"] == "default"}
    demo = expand_study(demo_study_raw(demo_name))
    return list(seed_0), [(t.overrides["label"], training(t.config), training(seed_0[t.overrides["label"]].config), t)
                          for t in demo.trials]


def test_arat_demo_trains_as_the_claim_study_does():
    """robustlab demo arat is seed 0 of configs/arat/mnist5k_claim.yaml (whose evidence docs/arat.md shows): the same
    data, model, method, optimiser, epochs and final evaluation; only the per-epoch monitor, threads and progress
    display differ (none of them changes the training)."""
    labels, pairs = demo_and_study_seed_0("arat", "arat/mnist5k_claim.yaml", aside="monitor")
    assert [p[0] for p in pairs] == labels == ["ARAT", "PGD-AT", "TRADES"]
    for label, demo, study, _ in pairs:
        assert demo == study, label


def test_cifar_demo_trains_as_the_claim_study_does():
    """robustlab demo cifar is seed 0 of configs/studies/co_cifar10_claims.yaml for FGSM-AT and N-FGSM: the same
    training and final evaluation (threads, progress and kernel path aside), and its claims are the study's."""
    from pathlib import Path
    from robustlab.sweep import load_study
    _, pairs = demo_and_study_seed_0("cifar", "studies/co_cifar10_claims.yaml", aside=None)
    assert [p[0] for p in pairs] == ["FGSM-AT", "N-FGSM"]
    for label, demo, study, _ in pairs:
        assert demo == study, label
    study_claims = [c["says"] for c in load_study(Path(__file__).resolve().parent.parent / "configs" / "studies"
                                                  / "co_cifar10_claims.yaml").claims]
    assert all(c["says"] in study_claims for c in expand_study(demo_study_raw("cifar")).claims)


def test_cifar_arat_demo_trains_as_the_claim_study_does():
    """robustlab demo cifar-arat is seed 0 of configs/arat/cifar10_cpu_claim.yaml: the same four arms with the same
    training (threads, progress and kernel path aside); only its final evaluation is PGD-50-10 (the study's claims
    measure that with robustlab eval after the runs)."""
    labels, pairs = demo_and_study_seed_0("cifar-arat", "arat/cifar10_cpu_claim.yaml", aside="final_eval")
    assert [p[0] for p in pairs] == labels == ["ARAT", "PGD-AT", "TRADES", "PGD-AT ramp"]
    for label, demo, study, trial in pairs:
        assert demo == study, label
        assert (trial.config["final_eval"]["steps"], trial.config["final_eval"]["restarts"]) == (50, 10)


@pytest.mark.parametrize("name", ["cifar", "cifar-arat", "cifar-transfer"])
def test_cifar_demo_without_the_images_is_one_line_before_any_run(tmp_path, name):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "ROBUSTLAB_DATA"}
    env["HOME"] = str(tmp_path)                      # no cache folder with the tree either
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-m", "robustlab", "demo", name, "--out", str(tmp_path / "d")],
                          capture_output=True, text=True, env=env, timeout=120)
    line = proc.stderr.strip()
    assert proc.returncode == 2 and "\n" not in line and "cifar10-jpeg: not found" in line and "ROBUSTLAB_DATA" in line
    assert not (tmp_path / "d").exists()
