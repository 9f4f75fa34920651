"""``robustlab export RUN``: a run's deployed model for use outside robustlab.

- ``--format safetensors``: ``<name>.safetensors`` (the model's state dict, normalisation included, as the model
  takes [0,1] inputs) and ``<name>.json`` (architecture, normalisation, data set, threat model, eps, epoch, the full
  config; the same JSON is stored in the safetensors header under ``robustlab``). :func:`load_exported` (and
  ``robustlab eval <name>.safetensors``) rebuilds the model from it with no run folder and no data set at hand.
- ``--format robustbench``: a model-info JSON in RobustBench's vocabulary (``model_info/<dataset>/<threat>/
  <name>.json`` there): percentage strings with two decimals, ``eps`` as "8/255", ``architecture``,
  ``additional_data``, ``number_forward_passes``, from the run's newest AutoAttack evaluation (``robustlab eval RUN
  --attack autoattack``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import robustlab
from robustlab.core.errors import ConfigError
from robustlab.core.io import write_json
from robustlab.core.weights import write_safetensors
from robustlab.data import build_data
from robustlab.eval.library import eps_text
from robustlab.report.evals import run_evaluations
from robustlab.core.outputs import check_out_file, stamp
from robustlab.eval.loading import EXPORT_FORMAT, LoadedModel, load_exported, load_run_model, resolve_checkpoint  # noqa: F401

ROBUSTBENCH_KEYS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                    "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote", "threat_model")


def architecture_name(model_cfg) -> str:
    """The architecture as RobustBench's tables write it."""
    named = {"resnet18": "ResNet-18", "preact_resnet18": "PreActResNet-18", "small_cnn": "SmallCNN",
             "wong_mnist": "CNN (Wong et al., 2020, MNIST)"}
    if model_cfg.name == "wide_resnet":
        return f"WideResNet-{model_cfg.depth}-{model_cfg.widen}"
    width = getattr(model_cfg, "width", 1.0)
    return named.get(model_cfg.name, model_cfg.name) + (f" (width {width:g})" if width != 1.0 else "")


def export_info(loaded: LoadedModel, which: str) -> dict:
    cfg = loaded.config
    data = build_data(cfg.data, cfg.seed)
    return {"format": EXPORT_FORMAT, "robustlab": robustlab.__version__, "architecture": architecture_name(cfg.model),
            "model": cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else _plain(cfg.model),
            "input_shape": list(data.shape), "num_classes": data.num_classes,
            "normalization": {"mean": list(map(float, data.mean)), "std": list(map(float, data.std)),
                              "inside_model": bool(cfg.model.normalize)},
            "input_range": [0.0, 1.0], "dataset": cfg.data.name, "threat_model": "Linf" if cfg.method.norm == "linf" else "L2",
            "eps": cfg.method.eps, "eps_text": eps_text(cfg.method.eps, cfg.method.norm), "checkpoint": which,
            "epoch": loaded.epoch, "source": loaded.source, "config": cfg.to_dict()}


def _plain(obj):
    import dataclasses
    return dataclasses.asdict(obj)


def export_safetensors(run: str | Path, out: str | Path, which: str = "best") -> dict:
    target = str(resolve_checkpoint(Path(run), which).absolute())
    out = check_out_file(out, "--out", "export", target, suffixes=(".safetensors",), owned="export",
                         companions=(".json",), stamp_suffix=".json")
    loaded = load_run_model(run, which, "cpu")
    info = {**export_info(loaded, which), "written_by": stamp("export", target)}
    write_safetensors(out, loaded.model.state_dict(), {"robustlab": json.dumps(info)})
    write_json(out.with_suffix(".json"), info)
    return {"weights": str(out), "info": str(out.with_suffix(".json"))}


def check_robustbench_out(dest: str | Path, run: str | Path, which: str) -> Path:
    """A RobustBench model-info file may replace only a file of exactly that shape (RobustBench's own keys, nothing
    added, so none can carry a stamp): anything else at ``dest`` is refused as any command's output is."""
    dest = Path(dest)
    shaped = False
    if dest.is_file():
        try:
            shaped = set(json.loads(dest.read_text())) == set(ROBUSTBENCH_KEYS)
        except (ValueError, TypeError):
            shaped = False
    return check_out_file(dest, "--out", "export", str(resolve_checkpoint(Path(run), which).absolute()), owned="export",
                          force=shaped)


def newest_autoattack(run: Path, which: str) -> dict:
    """The run's newest evaluation whose protocol is the standard AutoAttack (of the chosen checkpoint)."""
    found = [(r["mtime"], r) for r in run_evaluations(run)
             if r.get("protocol") == "AutoAttack" and Path(str(r.get("checkpoint", ""))).stem == which]
    if not found:
        raise ConfigError(f"--format robustbench: {run}/eval holds no AutoAttack evaluation of the {which} checkpoint; "
                          f"run `robustlab eval {run} --checkpoint {which} --attack autoattack --n 10000` first")
    return max(found, key=lambda t: t[0])[1]


def percent(x: float) -> str:
    return f"{100 * x:.2f}"


def robustbench_info(run: str | Path, which: str = "best", name: str | None = None, authors: str = "",
                     link: str = "", venue: str = "", reported: float | None = None) -> tuple[dict, list[str]]:
    """RobustBench's model-info fields from a run and its AutoAttack evaluation; also the warnings to print."""
    run = Path(run)
    loaded = load_run_model(run, which, "cpu")
    cfg = loaded.config
    res = newest_autoattack(run, which)
    warnings = []
    data = build_data(cfg.data, cfg.seed)
    if res["n_examples"] < len(data.test):
        warnings.append(f"AutoAttack saw {res['n_examples']} of {len(data.test)} test points; RobustBench reports the "
                        "full test set")
    aa = res["robust_acc"]
    info = {"link": link, "name": name or run.resolve().name, "authors": authors, "additional_data": False,
            "number_forward_passes": 1, "dataset": cfg.data.name, "venue": venue,
            "architecture": architecture_name(cfg.model), "eps": res["eps"], "clean_acc": percent(res["clean_acc"]),
            "reported": percent(aa if reported is None else reported), "autoattack_acc": percent(aa),
            "footnote": f"robustlab {robustlab.__version__}: standard AutoAttack on the first {res['n_examples']} test "
                        f"points, {which} checkpoint (epoch {loaded.epoch}).",
            "threat_model": res["threat_model"]}
    if not all(math.isfinite(v) for v in (res["clean_acc"], aa)):
        raise ConfigError(f"--format robustbench: the AutoAttack evaluation of {run} has no finite accuracies")
    return info, warnings
