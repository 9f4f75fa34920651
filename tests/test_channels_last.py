"""``train.channels_last`` changes the memory layout, not the math: for each method family the CIFAR CPU studies use
(ARAT on split BN, TRADES + AWP, PGD-AT + TE, SAM), a short run with it matches the same run without it to float
rounding (a layer that read a channels_last tensor's storage in the wrong order would be far off). One epoch of three
steps: PGD's sign steps turn rounding into other perturbations, so longer runs drift apart as any two kernels do."""
import pytest

from robustlab.config import config_from_dict
from robustlab.engine import train

BASE = {"seed": 0, "data": {"name": "synthetic_cifar", "val_size": 64, "train_size": 192, "batch_size": 64},
        "model": {"name": "preact_resnet18", "width": 0.125},
        "optim": {"lr": 0.05, "schedule": "constant"},
        "train": {"epochs": 1, "progress": "none", "threads": 1},
        "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []}, "final_eval": {"points": 0}}
SPLIT = {"name": "preact_resnet18", "width": 0.125, "norm_layer": {"name": "split_batchnorm"}}
CASES = {
    "arat": {"model": SPLIT, "method": {"name": "arat", "eps": 8 / 255, "steps": 2, "weight": 30.0}},
    "trades+awp": {"method": {"name": "trades", "eps": 8 / 255, "steps": 2},
                   "optim": {"lr": 0.05, "schedule": "constant", "minimizer": {"name": "awp", "gamma": 0.01}}},
    "pgd+te": {"method": {"name": "pgd", "eps": 8 / 255, "steps": 2, "te": {"start": 0.0, "end": 0.5}}},
    "sam": {"method": {"name": "standard", "eps": 0.0},
            "optim": {"lr": 0.05, "schedule": "constant", "minimizer": {"name": "sam", "rho": 0.05}}},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_channels_last_trains_the_same_numbers(tmp_path, case):
    runs = {}
    for layout in (False, True):
        raw = {**BASE, **CASES[case], "train": {**BASE["train"], "channels_last": layout}}
        runs[layout] = train(config_from_dict(raw), tmp_path / f"{case}-{layout}", log=lambda s: None)
    plain, last = runs[False]["last"], runs[True]["last"]
    assert runs[True]["status"] == "finished"
    # measured: relative differences 3e-6 (SAM, no attack) to 9e-4 (ARAT, whose loss is ~29: lambda 30 x cosines)
    assert last["train_loss"] == pytest.approx(plain["train_loss"], rel=5e-3)
    for key in ("test_clean_acc", "test_pgd_acc"):
        if key in plain:                                           # standard training: no attack, no PGD column
            assert abs(last[key] - plain[key]) <= 4 / 64, key      # 64 points of a barely trained net: a few flip
