"""``robustlab eval``: load a model (a robustlab run or checkpoint, or ``--model package.module:builder``
``--weights FILE``), evaluate it with :func:`robustlab.eval.evaluate_model`, write JSON + Markdown next to the
run (or to ``--out``) with the cascade's resumable state beside it."""
from __future__ import annotations

from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.outputs import check_out_file, stamp
from robustlab.core.schema import parse_number
from robustlab.eval.library import evaluate_model, protocol_config, test_points, write_result
from robustlab.eval.loading import load_external_model, load_run_model
from robustlab.protocols import EVAL_ATTACKS, protocol_name


def attack_from_args(args) -> dict:
    """The protocol mapping ``--attack`` and the settings given on the command line. A setting the protocol does not
    take (``--steps`` with autoattack) is a contradiction, refused with one line; settings not given take the
    protocol config's defaults (one place for each default)."""
    raw = {"name": args.attack}
    accepted = {f for f in vars(EVAL_ATTACKS.config_class(args.attack)()) if f != "name"} if args.attack in EVAL_ATTACKS else set()
    given = {"steps": getattr(args, "steps", None), "restarts": getattr(args, "restarts", None),
             "alpha": getattr(args, "alpha", None), "loss": getattr(args, "loss", None)}
    for key, value in given.items():
        if value is None:
            continue
        if key not in accepted:
            raise ConfigError(f"--{key}: the {args.attack} protocol does not take it (AutoAttack fixes its own "
                              f"settings); drop --{key} or use --attack pgd / pgd+autoattack")
        raw[key] = parse_number(value, "--alpha") if key == "alpha" else value
    return raw


def eval_target(loaded) -> str:
    """What an evaluation result is of, for the ``written_by`` stamp: the checkpoint file, or the builder and its
    weights file (absolute paths)."""
    if loaded.config is None:
        weights = loaded.weights if loaded.weights in (None, "none") else str(Path(loaded.weights).absolute())
        return f"{loaded.name} with weights {weights}"
    return str(Path(loaded.source).absolute())


def run_eval(args, log=lambda s: None) -> dict:
    """Evaluate one model: a resumable cascade (state next to the JSON), sanity flags, JSON + Markdown."""
    for name in ("steps", "restarts", "n", "batch_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: got {value}; must be >= 1")
    attack = attack_from_args(args)
    proto = protocol_config(attack)
    external = getattr(args, "model", None)
    if external:
        if not args.out:
            raise ConfigError("--out: required with --model (where to write the result JSON)")
        if getattr(args, "checkpoint", None) not in (None, "best") or getattr(args, "branch", None):
            raise ConfigError("--checkpoint / --branch: go with a robustlab run, not with --model")
        loaded = load_external_model(external, getattr(args, "weights", None), "cpu")
    else:
        if getattr(args, "weights", None):
            raise ConfigError("--weights: goes with --model package.module:builder")
        loaded = load_run_model(args.path, args.checkpoint, "cpu")
    eps = parse_number(args.eps, "--eps") if args.eps is not None else None
    data = getattr(args, "data", None)
    if data is None and loaded.config is None:
        raise ConfigError("--data: required with --model (a registered data set, e.g. mnist5k)")
    cfg = loaded.config
    x, y, dataset = test_points(data if data is not None else cfg.data, args.n, cfg.seed if cfg else 0)
    if len(y) < args.n:
        log(f"warning: --n {args.n}: the {dataset} test set has {len(y)} points; evaluating all {len(y)}")
    if args.out:
        dest = Path(args.out)
    else:
        eps_v, norm_v = (eps if eps is not None else cfg.method.eps), (args.norm or cfg.method.norm)  # a run
        stages = EVAL_ATTACKS.build(proto).stages(eps_v, norm_v)
        ckpt_path = Path(loaded.source)
        base = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
        dest = base / "eval" / f"{ckpt_path.stem}-{protocol_name(stages)}-{norm_v}-eps{eps_v:.5g}-n{len(y)}.json"
    loaded, branches = select_branch(loaded, getattr(args, "branch", None))
    if branches and branches["evaluated"] != branches["deployed"] and not args.out:
        dest = dest.with_name(dest.stem + f"-{branches['evaluated']}-branch.json")
    target = eval_target(loaded)
    force = bool(getattr(args, "force", False))
    check_out_file(dest, "--out", "eval", target, owned="eval", companions=(".md",), force=force)
    state = dest.with_suffix(".state.json")
    if force:
        for old in (dest, dest.with_suffix(".md"), state):
            if old.exists():
                log(f"--force: replacing {old}")
                old.unlink()
    res = evaluate_model(loaded, x, y, data=dataset, attack=attack, eps=eps, norm=args.norm,
                         sanity=getattr(args, "sanity", 0), batch_size=args.batch_size, precision=args.precision,
                         device=args.device, state_path=state, log=log)
    if branches:
        branches["clean_acc"] = branch_clean_accuracy(branches.pop("model"), x, y, branches["all"], args.batch_size)
        res["split_bn"] = branches
    if loaded.config is None:
        res["weights"] = loaded.weights
    res["written_by"] = stamp("eval", target)
    return write_result(res, dest)


def select_branch(loaded, branch: str | None):
    """A split-BN model evaluated on ``branch`` (default: its deployed one), as a plain single-BN model with that
    branch's statistics (robustlab.models.split_bn.to_single_bn: identical outputs); also what the result records
    about the branches. A model without split BN is returned as is ({} recorded; --branch is an error)."""
    import dataclasses

    from robustlab.models.split_bn import split_layers, to_single_bn
    layers = split_layers(loaded.model)
    if not layers:
        if branch:
            raise ConfigError(f"--branch: got {branch!r}, but this model has no split BatchNorm")
        return loaded, {}
    names, deployed = layers[0].branches, layers[0].deployed
    if branch is not None and branch not in names:
        raise ConfigError(f"--branch: got {branch!r}; this model's branches: {', '.join(names)}")
    chosen = branch or deployed
    single = to_single_bn(loaded.model, chosen).eval()
    return dataclasses.replace(loaded, model=single), {"evaluated": chosen, "deployed": deployed, "all": names,
                                                       "model": loaded.model}


def branch_clean_accuracy(model, x, y, names: list[str], batch_size: int) -> dict:
    """Clean accuracy of every branch of a split-BN model on the evaluated points."""
    from robustlab.attacks.accuracy import fraction, predict
    from robustlab.models.split_bn import bn_branch
    out = {}
    for name in names:
        with bn_branch(model, name):
            out[name] = fraction(predict(model.eval(), x, batch_size) == y)
    return out
