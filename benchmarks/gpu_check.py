"""GPU check: one command that exercises every CUDA path of robustlab and records what it measured.

    python benchmarks/gpu_check.py                 # on a GPU machine; appends a section to benchmarks/RESULTS.md
    python benchmarks/gpu_check.py --device cpu    # the same paths on CPU (the test suite runs this)

Checks, each timed and reported pass / fail / skipped with its figures:

1. ``fp16_two_pass``: the trainer in fp16 with loss scaling, through a two-pass ``step(closure)`` (the plug-in
   test's SAM-shaped minimiser ``test_twopass``) on a BatchNorm model: finite weights, scale state, BN
   statistics counted once per step. On CPU: fp32 with the loss scaler switched on (exact, see
   tests/test_step_closure.py), since fp16 autocast needs CUDA.
2. ``bf16_channels_last``: the trainer with bf16 autocast and channels_last (PGD-AT): images/s.
3. ``compile``: the same with ``torch.compile`` (skipped on CPU unless ``--compile``: tens of seconds cold).
4. ``eval_autoattack``: standard AutoAttack on a few points of the trained model through ``evaluate_model``
   (skipped when the ``autoattack`` extra is missing).
5. ``ddp_nccl``: two-process DDP training with NCCL when the machine has two or more GPUs.

Data are synthetic (``synthetic_cifar``) so that the check needs nothing beyond robustlab and torch.
Exit status 1 if any check failed.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))       # the plug-in test's components (test_twopass, test_bn_net)


def base_config(device: str, **over) -> dict:
    """CUDA: synthetic 3x32x32 images (2,048) and CIFAR-sized models; CPU: the small synthetic set (512 images
    of 1x8x8) and the Wong et al. net, so that the suite's run takes seconds."""
    data, model = ("synthetic_cifar", "small_cnn") if device == "cuda" else ("synthetic", "wong_mnist")
    cfg = {"seed": 0, "plugins": ["test_components"],
           "data": {"name": data, "val_size": 128, "batch_size": 128, "eval_batch_size": 256},
           "model": {"name": model}, "method": {"name": "pgd", "eps": "8/255", "steps": 3},
           "optim": {"name": "sgd", "lr": 0.05},
           "train": {"epochs": 1, "progress": "none", "device": device},
           "monitor": {"eval_points": 128, "val_points": 128, "attack_steps": 3, "diagnostics": []},
           "final_eval": {"points": 0}}
    for key, value in over.items():   # a component section is replaced (its keys depend on its name), others merge
        cfg[key] = value if key in ("model", "method", "optim") else {**cfg.get(key, {}), **value}
    return cfg


def train_run(raw: dict, out: Path) -> tuple[dict, float]:
    from robustlab.config import config_from_dict
    from robustlab.engine import train
    t0 = time.perf_counter()
    res = train(config_from_dict(raw), out, log=lambda s: None)
    return res, time.perf_counter() - t0


def train_size(raw: dict) -> int:
    from robustlab.config import config_from_dict
    from robustlab.data import build_data
    cfg = config_from_dict(raw)
    return len(build_data(cfg.data, cfg.seed).train)


def images_per_second(res: dict, raw: dict) -> float:
    return train_size(raw) / max(res["last"]["seconds"], 1e-9)


