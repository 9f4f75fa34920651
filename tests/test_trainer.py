import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml

from robustlab.config import ConfigError, config_from_dict
from robustlab.engine import Trainer, train
from robustlab.core.io import load_torch, read_jsonl
from robustlab.methods.adversarial import FGSMTraining

from helpers import signal_at_env, train_killed_at

TIMING = {"seconds", "eval_seconds"}


def comparable(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_run_folder_contents(tmp_path, tiny_cfg):
    res = train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    run = tmp_path / "run"
    assert res["status"] == "finished" and res["epochs_completed"] == 3
    for f in ("config.yaml", "env.json", "metrics.jsonl", "results.json", "checkpoints/last.pt", "checkpoints/best.pt",
              "report/curves.png", "report/report.md", "report/report.html"):
        assert (run / f).is_file(), f
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("lr", "train_loss", "train_acc", "val_clean_acc", "val_pgd_acc", "test_clean_acc", "test_pgd_acc",
                "test_fgsm_acc", "seconds"):
        assert key in rows[0]
    assert 0 <= rows[-1]["test_pgd_acc"] <= rows[-1]["test_clean_acc"] <= 1
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["seed"] == 0
    fe = res["final_eval"]
    assert fe["protocol"] == "PGD-3-2" and fe["n_examples"] == 64 and fe["last"]["robust_acc"] <= fe["last"]["clean_acc"]
    best = load_torch(run / "checkpoints" / "best.pt")
    assert best["epoch"] == res["best_epoch"]
    assert yaml.safe_load((run / "config.yaml").read_text())["method"]["eps"] == pytest.approx(0.1)


def test_monitor_every_k_epochs_measures_a_subset_and_trains_the_same(tmp_path, tiny_cfg):
    """``monitor.every: 2`` over 5 epochs measures after epochs 2, 4 and 5 only; the evaluation draws from its own
    generator, so training is the same run as with every epoch measured, the measured rows carry the same figures,
    and best.pt is the best of the measured epochs."""
    tiny_cfg["train"]["epochs"] = 5
    full = train(config_from_dict(tiny_cfg), tmp_path / "full", log=lambda s: None)
    tiny_cfg["monitor"]["every"] = 2
    sparse = train(config_from_dict(tiny_cfg), tmp_path / "sparse", log=lambda s: None)
    rows_full, rows = read_jsonl(tmp_path / "full" / "metrics.jsonl"), read_jsonl(tmp_path / "sparse" / "metrics.jsonl")
    assert [r["epoch"] for r in rows if "test_pgd_acc" in r] == [2, 4, 5]
    assert not any(k.startswith(("val_", "test_")) for r in rows if r["epoch"] in (1, 3) for k in r)
    for a, b in zip(rows_full, rows):
        assert a["train_loss"] == b["train_loss"] and a["lr"] == b["lr"]
        if "test_pgd_acc" in b:
            assert {k: a[k] for k in b if k.startswith(("val_", "test_"))} == {k: b[k] for k in b if k.startswith(("val_", "test_"))}
    measured = [r for r in rows_full if r["epoch"] in (2, 4, 5)]
    best = max(measured, key=lambda r: (r["val_pgd_acc"], -r["epoch"]))["epoch"]
    assert sparse["best_epoch"] == best == load_torch(tmp_path / "sparse" / "checkpoints" / "best.pt")["epoch"]
    assert ({k: sparse["final_eval"]["last"][k] for k in ("clean_acc", "robust_acc")}
            == {k: full["final_eval"]["last"][k] for k in ("clean_acc", "robust_acc")})
    ro = sparse["robust_overfitting"]
    assert ro["best_epoch"] in (2, 4, 5) and ro["last"] == rows[-1]["test_pgd_acc"]
    assert (tmp_path / "sparse" / "report" / "curves.png").stat().st_size > 5000
    tiny_cfg["method"]["eps"], tiny_cfg["train"]["epochs"], tiny_cfg["final_eval"]["points"] = 1.0, 3, 0
    tiny_cfg["monitor"]["attack_steps"] = 20
    fooled = train(config_from_dict(tiny_cfg), tmp_path / "fooled", log=lambda s: None)   # PGD accuracy 0 throughout
    assert [r.get("val_pgd_acc") for r in read_jsonl(tmp_path / "fooled" / "metrics.jsonl")] == [None, 0.0, 0.0]
    assert fooled["best_epoch"] == 2      # the first measured epoch, not the unmeasured epoch 1
    tiny_cfg["monitor"]["every"] = 0
    with pytest.raises(ConfigError, match="monitor.every"):
        config_from_dict(tiny_cfg)


@pytest.mark.parametrize("regs", [[], [{"name": "elle_a", "weight": 50.0}]])
def test_resume_after_interrupt_matches_uninterrupted(tmp_path, tiny_cfg, monkeypatch, regs):
    tiny_cfg["train"]["epochs"] = 4
    tiny_cfg["method"]["regularizers"] = regs
    cfg = config_from_dict(tiny_cfg)
    ref = train(cfg, tmp_path / "ref", log=lambda s: None)
    calls = {"n": 0}
    original = Trainer._step

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 17:  # mid-epoch 3 (7 steps per epoch)
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(Trainer, "_step", flaky)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", log=lambda s: None)
    assert len(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == 2
    cut = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert cut["status"] == "interrupted" and cut["interrupted_at"]      # a dead run does not look alive
    monkeypatch.setattr(Trainer, "_step", original)
    res = train(cfg, tmp_path / "cut", log=lambda s: None)
    assert res["status"] == "finished"
    assert comparable(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == comparable(read_jsonl(tmp_path / "ref" / "metrics.jsonl"))
    a = load_torch(tmp_path / "ref" / "checkpoints" / "last.pt")["model"]
    b = load_torch(tmp_path / "cut" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert res["final_eval"]["last"] == pytest.approx(ref["final_eval"]["last"], abs=0) or \
        res["final_eval"]["last"]["robust_acc"] == ref["final_eval"]["last"]["robust_acc"]


@pytest.mark.parametrize("old_checkpoint", [False, True])
def test_resumed_run_counts_every_attempts_seconds(tmp_path, tiny_cfg, monkeypatch, old_checkpoint):
    """train_seconds of a run cut after epoch 1 and resumed is the first attempt's time (kept in last.pt; from its
    epochs' rows in a checkpoint written before that) plus the second's, not the second's alone. The first attempt's
    time is set to 1e6 s in the checkpoint so that the sum cannot be mistaken for one attempt's."""
    from robustlab.core.io import save_torch
    cfg = config_from_dict(tiny_cfg)
    original, calls = Trainer._step, {"n": 0}

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 10:  # in epoch 2 (7 steps per epoch)
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(Trainer, "_step", flaky)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", log=lambda s: None)
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    state = load_torch(last)
    rows = read_jsonl(tmp_path / "cut" / "metrics.jsonl")
    assert len(rows) == 1 and state["seconds"] >= rows[0]["seconds"] + rows[0]["eval_seconds"] > 0
    if old_checkpoint:
        del state["seconds"]
        state["history"][0]["seconds"] = 1e6
    else:
        state["seconds"] = 1e6
    save_torch(last, state)
    monkeypatch.setattr(Trainer, "_step", original)
    res = train(cfg, tmp_path / "cut", log=lambda s: None)
    second = sum(r["seconds"] for r in read_jsonl(tmp_path / "cut" / "metrics.jsonl")[1:])
    assert res["status"] == "finished" and 1e6 + second <= res["train_seconds"] < 1e6 + 600
    assert load_torch(last)["seconds"] >= 1e6 + second


def test_sigkill_mid_run_then_resume_matches(tmp_path):
    cfg = {"seed": 1, "data": {"name": "mnist5k", "val_size": 200, "batch_size": 128},
           "model": {"name": "wong_mnist"}, "method": {"name": "rs_fgsm", "eps": 0.1},
           "train": {"epochs": 4, "progress": "none", "threads": 1},
           "monitor": {"eval_points": 200, "attack_steps": 3}, "final_eval": {"points": 0}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "robustlab", "train", str(path), "--out"]
    subprocess.run(cmd + [str(tmp_path / "ref")], check=True, capture_output=True)
    train_killed_at(path, tmp_path / "cut", epoch=2, step=7)         # inside epoch 2
    metrics = tmp_path / "cut" / "metrics.jsonl"
    assert len(read_jsonl(metrics)) == 1
    assert json.loads((tmp_path / "cut" / "results.json").read_text())["status"] == "running"
    subprocess.run(cmd + [str(tmp_path / "cut")], check=True, capture_output=True)
    assert comparable(read_jsonl(metrics)) == comparable(read_jsonl(tmp_path / "ref" / "metrics.jsonl"))


def test_finished_run_is_not_retrained_and_other_config_refused(tmp_path, tiny_cfg):
    cfg = config_from_dict(tiny_cfg)
    train(cfg, tmp_path / "run", log=lambda s: None)
    stamp = (tmp_path / "run" / "checkpoints" / "last.pt").stat().st_mtime_ns
    logs = []
    res = train(cfg, tmp_path / "run", log=logs.append)
    assert res["status"] == "finished" and "already finished" in logs[0]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").stat().st_mtime_ns == stamp
    tiny_cfg["optim"]["lr"] = 0.01
    with pytest.raises(ConfigError, match="different config"):
        train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)


def test_nonfinite_loss_stops_with_status_and_keeps_last_good_checkpoint(tmp_path, tiny_cfg, monkeypatch):
    tiny_cfg["train"]["epochs"] = 3
    original = FGSMTraining.objective
    calls = {"n": 0}

    def poisoned(self, model, batch, ctx):
        out = original(self, model, batch, ctx)
        calls["n"] += 1
        if calls["n"] > 10:  # epoch 2
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(FGSMTraining, "objective", poisoned)
    res = train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    assert res["status"] == "diverged" and "non-finite loss in epoch 2" in res["message"]
    last = load_torch(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("over", [{"train": {"precision": "bf16"}}, {"train": {"channels_last": True}},
                                  {"method": {"name": "pgd", "steps": 2}}, {"method": {"name": "n_fgsm"}}, {"method": {"name": "gat"}},
                                  {"method": {"name": "standard"}}, {"optim": {"name": "adamw", "lr": 0.001}},
                                  ])
def test_variants_train(tmp_path, tiny_cfg, over):
    for k, v in over.items():
        tiny_cfg[k].update(v)
    res = train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    assert res["status"] == "finished"
    assert res["last"]["test_clean_acc"] > 0.5  # 4 classes: chance is 0.25


def test_eval_cli_writes_json(tmp_path, tiny_cfg):
    train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    out = tmp_path / "e.json"
    proc = subprocess.run([sys.executable, "-m", "robustlab", "eval", str(tmp_path / "run"), "--eps", "25/255",
                           "--steps", "5", "--restarts", "2", "--n", "100", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["eps"] == "25/255" and res["n_examples"] == 100 and res["protocol"] == "PGD-5-2"
    assert res["attack"]["alpha"] == pytest.approx(25 / 255 / 4) and res["threat_model"] == "Linf"
    assert 0 <= res["robust_acc"] <= res["clean_acc"] <= 1
    assert {f["check"] for f in res["sanity"]} >= {"train_mode", "randomness", "zero_gradients", "eps_monotone",
                                                   "large_eps", "more_iterations"}
    assert out.with_suffix(".state.json").is_file() and "## Sanity checks" in out.with_suffix(".md").read_text()
    again = subprocess.run([sys.executable, "-m", "robustlab", "eval", str(tmp_path / "run"), "--eps", "25/255",
                            "--steps", "5", "--restarts", "2", "--n", "100", "--out", str(out), "--sanity", "0"],
                           capture_output=True, text=True)       # resumed from the state: nothing left to attack
    assert again.returncode == 0 and json.loads(out.read_text())["robust_acc"] == res["robust_acc"]
    assert "points to attack" not in again.stdout
    bad = subprocess.run([sys.executable, "-m", "robustlab", "eval", str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not found" in bad.stderr


@pytest.mark.parametrize("norm,eps", [("linf", "25/255"),
                                       pytest.param("l2", "0.4", marks=pytest.mark.slow)])  # CI runs it (.ci/run); ~1 min of Square
def test_eval_cli_autoattack_end_to_end(tmp_path, tiny_cfg, norm, eps):
    """`robustlab eval RUN --attack autoattack` on a trained run: the four standard components in order, each on
    the survivors of the last, RobustBench's vocabulary, and never weaker than PGD on the same points."""
    pytest.importorskip("pyautoattack")
    train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    common = [sys.executable, "-m", "robustlab", "eval", str(tmp_path / "run"), "--norm", norm, "--eps", eps, "--n", "48"]
    aa = subprocess.run(common + ["--attack", "autoattack", "--sanity", "24", "--out", str(tmp_path / "aa.json")],
                        capture_output=True, text=True)
    assert aa.returncode == 0, aa.stderr
    pgd = subprocess.run(common + ["--attack", "pgd", "--steps", "10", "--restarts", "1", "--sanity", "0",
                                   "--out", str(tmp_path / "pgd.json")], capture_output=True, text=True)
    assert pgd.returncode == 0, pgd.stderr
    res, ref = json.loads((tmp_path / "aa.json").read_text()), json.loads((tmp_path / "pgd.json").read_text())
    assert res["protocol"] == "AutoAttack" and res["threat_model"] == {"linf": "Linf", "l2": "L2"}[norm]
    assert res["eps"] == eps and res["n_examples"] == 48 and res["autoattack_acc"] == res["robust_acc"]
    assert [s["name"] for s in res["stages"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert res["clean_acc"] == ref["clean_acc"] and res["robust_acc"] <= ref["robust_acc"]
    clean_correct = round(res["clean_acc"] * 48)
    assert clean_correct - sum(s["fooled"] for s in res["stages"]) == round(res["robust_acc"] * 48)
    assert res["robust_acc"] < res["clean_acc"]       # eps this large fools some points of a tiny model
    assert "black_box_beats_white_box" in {f["check"] for f in res["sanity"]}


def test_checkpoint_loading_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": Evil()}, p)
    with pytest.raises(Exception):
        load_torch(p)


def test_augmentation_and_eps_ramp_change_training(tmp_path, tiny_cfg):
    """Synthetic prototypes are not shift-invariant, so only check the options take effect."""
    plain = train(config_from_dict(tiny_cfg), tmp_path / "a", log=lambda s: None)
    tiny_cfg["data"].update({"crop_padding": 1, "flip": True})
    tiny_cfg["method"]["eps_ramp_epochs"] = 2
    aug = train(config_from_dict(tiny_cfg), tmp_path / "b", log=lambda s: None)
    assert aug["status"] == "finished"
    assert aug["last"]["train_loss"] != plain["last"]["train_loss"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_cpu_heap_keeps_freed_activation_memory():
    """With keep_cpu_heap, a freed 200 MB buffer stays in the process for reuse (no munmap + page faults
    on the next step); without it glibc unmaps it at once."""
    code = textwrap.dedent("""
        import sys, torch
        from robustlab.core.runtime import keep_cpu_heap
        if sys.argv[1] == "keep":
            assert keep_cpu_heap()
        page = 4096
        rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
        before = rss()
        x = torch.ones(50 * 1024 * 1024)      # 200 MB
        del x
        print((rss() - before) / 2**20)
    """)
    kept = {mode: float(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                       check=True).stdout.split()[-1]) for mode in ("keep", "default")}
    assert kept["keep"] > 150 and kept["default"] < 50, kept


def test_sigterm_records_interrupted_and_the_rerun_resumes(tmp_path, tiny_cfg):
    """SIGTERM inside epoch 2 (at a known step): exit 130, the run recorded as interrupted with epoch 1, and the rerun
    resumes to the figures of an uninterrupted run."""
    tiny_cfg["train"]["epochs"] = 3
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_cfg))
    cmd = [sys.executable, "-m", "robustlab", "train", str(path), "--out"]
    stopped = subprocess.run(cmd + [str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
                             env=signal_at_env("SIGTERM", epoch=2, step=2))
    assert stopped.returncode == 130 and "interrupted; rerun" in stopped.stderr, stopped.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["status"] == "interrupted" and res["epochs_completed"] == 1, res
    assert subprocess.run(cmd + [str(tmp_path / "run")], capture_output=True, timeout=300).returncode == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "finished"
    subprocess.run(cmd + [str(tmp_path / "ref")], check=True, capture_output=True, timeout=300)
    assert comparable(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == comparable(read_jsonl(tmp_path / "ref" / "metrics.jsonl"))


def test_output_files_respect_the_umask(tmp_path):
    from robustlab.core.io import write_json
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_json(tmp_path / "b.json", {"x": 1})
        assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_version_and_list():
    out = subprocess.run([sys.executable, "-m", "robustlab", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("robustlab ")
    out = subprocess.run([sys.executable, "-m", "robustlab", "list", "minimizers"], capture_output=True, text=True)
    assert out.returncode == 0 and "awp  (gamma=0.01, warmup_epochs=0)" in out.stdout and "plain" in out.stdout
    out = subprocess.run([sys.executable, "-m", "robustlab", "list"], capture_output=True, text=True)
    for kind in ("methods:", "regularizers:", "optimizers:", "models:", "datasets:", "attacks:"):
        assert kind in out.stdout
    assert "trades  (" in out.stdout and "beta=6.0" in out.stdout


def test_nonfinite_weights_on_an_epochs_last_step_keep_the_previous_checkpoint(tmp_path, tiny_cfg, monkeypatch):
    """An lr spike on the last step of epoch 2 leaves NaN weights while every loss of the epoch was finite: the run
    stops as diverged before epoch 2 is recorded or saved, and the kept checkpoint is epoch 1's, finite."""
    tiny_cfg["train"]["epochs"] = 3
    original = Trainer._step
    calls = {"n": 0}

    def spiking(self, batch, progress):
        calls["n"] += 1
        out, ctx = original(self, batch, progress)
        if calls["n"] == 14:                       # the last of epoch 2's 7 steps
            with torch.no_grad():
                for p in self.model.parameters():
                    p.mul_(float("nan"))
        return out, ctx

    monkeypatch.setattr(Trainer, "_step", spiking)
    res = train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    assert res["status"] == "diverged" and "non-finite weights after epoch 2" in res["message"]
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 1
    last = load_torch(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
