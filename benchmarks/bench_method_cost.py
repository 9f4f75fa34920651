"""Epoch cost of each method relative to a reference method (FGSM-AT, or PGD-10-AT with --reference PGD-10), in
one process on the same data.

Each method trains on the same first N batches of mnist5k (Wong net, and the small CNN) through the
trainer's own epoch loop (no evaluation); methods alternate across rounds; median of rounds.
Pass counts per batch of B images (F = forward, Bw = backward through the network):
  FGSM-AT 2F + 2Bw; RS-/N-FGSM the same; PGD-k (k+1)F + (k+1)Bw;
  + ELLE: one 3B forward and backward (+3F + 3Bw): 2.5x FGSM's passes;
  + GradAlign: two input gradients (+2F + 2Bw), one with create_graph, then the double backward
    through the second (~ +2Bw): about 3x; LLR similar (one gradient with create_graph, one more
    forward); CURE two input gradients with a double backward.
  Memorisation line, against PGD-10-AT's 11F + 11Bw: TRADES 10 KL-attack passes + 2F + 2Bw (x' and x in train mode)
  + 1 clean eval-mode F for the reference: 12F + 12Bw + 1F, ~1.1x by passes; MART the same passes as TRADES;
  AWP one more F + Bw of the training loss (12F + 12Bw, 1.09x); TE one clean eval-mode F (12F + 11Bw, ~1.05x).
On CIFAR-10 (JPEG copy): --data cifar10_jpeg --models preact_resnet18 --width 0.25 (eps 8/255; 100 images per class
loaded, the first N batches trained).
Usage: python benchmarks/bench_method_cost.py [--batches 8] [--rounds 3] [--models wong_mnist small_cnn]
       [--methods FGSM FGSM+ELLE ...] [--reference FGSM] [--no-keep-heap]
       python benchmarks/bench_method_cost.py --reference PGD-10 --methods TRADES MART PGD-10+AWP TRADES+AWP PGD-10+TE TRADES+TE
       python benchmarks/bench_method_cost.py --reference SGD --methods SGD+SAM SGD+ASAM SGD+GSAM "SGD+LookSAM(k=5)" --batches 10
       python benchmarks/bench_method_cost.py --models split-bn-vgg --reference "PGD-10 (split-BN VGG-11)" \
           --methods "ARAT (split-BN VGG-11)" "PGD-10+SWA (split-BN VGG-11)"
  ARAT against PGD-10-AT: 11F + 11Bw for PGD-AT; ARAT 10 attack passes + the clean and the adversarial forward and
  backward (12F + 12Bw less the clean backward's input part): the paper measured 1.15x on an A100. SWA adds one
  parameter average per step (every_steps 1 here: the worst case; its per-epoch recalibration is outside the epoch loop).
  Flat minimisers against SGD (standard training): SAM, ASAM, GSAM 2F + 2Bw per step (2x); LookSAM with k = 5 on 10
  batches: 2 SAM steps + 8 single-pass steps = 12F + 12Bw for 10 steps (1.2x).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from robustlab.config import config_from_dict
from robustlab.engine.trainer import Trainer

METHODS = {
    "FGSM": {"name": "fgsm"},
    "RS-FGSM": {"name": "rs_fgsm"},
    "N-FGSM": {"name": "n_fgsm"},
    "PGD-2": {"name": "pgd", "steps": 2},
    "PGD-5": {"name": "pgd", "steps": 5},
    "GAT": {"name": "gat"},
    "FGSM+ELLE": {"name": "fgsm", "regularizers": [{"name": "elle"}]},
    "FGSM+ELLE (fused 4B)": {"name": "fgsm", "regularizers": [{"name": "elle", "fuse_forward": True}]},
    "FGSM+ELLE (3 passes of B)": {"name": "fgsm", "regularizers": [{"name": "elle", "triplet_passes": 3}]},
    "FGSM+ELLE-A": {"name": "fgsm", "regularizers": [{"name": "elle_a"}]},
    "FGSM+GradAlign": {"name": "fgsm", "regularizers": [{"name": "gradalign"}]},
    "FGSM+LLR": {"name": "fgsm", "regularizers": [{"name": "llr", "weight": 1.0}]},
    "FGSM+CURE": {"name": "fgsm", "regularizers": [{"name": "cure", "weight": 1.0}]},
    "PGD-10": {"name": "pgd", "steps": 10},
    "TRADES": {"name": "trades", "steps": 10},
    "MART": {"name": "mart", "steps": 10},
    "PGD-10+TE": {"name": "pgd", "steps": 10, "te": {"start": 0, "end": 0, "unit": "epoch"}},
    "TRADES+TE": {"name": "trades", "steps": 10, "te": {"start": 0, "end": 0, "unit": "epoch"}},
    "PGD-10+AWP": {"name": "pgd", "steps": 10, "_minimizer": {"name": "awp", "gamma": 0.01}},
    "TRADES+AWP": {"name": "trades", "steps": 10, "_minimizer": {"name": "awp", "gamma": 0.005}},
    # flat surrogates (issue 13): standard training under each minimiser, against plain SGD
    "SGD": {"name": "standard"},
    "SGD+SAM": {"name": "standard", "_minimizer": {"name": "sam", "rho": 0.05}},
    "SGD+ASAM": {"name": "standard", "_minimizer": {"name": "sam", "rho": 0.5, "adaptive": "weights"}},
    "SGD+GSAM": {"name": "standard", "_minimizer": {"name": "gsam"}},
    "SGD+LookSAM(k=5)": {"name": "standard", "_minimizer": {"name": "looksam", "k": 5}},
    # ARAT (issue 12) against PGD-10-AT on the same split-BN model (VGG-11-BN, width 0.25; the last two BN layers
    # tapped); a "_model" entry replaces the model given with --models
    "PGD-10 (split-BN VGG-11)": {"name": "pgd", "steps": 10, "_model": {
        "name": "vgg", "depth": 11, "width": 0.25, "norm_layer": {"name": "split_batchnorm"}}},
    "ARAT (split-BN VGG-11)": {"name": "arat", "steps": 10, "layers": ["1.features.23", "1.features.26"], "_model": {
        "name": "vgg", "depth": 11, "width": 0.25, "norm_layer": {"name": "split_batchnorm"}}},
    "PGD-10+SWA (split-BN VGG-11)": {"name": "pgd", "steps": 10, "_swa": {"start_epoch": 1, "every_steps": 1}, "_model": {
        "name": "vgg", "depth": 11, "width": 0.25, "norm_layer": {"name": "split_batchnorm"}}},
    # the same on the model given with --models (and --width), its BatchNorm split: ARAT on the CIFAR protocol's model
    "PGD-10 (split BN)": {"name": "pgd", "steps": 10, "_split_bn": True},
    "ARAT (split BN)": {"name": "arat", "steps": 10, "_split_bn": True},
    "PGD-10+SWA (split BN)": {"name": "pgd", "steps": 10, "_swa": {"start_epoch": 1, "every_steps": 1}, "_split_bn": True},
}

# the data sets the costs are measured on: mnist5k (embedded) and CIFAR-10 (JPEG copy, needs $ROBUSTLAB_DATA), each at
# its usual L-inf eps
DATA = {"mnist5k": ({"name": "mnist5k"}, 0.1),
        "cifar10_jpeg": ({"name": "cifar10_jpeg", "train_per_class": 100, "crop_padding": 0, "flip": False}, 8 / 255)}


def epoch_runner(model: str, method: dict, batches: int, batch: int, keep_heap: bool = True, data: str = "mnist5k",
                 width: float | None = None):
    method = dict(method)
    minimizer = method.pop("_minimizer", {"name": "plain"})
    model_cfg = {"name": model, **({"width": width} if width is not None else {})}
    if method.pop("_split_bn", False):
        model_cfg["norm_layer"] = {"name": "split_batchnorm"}
    model_cfg = method.pop("_model", model_cfg)
    swa = method.pop("_swa", None)
    data_cfg, eps = DATA[data]
    cfg = config_from_dict({"data": {**data_cfg, "val_size": 0, "batch_size": batch}, "model": model_cfg,
                            "method": {"eps": eps, **method}, "optim": {"minimizer": minimizer},
                            "train": {"epochs": 1, "progress": "none", "cpu_keep_heap": keep_heap, "swa": swa},
                            "monitor": {"diagnostics": []}})
    t = Trainer(cfg, "/nonexistent")
    t._build()
    t.loader.x, t.loader.y = t.loader.x[:batches * batch], t.loader.y[:batches * batch]
    return lambda: t._train_epoch(0, 0, "none")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["wong_mnist", "small_cnn"])
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), help=f"a subset of: {', '.join(METHODS)}")
    ap.add_argument("--reference", default="FGSM", choices=list(METHODS), help="the method the costs are relative to")
    ap.add_argument("--data", default="mnist5k", choices=list(DATA), help="cifar10_jpeg needs $ROBUSTLAB_DATA")
    ap.add_argument("--width", type=float, default=None, help="model.width for the models given (e.g. 0.25)")
    ap.add_argument("--no-keep-heap", action="store_true", help="glibc's default allocator behaviour (train.cpu_keep_heap=false)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref = args.reference
    print(f"data {args.data}, batch {args.batch}, {args.threads} thread(s)" + (f", width {args.width}" if args.width else ""))
    print(f"| model | method | seconds per {args.batches} batches | relative to {ref} |")
    print("|---|---|---|---|")
    for model in args.models:
        runners = {k: epoch_runner(model, METHODS[k], args.batches, args.batch, not args.no_keep_heap, args.data, args.width)
                   for k in [ref] + [m for m in args.methods if m != ref]}
        for run in runners.values():
            run()  # warm-up
        times = {k: [] for k in runners}
        for _ in range(args.rounds):
            for k, run in runners.items():
                t0 = time.perf_counter()
                run()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in med.items():
            print(f"| {model} | {k} | {v:.3f} | {v / med[ref]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
