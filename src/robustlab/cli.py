"""Command line: ``robustlab train | eval | sweep | report | demo``.

User errors (bad config, missing data, bad arguments) print one line and exit with status 2; Ctrl-C
leaves a resumable run and exits with 130.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_train(args) -> int:
    from robustlab.config import load_config
    from robustlab.engine import train

    cfg = load_config(args.config, args.overrides)
    if args.print_config:        # the resolved config (every default, derived step size and weight), nothing run
        print(cfg.to_yaml(), end="")
        return 0
    if not args.out:
        from robustlab.core.errors import ConfigError
        raise ConfigError("--out: required (the run folder; an existing one is resumed or extended)")
    from robustlab.core.kernel_paths import on_path, path_environment
    if not on_path(cfg.train.kernel_path):   # torch reads the path at process start: run in a child on that path
        import subprocess
        return subprocess.call([sys.executable, "-m", "robustlab", *args.argv],
                               env=path_environment(cfg.train.kernel_path))
    res = train(cfg, args.out)
    print(train_summary(args.out, res))
    return 0 if res["status"] == "finished" else 1


def train_summary(out: str, res: dict) -> str:
    """The closing line of ``robustlab train``: status, best epoch, the final evaluation, the report."""
    text = f"{out}: {res['status']} after {res.get('epochs_completed', '?')} of {res.get('epochs', '?')} epochs"
    if res.get("message"):
        text += f" ({res['message']})"
    if res.get("best_epoch"):
        text += f"; best epoch {res['best_epoch']}"
    final = res.get("final_eval") or {}
    for which in ("last", "best", "swa"):
        if which in final:
            text += (f"; {which}: clean {final[which]['clean_acc']:.4f} robust {final[which]['robust_acc']:.4f}")
    if final:
        text += f" ({final.get('protocol')}, first {final.get('n_examples')} test points)"
    report = Path(out) / "report" / "report.html"
    if report.is_file():
        text += f"; report {report}"
    return text


def _cmd_eval(args) -> int:
    from robustlab.core.runtime import set_threads
    from robustlab.eval.command import EvalRequest, run_eval
    from robustlab.eval.study import eval_study_in_processes, is_study_dir

    if args.threads < 0:
        from robustlab.core.errors import ConfigError
        raise ConfigError(f"--threads: got {args.threads}; must be >= 0 (0: torch's default)")
    set_threads(args.threads)
    if (args.path is None) == (args.model is None):
        from robustlab.core.errors import ConfigError
        raise ConfigError("eval: give a run folder, checkpoint or study folder, or --model package.module:builder (not both)")
    req = EvalRequest.from_args(args)
    study = args.path is not None and is_study_dir(args.path)
    if args.workers < 1 or (args.workers > 1 and not study):
        from robustlab.core.errors import ConfigError
        raise ConfigError(f"--workers: got {args.workers}; must be >= 1, and above 1 only for a study folder (its "
                          "trials are shared out between the processes)")
    if study:
        summary = eval_study_in_processes(req, args.workers, args.threads)
        print(f"{args.path}: {len(summary['files'])} trials evaluated ({summary['protocol']}); table.csv and {summary['report']}")
        return 0

    res = run_eval(req, log=print)
    print(f"{res['checkpoint']}: clean {res['clean_acc']:.4f}  robust {res['robust_acc']:.4f}  "
          f"({res['protocol']}, {res['threat_model']} eps={res['eps']}, n={res['n_examples']}, {res['seconds']:.1f} s) -> {res['written_to']}")
    for flag in res["sanity"]:
        if not flag["passed"]:
            print(f"  FLAG {flag['check']}: {flag['note']}")
    run = _run_folder_of(res["checkpoint"]) if args.model is None else None
    if run is not None:                        # the run's report lists every evaluation: draw it again
        try:
            from robustlab.report import write_run_report
            print(f"report {write_run_report(run) / 'report.html'}")
        except Exception as exc:               # the evaluation is written; a report failure must not hide it
            print(f"warning: the run's report was not refreshed ({type(exc).__name__}: {exc})", file=sys.stderr)
    return 0


def _run_folder_of(checkpoint: str) -> Path | None:
    """The run folder a checkpoint file belongs to (RUN/checkpoints/X.pt), or None."""
    path = Path(checkpoint)
    run = path.parent.parent
    return run if path.parent.name == "checkpoints" and (run / "config.yaml").is_file() else None


def _cmd_report(args) -> int:
    from robustlab.report import write_run_report

    path = Path(args.path)
    if (path / "study.json").is_file():
        from robustlab.report.study import write_study_report
        from robustlab.sweep import write_study_table
        write_study_table(path)
        out = write_study_report(path)
    elif (path / "config.yaml").is_file():
        out = write_run_report(path)
    else:
        from robustlab.core.errors import ConfigError
        raise ConfigError(f"{path}: neither a run folder (config.yaml) nor a study folder (study.json)")
    print(out / "report.html")
    return 0


def _cmd_sweep(args) -> int:
    import functools

    from robustlab.eval.command import study_requests
    from robustlab.eval.study import run_study_evaluations
    from robustlab.sweep import load_study, run_sweep

    study = load_study(args.study)
    requests = study_requests(study.evaluations)      # checked before any training
    evaluate = functools.partial(run_study_evaluations, requests=requests) if requests else None
    summary = run_sweep(study, args.out, args.workers, args.backend, args.address, select=args.select,
                        deadline=args.deadline, evaluate=evaluate)
    return 0 if summary["selected_finished"] == summary["selected"] else 1


def _cmd_status(args) -> int:
    from robustlab.core.errors import ConfigError
    from robustlab.core.layout import is_study_dir
    from robustlab.eval.study import evaluation_status_lines
    from robustlab.sweep.status import status_lines

    if not is_study_dir(args.study_dir):
        raise ConfigError(f"{args.study_dir}: not a study folder (no study.json); a lone run's state is in its "
                          "results.json and log.txt")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers: got {args.workers}; must be >= 1")
    print("\n".join(status_lines(args.study_dir, args.workers, evaluations=evaluation_status_lines)))
    return 0


def _cmd_demo(args) -> int:
    from robustlab.demo import list_demos, run_demo

    if args.list:
        print(list_demos())
        return 0
    if args.seeds is not None and args.seeds < 1:
        from robustlab.core.errors import ConfigError
        raise ConfigError(f"--seeds: got {args.seeds}; must be >= 1")
    paths = [p.strip() for p in args.kernel_paths.split(",")] if args.kernel_paths else None
    run_demo(args.out, seeds=args.seeds, workers=args.workers, name=args.name, kernel_paths=paths)
    return 0


def _cmd_export(args) -> int:
    from robustlab.core.io import write_json
    from robustlab.eval.export import check_robustbench_out, export_safetensors, robustbench_info

    from robustlab.core.errors import ConfigError
    run = Path(args.run)
    if not (run / "config.yaml").is_file():
        raise ConfigError(f"{run}: not a run folder (no config.yaml)")
    if args.format == "safetensors":
        given = [f"--{k}" for k in ("name", "authors", "link", "venue", "reported") if getattr(args, k)]
        if given:
            raise ConfigError(f"{', '.join(given)}: go with --format robustbench (RobustBench's fields), not safetensors")
        out = export_safetensors(run, args.out or run / "export" / f"{args.checkpoint}.safetensors", args.checkpoint)
        print(f"{out['weights']} (+ {out['info']})")
        return 0
    try:
        reported = None if args.reported is None else float(args.reported) / 100
    except ValueError:
        raise ConfigError(f"--reported: got {args.reported!r}; a percentage, e.g. 52.3") from None
    if reported is not None and not 0 <= reported <= 1:
        raise ConfigError(f"--reported: got {args.reported}; a percentage between 0 and 100")
    dest = check_robustbench_out(args.out or run / "export" / f"robustbench-{args.checkpoint}.json", run, args.checkpoint)
    info, warnings = robustbench_info(run, args.checkpoint, args.name, args.authors, args.link, args.venue, reported)
    write_json(dest, info)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(dest)
    return 0


def _cmd_sharpness(args) -> int:
    from robustlab.core.runtime import set_threads
    from robustlab.eval.sharpness import checkpoint_sharpness
    set_threads(args.threads)
    res = checkpoint_sharpness(args.run, args.checkpoint, args.points, args.iters, args.samples, args.tol, args.out,
                               log=lambda s: print(s, file=sys.stderr))
    print(f"{res['checkpoint']} (epoch {res['epoch']}): top eigenvalue {res['hessian_top_eig']:.4g} "
          f"({res['hessian_power_iters']} power iterations), trace {res['hessian_trace']:.4g} +- "
          f"{res['hessian_trace_se']:.2g} (Hutchinson, {args.samples} probes), {res['sharpness_points']} training "
          f"points, {res['seconds']:.1f} s -> {res['written_to']}")
    return 0


def _cmd_transfer(args) -> int:
    from robustlab.eval.transfer import run_transfer
    res = run_transfer(args.study, args.out, log=print)
    print(f"report {res['report']}")
    return 0


def _cmd_data(args) -> int:
    from robustlab.data import default_root
    from robustlab.data.download import download
    root = Path(args.root) if args.root else default_root()
    placed = download(args.name, root, args.mirror, log=lambda s: print(s, file=sys.stderr))
    print(f"{args.name}: {len(placed)} file(s) or folder(s) in place under {root}")
    return 0


def _cmd_list(args) -> int:
    from robustlab.listing import describe_registries
    print(describe_registries(args.kind))
    return 0


def build_parser() -> argparse.ArgumentParser:
    import robustlab
    from robustlab.listing import KINDS
    p = argparse.ArgumentParser(prog="robustlab", description="Adversarial-robustness research: train, attack, evaluate.")
    p.add_argument("--version", action="version", version=f"robustlab {robustlab.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    li = sub.add_parser("list", help="the registered components (methods, models, ...) with their config keys and defaults")
    li.add_argument("kind", nargs="?", choices=list(KINDS), default=None, help="one kind (default: all)")
    li.set_defaults(func=_cmd_list)

    t = sub.add_parser("train", help="train one run from a YAML config (rerun to resume)")
    t.add_argument("config", help="YAML config file")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. method.eps=8/255 optim.lr=0.05")
    t.add_argument("--out", default=None, help="run folder (created; an existing one is resumed, or extended when only "
                   "train.epochs grew)")
    t.add_argument("--print-config", action="store_true", help="print the resolved config (YAML, every default filled "
                   "in) and exit without running")
    t.set_defaults(func=_cmd_train)

    from robustlab.protocols import EVAL_ATTACKS
    e = sub.add_parser("eval", help="evaluate a run folder, a checkpoint, every trial of a study, or an external model "
                                    "(default PGD-50-10, step eps/4)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("path", nargs="?", default=None,
                   help="run folder, checkpoint file, or study folder (best and last checkpoint of every trial, or --checkpoint's); "
                        "omit with --model")
    e.add_argument("--model", default=None, help="a model robustlab did not train: package.module:builder "
                   "(a callable returning an nn.Module that takes [0,1] inputs); needs --data, --weights and --out")
    e.add_argument("--weights", default=None, help="with --model (required): a .safetensors file or a torch state dict "
                   "(read with weights_only=True), or 'none' for the builder's own initialisation (recorded in the result)")
    e.add_argument("--data", default=None, help="data set whose test split is attacked (default: the run's own)")
    e.add_argument("--checkpoint", choices=["best", "last", "swa"], default=None,
                   help="which checkpoint of a run folder (default best; swa: the averaged model of train.swa); RUN@E "
                        "for kept epochs. For a study folder: only this checkpoint of every trial (default: best and last)")
    e.add_argument("--branch", default=None, help="split-BN models (ARAT): evaluate this branch (e.g. clean) instead of "
                   "the deployed one; the result also gives every other branch's clean accuracy")
    e.add_argument("--attack", choices=list(EVAL_ATTACKS), default="pgd",
                   help="autoattack: the standard AutoAttack protocol by the reference code (extra 'autoattack'); "
                        "pgd+autoattack: AutoAttack on the points PGD left robust")
    e.add_argument("--sanity", type=int, default=200, help="points for the sanity checks (0: skip)")
    e.add_argument("--norm", choices=["linf", "l2"], default=None, help="threat model (default: the run's)")
    e.add_argument("--eps", default=None, help="radius, e.g. 8/255 (default: the run's eps; for --model, the data "
                   "set's convention: MNIST-like 0.3 L-inf / 2.0 L2, otherwise 8/255 / 0.5 as RobustBench)")
    from robustlab.eval.command import protocol_flags
    flags = protocol_flags()           # from the pgd protocol's config: one place for each default and choice
    e.add_argument("--alpha", default=argparse.SUPPRESS, **flags["alpha"])
    e.add_argument("--steps", type=int, default=argparse.SUPPRESS, **flags["steps"])
    e.add_argument("--restarts", type=int, default=argparse.SUPPRESS, **flags["restarts"])
    e.add_argument("--loss", default=argparse.SUPPRESS, **flags["loss"])
    e.add_argument("--workers", type=int, default=1, help="a study folder: evaluate its trials in this many processes "
                   "at once (with --threads 1 on a machine of that many cores)")
    e.add_argument("--n", type=int, default=1000, help="number of test points (the first N)")
    e.add_argument("--batch-size", type=int, default=500, help="points per attack batch (and per resumable chunk)")
    e.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default, one per core); set it "
                   "when other jobs share the cores: AutoAttack ran 13x slower with the default under contention")
    e.add_argument("--out", default=None, help="JSON file to write (default: <run>/eval/<name>.json; required with "
                   "--model); never a file robustlab eval did not write for this model, nor elsewhere in a run folder")
    e.add_argument("--force", action="store_true", help="replace the result and resumable state at --out even when "
                   "they belong to another evaluation (each replaced file is named)")
    e.set_defaults(func=_cmd_eval)

    s = sub.add_parser("sweep", help="run a study (grid/list of overrides); rerun to resume")
    s.add_argument("study", help="study YAML file")
    s.add_argument("--out", default=None, help="study folder (default runs/studies/<name>)")
    s.add_argument("--workers", type=int, default=None, help="trials at a time (default: the study's workers)")
    s.add_argument("--backend", choices=["local", "ray"], default="local")
    s.add_argument("--address", default=None, help="ray: address of an existing cluster (default: start a local one)")
    s.add_argument("--select", action="append", default=None, metavar="KEY=VALUE",
                   help="run only the trials with this label or config value (repeatable: values of one key are "
                        "alternatives, keys combine), e.g. --select seed=0 --select train.kernel_path=avx2; the "
                        "folder, table and report hold the whole study")
    s.add_argument("--deadline", default=None, metavar="WHEN",
                   help="start no trial that cannot end before WHEN (90m, 2h30m, 17:30, 2026-12-07T17:30; local "
                        "backend): each trial's time is the slowest finished trial like it (another seed or kernel "
                        "path), scaled by the epochs it has left; running trials are not stopped, held ones stay "
                        "pending for the next sweep")
    s.set_defaults(func=_cmd_sweep)

    st = sub.add_parser("status", help="where a study stands: trials finished / running (epoch, accuracies) / stopped / "
                        "pending, the time left, how far its evaluations have got, its claims so far (reads the folder, "
                        "writes nothing)")
    st.add_argument("study_dir", help="a study folder (robustlab sweep --out)")
    st.add_argument("--workers", type=int, default=None, help="trials at a time for the wall-clock estimate "
                    "(default: the study's workers)")
    st.set_defaults(func=_cmd_status)

    x = sub.add_parser("export", help="a run's model for use elsewhere: safetensors + JSON, or RobustBench's model-info JSON",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    x.add_argument("run", help="a run folder")
    x.add_argument("--format", choices=["safetensors", "robustbench"], default="safetensors")
    x.add_argument("--checkpoint", choices=["best", "last", "swa"], default="best")
    x.add_argument("--out", default=None, help="file to write (default: <run>/export/<checkpoint>.safetensors or "
                   "<run>/export/robustbench-<checkpoint>.json)")
    for key in ("name", "authors", "link", "venue"):
        x.add_argument(f"--{key}", default="" if key != "name" else None,
                       help=f"robustbench: the '{key}' field" + (" (default: the run folder's name)" if key == "name" else ""))
    x.add_argument("--reported", default=None, help="robustbench: the robust accuracy (%%) the paper reports "
                   "(default: the AutoAttack accuracy)")
    x.set_defaults(func=_cmd_export)

    h = sub.add_parser("sharpness", help="Hessian top eigenvalue and trace of a checkpoint's training loss",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    h.add_argument("run", help="a run folder, RUN@EPOCH (weights kept by train.keep_epochs / keep_every) or a checkpoint")
    h.add_argument("--checkpoint", choices=["best", "last", "swa"], default="last", help="which checkpoint of a run folder")
    h.add_argument("--points", type=int, default=1000, help="training examples (a fixed, seeded subset)")
    h.add_argument("--iters", type=int, default=20, help="power iterations at most")
    h.add_argument("--samples", type=int, default=20, help="Hutchinson probes for the trace")
    h.add_argument("--tol", type=float, default=1e-3, help="relative change that stops the power iteration")
    h.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    h.add_argument("--out", default=None, help="JSON file (default: <run>/sharpness/<checkpoint>-n<points>.json)")
    h.set_defaults(func=_cmd_sharpness)

    tr = sub.add_parser("transfer", help="a transfer study: surrogates x targets (craft once per surrogate, judge on "
                        "every target; rerun = resume)")
    tr.add_argument("study", help="transfer study YAML (robustlab.eval.transfer)")
    tr.add_argument("--out", default=None, help="study folder (default runs/transfer/<name>)")
    tr.set_defaults(func=_cmd_transfer)

    da = sub.add_parser("data", help="data sets: `robustlab data download NAME` fetches the original files")
    da_sub = da.add_subparsers(dest="data_command", required=True)
    dd = da_sub.add_parser("download", help="fetch a data set's original files (published checksums checked; "
                           "resumable; nothing half-written is ever read as data)")
    dd.add_argument("name", help="cifar10, cifar100, svhn, mnist or fashion_mnist")
    dd.add_argument("--root", default=None, help="data root (default $ROBUSTLAB_DATA, else ~/.cache/robustlab/data)")
    dd.add_argument("--mirror", default=None, help="fetch every file from MIRROR/<file name> instead of the official "
                    "addresses (a local copy)")
    dd.set_defaults(func=_cmd_data)

    r = sub.add_parser("report", help="(re)write the report of a run folder or a study folder")
    r.add_argument("path", help="a run folder (config.yaml) or a study folder (study.json)")
    r.set_defaults(func=_cmd_report)

    d = sub.add_parser("demo", help="a CPU-scale study on embedded data (minutes); default: catastrophic overfitting")
    d.add_argument("name", nargs="?", default="co", help="which demo (robustlab demo --list)")
    d.add_argument("--list", action="store_true", help="list the demos and exit")
    d.add_argument("--out", default=None, help="study folder (default runs/demo, runs/demo-NAME; rerun to resume)")
    d.add_argument("--seeds", type=int, default=None, help="seeds per method (default: the demo config's)")
    d.add_argument("--kernel-paths", default=None, help="comma-separated CPU kernel paths to run every seed on "
                   "(train.kernel_path: machine, default, avx2); `make claims` runs the CO demo with --seeds 5 "
                   "--kernel-paths default,avx2")
    d.add_argument("--workers", type=int, default=None, help="runs at a time (default 2)")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    argv_list = list(sys.argv[1:] if argv is None else argv)
    if argv_list == ["--version"]:          # answered without importing torch (2 s of CPU)
        import robustlab
        print(f"robustlab {robustlab.__version__}")
        return 0
    from robustlab.core.errors import ConfigError, DataError

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    import signal
    if args.command in ("train", "eval", "sweep", "demo", "transfer", "sharpness", "data"):   # a kill (SIGTERM) stops like Ctrl-C: state recorded
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        if hasattr(sys.stdout, "reconfigure"):   # `nohup robustlab eval ... > log`: progress lines reach the file as they come
            sys.stdout.reconfigure(line_buffering=True)
    try:
        return args.func(args)
    except (ConfigError, DataError) as exc:
        print(f"robustlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robustlab: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:           # `robustlab status DIR | head`: the reader left; no traceback
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # Python's own flush at exit would fail again
        return 141


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
