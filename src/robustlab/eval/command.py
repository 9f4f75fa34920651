"""``robustlab eval``: load a model (a robustlab run or checkpoint, or ``--model package.module:builder``
``--weights FILE``), evaluate it with :func:`robustlab.eval.evaluate_model`, write JSON + Markdown next to the
run (or to ``--out``) with the cascade's resumable state beside it."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.outputs import check_out_file, stamp
from robustlab.core.schema import parse_number
from robustlab.eval.library import evaluate_model, protocol_config, test_points, write_result
from robustlab.eval.loading import load_external_model, load_run_model
from robustlab.protocols import EVAL_ATTACKS, PGDProtocolConfig, protocol_name

PROTOCOL_FLAGS = ("steps", "restarts", "alpha", "loss")   # the pgd protocols' settings, as --flags (cli.build_parser)


@dataclass(frozen=True)
class EvalRequest:
    """What ``robustlab eval`` is asked to do, typed and checked once (:meth:`from_args`); a study evaluation makes one
    per trial and checkpoint with :func:`dataclasses.replace`. ``attack`` is the protocol mapping (``{"name": "pgd",
    "steps": 20}``): settings not given take the protocol config's defaults, the one place for each default."""
    path: typing.Optional[str] = None
    model: typing.Optional[str] = None
    weights: typing.Optional[str] = None
    data: typing.Optional[str] = None
    checkpoint: typing.Optional[str] = None      # best | last | swa | RUN@E; a study: None for best and last
    branch: typing.Optional[str] = None
    attack: dict = field(default_factory=lambda: {"name": "pgd"})
    sanity: int = 200
    norm: typing.Optional[str] = None
    eps: typing.Optional[str] = None
    n: int = 1000
    batch_size: int = 500
    precision: str = "fp32"
    device: str = "auto"
    out: typing.Optional[str] = None
    force: bool = False

    @classmethod
    def from_args(cls, args) -> "EvalRequest":
        """From the parsed command line (or any object with those attributes; missing ones take the defaults). The
        values are checked where they are used (:func:`robustlab.eval.evaluate_model`, the protocol's config), once."""
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                 if f.name != "attack" and getattr(args, f.name, None) is not None}
        settings = {k: getattr(args, k, None) for k in PROTOCOL_FLAGS}
        return cls(**given, attack=attack_mapping(getattr(args, "attack", None) or "pgd", settings))


def study_requests(evaluations: list[dict]) -> list[tuple[EvalRequest, int]]:
    """A study file's ``evaluations:`` (robustlab.sweep.evaluations: key names and ranges checked) as requests and
    their torch thread counts; a protocol setting the protocol does not take is refused here, before any training."""
    import types
    out = []
    for entry in evaluations:
        given = {k: v for k, v in entry.items() if k != "threads"}
        out.append((EvalRequest.from_args(types.SimpleNamespace(**given)), int(entry.get("threads", 0))))
    return out


def attack_mapping(name: str, settings: dict) -> dict:
    """The protocol mapping for ``--attack name`` and the settings given on the command line (None: not given). A
    setting the protocol does not take (``--steps`` with autoattack) is a contradiction, refused with one line."""
    raw = {"name": name}
    accepted = {f for f in vars(EVAL_ATTACKS.config_class(name)()) if f != "name"} if name in EVAL_ATTACKS else set()
    for key, value in settings.items():
        if value is None:
            continue
        if key not in accepted:
            raise ConfigError(f"--{key}: the {name} protocol does not take it (AutoAttack fixes its own "
                              f"settings); drop --{key} or use --attack pgd / pgd+autoattack")
        raw[key] = parse_number(value, "--alpha") if key == "alpha" else value
    return raw


def protocol_flags() -> dict[str, dict]:
    """``{flag: {"help", "choices"}}`` for the pgd protocols' settings, read from :class:`PGDProtocolConfig`, so the
    command line cannot drift from the defaults and choices the protocol applies."""
    out = {}
    for f in dataclasses.fields(PGDProtocolConfig):
        if f.name in PROTOCOL_FLAGS:
            doc = f.metadata.get("doc", "")
            default = "" if "default" in doc else f"; default {f.default}"
            out[f.name] = {"help": f"{doc} (pgd protocols{default})", "choices": f.metadata.get("choices")}
    return out


def eval_target(loaded) -> str:
    """What an evaluation result is of, for the ``written_by`` stamp: the checkpoint file, or the builder and its
    weights file (absolute paths)."""
    if loaded.config is None:
        weights = loaded.weights if loaded.weights in (None, "none") else str(Path(loaded.weights).absolute())
        return f"{loaded.name} with weights {weights}"
    return str(Path(loaded.source).absolute())


def run_eval(req: EvalRequest, log=lambda s: None) -> dict:
    """Evaluate one model: a resumable cascade (state next to the JSON), sanity flags, JSON + Markdown."""
    attack = req.attack
    proto = protocol_config(attack)
    external = req.model
    if external:
        if not req.out:
            raise ConfigError("--out: required with --model (where to write the result JSON)")
        if req.checkpoint not in (None, "best") or req.branch:
            raise ConfigError("--checkpoint / --branch: go with a robustlab run, not with --model")
        loaded = load_external_model(external, req.weights, "cpu")
    else:
        if req.weights:
            raise ConfigError("--weights: goes with --model package.module:builder")
        loaded = load_run_model(req.path, req.checkpoint or "best", "cpu")
    eps = parse_number(req.eps, "--eps") if req.eps is not None else None
    data = req.data
    if data is None and loaded.config is None:
        raise ConfigError("--data: required with --model (a registered data set, e.g. mnist5k)")
    cfg = loaded.config
    x, y, dataset = test_points(data if data is not None else cfg.data, req.n, cfg.seed if cfg else 0)
    if len(y) < req.n:
        log(f"warning: --n {req.n}: the {dataset} test set has {len(y)} points; evaluating all {len(y)}")
    if req.out:
        dest = Path(req.out)
    else:
        eps_v, norm_v = (eps if eps is not None else cfg.method.eps), (req.norm or cfg.method.norm)  # a run
        stages = EVAL_ATTACKS.build(proto).stages(eps_v, norm_v)
        ckpt_path = Path(loaded.source)
        base = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
        dest = base / "eval" / f"{ckpt_path.stem}-{protocol_name(stages)}-{norm_v}-eps{eps_v:.5g}-n{len(y)}.json"
    loaded, branches = select_branch(loaded, req.branch)
    if branches and branches["evaluated"] != branches["deployed"] and not req.out:
        dest = dest.with_name(dest.stem + f"-{branches['evaluated']}-branch.json")
    target = eval_target(loaded)
    force = req.force
    check_out_file(dest, "--out", "eval", target, owned="eval", companions=(".md",), force=force)
    state = dest.with_suffix(".state.json")
    if force:
        for old in (dest, dest.with_suffix(".md"), state):
            if old.exists():
                log(f"--force: replacing {old}")
                old.unlink()
    res = evaluate_model(loaded, x, y, data=dataset, attack=attack, eps=eps, norm=req.norm,
                         sanity=req.sanity, batch_size=req.batch_size, precision=req.precision,
                         device=req.device, state_path=state, log=log)
    if branches:
        branches["clean_acc"] = branch_clean_accuracy(branches.pop("model"), x, y, branches["all"], req.batch_size)
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
