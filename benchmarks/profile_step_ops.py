"""Operator-level comparison of robustlab's FGSM-AT training step with the bare PyTorch loop of the same math.

bench_train_throughput.py measures rates, which need an idle machine; this script counts what each implementation
executes (torch.profiler: every aten operator's call count and self CPU time over the same steps). Call counts do not
depend on the machine's load, so they show whether a rate gap comes from extra work (more or other operators, a
memory-format conversion per layer) or from somewhere else. Self times are printed too, for orientation only.

Usage: python benchmarks/profile_step_ops.py [--model preact_resnet18:0.25] [--setting fp32+cl] [--steps 2]
"""
from __future__ import annotations

import argparse
import collections

import torch
from torch.profiler import ProfilerActivity, profile

from bench_train_throughput import bare_loop, robustlab_trainer


def operator_profile(run, steps: int) -> tuple[collections.Counter, collections.Counter]:
    """(calls, self CPU microseconds) per operator over ``steps`` steps, after one warm-up step."""
    run(1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(steps)
    calls, self_us = collections.Counter(), collections.Counter()
    for event in prof.key_averages():
        calls[event.key] += event.count
        self_us[event.key] += event.self_cpu_time_total
    return calls, self_us


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="preact_resnet18:0.25")
    ap.add_argument("--setting", default="fp32+cl", help="fp32 or bf16, optionally +cl (channels_last)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    precision, cl = args.setting.split("+")[0], "cl" in args.setting.split("+")
    ours = operator_profile(robustlab_trainer(args.model, precision, cl, args.batch), args.steps)
    bare = operator_profile(bare_loop(args.model, precision, cl, args.batch), args.steps)
    (c_ours, t_ours), (c_bare, t_bare) = ours, bare
    print(f"# {args.model}, {args.setting}, {args.steps} steps of batch {args.batch}, {args.threads} thread(s)")
    print("| operator | robustlab calls | bare calls | robustlab self ms | bare self ms |")
    print("|---|---|---|---|---|")
    for key in sorted(t_ours, key=lambda k: -t_ours[k])[:10]:
        print(f"| {key} | {c_ours[key]} | {c_bare[key]} | {t_ours[key] / 1e3:.1f} | {t_bare[key] / 1e3:.1f} |")
    extra = {k: c_ours[k] - c_bare[k] for k in set(c_ours) | set(c_bare) if c_ours[k] != c_bare[k]}
    extra_ms = sum(t_ours[k] - t_bare[k] for k in extra if c_bare[k] == 0) / 1e3
    print(f"operators whose call counts differ ({len(extra)}): "
          + ", ".join(f"{k} {v:+d}" for k, v in sorted(extra.items(), key=lambda kv: -abs(kv[1]))))
    print(f"self ms, all operators: robustlab {sum(t_ours.values()) / 1e3:.0f}, bare {sum(t_bare.values()) / 1e3:.0f}; "
          f"of robustlab's only operators (absent from the bare loop): {extra_ms:.1f}")


if __name__ == "__main__":
    main()
