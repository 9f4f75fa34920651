"""FGSM-AT training throughput: robustlab's trainer step against a bare PyTorch loop doing the same math.

Both run in this process on the same data (CIFAR-shaped synthetic images, batch 128), the same model
architecture and the same optimiser; the bare loop is the textbook FGSM-AT step (attack in train mode,
zero init, step eps, box clip; then SGD on the CE at the attack point). Timings alternate between the
two implementations (A B A B ...) so that machine drift hits both alike.

A model is a registered name, optionally with a width: ``preact_resnet18:0.5``. Settings: fp32, bf16 (autocast),
``+cl`` (channels_last), ``+compile`` (torch.compile of the model, both implementations). Each row also gives the
step's FLOPs per image (counted by torch.utils.flop_counter on one bare step) and robustlab's rate as a fraction of
the machine's measured matmul peak in that precision (2048 x 2048, the best of 5).

Usage: python benchmarks/bench_train_throughput.py [--models small_cnn preact_resnet18:0.5] [--settings fp32 fp32+cl]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from robustlab.config import config_from_dict
from robustlab.engine.trainer import Trainer

EPS = 8 / 255


def model_config(spec: str) -> dict:
    """``preact_resnet18:0.5`` -> {"name": "preact_resnet18", "width": 0.5}."""
    name, _, width = spec.partition(":")
    return {"name": name, **({"width": float(width)} if width else {})}


def robustlab_trainer(model_name, precision, channels_last, batch, compile_=False):
    """n steps = one call of the trainer's own epoch loop over a loader cut to n batches (the schedule,
    metric accumulation and NaN checks included)."""
    cfg = config_from_dict({"data": {"name": "synthetic_cifar", "val_size": 0, "batch_size": batch},
                            "model": model_config(model_name), "method": {"name": "fgsm", "eps": EPS},
                            "train": {"epochs": 1, "precision": precision, "channels_last": channels_last,
                                      "progress": "none", "compile": compile_}})
    t = Trainer(cfg, "/nonexistent")
    t._build()
    full_x, full_y = t.loader.x, t.loader.y

    def run(n):
        t.loader.x, t.loader.y = full_x[:n * batch], full_y[:n * batch]
        t._train_epoch(0, 0, "none")
    return run


def bare_loop(model_name, precision, channels_last, batch, compile_=False):
    """The same FGSM-AT step written directly in PyTorch."""
    cfg = config_from_dict({"data": {"name": "synthetic_cifar", "val_size": 0, "batch_size": batch},
                            "model": model_config(model_name), "train": {"precision": precision}})
    t = Trainer(cfg, "/nonexistent")
    t._build()  # reuse the data tensors and an identically-built model
    model, x_all, y_all = t.model, t.loader.x, t.loader.y
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = list(model.parameters())
    if compile_:
        model = torch.compile(model)
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    amp = (functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16) if precision == "bf16"
           else contextlib.nullcontext)
    model.train()
    perm = torch.randperm(len(y_all))

    def one(i):
        idx = perm[(i * batch) % len(perm):][:batch]
        x, y = x_all[idx], y_all[idx]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        delta = torch.zeros_like(x, requires_grad=True)
        with amp():
            loss = F.cross_entropy(model(x + delta).float(), y)
        (g,) = torch.autograd.grad(loss, delta)
        x_adv = (x + EPS * g.sign()).clamp(0, 1)
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = F.cross_entropy(model(x_adv).float(), y)
        loss.backward()
        opt.step()

    def run(n):
        for i in range(n):
            one(i)
    run.one = one
    return run


def step_flops(bare_run, batch) -> float:
    """FLOPs of one bare step per image (forward and backward of the attack and of the update)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        bare_run.one(0)
    return counter.get_total_flops() / batch


def matmul_peak(precision: str) -> float:
    """GFLOP/s of a 2048 x 2048 matmul in this precision (best of 5 after a warm-up)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    a @ b
    best = min(measure(lambda n: a @ b, 1) for _ in range(5))
    return 2 * 2048 ** 3 / best / 1e9


def measure(run, n):
    t0 = time.perf_counter()
    run(n)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["small_cnn", "preact_resnet18"])
    ap.add_argument("--settings", nargs="+", default=["fp32", "bf16", "fp32+cl", "bf16+cl"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default per model)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = {"small_cnn": 4, "preact_resnet18": 2, "wong_mnist": 16, "resnet18": 2}
    rows = []
    peaks, flops_of = {}, {}
    for model in args.models:
        for setting in args.settings:
            parts = setting.split("+")
            precision, cl, comp = parts[0], "cl" in parts, "compile" in parts
            impls = {"robustlab": robustlab_trainer(model, precision, cl, args.batch, comp),
                     "bare": bare_loop(model, precision, cl, args.batch, comp)}
            for step in impls.values():
                measure(step, 1)  # warm-up
            times = {k: [] for k in impls}
            n = args.steps or steps.get(model, 4)
            for _ in range(args.rounds):
                for k, step in impls.items():
                    times[k].append(measure(step, n))
            ips = {k: n * args.batch / statistics.median(v) for k, v in times.items()}
            if model not in flops_of:      # counted once per model, on the plain fp32 step
                flops_of[model] = step_flops(bare_loop(model, "fp32", False, args.batch), args.batch)
            flops = flops_of[model]
            peak = peaks.setdefault(precision, matmul_peak(precision))
            row = {"model": model, "setting": setting, "robustlab_img_s": round(ips["robustlab"], 1),
                   "bare_img_s": round(ips["bare"], 1), "ratio": round(ips["robustlab"] / ips["bare"], 3),
                   "gflop_per_img": round(flops / 1e9, 3), "matmul_peak_gflops": round(peak, 1),
                   "fraction_of_peak": round(ips["robustlab"] * flops / 1e9 / peak, 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    from robustlab.core.runtime import cpu_has_fast_bf16
    print(f"# machine: {platform.processor() or platform.machine()}, cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16: {cpu_has_fast_bf16()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| model | setting | robustlab img/s | bare PyTorch img/s | robustlab / bare | GFLOP per image (step) | "
          "matmul peak GFLOP/s | fraction of peak |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['setting']} | {r['robustlab_img_s']} | {r['bare_img_s']} | {r['ratio']} | "
              f"{r['gflop_per_img']} | {r['matmul_peak_gflops']} | {r['fraction_of_peak']} |")


if __name__ == "__main__":
    main()
