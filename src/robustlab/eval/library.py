"""Evaluation as a library: any ``nn.Module``, on tensors or a named data set, with any registered protocol.

    from robustlab.eval import evaluate_model, load_model
    loaded = load_model("mypkg.nets:build", weights="w.safetensors")
    result = evaluate_model(loaded, data="mnist5k", attack="autoattack", eps=0.3, n=50)

The result is the object ``robustlab eval`` writes as JSON (clean and robust accuracy, per-stage figures,
sanity flags, RobustBench's vocabulary for the threat model and eps); :func:`write_result` writes it (JSON and
Markdown, atomically). With ``state_path`` the cascade's per-example flags are persisted after every chunk and
an interrupted evaluation resumes there.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from robustlab.attacks.modes import attack_mode
from robustlab.config import DataConfig
from robustlab.core.digest import tensors_digest, weights_digest
from robustlab.core.errors import ConfigError
from robustlab.core.io import read_json, write_json, write_text
from robustlab.core.runtime import autocast_factory, resolve_device
from robustlab.core.schema import build, parse_number
from robustlab.data import DATASETS, build_data, to_float
from robustlab.protocols.cascade import AutoAttackStage, run_cascade
from robustlab.eval.loading import LoadedModel
from robustlab.protocols import EVAL_ATTACKS, protocol_name
from robustlab.eval.sanity import flags_markdown, sanity_checks


def eps_text(x: float, norm: str) -> str:
    """eps as RobustBench writes it: L-inf radii that are a whole number of 255ths as "8/255", anything else
    (every L2 radius, e.g. 0.5) as the number."""
    k = x * 255
    return f"{round(k)}/255" if norm == "linf" and abs(k - round(k)) < 1e-6 and k >= 1 else f"{x:g}"


MNIST_LIKE = ("mnist", "mnist5k", "fashion_mnist", "digits")


def standard_eps(dataset: str, norm: str) -> tuple[float, str]:
    """The usual radius for a data set when none is given for a model robustlab did not train: the MNIST
    convention (L-inf 0.3, Madry et al.'s challenge; L2 2.0) for MNIST-like sets, RobustBench's otherwise
    (L-inf 8/255, L2 0.5). Returns (eps, where it comes from)."""
    if dataset in MNIST_LIKE:
        return (0.3, "MNIST convention (L-inf 0.3)") if norm == "linf" else (2.0, "MNIST convention (L2 2.0)")
    return (8 / 255, "RobustBench convention (L-inf 8/255)") if norm == "linf" else (0.5, "RobustBench convention (L2 0.5)")


def protocol_config(attack: str | dict):
    """A protocol config from a name (``"pgd"``) or a mapping (``{"name": "pgd", "steps": 20}``), validated."""
    raw = {"name": attack} if isinstance(attack, str) else dict(attack)
    name = raw.get("name", "pgd")
    if name not in EVAL_ATTACKS:
        raise ConfigError(f"--attack: got {name!r}; allowed: {', '.join(EVAL_ATTACKS)}")
    return build(EVAL_ATTACKS.config_class(name), {**raw, "name": name}, "--")


def test_points(data, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` test points (at most the whole test split) of ``data`` (a name or a DataConfig, whose
    interventions apply), as floats in [0,1], and the data set's name."""
    cfg = DataConfig(name=data, val_size=0) if isinstance(data, str) else data
    if isinstance(data, str) and data not in DATASETS:
        raise ConfigError(f"--data: got {data!r}; allowed: {', '.join(DATASETS)}")
    bundle = build_data(cfg, seed)
    return to_float(bundle.test.x[:n]), bundle.test.y[:n], cfg.name


def check_model_fits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dataset: str, name: str) -> None:
    """One forward pass on the first point, before any attack: a model that fails on these inputs (a 1-channel
    network on colour images) or does not return one logit per class is a one-line error naming the input shape the
    data set gives and what the model did."""
    if not len(y):
        return
    shape = "x".join(map(str, x.shape[1:]))
    try:
        with torch.no_grad(), attack_mode(model, "eval"):
            out = model(x[:1])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(f"--model: {name} fails on {dataset} inputs (each {shape}, values in [0,1]): "
                          f"{type(exc).__name__}: {first}") from None
    classes = int(y.max()) + 1
    if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != 1:
        got = list(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ConfigError(f"--model: {name} returned {got} for one {dataset} input; expected logits of shape [1, classes]")
    if out.shape[1] < classes:
        raise ConfigError(f"--model: {name} returns {out.shape[1]} logits, but {dataset} has labels up to {classes - 1}")


def evaluate_model(model: nn.Module | LoadedModel, x: torch.Tensor | None = None, y: torch.Tensor | None = None, *,
                   data=None, n: int = 1000, attack: str | dict = "pgd", eps: float | str | None = None,
                   norm: str | None = None, sanity: int = 200, batch_size: int = 500, precision: str = "fp32",
                   device: str = "auto", state_path: str | Path | None = None,
                   log: Callable[[str], None] = lambda s: None) -> dict:
    """Clean and robust accuracy of ``model`` under ``attack`` (a registered protocol) on the first ``n`` points
    of ``x, y`` or of ``data``'s test split (a name or a DataConfig; default: a robustlab run's own data; with
    ``x, y`` given, ``data`` only names them).
    ``eps``/``norm`` default to a robustlab run's threat model. Returns the ``robustlab eval`` result object."""
    loaded = model if isinstance(model, LoadedModel) else LoadedModel(model, type(model).__name__, name=type(model).__name__)
    run_cfg = loaded.config
    for key, value in (("--n", n), ("--batch-size", batch_size)):
        if value < 1:
            raise ConfigError(f"{key}: got {value}; must be >= 1")
    if sanity < 0:
        raise ConfigError(f"--sanity: got {sanity}; must be >= 0 (0: skip the checks)")
    norm = norm or (run_cfg.method.norm if run_cfg is not None else "linf")
    if norm not in ("linf", "l2"):
        raise ConfigError(f"--norm: got {norm!r}; allowed: linf, l2")
    eps_source = "given"
    if eps is None and run_cfg is not None:
        eps, eps_source = run_cfg.method.eps, "the run's method.eps"
    elif eps is None:
        name = data if isinstance(data, str) else getattr(data, "name", None)
        if name is None:
            raise ConfigError("--eps: required for a model robustlab did not train, evaluated on tensors (e.g. 8/255)")
        eps, eps_source = standard_eps(name, norm)
    eps = parse_number(eps, "--eps")
    if eps <= 0 or (norm == "linf" and eps > 1):
        raise ConfigError(f"--eps: got {eps!r}; must be > 0" + (" and at most 1 for L-inf (radii are on the 0-1 scale: "
                                                                  "8/255, not 8)" if eps > 0 else ""))
    proto_cfg = protocol_config(attack)
    protocol = EVAL_ATTACKS.build(proto_cfg)
    stages = protocol.stages(eps, norm)
    dev = resolve_device(device, "--device")
    if x is None:
        if data is None and run_cfg is None:
            raise ConfigError("--data: required for a model robustlab did not train (e.g. mnist5k)")
        x, y, dataset = test_points(data if data is not None else run_cfg.data, n, run_cfg.seed if run_cfg else 0)
    else:
        x, y, dataset = x[:n], y[:n], data if isinstance(data, str) else "tensors"
    n = len(y)
    net = loaded.model.to(dev)
    x, y = x.to(dev), y.to(dev)
    check_model_fits(net, x, y, dataset, loaded.name)
    name = protocol_name(stages)
    key = {"checkpoint": loaded.source, "epoch": loaded.epoch, "model": loaded.name, "eps": eps, "norm": norm,
           "weights": weights_digest(net), "points": tensors_digest([x, y])}   # content, not file names
    t0 = time.perf_counter()
    res = run_cascade(net, x, y, stages, state_path, key, chunk=batch_size, batch_size=batch_size,
                      autocast=autocast_factory(precision, dev, key="--precision"), log=log)
    spec = protocol.pgd_spec(eps, norm)
    out = {"checkpoint": loaded.source, "epoch": loaded.epoch, "dataset": dataset, "model": loaded.name,
           "threat_model": "Linf" if norm == "linf" else "L2", "eps": eps_text(eps, norm), "eps_source": eps_source,
           "protocol": name,
           "attack": spec.to_dict() if spec is not None else None, "protocol_config": vars(proto_cfg).copy(),
           "n_examples": n, "clean_acc": res["clean_acc"], "robust_acc": res["robust_acc"],
           "stages": res["stages"], "precision": precision, "device": str(dev)}
    if any(isinstance(st, AutoAttackStage) for st in stages):
        # the AutoAttack number alone is only defined when AutoAttack saw every clean-correct point
        out["autoattack_acc"] = res["robust_acc"] if proto_cfg.name == "autoattack" else None
        out.update(protocol.notes())
    out["seconds"] = time.perf_counter() - t0
    out["sanity"], out["sanity_seconds"] = checked_sanity(net, x, y, eps, norm, sanity, batch_size, res, state_path, log)
    return out


def checked_sanity(net, x, y, eps, norm, sanity: int, batch_size: int, cascade: dict, state_path, log) -> tuple[list, float]:
    """The sanity flags on the first ``sanity`` points and the seconds they took. With a state file they are kept in
    it beside the cascade's flags (whose key, checked by run_cascade, pins the weights, points, eps and protocol),
    so evaluating again, e.g. a whole study as more of its runs end, reuses them instead of rerunning their 440
    attack iterations per point."""
    path = Path(state_path) if state_path else None
    state = read_json(path) if path is not None and path.is_file() else {}
    kept = state.get("sanity")
    if sanity and isinstance(kept, dict) and kept.get("n") == sanity:
        log(f"sanity checks: kept in {path} (from the first evaluation of these weights and points)")
        return kept["flags"], kept["seconds"]
    t0 = time.perf_counter()
    flags = sanity_checks(net, x, y, eps, norm, n=sanity, batch_size=batch_size, cascade=cascade, log=log) if sanity else []
    seconds = time.perf_counter() - t0
    if sanity and path is not None:
        write_json(path, {**state, "sanity": {"n": sanity, "flags": flags, "seconds": seconds}})
    return flags, seconds


def write_result(out: dict, dest: str | Path) -> dict:
    """Write the result as JSON and Markdown (atomically) and record where."""
    dest = Path(dest)
    out["written_to"] = str(dest)
    write_json(dest, out)
    write_text(dest.with_suffix(".md"), eval_markdown(out))
    return out


def eval_markdown(out: dict) -> str:
    lines = [f"# Evaluation: {out['protocol']}, {out['threat_model']} eps {out['eps']}", "",
             f"model `{out['checkpoint']}` (epoch {out['epoch']}), {out['dataset']}, first {out['n_examples']} test points", "",
             f"clean accuracy **{out['clean_acc']:.4f}**, robust accuracy **{out['robust_acc']:.4f}** (per-sample worst case)", "",
             "| stage | robust accuracy after it | points fooled | seconds |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['robust_acc']:.4f} | {s['fooled']} | {s['seconds']:.1f} |" for s in out["stages"]]
    if out.get("sanity"):
        lines += ["", "## Sanity checks", "", flags_markdown(out["sanity"])]
    return "\n".join(lines) + "\n"