def check_fp16_two_pass(device: str, tmp: Path) -> dict:
    from robustlab.core.io import load_torch
    from robustlab.engine import trainer as trainer_module
    from robustlab.optim import LossScaler
    cuda = device == "cuda"
    raw = base_config(device, model={"name": "test_bn_net"}, method={"name": "fgsm", "eps": "8/255"},
                      optim={"name": "sgd", "lr": 0.05, "minimizer": {"name": "test_twopass", "rho": 0.05}}, train={"precision": "fp16" if cuda else "fp32"})
    if cuda:
        res, sec = train_run(raw, tmp / "fp16")
    else:                      # the scaler's code path on CPU: fp32 with scaling switched on
        original = trainer_module.LossScaler
        trainer_module.LossScaler = lambda enabled, dev: LossScaler(True, dev)
        try:
            res, sec = train_run(raw, tmp / "fp16")
        finally:
            trainer_module.LossScaler = original
    last = load_torch(tmp / "fp16" / "checkpoints" / "last.pt")
    finite = all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    steps = -(-train_size(raw) // raw["data"]["batch_size"])
    bn_counts = {int(v) for k, v in last["model"].items() if k.endswith("num_batches_tracked")}
    passes = last["optimizer"]["own"]["passes"]
    ok = res["status"] == "finished" and finite and passes == 2 * steps and bn_counts == {2 * steps}
    # BN: the FGSM attack (train mode) and the first closure pass each update the statistics once per step
    return {"ok": ok, "seconds": sec, "figures": f"loss scale {last['components']['loss_scaler']['scale'].item():g}, "
            f"{passes} closure passes / {steps} steps, BN updates per step {bn_counts.pop() / steps if bn_counts else 0:g}, "
            f"train acc {res['last']['train_acc']:.3f}, finite weights {finite}"}


def check_bf16_channels_last(device: str, tmp: Path, compile_: bool) -> dict:
    model = {"name": "preact_resnet18"} if device == "cuda" else {"name": "wong_mnist"}
    raw = base_config(device, model=model, train={"precision": "bf16", "channels_last": True, "compile": compile_})
    res, sec = train_run(raw, tmp / ("compile" if compile_ else "bf16"))
    ok = res["status"] == "finished" and res["last"]["train_acc"] > 0
    return {"ok": ok, "seconds": sec, "run": tmp / ("compile" if compile_ else "bf16"),
            "figures": f"{model['name']} PGD-3-AT bf16 + channels_last{' + compile' if compile_ else ''}: "
                       f"{images_per_second(res, raw):.0f} img/s (epoch incl. attack), test clean "
                       f"{res['last']['test_clean_acc']:.3f}, PGD {res['last']['test_pgd_acc']:.3f}"}


def check_autoattack(device: str, run: Path) -> dict:
    try:
        import pyautoattack  # noqa: F401
    except ImportError:
        return {"ok": None, "seconds": 0.0, "figures": "skipped: the autoattack extra is not installed"}
    from robustlab.eval import evaluate_model, load_model
    n = 32 if device == "cuda" else 8
    t0 = time.perf_counter()
    res = evaluate_model(load_model(run, device=device), attack="autoattack", n=n, sanity=0, device=device)
    sec = time.perf_counter() - t0
    ok = [s["name"] for s in res["stages"]] == ["apgd-ce", "apgd-t", "fab-t", "square"] and res["robust_acc"] <= res["clean_acc"]
    return {"ok": ok, "seconds": sec, "figures": f"standard AutoAttack on {n} points: clean {res['clean_acc']:.3f}, "
                                                 f"robust {res['robust_acc']:.3f}, {sec / n:.2f} s/point"}


def check_ddp(device: str, tmp: Path) -> dict:
    if device != "cuda" or torch.cuda.device_count() < 2:
        return {"ok": None, "seconds": 0.0, "figures": "skipped: needs 2 or more GPUs (CPU DDP with gloo: tests/test_distributed.py)"}
    raw = base_config(device, model={"name": "preact_resnet18"})
    path = tmp / "ddp.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "robustlab",
                           "train", str(path), "--out", str(tmp / "ddp")], capture_output=True, text=True, env=env, timeout=540)
    sec = time.perf_counter() - t0
    return {"ok": proc.returncode == 0, "seconds": sec,
            "figures": f"2 x NCCL, exit {proc.returncode}" + ("" if proc.returncode == 0 else f": {proc.stderr.strip()[-300:]}")}


def describe_machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, CUDA {torch.version.cuda}, torch {torch.__version__}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), torch {torch.__version__}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Exercise every CUDA path of robustlab and record the figures.")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--compile", action="store_true", help="on CPU, also check torch.compile (always checked on CUDA)")
    p.add_argument("--results", default=None, help="Markdown file to append the figures to "
                   "(default on CUDA: benchmarks/RESULTS.md; on CPU: print only)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but no CUDA device is available (use --device cpu)", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, torch.get_num_threads()))
    checks: dict[str, dict] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checks["fp16_two_pass"] = check_fp16_two_pass(args.device, tmp)
        checks["bf16_channels_last"] = check_bf16_channels_last(args.device, tmp, False)
        if args.device == "cuda" or args.compile:
            checks["compile"] = check_bf16_channels_last(args.device, tmp, True)
        else:
            checks["compile"] = {"ok": None, "seconds": 0.0, "figures": "skipped on CPU (--compile to run it)"}
        checks["eval_autoattack"] = check_autoattack(args.device, checks["bf16_channels_last"]["run"])
        checks["ddp_nccl"] = check_ddp(args.device, tmp)
    total = time.perf_counter() - t0
    status = {True: "pass", False: "**FAIL**", None: "skipped"}
    lines = [f"### GPU check, {time.strftime('%Y-%m-%d')}: {describe_machine(args.device)}", "",
             f"`python benchmarks/gpu_check.py --device {args.device}`, {total:.0f} s in all.", "",
             "| check | result | seconds | figures |", "|---|---|---|---|"]
    lines += [f"| {name} | {status[c['ok']]} | {c['seconds']:.1f} | {c['figures']} |" for name, c in checks.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    results = args.results or (str(ROOT / "benchmarks" / "RESULTS.md") if args.device == "cuda" else None)
    if results:
        with open(results, "a") as fh:
            fh.write("\n" + text)
    return 1 if any(c["ok"] is False for c in checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
