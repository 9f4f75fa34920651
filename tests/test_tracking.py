"""Experiment-tracking sinks (issue 15, section 1): a study's trials in TensorBoard event files read back with
tensorboard's own reader; MLflow runs with the config as parameters, resumed into the same MLflow run."""
import json

import pytest

from robustlab.config import ConfigError, config_from_dict
from robustlab.core.io import read_jsonl
from robustlab.engine import train
from robustlab.sweep import run_sweep
from robustlab.sweep.study import expand_study

BASE = {"seed": 0, "data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
        "model": {"name": "wong_mnist"}, "method": {"name": "fgsm", "eps": 0.1},
        "optim": {"lr": 0.05, "schedule": "constant"},
        "train": {"epochs": 2, "progress": "none", "threads": 1},
        "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []},
        "final_eval": {"points": 32, "steps": 2, "restarts": 1}}


def quiet(_):
    pass


def test_study_trials_in_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    base = {**BASE, "train": {**BASE["train"], "trackers": [{"name": "tensorboard", "log_dir": str(tmp_path / "tb")}]}}
    study = expand_study({"name": "tbstudy", "base": base, "grid": {"seed": [0, 1]}, "workers": 1})
    run_sweep(study, tmp_path / "s", log=quiet)
    for trial in study.trials:
        ea = EventAccumulator(str(tmp_path / "tb" / "tbstudy" / trial.name))
        ea.Reload()
        rows = read_jsonl(tmp_path / "s" / "trials" / trial.name / "metrics.jsonl")
        events = ea.Scalars("test_pgd_acc")
        assert [e.step for e in events] == [r["epoch"] for r in rows]
        assert [e.value for e in events] == pytest.approx([r["test_pgd_acc"] for r in rows])
        assert "config/text_summary" in ea.Tags()["tensors"]   # the config as text


def test_mlflow_run_resumes_into_the_same_mlflow_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    cfg = {**BASE, "train": {**BASE["train"], "trackers": [{"name": "mlflow", "tracking_uri": uri}]}}
    run = tmp_path / "r"
    train(config_from_dict(cfg, {"train.epochs": 1}), run, log=quiet)
    first = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    train(config_from_dict(cfg), run, log=quiet)       # extend to 2 epochs: same MLflow run
    assert json.loads((run / "mlflow_run.json").read_text())["run_id"] == first
    client = mlflow.MlflowClient(tracking_uri=uri)
    got = client.get_run(first)
    assert got.info.status == "FINISHED" and got.data.params["optim.lr"] == "0.05"
    history = sorted((m.step, m.value) for m in client.get_metric_history(first, "test_pgd_acc"))
    rows = read_jsonl(run / "metrics.jsonl")
    assert [h[0] for h in history] == [r["epoch"] for r in rows]
    assert [h[1] for h in history] == pytest.approx([r["test_pgd_acc"] for r in rows])
    assert "final_last.robust_acc" in got.data.metrics


def test_unknown_tracker_is_named():
    with pytest.raises(ConfigError, match="train.trackers\\[wandb\\].name: got 'wandb'; allowed: mlflow, tensorboard"):
        config_from_dict(BASE, {"train.trackers": [{"name": "wandb"}]})


@pytest.mark.parametrize("sent", [False, True], ids=["killed-before-the-sink", "killed-after-the-sink"])
def test_an_epoch_recorded_but_not_published_reaches_tensorboard_on_resume(tmp_path, monkeypatch, sent):
    """The kill window CI met: epoch 2 is in last.pt and metrics.jsonl, and the process dies before its row reached
    TensorBoard (or after, before the record of it). The resumed run does not retrain epoch 2, yet the event files
    read back as an uninterrupted run's: every epoch once, same values."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from robustlab.engine.hooks.trackers import Trackers
    cfg = {**BASE, "train": {**BASE["train"], "epochs": 3, "trackers": [{"name": "tensorboard"}]}}
    train(config_from_dict(cfg), tmp_path / "ref", log=quiet)
    publish = Trackers.publish

    def killed_at_epoch_2(self, run, epoch, row):
        if epoch == 1:
            if sent:
                self._call(run, "log_epoch", row)
            raise KeyboardInterrupt
        publish(self, run, epoch, row)
    monkeypatch.setattr(Trackers, "publish", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(config_from_dict(cfg), tmp_path / "cut", log=quiet)
    assert len(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == 2
    monkeypatch.setattr(Trackers, "publish", publish)
    train(config_from_dict(cfg), tmp_path / "cut", log=quiet)

    def scalars(run):
        acc = EventAccumulator(str(run / "tensorboard"))
        acc.Reload()
        return [(e.step, e.value) for e in acc.Scalars("val_pgd_acc")]
    assert scalars(tmp_path / "cut") == scalars(tmp_path / "ref")
    assert [s for s, _ in scalars(tmp_path / "ref")] == [1, 2, 3]
