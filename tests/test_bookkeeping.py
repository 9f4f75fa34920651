"""Run bookkeeping (issue 15, section 5): start history in env.json, extending a finished run, init_from,
and the Ray address checks of section 6."""
import json
import socket

import pytest
import torch

from robustlab.config import ConfigError, config_from_dict
from robustlab.core.checkpoint import load_checkpoint
from robustlab.core.io import read_json, read_jsonl
from robustlab.engine import train
from robustlab.sweep.ray_executor import check_ray_address

BASE = {"seed": 1, "data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
        "model": {"name": "wong_mnist"}, "method": {"name": "fgsm", "eps": 0.1},
        "optim": {"lr": 0.05, "schedule": {"name": "multistep", "milestones": [2]}},
        "train": {"epochs": 2, "progress": "none", "threads": 1},
        "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []}, "final_eval": {"points": 0}}


def cfg(**over):
    return config_from_dict(BASE, over)


def quiet(_):
    pass


def test_extending_a_finished_run_equals_the_longer_run(tmp_path):
    train(cfg(), tmp_path / "ext", log=quiet)
    res = train(cfg(**{"train.epochs": 3}), tmp_path / "ext", log=quiet)
    assert res["status"] == "finished" and res["epochs_completed"] == 3
    train(cfg(**{"train.epochs": 3}), tmp_path / "straight", log=quiet)
    drop = ("seconds", "eval_seconds")
    rows = [[{k: v for k, v in r.items() if k not in drop} for r in read_jsonl(tmp_path / d / "metrics.jsonl")]
            for d in ("ext", "straight")]
    assert rows[0] == rows[1]          # bit-identical metrics: the schedule and every RNG stream carried over
    a = load_checkpoint(tmp_path / "ext" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    env = read_json(tmp_path / "ext" / "env.json")
    assert [s["resumed_after_epoch"] for s in env["starts"]] == [0, 2]
    assert all("kernel_path" in s and "host" in s and s["command"] for s in env["starts"])


def test_extension_refused_where_the_schedule_depends_on_the_length(tmp_path):
    train(cfg(**{"optim.schedule": "cyclic"}), tmp_path / "r", log=quiet)
    before = (tmp_path / "r" / "results.json").read_text()
    with pytest.raises(ConfigError, match=r"train.epochs: cannot extend .* optim.schedule \(cyclic\) depends on the total"):
        train(cfg(**{"optim.schedule": "cyclic", "train.epochs": 3}), tmp_path / "r", log=quiet)
    with pytest.raises(ConfigError, match="can only be extended"):
        train(cfg(**{"optim.schedule": "cyclic", "train.epochs": 1}), tmp_path / "r", log=quiet)
    assert (tmp_path / "r" / "results.json").read_text() == before
    # measured every 2 epochs and at the last: the 2-epoch run measured epoch 2 as its last, a longer run would not
    # (in general), so the run cannot be extended; likewise a diagnostic with every > 1
    for key, blocker in (("monitor.every", r"monitor \(MonitorConfig\)"),
                         ("monitor.diagnostics", r"monitor.diagnostics\[0\] \(linearity\)")):
        value = 3 if key == "monitor.every" else [{"name": "linearity", "every": 3, "points": 8}]
        train(cfg(**{key: value}), tmp_path / key, log=quiet)
        with pytest.raises(ConfigError, match=f"train.epochs: cannot extend .* {blocker} depends on the total"):
            train(cfg(**{key: value, "train.epochs": 3}), tmp_path / key, log=quiet)


def test_init_from_loads_weights_and_names_bad_files(tmp_path):
    train(cfg(), tmp_path / "src", log=quiet)
    src = load_checkpoint(tmp_path / "src" / "checkpoints" / "last.pt")["model"]
    from robustlab.engine.trainer import Trainer   # the fine-tuning run starts from the source run's last weights
    t = Trainer(cfg(**{"train.init_from": str(tmp_path / "src" / "checkpoints" / "last.pt"), "train.epochs": 1}),
                tmp_path / "ft", log=quiet)
    t._build()
    from robustlab.engine.run_folder import load_initial_weights
    load_initial_weights(t.model, t.cfg.train.init_from, t.cfg.model.name, quiet, t.run_dir)
    seen = t.model.state_dict()
    assert all(torch.equal(seen[k], src[k]) for k in src)
    (tmp_path / "notweights.pt").write_text("hello")
    with pytest.raises(ConfigError, match="train.init_from: .*notweights.pt: not a safetensors file or a torch state dict"):
        train(cfg(**{"train.init_from": str(tmp_path / "notweights.pt")}), tmp_path / "ft2", log=quiet)
    assert not (tmp_path / "ft2").exists()
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="train.init_from: .*does not fit model 'wong_mnist'"):
        train(cfg(**{"train.init_from": str(tmp_path / "other.pt")}), tmp_path / "ft3", log=quiet)


def test_ray_address_errors_are_bounded_and_named():
    with socket.socket() as s:            # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match=f"--address: no Ray cluster answers at 127.0.0.1:{port}"):
        check_ray_address(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        check_ray_address("nonsense")
    check_ray_address("auto")    # left to Ray


def test_sweep_trials_record_the_users_command(tmp_path):
    from robustlab.sweep import run_sweep
    from robustlab.sweep.study import expand_study
    base = {**BASE, "train": {**BASE["train"], "progress": "lines"}}
    study = expand_study({"name": "cmd", "base": base, "grid": {"seed": [0]}, "workers": 1})
    lines = []
    run_sweep(study, tmp_path / "s", log=lines.append, command=["robustlab", "sweep", "my.yaml"])
    trial = next((tmp_path / "s" / "trials").iterdir())
    # per-epoch lines of the running trial reach the sweep's output, each once (issue 15, section 3)
    assert [line.split("]")[1].split()[0] for line in lines if line.startswith(f"  [{trial.name}] epoch=")] == \
        ["epoch=1", "epoch=2"]
    env = read_json(trial / "env.json")
    assert env["command"] == ["robustlab", "sweep", "my.yaml"]
    assert env["process_argv"][0].endswith("worker.py")
    assert json.dumps(env["starts"][0]["command"]) == json.dumps(env["command"])
