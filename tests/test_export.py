"""Interop (issue 15, section 4): safetensors export round trip, RobustBench model-info export."""
import json
import subprocess
import sys

import pytest
import torch

from robustlab.config import config_from_dict
from robustlab.engine import train

TINY = {"seed": 0, "data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
        "model": {"name": "small_cnn"}, "method": {"name": "fgsm", "eps": 8 / 255}, "optim": {"lr": 0.05},
        "train": {"epochs": 1, "progress": "none", "threads": 1},
        "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []}, "final_eval": {"points": 0}}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "robustlab", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export") / "run"
    train(config_from_dict(TINY), root, log=lambda s: None)
    return root


def test_safetensors_round_trip_equal_outputs(run, tmp_path):
    pytest.importorskip("safetensors")
    from robustlab.eval.loading import load_exported, load_run_model
    proc = cli("export", run, "--format", "safetensors", "--checkpoint", "last", "--out", tmp_path / "m.safetensors")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "m.json").read_text())
    assert info["architecture"] == "SmallCNN" and info["dataset"] == "synthetic" and info["eps_text"] == "8/255"
    assert info["threat_model"] == "Linf" and info["normalization"]["inside_model"] is True
    original = load_run_model(run, "last").model
    x = torch.rand(16, *info["input_shape"])
    expected = original(x)
    assert torch.equal(load_exported(tmp_path / "m.safetensors").model(x), expected)
    (tmp_path / "m.json").unlink()          # the header alone is enough
    assert torch.equal(load_exported(tmp_path / "m.safetensors").model(x), expected)


@pytest.mark.slow   # run by CI (.ci/run); `make test` skips it (standard AutoAttack's Square: ~1 min on 2 cores)
def test_robustbench_export_from_an_autoattack_evaluation(run, tmp_path):
    pytest.importorskip("pyautoattack")
    refused = cli("export", run, "--format", "robustbench")
    assert refused.returncode == 2 and "holds no AutoAttack evaluation" in refused.stderr
    ev = cli("eval", run, "--attack", "autoattack", "--n", "16", "--sanity", "0")
    assert ev.returncode == 0, ev.stderr
    assert "apgd-ce: 16/16 points" in ev.stdout or "robust so far" in ev.stdout   # progress lines in the eval log
    proc = cli("export", run, "--format", "robustbench", "--name", "Tiny2026", "--venue", "none")
    assert proc.returncode == 0, proc.stderr
    assert "AutoAttack saw 16 of" in proc.stderr
    info = json.loads((run / "export" / "robustbench-best.json").read_text())
    documented = {"link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                  "architecture", "eps", "clean_acc", "reported", "autoattack_acc"}   # RobustBench's model_info keys
    assert documented <= set(info)
    assert info["eps"] == "8/255" and info["additional_data"] is False and info["number_forward_passes"] == 1
    evaluated = json.loads(next(p for p in (run / "eval").glob("*.json") if not p.name.endswith(".state.json")).read_text())
    assert info["autoattack_acc"] == f"{100 * evaluated['robust_acc']:.2f}"
    assert info["clean_acc"] == f"{100 * evaluated['clean_acc']:.2f}"
    for key in ("clean_acc", "autoattack_acc", "reported"):     # percentage strings, two decimals
        assert isinstance(info[key], str) and len(info[key].split(".")[1]) == 2


def test_print_config_shows_the_resolved_config_and_runs_nothing(tmp_path):
    import yaml
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(TINY))
    proc = cli("train", tmp_path / "c.yaml", "optim.lr=0.2", "--print-config")
    assert proc.returncode == 0, proc.stderr
    shown = yaml.safe_load(proc.stdout)
    assert shown["optim"]["lr"] == 0.2
    assert shown["monitor"]["attack_alpha"] == pytest.approx(8 / 255 / 4)       # derived defaults are filled in
    assert shown["final_eval"]["steps"] == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
