"""CPU kernel paths as a config key (issue 14): the variables each path sets, the refusal of a process on another
path, and a study whose trials run on different paths (each trial's env.json says which kernels it ran)."""
import json

import pytest
import yaml

from robustlab.core.errors import ConfigError
from robustlab.core.kernel_paths import check_kernel_path, on_path, path_environment
from robustlab.sweep import expand_study, run_sweep


def test_path_variables():
    base = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "HOME": "/h"}
    assert path_environment("machine", base) == {"HOME": "/h"}
    assert path_environment("default", base) == {"ATEN_CPU_CAPABILITY": "default", "HOME": "/h"}
    assert path_environment("avx2", {"HOME": "/h"}) == base
    assert path_environment("inherit", base) == base
    assert on_path("avx2", base) and not on_path("default", base) and not on_path("machine", base)
    with pytest.raises(ConfigError, match="train.kernel_path: got 'avx3'; allowed: inherit, machine, default, avx2"):
        path_environment("avx3", base)


def test_refuses_a_process_on_another_path(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    check_kernel_path("default")
    check_kernel_path("inherit")
    with pytest.raises(ConfigError, match="start it with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"):
        check_kernel_path("avx2")


def test_study_runs_each_trial_on_its_path(tmp_path, tiny_cfg):
    base = {**tiny_cfg, "train": {**tiny_cfg["train"], "epochs": 1}, "final_eval": {"points": 0}}
    study = expand_study({"name": "paths", "base": base, "grid": {"train.kernel_path": ["default", "avx2"]}})
    run_sweep(study, tmp_path / "s", workers=2, log=lambda s: None)
    seen = {}
    for env_file in (tmp_path / "s").glob("trials/*/env.json"):
        cfg = yaml.safe_load((env_file.parent / "config.yaml").read_text())
        seen[cfg["train"]["kernel_path"]] = json.loads(env_file.read_text())["kernel_path"]
    assert seen["default"]["cpu_capability"] == "DEFAULT" and seen["default"]["ATEN_CPU_CAPABILITY"] == "default"
    assert seen["avx2"]["cpu_capability"] in ("AVX2", "DEFAULT")   # DEFAULT on a CPU without AVX2
    assert seen["avx2"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_train_command_restarts_itself_on_the_requested_path(tmp_path, tiny_cfg):
    import os
    import subprocess
    import sys
    cfg = {**tiny_cfg, "train": {**tiny_cfg["train"], "epochs": 1, "kernel_path": "avx2"}, "final_eval": {"points": 0}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    proc = subprocess.run([sys.executable, "-m", "robustlab", "train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    path = json.loads((tmp_path / "r" / "env.json").read_text())["kernel_path"]
    assert path["ATEN_CPU_CAPABILITY"] == "avx2" and path["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_compile_on_the_default_path_is_refused_before_anything_is_written(tmp_path, tiny_cfg):
    """torch.compile's CPU back end cannot build PreActResNet-18's step under ATEN_CPU_CAPABILITY=default
    (benchmarks/RESULTS.md section 24): the run is refused with one line naming the key, on the path set by the
    config or inherited from the environment, and compile stays allowed on the other paths and on CUDA."""
    import subprocess
    import sys
    from robustlab.core.kernel_paths import check_compile
    check_compile(True, "cpu", {"ATEN_CPU_CAPABILITY": "avx2"})
    check_compile(True, "cuda", {"ATEN_CPU_CAPABILITY": "default"})
    check_compile(False, "cpu", {"ATEN_CPU_CAPABILITY": "default"})
    with pytest.raises(ConfigError, match=r"^train\.compile: .* set train\.compile: false, or run on another kernel path"):
        check_compile(True, "cpu", {"ATEN_CPU_CAPABILITY": "default"})
    cfg = {**tiny_cfg, "train": {**tiny_cfg["train"], "epochs": 1, "kernel_path": "default", "compile": True,
                                 "device": "cpu"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "robustlab", "train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "train.compile:" in proc.stderr
    assert not (tmp_path / "r").exists()
