"""``robustlab demo [NAME]``: the main job on embedded data, as named CPU-scale studies (each under 10 minutes on
2 CPU cores, except the CIFAR-10 ones). ``robustlab demo --list`` lists them; without a name the catastrophic-overfitting demo runs.

A demo is an ordinary study file inside the package (``configs/<name>.yaml``); ``robustlab sweep`` machinery runs it
and the study report draws it. Rerunning resumes: finished runs are skipped, interrupted ones continue.

- ``co`` (default, ``configs/demo.yaml``): FGSM-AT, N-FGSM-AT, FGSM + GradAlign, FGSM + ELLE, FGSM + ELLE-A and
  PGD-5-AT on mnist5k at eps 0.3, with the claims its report counts (the setting's search and the evidence over seeds
  and kernel paths: docs/co-claims.md). ``--kernel-paths default,avx2`` runs every seed on each path (``make claims``).
- ``memorisation`` (``configs/memorisation.yaml``): adversarial training on random labels (PGD-AT, TRADES) and the
  best-last robust gap of PGD-AT with and without TE and AWP (settings searched: docs/memorisation.md).
- ``arat`` (``configs/arat.yaml``): ARAT (lambda 10, split BN) against PGD-AT and TRADES on mnist5k at eps 0.2, seed 0
  of the claim study with a smaller per-epoch monitor; its claims compare the runs (docs/arat.md has the evidence over
  3 seeds x 2 kernel paths, PGD-50-10 and AutoAttack).
- ``transfer`` (``configs/transfer.yaml``): three steps, each resumable: a sweep of targets of other families, a sweep
  of surrogates (SGD, SAM, large-rho SAM) with kept epochs, then a transfer study (BIM) with each surrogate's
  sharpness (docs/transfer.md).
- ``cifar`` (``configs/cifar.yaml``): FGSM-AT against N-FGSM on CIFAR-10 (JPEG copy) with injected class carriers,
  seed 0 of the CIFAR-10 claim study (docs/cifar10.md); needs the images (``$ROBUSTLAB_DATA`` or ``data.root``) and
  about 30 minutes on 2 cores.
- ``cifar-arat`` (``configs/cifar_arat.yaml``): ARAT (lambda 10) against PGD-AT, TRADES and PGD-AT with an eps ramp on
  CIFAR-10 (JPEG copy), seed 0 of the CIFAR ARAT claim study (docs/arat.md), PGD-50-10 as its final evaluation; needs
  the images; about 1 hour on 2 AVX2 cores (the claim study's seed-0 runs on that path took 1,358-1,824 s each, two at
  a time, and PGD-50-10 on 500 points about 4 minutes a run; not yet timed as one command).
- ``cifar-transfer`` (``configs/cifar_transfer.yaml``): the ``transfer`` pipeline on CIFAR-10 (JPEG copy), seed 0 of
  the CIFAR transfer claim study (four targets of other families, SGD / SAM / large-rho SAM surrogates, BIM at 4/255,
  the study's claims); needs the images; about 2.5 hours on 2 cores (estimated, not yet timed).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from robustlab.core.errors import ConfigError
from robustlab.core.yamlio import parse_yaml
from robustlab.sweep import expand_study, run_sweep

DEMOS = {"co": ("demo.yaml", "catastrophic overfitting and its cures (FGSM-AT, N-FGSM, GradAlign, ELLE, ELLE-A, PGD-AT)"),
         "memorisation": ("memorisation.yaml", "random labels (PGD-AT, TRADES) and robust overfitting (PGD-AT, +TE, +AWP)"),
         "arat": ("arat.yaml", "invariance regularisation: ARAT (split BN, asymmetric cosine loss) vs PGD-AT and TRADES, "
                               "clean and robust accuracy"),
         "transfer": ("transfer.yaml", "flat surrogates (SGD, SAM, large-rho SAM) x targets of other families: BIM transfer "
                                       "and sharpness"),
         "cifar": ("cifar.yaml", "catastrophic overfitting on CIFAR-10 (JPEG copy, needs the images) with injected "
                                 "carriers: FGSM-AT vs N-FGSM (~30 min)"),
         "cifar-arat": ("cifar_arat.yaml", "ARAT vs PGD-AT, TRADES and PGD-AT with a ramp on CIFAR-10 (JPEG copy, needs "
                                           "the images): seed 0 of the CIFAR ARAT claim study (~1 h)"),
         "cifar-transfer": ("cifar_transfer.yaml", "flat surrogates x targets on CIFAR-10 (JPEG copy, needs the images): "
                                                   "seed 0 of the CIFAR transfer claim study (~2.5 h)")}
PIPELINES = {"transfer", "cifar-transfer"}   # demos made of several steps (sweeps, then a transfer study)
NEEDS_FILES = {"cifar", "cifar-arat", "cifar-transfer"}    # demos on data the package does not carry
DEFAULT = "co"


def demo_study_raw(name: str = DEFAULT) -> dict:
    if name not in DEMOS:
        raise ConfigError(f"demo: got {name!r}; allowed: {', '.join(DEMOS)}")
    return parse_yaml(resources.files("robustlab").joinpath("configs", DEMOS[name][0]).read_text(), f"demo {name}")


def list_demos() -> str:
    width = max(map(len, DEMOS)) + 2
    return "\n".join(f"{name:{width}s}{desc}" + (" (default)" if name == DEFAULT else "")
                     for name, (_, desc) in DEMOS.items())


def run_demo(out: str | Path | None = None, seeds: int | None = None, log=print, raw: dict | None = None,
             workers: int | None = None, name: str = DEFAULT, kernel_paths: list[str] | None = None) -> Path:
    """``seeds``: run seeds 0..seeds-1; ``kernel_paths``: run each on these CPU kernel paths (a study key,
    ``train.kernel_path``): the demo's claims are then counted over seeds x paths."""
    raw = raw or demo_study_raw(name)
    if name in NEEDS_FILES:         # a missing data set is one line before any run, not a failed trial per run
        _check_data(expand_study(raw["targets"] if name in PIPELINES else raw, source=f"demo-{name}"))
    if name in PIPELINES:
        if kernel_paths:
            raise ConfigError(f"--kernel-paths: the {name} demo is a pipeline of studies; set train.kernel_path in "
                              "its study files instead")
        return run_transfer_demo(raw, Path(out or f"runs/demo-{name}"), seeds, workers, log)
    if seeds is not None:
        raw = {**raw, "grid": {**raw.get("grid", {}), "seed": list(range(seeds))}}
    if kernel_paths:
        raw = {**raw, "grid": {"train.kernel_path": list(kernel_paths), **raw.get("grid", {})}}
    study = expand_study(raw, source="demo" if name == DEFAULT else f"demo-{name}")
    out = out or ("runs/demo" if name == DEFAULT else f"runs/demo-{name}")
    summary = run_sweep(study, out, workers=workers, log=log)
    return Path(summary["report"]).parent


