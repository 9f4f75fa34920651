"""Bad input gets one line naming what is wrong, exit status 2, and loses or writes nothing (issue 15, section 6)."""
import json
import subprocess
import sys

import pytest
import yaml

from robustlab.config import config_from_dict
from robustlab.engine import train

TINY = {"seed": 0, "data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
        "model": {"name": "wong_mnist"}, "method": {"name": "fgsm", "eps": 0.1}, "optim": {"lr": 0.05},
        "train": {"epochs": 1, "progress": "none", "threads": 1},
        "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []}, "final_eval": {"points": 0}}


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "robustlab", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def one_line(proc, needle):
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and needle in line, line


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    train(config_from_dict(TINY), root / "run", log=lambda s: None)
    (root / "c.yaml").write_text(yaml.safe_dump(TINY))
    return root


def test_train_out_is_a_file(run, tmp_path):
    (tmp_path / "afile").write_text("x")
    one_line(cli("train", run / "c.yaml", "--out", tmp_path / "afile"), "--out: ")
    assert (tmp_path / "afile").read_text() == "x"


def test_empty_config_file_and_large_linf_eps(tmp_path, run):
    (tmp_path / "empty.yaml").write_text("")
    one_line(cli("train", tmp_path / "empty.yaml", "--out", tmp_path / "r"), "config file")
    one_line(cli("train", run / "c.yaml", "method.eps=8", "--out", tmp_path / "r"),
             "method.eps: got 8; an L-inf radius above 1 covers the whole [0,1] image box")
    one_line(cli("eval", run / "run", "--eps", "2", "--out", tmp_path / "e.json"), "--eps: got 2.0; must be > 0 and at most 1")
    assert not (tmp_path / "r").exists() and not (tmp_path / "e.json").exists()


def test_truncated_checkpoint_on_resume_changes_nothing(tmp_path):
    raw = {**TINY, "train": {**TINY["train"], "epochs": 2}}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    train(config_from_dict({**raw, "train": {**raw["train"], "epochs": 2}}), tmp_path / "run", log=lambda s: None)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    results["status"] = "running"                      # as if it had been killed, then its checkpoint torn
    (tmp_path / "run" / "results.json").write_text(json.dumps(results))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    env_before = (tmp_path / "run" / "env.json").read_bytes()
    one_line(cli("train", cfg, "--out", tmp_path / "run"), "not a torch checkpoint (or a truncated one)")
    assert (tmp_path / "run" / "env.json").read_bytes() == env_before


def test_text_file_named_pt_and_eval_out_folder(run, tmp_path):
    (tmp_path / "fake.pt").write_text("not a checkpoint")
    proc = cli("eval", tmp_path / "fake.pt")
    one_line(proc, "not a torch checkpoint")
    assert "weights_only=False" not in proc.stderr
    (tmp_path / "outdir").mkdir()
    one_line(cli("eval", run / "run", "--out", tmp_path / "outdir", "--sanity", "0", "--steps", "2"), "is a folder")
    assert not list((tmp_path / "outdir").iterdir()) and not (run / "run" / "eval.state.json").exists()


def test_weights_that_do_not_fit_the_config(run, tmp_path):
    import torch
    ckpt = torch.load(run / "run" / "checkpoints" / "best.pt", weights_only=True)
    ckpt["config"]["model"] = {"name": "small_cnn"}
    torch.save(ckpt, tmp_path / "other.pt")
    one_line(cli("eval", tmp_path / "other.pt"), "its weights do not fit the model its config describes")


def test_report_refuses_a_torn_or_garbage_metrics_file(run, tmp_path):
    """The trainer writes metrics.jsonl atomically: a torn line is damage, and the report is left as it was."""
    import shutil
    shutil.copytree(run / "run", tmp_path / "r")
    m = tmp_path / "r" / "metrics.jsonl"
    text = m.read_text()
    report = (tmp_path / "r" / "report" / "report.md").read_bytes()
    m.write_text(text + '{"epoch": 2, "lr": 0.0')
    one_line(cli("report", tmp_path / "r"), "metrics.jsonl: line 2 is not JSON (the file is damaged)")
    m.write_text("garbage\n" + text)
    one_line(cli("report", tmp_path / "r"), "metrics.jsonl: line 1 is not JSON")
    assert (tmp_path / "r" / "report" / "report.md").read_bytes() == report


def test_sweep_workers_zero(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "base": TINY, "grid": {"seed": [0]}}))
    one_line(cli("sweep", study, "--out", tmp_path / "out", "--workers", "0"), "--workers: got 0; must be >= 1")
    assert not (tmp_path / "out").exists()


