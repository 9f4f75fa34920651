"""``robustlab eval``: rebuild a run's data and model from a checkpoint and measure clean and robust accuracy."""
from __future__ import annotations

import time
from pathlib import Path

from robustlab.config import ConfigError, config_from_dict, parse_number
from robustlab.data import build_data, to_float
from robustlab.engine.checkpoint import load_checkpoint
from robustlab.engine.io import write_json
from robustlab.engine.runtime import autocast_factory, resolve_device
from robustlab.eval.robust import AttackSpec, evaluate
from robustlab.models import build_model


def resolve_checkpoint(path: Path, which: str) -> Path:
    if path.is_dir():
        ckpt = path / "checkpoints" / f"{which}.pt"
        if not ckpt.is_file():
            raise ConfigError(f"{path}: no checkpoints/{which}.pt; is this a robustlab run folder?")
        return ckpt
    if not path.is_file():
        raise ConfigError(f"{path}: not found; expected a run folder or a checkpoint file")
    return path


def fraction_text(x: float) -> str:
    """8/255-style text when x is a whole number of 255ths, else the number."""
    k = x * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and k >= 1 else f"{x:g}"


def run_eval(args) -> dict:
    ckpt_path = resolve_checkpoint(Path(args.path), args.checkpoint)
    try:
        ckpt = load_checkpoint(ckpt_path)
    except Exception as exc:
        raise ConfigError(f"{ckpt_path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    cfg = config_from_dict(ckpt["config"])
    for name in ("steps", "restarts", "n", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: got {getattr(args, name)}; must be >= 1")
    eps = parse_number(args.eps, "--eps") if args.eps is not None else cfg.method.eps
    if eps <= 0:
        raise ConfigError(f"--eps: got {args.eps!r}; must be > 0 (the run was trained with eps={cfg.method.eps})")
    alpha = parse_number(args.alpha, "--alpha") if args.alpha is not None else None
    spec = AttackSpec(args.attack, eps, alpha, args.steps if args.attack == "pgd" else 1,
                      args.restarts if args.attack == "pgd" else 1, args.norm or cfg.method.norm)
    device = resolve_device(args.device)
    data = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.shape, data.num_classes, data.mean, data.std).to(device)
    model.load_state_dict(ckpt["model"])
    model.eval()
    n = min(args.n, len(data.test))
    x, y = to_float(data.test.x[:n].to(device)), data.test.y[:n].to(device)
    t0 = time.perf_counter()
    res = evaluate(model, x, y, [spec], args.batch_size, autocast_factory(args.precision, device))
    out = {"checkpoint": str(ckpt_path), "epoch": ckpt.get("epoch"), "dataset": cfg.data.name,
           "model": cfg.model.name, "threat_model": "Linf" if spec.norm == "linf" else "L2",
           "eps": fraction_text(eps), "protocol": spec.describe() if spec.name == "pgd" else "FGSM",
           "attack": spec.to_dict(), "n_examples": n, "clean_acc": res["clean_acc"],
           "robust_acc": res[spec.describe()]["robust_acc"], "precision": args.precision, "device": str(device),
           "seconds": time.perf_counter() - t0}
    if args.out:
        dest = Path(args.out)
    else:
        base = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
        stem = f"{ckpt_path.stem}-{out['protocol']}-{spec.norm}-eps{eps:.5g}-n{n}"
        dest = base / "eval" / f"{stem}.json"
    out["written_to"] = str(dest)
    write_json(dest, out)
    return out