def _check_data(study) -> None:
    from robustlab.config import config_from_dict
    from robustlab.data import build_data
    build_data(config_from_dict(study.trials[0].config).data, 0)


def run_transfer_demo(raw: dict, out: Path, seeds: int | None, workers: int | None, log) -> Path:
    """Targets and surrogates as sweeps, then the transfer study over them (every step resumes)."""
    from robustlab.core.schema import build, resolve
    from robustlab.eval.transfer import TransferStudy, TransferStudyConfig
    surrogates = raw["surrogates"]
    if seeds is not None:
        surrogates = {**surrogates, "grid": {**surrogates.get("grid", {}), "seed": list(range(seeds))}}
    run_sweep(expand_study(raw["targets"], source="demo-transfer"), out / "targets", workers=workers, log=log)
    run_sweep(expand_study(surrogates, source="demo-transfer"), out / "surrogates", workers=workers, log=log)
    spec = dict(raw["transfer"])
    spec["surrogates"] = [{**r, "study": str(out / "surrogates")} for r in spec["surrogates"]]
    spec["targets"] = [{**r, "study": str(out / "targets")} for r in spec["targets"]]
    cfg = build(TransferStudyConfig, spec)
    resolve(cfg)
    res = TransferStudy(cfg, out / "transfer", log).run()
    log(f"report {res['report']}")
    return Path(res["report"]).parent