def test_eval_more_points_than_the_test_set_warns(run, tmp_path):
    proc = cli("eval", run / "run", "--n", "5000", "--steps", "2", "--restarts", "1", "--sanity", "0", "--out", tmp_path / "e.json")
    assert proc.returncode == 0 and "warning: --n 5000: the synthetic test set has 256 points" in proc.stdout
    assert json.loads((tmp_path / "e.json").read_text())["n_examples"] == 256


# The config a run of the pre-redesign code (checkpoint format 1, commit 5eb21bc) stored, printed by that code.
FORMAT1_CONFIG = json.loads('{"seed": 0, "data": {"name": "synthetic", "root": null, "val_size": 64, "batch_size": 64, "eval_batch_size": 256, "crop_padding": 0, "flip": false, "inject": {"kind": "none", "beta": 0.0}, "labels": {"noise": 0.0, "seed": null}}, "model": {"name": "wong_mnist", "normalize": true, "depth": 28, "widen": 10, "dropout": 0.0, "lowpass": 0}, "method": {"name": "fgsm", "eps": 0.1, "alpha": null, "steps": 10, "init_scale": null, "norm": "linf", "bn_mode": "train", "eps_ramp_epochs": 0, "regularizers": [{"name": "elle_a", "weight": 50.0, "schedule": null, "sensitivity": 2.0, "decay": 0.99, "window": 0, "clip_box": true, "mean_grad_quirk": false, "fuse_forward": false, "triplet_passes": 1}]}, "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": false, "weight_decay": 0.0005, "betas": [0.9, 0.999], "schedule": "cyclic", "peak_at": 0.5, "milestones": [], "gamma": 0.1, "warmup_epochs": 0.0, "cycle_momentum": false}, "train": {"epochs": 1, "precision": "fp32", "channels_last": false, "device": "auto", "threads": 1, "compile": false, "progress": "none", "cpu_keep_heap": true}, "monitor": {"eval_points": 64, "val_points": 0, "attack_steps": 2, "attack_restarts": 1, "attack_alpha": null, "fgsm": true, "diagnostics": 32, "co_action": "none"}, "final_eval": {"points": 0, "steps": 50, "restarts": 10, "alpha": null}}')


def test_format1_checkpoint_is_still_evaluated(tmp_path):
    """A checkpoint written before the component redesign (flat config sections, format 1) is evaluated after
    migrating its config; it cannot be resumed (its run folder is refused with one line)."""
    import torch
    from robustlab.config import migrate_format1
    cfg = config_from_dict(migrate_format1(FORMAT1_CONFIG))
    assert cfg.method.regularizers[0].schedule.name == "onoff" and cfg.monitor.diagnostics[0].points == 32
    assert cfg.optim.schedule.name == "cyclic"
    train(cfg, tmp_path / "new", log=lambda s: None)
    weights = torch.load(tmp_path / "new" / "checkpoints" / "best.pt", weights_only=True)["model"]
    torch.save({"format": 1, "epoch": 1, "model": weights, "config": FORMAT1_CONFIG, "metrics": {}}, tmp_path / "old.pt")
    out = tmp_path / "e.json"
    proc = subprocess.run([sys.executable, "-m", "robustlab", "eval", str(tmp_path / "old.pt"), "--steps", "2",
                           "--restarts", "1", "--n", "32", "--sanity", "0", "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ref = subprocess.run([sys.executable, "-m", "robustlab", "eval", str(tmp_path / "new"), "--steps", "2", "--restarts", "1",
                          "--n", "32", "--sanity", "0", "--out", str(tmp_path / "ref.json")], capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    a, b = json.loads(out.read_text()), json.loads((tmp_path / "ref.json").read_text())
    assert (a["clean_acc"], a["robust_acc"]) == (b["clean_acc"], b["robust_acc"])   # same weights, same data, same verdicts


def test_eval_threads_option(run, tmp_path):
    ok = cli("eval", run / "run", "--threads", "1", "--steps", "2", "--restarts", "1", "--n", "16", "--sanity", "0",
             "--out", tmp_path / "e.json")
    assert ok.returncode == 0, ok.stderr
    one_line(cli("eval", run / "run", "--threads", "-1", "--out", tmp_path / "f.json"), "--threads: got -1; must be >= 0")
    assert not (tmp_path / "f.json").exists()
