"""The one-file examples of docs/extending.md work as written: their code blocks are written to a module, named
under ``plugins`` and trained."""
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_extending_examples_register_and_train(tmp_path, tiny_cfg, monkeypatch):
    text = (ROOT / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 4
    (tmp_path / "docs_components.py").write_text("\n\n".join(blocks[:3]))
    monkeypatch.syspath_prepend(str(tmp_path))
    from robustlab.config import ConfigError, config_from_dict
    from robustlab.engine import train
    tiny_cfg.update({"plugins": ["docs_components"],
                     "method": {"name": "mixed_at", "eps": 0.1, "steps": 2, "clean_weight": 0.5,
                                "regularizers": [{"name": "logit_squeeze"}]},
                     "optim": {"name": "sgd", "lr": 0.05, "minimizer": {"name": "lookahead_pass", "rho": 0.05}}})
    tiny_cfg["train"]["epochs"] = 2
    cfg = config_from_dict(tiny_cfg)
    assert cfg.method.regularizers[0].weight == 0.05              # the example's default weight, resolved
    res = train(cfg, tmp_path / "run", log=lambda s: None)
    assert res["status"] == "finished" and res["last"]["test_clean_acc"] > 0.5
    assert res["last"]["logit_sq"] > 0 and "clean_loss" in res["last"]
    tiny_cfg["method"]["clean_weight"] = 2
    with pytest.raises(ConfigError, match=r"method\.clean_weight: got 2; must be <= 1"):
        config_from_dict(tiny_cfg)


def test_extending_run_hook_example_keeps_and_evaluates_its_model(tmp_path, tiny_cfg, monkeypatch):
    """docs/extending.md's run hook (an EMA of the weights), added to RUN_HOOKS as the page says: its model is in the
    final evaluation, its state in last.pt, and with decay 0 it is the last weights exactly."""
    text = (ROOT / "docs" / "extending.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text.split("## A run-level feature")[1], flags=re.S)[0]
    namespace = {}
    exec(compile(code, "extending.md", "exec"), namespace)
    ema = namespace["WeightEMA"]
    from robustlab.config import config_from_dict
    from robustlab.core.io import load_torch
    from robustlab.engine import hooks, train
    monkeypatch.setattr(hooks, "RUN_HOOKS", hooks.RUN_HOOKS + (ema,))
    monkeypatch.setattr(ema, "build", classmethod(lambda cls, cfg, run: cls(run.model, decay=0.0)))
    tiny_cfg["train"]["epochs"] = 2
    res = train(config_from_dict(tiny_cfg), tmp_path / "run", log=lambda s: None)
    last = load_torch(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(torch.equal(last["components"]["ema"][k], last["model"][k]) for k in last["model"])
    assert res["final_eval"]["ema"]["robust_acc"] == res["final_eval"]["last"]["robust_acc"]
    assert res["final_eval"]["ema"]["clean_acc"] == res["final_eval"]["last"]["clean_acc"]


def test_readme_outside_model_walkthrough_runs_as_written(tmp_path):
    """README's walkthrough for a model defined elsewhere, run as a user would: a fresh shell (only HOME and PATH),
    the venv activated, from the model's own folder; its printed figures are the ones README quotes."""
    import os
    import subprocess
    import sys
    pytest.importorskip("pyautoattack")
    pytest.importorskip("safetensors")
    pytest.importorskip("mlxtend")
    text = (ROOT / "README.md").read_text()
    block = re.search(r"  ```bash\n(  source ROBUSTLAB.*?)  ```\n", text, flags=re.S).group(1)
    script = "\n".join(line[2:] for line in block.splitlines())
    venv = Path(sys.executable).parent.parent          # the environment running this suite
    script = script.replace("source ROBUSTLAB/.venv/bin/activate", f"source {venv}/bin/activate")
    (tmp_path / "home").mkdir()
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=900,
                          env={"HOME": str(tmp_path / "home"), "PATH": os.defpath}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"prints `\.\.\. clean [0-9.]+  robust [0-9.]+  \(AutoAttack, Linf eps=0\.3, n=50", text)
    clean, robust = map(float, re.search(r"clean ([0-9.]+)  robust ([0-9.]+)  \(AutoAttack, Linf eps=0\.3, n=50",
                                         proc.stdout.strip().splitlines()[-1]).groups())
    assert clean >= 0.85 and robust <= 0.05          # README's figure, within what another CPU's kernels change
    assert (tmp_path / "home" / "mymodels" / "aa.json").is_file()
