"""Nothing a user owns is overwritten or lost, and every bad input is one line (issue 22).

The table below keeps each case of the adoption trial: the command, the one-line message it must print, exit status
2, and every file that existed before it byte-identical after it. Cases that need a sequence of commands (a stale
evaluation, a failed extension, a diverging run) have tests of their own below the table.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml

from robustlab.config import config_from_dict
from robustlab.engine import train

TINY = {"seed": 0, "data": {"name": "synthetic", "val_size": 64, "batch_size": 64},
        "model": {"name": "wong_mnist"}, "method": {"name": "fgsm", "eps": 0.1}, "optim": {"lr": 0.05},
        "train": {"epochs": 1, "progress": "none", "threads": 1},
        "monitor": {"eval_points": 64, "attack_steps": 2, "diagnostics": []}, "final_eval": {"points": 0}}

NETS = textwrap.dedent("""
    import torch
    from torch import nn

    def build():                       # synthetic data: 1x8x8 images, 4 classes
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))

    def build_other():                 # another architecture: its weights do not fit build()
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Linear(8, 4))

    def needs_depth(depth):
        return build()

    def colour():                      # a 3-channel network
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(4))
""")


def cli(*args, cwd=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "robustlab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def snapshot(root) -> dict:
    """Every file under root with the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def unchanged(before: dict, after: dict) -> list[str]:
    return [k for k, v in before.items() if after.get(k) != v]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A folder as a user has it: a finished run, a study file, a model module with weights, files of their own."""
    root = tmp_path_factory.mktemp("user")
    train(config_from_dict(TINY), root / "run", log=lambda s: None)
    (root / "c.yaml").write_text(yaml.safe_dump(TINY))
    (root / "study.yaml").write_text(yaml.safe_dump({"name": "s", "base": TINY, "grid": {"seed": [0]}}))
    (root / "transfer.yaml").write_text(yaml.safe_dump({"name": "t", "surrogates": [{"run": str(root / "run")}],
                                                        "targets": [{"run": str(root / "run")}], "points": 8}))
    (root / "mynets.py").write_text(NETS)
    sys.path.insert(0, str(root))
    import mynets
    torch.manual_seed(0)
    torch.save(mynets.build().state_dict(), root / "w.pt")
    torch.save(mynets.build_other().state_dict(), root / "other.pt")
    (root / "afile.txt").write_text("a user's notes\n")
    (root / "mine.json").write_text('{"a user": "result"}\n')
    (root / "adir").mkdir()
    (root / "adir" / "keep.txt").write_text("keep\n")
    yield root
    sys.path.remove(str(root))


EXT = ["--data", "synthetic", "--n", "16", "--steps", "2", "--restarts", "1", "--sanity", "0"]

# (case, arguments (HOME substituted), the one-line message)
CASES = [
    # --- outputs never replace what the user owns
    ("eval into the run's results.json", ["eval", "HOME/run", "--out", "HOME/run/results.json"],
     "is inside the run folder"),
    ("sharpness into the run's results.json", ["sharpness", "HOME/run", "--out", "HOME/run/results.json"],
     "is inside the run folder"),
    ("sweep into a run folder", ["sweep", "HOME/study.yaml", "--out", "HOME/run"], "is a run folder"),
    ("sweep into a folder of other files", ["sweep", "HOME/study.yaml", "--out", "HOME/adir"], "a folder of other files"),
    ("eval over a text file", ["eval", "HOME/run", "--out", "HOME/afile.txt"], "expected a .json file"),
    ("eval over a JSON file of the user's", ["eval", "HOME/run", "--out", "HOME/mine.json"],
     "exists and was not written by robustlab"),
    ("model without weights", ["eval", "--model", "mynets:build", "--out", "HOME/x.json", *EXT],
     "--weights: required with a model defined elsewhere"),
    # --- were tracebacks
    ("sweep --out a file", ["sweep", "HOME/study.yaml", "--out", "HOME/afile.txt"], "is a file"),
    ("transfer --out a file", ["transfer", "HOME/transfer.yaml", "--out", "HOME/afile.txt"], "is a file"),
    ("export below a file", ["export", "HOME/run", "--out", "HOME/afile.txt/x.safetensors"], "afile.txt is a file"),
    ("export to a text file", ["export", "HOME/run", "--out", "HOME/afile.txt"], "expected a .safetensors file"),
    ("train below a file", ["train", "HOME/c.yaml", "--out", "HOME/afile.txt/sub"], "afile.txt is a file"),
    ("train into a run's subfolder", ["train", "HOME/c.yaml", "--out", "HOME/run/sub"], "inside the run folder"),
    ("sharpness --out a folder", ["sharpness", "HOME/run", "--out", "HOME/adir"], "is a folder"),
    ("builder that needs an argument", ["eval", "--model", "mynets:needs_depth", "--weights", "HOME/w.pt",
                                        "--out", "HOME/x.json", *EXT], "the builder is called with no arguments"),
    ("3-channel model on 1-channel data", ["eval", "--model", "mynets:colour", "--weights", "none",
                                           "--out", "HOME/x.json", *EXT], "fails on synthetic inputs (each 1x8x8"),
    # --- silently accepted before
    ("--address with the local backend", ["sweep", "HOME/study.yaml", "--out", "HOME/new", "--address", "127.0.0.1:1"],
     "--address: goes with --backend ray"),
    ("negative tolerance", ["sharpness", "HOME/run", "--tol", "-1"], "--tol: got -1.0; must be > 0"),
    ("PGD settings with AutoAttack", ["eval", "HOME/run", "--attack", "autoattack", "--steps", "5"],
     "--steps: the autoattack protocol does not take it"),
    ("no seeds for a demo", ["demo", "--seeds", "0", "--out", "HOME/new"], "--seeds: got 0; must be >= 1"),
    ("RobustBench fields with safetensors", ["export", "HOME/run", "--name", "x"], "go with --format robustbench"),
    ("a reported accuracy that is not a number", ["export", "HOME/run", "--format", "robustbench", "--reported", "abc"],
     "--reported: got 'abc'"),
    # --- misleading one-liners before
    ("swa on a run without SWA", ["eval", "HOME/run", "--checkpoint", "swa"], "has no SWA model"),
    ("weights of another model", ["eval", "--model", "mynets:build", "--weights", "HOME/other.pt", "--out", "HOME/x.json",
                                  *EXT], "missing 2 key(s): 3.weight, 3.bias; unexpected 2 key(s): 2.weight, 2.bias; 1.weight has shape [8, 64] "
                                         "in the file, [16, 64] in the model"),
    ("a text file as a checkpoint", ["eval", "HOME/afile.txt"], "not a torch checkpoint"),
]


@pytest.mark.parametrize("case,args,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(home, case, args, needle):
    before = snapshot(home)
    proc = cli(*[a.replace("HOME", str(home)) for a in args], cwd=home)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = proc.stderr.strip()
    assert "\n" not in line and line.startswith("robustlab: error: ") and needle in line, line
    assert unchanged(before, snapshot(home)) == []
    assert not (home / "x.json").exists() and not (home / "new").exists()


def test_damaged_run_files_are_one_line_and_the_report_is_kept(home, tmp_path):
    for name, damage, needle in (("results.json", '{"status": "fin', "results.json: damaged, not JSON"),
                                 ("config.yaml", "seed: [0\n", "config.yaml (line 2): not valid YAML"),
                                 ("metrics.jsonl", None, "metrics.jsonl: line 2 is not JSON")):
        run = tmp_path / name
        shutil.copytree(home / "run", run)
        path = run / name
        path.write_text(damage if damage is not None else path.read_text() + '{"epoch": 2, "lr"')
        before = snapshot(run)
        proc = cli("report", run)
        assert proc.returncode == 2 and needle in proc.stderr and "\n" not in proc.stderr.strip(), proc.stderr
        assert unchanged(before, snapshot(run)) == []


def test_duplicate_yaml_keys_are_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("seed: 0\ntrain:\n  epochs: 2\n  epochs: 3\n")
    proc = cli("train", tmp_path / "c.yaml", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "key 'epochs' given twice (line 4)" in proc.stderr, proc.stderr
    assert not (tmp_path / "r").exists()


def test_stale_evaluation_is_refused_naming_what_differs(home, tmp_path):
    """Other weights under the same file name, or other points, never resume an old evaluation."""
    import mynets
    shutil.copy(home / "mynets.py", tmp_path / "mynets.py")
    torch.save(torch.load(home / "w.pt", weights_only=True), tmp_path / "w.pt")
    args = ["eval", "--model", "mynets:build", "--weights", "w.pt", "--out", "aa.json", *EXT]
    first = cli(*args, cwd=tmp_path)        # from the model's folder, as a user runs it: mynets imports from there
    assert first.returncode == 0, first.stderr
    result = json.loads((tmp_path / "aa.json").read_text())
    assert result["weights"] == "w.pt" and result["written_by"]["command"] == "eval"
    old_digest = json.loads((tmp_path / "aa.state.json").read_text())["key"]["weights"]
    torch.manual_seed(1)
    torch.save(mynets.build().state_dict(), tmp_path / "w.pt")          # other weights, same name
    before = snapshot(tmp_path)
    stale = cli(*args, cwd=tmp_path)
    assert stale.returncode == 2 and "holds an evaluation of something else (weights" in stale.stderr, stale.stderr
    assert "\n" not in stale.stderr.strip() and unchanged(before, snapshot(tmp_path)) == []
    more = cli(*[a if a != "16" else "32" for a in args], cwd=tmp_path)
    assert more.returncode == 2 and "n 16 -> 32" in more.stderr, more.stderr
    forced = cli(*args, "--force", cwd=tmp_path)
    assert forced.returncode == 0 and "--force: replacing" in forced.stdout, forced.stderr
    assert json.loads((tmp_path / "aa.state.json").read_text())["key"]["weights"] != old_digest   # evaluated anew


def test_weights_none_is_recorded(home, tmp_path):
    proc = cli("eval", "--model", "mynets:build", "--weights", "none", "--out", tmp_path / "r.json", *EXT, cwd=home)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["weights"] == "none" and "no weights" in res["checkpoint"]


def test_eval_of_a_run_refreshes_its_report_and_reruns_into_its_own_file(home, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(home / "run", run)
    args = ["eval", run, "--n", "16", "--steps", "2", "--restarts", "1", "--sanity", "0"]
    proc = cli(*args)
    assert proc.returncode == 0 and "report " in proc.stdout, proc.stderr
    assert "PGD-2-1" in (run / "report" / "report.md").read_text()
    again = cli(*args)                      # its own file, same model: resumed, not refused
    assert again.returncode == 0, again.stderr


def test_failed_extension_leaves_the_run_as_it_was(tmp_path):
    raw = {**TINY, "train": {**TINY["train"], "epochs": 2}, "optim": {"lr": 0.05, "schedule": {"name": "constant"}}}
    train(config_from_dict(raw), tmp_path / "run", log=lambda s: None)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    before = snapshot(tmp_path / "run")
    proc = cli("train", tmp_path / "c.yaml", "train.epochs=3", "--out", tmp_path / "run")
    assert proc.returncode == 2 and "not a torch checkpoint (or a truncated one)" in proc.stderr, proc.stderr
    assert unchanged(before, snapshot(tmp_path / "run")) == []
    again = cli("train", tmp_path / "c.yaml", "--out", tmp_path / "run")     # the original command still works
    assert again.returncode == 0 and "finished after 2 of 2 epochs" in again.stdout, again.stderr


def test_a_run_whose_outputs_turn_non_finite_keeps_the_last_good_epoch(tmp_path):
    """lr x 1e30 on the last step of epoch 2 (a fractional milestone): finite but huge weights, NaN logits. The run
    stops as diverged, last.pt is epoch 1's, and no accuracy of epoch 2 is logged."""
    raw = {**TINY, "data": {**TINY["data"], "batch_size": 32}, "train": {**TINY["train"], "epochs": 2},
           "optim": {"lr": 0.05, "schedule": {"name": "multistep", "milestones": [1.9], "gamma": 1e30}}}
    res = train(config_from_dict(raw), tmp_path / "r", log=lambda s: None)   # 14 steps an epoch: step 28 is the last
    assert res["status"] == "diverged" and "non-finite outputs" in res["message"]
    last = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and max(v.abs().max().item() for v in last["model"].values() if v.is_floating_point()) < 100
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]


