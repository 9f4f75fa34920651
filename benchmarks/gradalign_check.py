"""GradAlign's value at a run's kept checkpoints, against an independent computation, with the quantities that explain
whether its term can see catastrophic overfitting (issue 14: the GradAlign question).

    python benchmarks/gradalign_check.py RUN_DIR [--points 256] [--seed 0]

For every kept checkpoint (``train.keep_every: 1`` keeps one per epoch) and the same fixed training points and the same
uniform draw u from the eps-ball:

- ``robustlab``: the GradAlign term as training computes it (robustlab.functional: input gradients of the summed loss
  by autograd, ``gradalign_term``), 1 - mean_i cos(grad l_i(x), grad l_i(x + u));
- ``independent``: per-example gradients by ``torch.func.vmap(torch.func.grad(...))`` of a one-example loss, the cosine
  computed in float64 by hand; on the same points the two must agree to float32 rounding. Both leave out the points
  whose gradient is exactly zero, and which points those are can differ between the two computations (a saturated
  softmax rounds to exactly 1 in one kernel and not in the other): the table gives both masks;
- what the term can see: the fraction of examples whose softmax probability of the true class is exactly 1 in float32
  (their cross-entropy gradient vanishes), the fraction whose input gradient is below 1e-8 (left out of the mean),
  and clean, FGSM and PGD-10 accuracy on the same points.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from robustlab.protocols import evaluate, fgsm_protocol, pgd_protocol  # noqa: E402
from robustlab.eval.loading import load_run_model  # noqa: E402
from robustlab.functional import ce_loss_fn, gradalign_term, input_grad  # noqa: E402
from robustlab.data import build_data  # noqa: E402


def per_example_cosines(model, x: torch.Tensor, x_u: torch.Tensor, y: torch.Tensor):
    """Per-example input gradients by ``torch.func.vmap(torch.func.grad(...))`` of a one-example loss; returns the
    cosines in float64 (nan where a gradient is exactly zero) and the gradient norms at x."""
    from torch.func import grad, vmap

    def one(xi, yi):
        return F.cross_entropy(model(xi.unsqueeze(0)), yi.unsqueeze(0))
    g1 = vmap(grad(one))(x, y).detach().flatten(1).double()
    g2 = vmap(grad(one))(x_u, y).detach().flatten(1).double()
    n1, n2 = g1.norm(dim=1), g2.norm(dim=1)
    cos = (g1 * g2).sum(1) / (n1 * n2)
    return torch.where((n1 > 0) & (n2 > 0), cos, torch.full_like(cos, float("nan"))), n1


def term_over(cos: torch.Tensor, mask: torch.Tensor) -> float:
    return float(1 - cos[mask].mean()) if bool(mask.any()) else float("nan")


def check(run: Path, points: int, seed: int) -> list[dict]:
    files = sorted((run / "checkpoints").glob("epoch_*.pt"))
    if not files:
        raise SystemExit(f"{run}: no kept checkpoints (train.keep_every: 1 keeps one per epoch)")
    first = load_run_model(files[0])
    cfg = first.config
    data = build_data(cfg.data, cfg.seed)
    x, y = data.train.x[:points].float(), data.train.y[:points]
    eps = cfg.method.eps
    gen = torch.Generator().manual_seed(seed)
    u = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    x_u = (x + u).clamp(0, 1)
    out = []
    for f in files:
        model = load_run_model(f).model
        loss_fn = ce_loss_fn(model, y)
        _, g1 = input_grad(loss_fn, x, create_graph=False)
        _, g2 = input_grad(loss_fn, x_u, create_graph=False)
        ours = float(gradalign_term(g1, g2))
        cos, norms = per_example_cosines(model, x, x_u, y)
        a, b = g1.flatten(1), g2.flatten(1)
        ours_ok = (a.norm(dim=1) > 0) & (b.norm(dim=1) > 0)
        theirs_ok = ~torch.isnan(cos)
        # per point, where both computations have well-conditioned gradients (norm > 1e-6 at x and at x + u)
        ours_cos = F.cosine_similarity(a, b, dim=1).double()
        well = (a.norm(dim=1) > 1e-6) & (b.norm(dim=1) > 1e-6) & (norms > 1e-6) & theirs_ok
        per_point = float((ours_cos[well] - cos[well]).abs().max()) if bool(well.any()) else float("nan")
        with torch.no_grad():
            p_true = torch.softmax(model(x), 1).gather(1, y[:, None]).squeeze(1)
        fgsm, pgd = fgsm_protocol(), pgd_protocol(10, 1)
        acc = evaluate(model, x, y, [fgsm, pgd], eps)
        out.append({"epoch": int(re.search(r"(\d+)", f.stem).group(1)), "robustlab": ours,
                    "independent": term_over(cos, theirs_ok),
                    "independent_same_points": term_over(cos, ours_ok & theirs_ok),
                    "kept": (int(ours_ok.sum()), int(theirs_ok.sum()), len(y)), "well": int(well.sum()),
                    "per_point": per_point,
                    "saturated": float((p_true == 1.0).float().mean()),
                    "median_grad_norm": float(norms.median()), "zero_grad": float((norms < 1e-8).float().mean()),
                    "clean": acc["clean_acc"], "fgsm": acc[fgsm.title(eps, "linf")]["robust_acc"],
                    "pgd": acc[pgd.title(eps, "linf")]["robust_acc"]})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--points", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = check(Path(args.run), args.points, args.seed)
    print(f"# {args.run}: {args.points} training points, kernel path {torch.backends.cpu.get_cpu_capability()}")
    print("| epoch | term, robustlab | term, independent | points kept (robustlab / independent / all) | "
          "max per-point cosine difference (points with gradient norms > 1e-6) | p_y = 1 in float32 | zero gradient at x | "
          "clean | FGSM | PGD-10 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        k = r["kept"]
        print(f"| {r['epoch']} | {r['robustlab']:.4f} | {r['independent']:.4f} | {k[0]} / {k[1]} / {k[2]} | "
              f"{r['per_point']:.1e} ({r['well']} points) | {r['saturated']:.3f} | "
              f"{r['zero_grad']:.3f} | {r['clean']:.3f} | {r['fgsm']:.3f} | {r['pgd']:.3f} |")
    worst = max((r["per_point"] for r in rows if r["well"]), default=float("nan"))
    print(f"# largest per-point cosine difference on well-conditioned points: {worst:.1e}; "
          f"median term {statistics.median(r['robustlab'] for r in rows):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
