"""``robustlab eval``: rebuild a run's data and model from a checkpoint and measure clean and robust accuracy
with a resumable attack cascade (PGD, AutoAttack), with sanity flags in the report."""
from __future__ import annotations

import time
from pathlib import Path

from robustlab.config import ConfigError, config_from_dict, parse_number
from robustlab.data import build_data, to_float
from robustlab.engine.checkpoint import load_checkpoint
from robustlab.engine.io import write_json, write_text
from robustlab.engine.runtime import autocast_factory, resolve_device
from robustlab.eval.cascade import AutoAttackStage, PGDStage, autoattack_stages, import_autoattack, run_cascade
from robustlab.eval.robust import AttackSpec
from robustlab.eval.sanity import flags_markdown, sanity_checks
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


def eps_text(x: float, norm: str) -> str:
    """eps as RobustBench writes it: L-inf radii that are a whole number of 255ths as "8/255", anything else
    (every L2 radius, e.g. 0.5) as the number."""
    k = x * 255
    return f"{round(k)}/255" if norm == "linf" and abs(k - round(k)) < 1e-6 and k >= 1 else f"{x:g}"


def build_stages(args, spec: AttackSpec) -> list:
    """--attack pgd | fgsm | autoattack | pgd+autoattack -> cascade stages (AutoAttack: its four standard
    components, run by the reference code)."""
    stages = [PGDStage(spec)] if args.attack in ("pgd", "fgsm", "pgd+autoattack") else []
    if "autoattack" in args.attack:
        import_autoattack()   # a clear message before any work when the extra is missing
        stages += autoattack_stages(spec.eps, spec.norm, seed=0)
    return stages


def run_eval(args, log=lambda s: None) -> dict:
    """Evaluate one checkpoint: a resumable cascade (state next to the JSON), sanity flags, JSON + Markdown."""
    ckpt_path = resolve_checkpoint(Path(args.path), args.checkpoint)
    try:
        ckpt = load_checkpoint(ckpt_path)
    except Exception as exc:
        raise ConfigError(f"{ckpt_path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    cfg = config_from_dict(ckpt["config"])
    for name in ("steps", "restarts", "n", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: got {getattr(args, name)}; must be >= 1")
    sanity_n = getattr(args, "sanity", 0)
    if sanity_n < 0:
        raise ConfigError(f"--sanity: got {args.sanity}; must be >= 0 (0: skip the checks)")
    eps = parse_number(args.eps, "--eps") if args.eps is not None else cfg.method.eps
    if eps <= 0:
        raise ConfigError(f"--eps: got {args.eps!r}; must be > 0 (the run was trained with eps={cfg.method.eps})")
    alpha = parse_number(args.alpha, "--alpha") if args.alpha is not None else None
    pgd_name = "fgsm" if args.attack == "fgsm" else "pgd"
    spec = AttackSpec(pgd_name, eps, alpha, args.steps if pgd_name == "pgd" else 1,
                      args.restarts if pgd_name == "pgd" else 1, args.norm or cfg.method.norm)
    stages = build_stages(args, spec)
    device = resolve_device(args.device)
    data = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.shape, data.num_classes, data.mean, data.std).to(device)
    model.load_state_dict(ckpt["model"])
    model.eval()
    n = min(args.n, len(data.test))
    x, y = to_float(data.test.x[:n].to(device)), data.test.y[:n].to(device)
    with_aa = any(isinstance(st, AutoAttackStage) for st in stages)
    protocol = "+".join([st.name for st in stages if isinstance(st, PGDStage)] + (["AutoAttack"] * with_aa))
    threat = "Linf" if spec.norm == "linf" else "L2"
    if args.out:
        dest = Path(args.out)
    else:
        base = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
        dest = base / "eval" / f"{ckpt_path.stem}-{protocol}-{spec.norm}-eps{eps:.5g}-n{n}.json"
    key = {"checkpoint": str(ckpt_path.resolve()), "epoch": ckpt.get("epoch"), "eps": eps, "norm": spec.norm}
    t0 = time.perf_counter()
    res = run_cascade(model, x, y, stages, dest.with_suffix(".state.json"), key, chunk=args.batch_size,
                      batch_size=args.batch_size, autocast=autocast_factory(args.precision, device), log=log)
    out = {"checkpoint": str(ckpt_path), "epoch": ckpt.get("epoch"), "dataset": cfg.data.name,
           "model": cfg.model.name, "threat_model": threat, "eps": eps_text(eps, spec.norm), "protocol": protocol,
           "attack": spec.to_dict() if any(isinstance(st, PGDStage) for st in stages) else None,
           "n_examples": n, "clean_acc": res["clean_acc"], "robust_acc": res["robust_acc"],
           "stages": res["stages"], "precision": args.precision, "device": str(device)}
    if with_aa:
        # the AutoAttack number alone is only defined when AutoAttack saw every clean-correct point
        out["autoattack_acc"] = res["robust_acc"] if args.attack == "autoattack" else None
        out["autoattack_note"] = ("standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; pyautoattack) on the points "
                                  + ("still robust after PGD: robust_acc is the worst case over both"
                                     if args.attack == "pgd+autoattack" else "correctly classified clean"))
    out["seconds"] = time.perf_counter() - t0
    out["sanity"] = sanity_checks(model, x, y, eps, spec.norm, n=sanity_n, batch_size=args.batch_size,
                                  cascade=res) if sanity_n else []
    out["sanity_seconds"] = time.perf_counter() - t0 - out["seconds"]
    out["written_to"] = str(dest)
    write_json(dest, out)
    write_text(dest.with_suffix(".md"), eval_markdown(out))
    return out


def eval_markdown(out: dict) -> str:
    lines = [f"# Evaluation: {out['protocol']}, {out['threat_model']} eps {out['eps']}", "",
             f"checkpoint `{out['checkpoint']}` (epoch {out['epoch']}), {out['dataset']}, first {out['n_examples']} test points", "",
             f"clean accuracy **{out['clean_acc']:.4f}**, robust accuracy **{out['robust_acc']:.4f}** (per-sample worst case)", "",
             "| stage | robust accuracy after it | points fooled | seconds |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['robust_acc']:.4f} | {s['fooled']} | {s['seconds']:.1f} |" for s in out["stages"]]
    if out.get("sanity"):
        lines += ["", "## Sanity checks", "", flags_markdown(out["sanity"])]
    return "\n".join(lines) + "\n"