def test_predictions_from_nan_logits_are_never_correct():
    from robustlab.protocols import evaluate

    class NaNNet(torch.nn.Module):
        def forward(self, x):
            return torch.full((len(x), 3), float("nan"))
    x, y = torch.rand(6, 1, 4, 4), torch.zeros(6, dtype=torch.long)     # argmax of a NaN row is class 0 = the label
    res = evaluate(NaNNet(), x, y, [], eps=0.1)
    assert res["clean_acc"] == 0.0 and res["nonfinite"] == 6


def test_unreachable_mlflow_server_is_an_error_within_seconds(tmp_path):
    pytest.importorskip("mlflow")
    t0 = time.perf_counter()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(TINY))
    proc = cli("train", tmp_path / "c.yaml", 'train.trackers=[{name: mlflow, tracking_uri: "http://127.0.0.1:1"}]',
               "--out", tmp_path / "r")
    assert proc.returncode == 2 and "no MLflow server answers at http://127.0.0.1:1" in proc.stderr, proc.stderr
    assert time.perf_counter() - t0 < 60 and not (tmp_path / "r").exists()


def test_sharpness_warns_when_it_clamps_the_points(home, tmp_path):
    proc = cli("sharpness", home / "run", "--points", "100000", "--iters", "2", "--samples", "2",
               "--out", tmp_path / "s.json")
    assert proc.returncode == 0 and "warning: --points 100000: the training split has 448 points" in proc.stderr


