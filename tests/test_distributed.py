"""DDP on CPU with the gloo backend and 2 processes against one process with the same global batch."""
import json
import subprocess
import sys

import pytest
import yaml

from robustlab.core.io import read_jsonl

CFG = {"seed": 0, "data": {"name": "mnist5k", "val_size": 200, "batch_size": 128},
       "model": {"name": "wong_mnist"},              # no BatchNorm: batch slices do not change the math
       "method": {"name": "fgsm", "eps": 0.1},        # no attack randomness
       "optim": {"lr": 0.05},
       "train": {"epochs": 2, "progress": "none", "threads": 1},
       "monitor": {"eval_points": 300, "attack_steps": 3}, "final_eval": {"points": 100, "steps": 3, "restarts": 1}}


def test_ddp_two_processes_match_single_process(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CFG))
    subprocess.run([sys.executable, "-m", "robustlab", "train", str(path), "--out", str(tmp_path / "one")],
                   check=True, capture_output=True, timeout=300)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                          "-m", "robustlab", "train", str(path), "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stdout[-2000:] + ddp.stderr[-3000:]
    one = read_jsonl(tmp_path / "one" / "metrics.jsonl")
    two = read_jsonl(tmp_path / "two" / "metrics.jsonl")
    assert len(two) == 2 and json.loads((tmp_path / "two" / "env.json").read_text())["world_size"] == 2
    # Stated tolerance (README): same global batch and data order, so training differs only by float
    # summation order: train loss within 0.1 %, train and clean accuracies within 0.5 points. PGD
    # accuracies within 3 points: the evaluation attack's random starts are drawn per rank.
    for a, b in zip(one, two):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
        assert b["train_acc"] == pytest.approx(a["train_acc"], abs=5e-3)
        for k in ("test_clean_acc", "val_clean_acc"):
            assert b[k] == pytest.approx(a[k], abs=5e-3), k
        for k in ("test_pgd_acc", "val_pgd_acc", "test_fgsm_acc"):
            assert b[k] == pytest.approx(a[k], abs=0.03), k
    from robustlab.core.io import load_torch
    last = load_torch(tmp_path / "two" / "checkpoints" / "last.pt")
    assert len(last["rng_ranks"]) == 2 and last["rng_ranks"][0]["generators"]["attack"].ne(
        last["rng_ranks"][1]["generators"]["attack"]).any()          # every rank's own attack generator is kept
    res = json.loads((tmp_path / "two" / "results.json").read_text())
    assert res["status"] == "finished" and res["final_eval"]["n_examples"] == 100


def test_ddp_arat_two_forwards_per_step(tmp_path):
    """ARAT under DDP: a clean-branch and an adversarial-branch forward through the same DDP module before one
    backward (split BN, predictor heads owned by the method). Both branches' statistics and the heads train."""
    import torch
    cfg = {"seed": 0, "data": {"name": "synthetic", "val_size": 64, "batch_size": 32, "train_size": 128},
           "model": {"name": "vgg", "depth": 11, "width": 0.0625, "norm_layer": {"name": "split_batchnorm"}},
           "method": {"name": "arat", "eps": 0.1, "steps": 2, "layers": ["1.features.23", "1.features.26"], "weight": 30.0},
           "optim": {"lr": 0.05, "schedule": "constant"}, "train": {"epochs": 1, "progress": "none", "threads": 1},
           "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []}, "final_eval": {"points": 0}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
                          "-m", "robustlab", "train", str(path), "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stdout[-2000:] + ddp.stderr[-3000:]
    from robustlab.core.checkpoint import load_checkpoint
    last = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    model = last["model"]
    for branch in ("clean", "adv"):
        means = [v for k, v in model.items() if k.endswith(f".{branch}.running_mean")]
        assert means and all(torch.isfinite(m).all() and m.abs().sum() > 0 for m in means), branch
    heads = last["components"]["method"]["modules"]["predictors"]
    assert heads and all(torch.isfinite(v).all() for v in heads.values())
    assert json.loads((tmp_path / "two" / "env.json").read_text())["world_size"] == 2
