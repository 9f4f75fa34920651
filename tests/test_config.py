import subprocess
import sys

import pytest

from robustlab.config import ConfigError, config_from_dict, load_config, parse_number


def test_fraction_and_numbers():
    assert parse_number("8/255", "k") == pytest.approx(8 / 255)
    assert parse_number(" 2 / 255 ", "k") == pytest.approx(2 / 255)
    assert parse_number("1e-3", "k") == pytest.approx(1e-3)
    assert parse_number(3, "k") == 3.0
    for bad in ("8/0", "__import__('os')", "8/255+1", True, None, [1]):
        with pytest.raises(ConfigError):
            parse_number(bad, "k")


def test_eps_fraction_in_config_and_override():
    cfg = config_from_dict({"method": {"name": "pgd", "eps": "8/255"}}, ["optim.lr=0.05", "method.alpha=2/255"])
    assert cfg.method.eps == pytest.approx(8 / 255)
    assert cfg.method.alpha == pytest.approx(2 / 255)
    assert cfg.optim.lr == 0.05


@pytest.mark.parametrize("raw,overrides,needle", [
    ({"methd": {}}, [], "methd: unknown key"),
    ({"method": {"epss": 1}}, [], "method.epss: unknown key"),
    ({"method": {"eps": "abc"}}, [], "method.eps: got 'abc'"),
    ({"train": {"epochs": 0}}, [], "train.epochs: got 0; must be >= 1"),
    ({"train": {"epochs": 2.5}}, [], "train.epochs: got 2.5; expected an integer"),
    ({"train": {"precision": "fp8"}}, [], "allowed: fp32, bf16, fp16"),
    ({"data": {"flip": "yes"}}, [], "data.flip: got 'yes'; expected true or false"),
    ({"optim": {"lr": 0}}, [], "optim.lr: got 0; must be > 0"),
    ({"optim": {"momentum": 1.5}}, [], "optim.momentum: got 1.5; must be <= 1"),
    ({"model": {"name": "vgg99"}}, [], "model.name: got 'vgg99'; allowed:"),
    ({"data": {"name": "imagenet21k"}}, [], "data.name: got 'imagenet21k'"),
    ({"method": {"name": "pgd", "eps": 0}}, [], "needs eps > 0"),
    ({"train": {"precision": "fp16", "device": "cpu"}}, [], "fp16 with gradient scaling needs CUDA"),
    ({"optim": {"schedule": {"name": "multistep", "milestones": [10, 5]}}}, [], "optim.schedule.milestones: got [10.0, 5.0]; must be increasing"),
    ({}, ["optim.lr"], "expected KEY=VALUE"),
    ({}, ["optim.lr.x=1"], "optim.lr: got {'x': 1}; expected a number"),
    ({"optim": {"lr": 0.1}}, ["optim.lr.x=1"], "optim.lr: is a value"),
    ({}, ["optim.nope=1"], "optim.nope: unknown key"),
    ({"data": 3}, [], "data: got 3; expected a mapping"),
])
def test_config_errors_name_key_and_allowed(raw, overrides, needle):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, overrides)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


def test_yaml_round_trip(tmp_path):
    cfg = config_from_dict({"method": {"name": "pgd", "eps": "8/255", "steps": 7},
                            "optim": {"schedule": {"name": "multistep", "milestones": [5, 8]}}})
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    assert load_config(p).to_dict() == cfg.to_dict()


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("method: {eps: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_is_never_evaluated(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_config(p)


def test_cli_config_error_is_one_line_and_writes_nothing(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: {name: fgsm, eps: 0.1}\n")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "robustlab", "train", str(cfg), "optim.lr=-1", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "robustlab: error: optim.lr: got -1; must be > 0"
    assert not out.exists()


def test_every_shipped_config_validates():
    from pathlib import Path
    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert len(configs) >= 6
    for path in configs:
        load_config(path)