def test_train_says_how_it_ended(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "progress": "lines"}}))
    proc = cli("train", tmp_path / "c.yaml", "--out", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert "finished after 1 of 1 epochs; best epoch 1" in last and "report.html" in last, last
    assert "val_pgd_acc=" in proc.stdout             # the epoch line shows what picks best.pt


def test_version_does_not_import_torch():
    code = "import sys; from robustlab.cli import main; main(['--version']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split()
    assert out[-1] == "False" and out[0] == "robustlab"


def test_python_access_to_data_and_exports(home, tmp_path):
    from robustlab.data import load
    from robustlab.eval import load_exported, load_model
    x, y = load("synthetic", split="test")
    assert x.shape == (256, 1, 8, 8) and x.min() >= 0 and x.max() <= 1 and y.dtype == torch.long
    pytest.importorskip("safetensors")
    proc = cli("export", home / "run", "--out", tmp_path / "m.safetensors")
    assert proc.returncode == 0, proc.stderr
    exported, loaded = load_exported(tmp_path / "m.safetensors"), load_model(home / "run")
    assert torch.equal(exported.model(x[:4]), loaded.model(x[:4]))
    again = cli("export", home / "run", "--out", tmp_path / "m.safetensors")      # its own export: replaced
    assert again.returncode == 0, again.stderr


def test_a_reader_that_leaves_early_gets_no_traceback():
    """``robustlab list | head -1``: the pipe closes under robustlab; it stops quietly."""
    proc = subprocess.Popen([sys.executable, "-m", "robustlab", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()          # before robustlab (seconds of imports) has written anything
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
