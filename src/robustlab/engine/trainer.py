"""The trainer: config -> data + model + method + optimiser -> epochs -> metrics, checkpoints, results.

A run folder holds::

    config.yaml        the resolved config
    env.json           versions, device, threads, seed, git commit, command
    metrics.jsonl      one line per epoch
    results.json       status and final figures (written atomically, also while running)
    checkpoints/       last.pt (full state, resumable) and best.pt (weights, best validation robust acc)
    report/            curves.png, report.md, report.html

Running on an existing folder resumes from ``checkpoints/last.pt`` (RNG states included, so a resumed
CPU run ends with the same metrics as an uninterrupted one); a finished run is not retrained.

Components are built from one :class:`~robustlab.core.context.BuildContext`. The trainable state is the model
plus the modules the method owns (``method.modules()``): the optimiser updates both, the checkpoint holds
both. Every update goes through ``optimizer.step(closure)``; the closure counts its passes (``ctx["pass"]``),
freezes BatchNorm running statistics after the first pass, and in fp16 scales the loss and unscales the
gradients of each pass (:class:`~robustlab.optim.precision.LossScaler`).

Everything else a run does (the per-epoch monitor, split-BN branches, SWA, diagnostics, gradient norms, the CO
action, kept epochs, trackers) is a run hook (:mod:`robustlab.engine.hooks`), called in fixed phases; the folder's
bookkeeping is :mod:`robustlab.engine.run_folder`.
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from robustlab.attacks.modes import bn_statistics_frozen
from robustlab.config import Config
from robustlab.core import checkpoint as ckpt_io
from robustlab.core.context import BuildContext, EpochContext, StepContext
from robustlab.core.distributed import DistContext
from robustlab.core.io import write_json, write_jsonl
from robustlab.core.kernel_paths import check_compile, check_kernel_path
from robustlab.core.outputs import check_out_folder
from robustlab.core.runtime import autocast_factory, keep_cpu_heap, resolve_device, set_threads
from robustlab.data import DeviceLoader, build_data, to_float
from robustlab.diagnostics import robust_overfitting
from robustlab.engine import run_folder
from robustlab.engine.hooks import (Diverged, EpochMonitor, FinalEvaluation, build_hooks, measured_epoch, score,
                                    score_key, squared_grad_norm)
from robustlab.engine.progress import format_row, progress_mode, wrap
from robustlab.engine.tally import EpochTally
from robustlab.methods import build_method
from robustlab.models import build_model
from robustlab.optim import LossScaler, build_optimizer, set_hyperparameters
from robustlab.optim.schedules import LR_SCHEDULES
from robustlab.protocols import evaluate

NONFINITE_CHECK_EVERY = 20  # steps between host syncs that look for a NaN/inf loss (and at epoch end)


def seed_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@dataclass
class RunState:
    """Where the run is: the metrics rows so far, the best epoch by the monitor's score, epochs and steps done, and
    ``seconds``: the wall time spent up to the last checkpoint, summed over the run's attempts (a resumed run's
    ``train_seconds`` is its whole cost, not its last attempt's)."""
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": 0, "score": -math.inf})
    epoch: int = 0
    step: int = 0
    seconds: float = 0.0


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path, log: Callable[[str], None] = print,
                 command: list[str] | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.log = log
        self.command = command      # the user's command line when this process is a study's worker
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.state = RunState()
        self.hooks = []

    # ---- set-up ----------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.cfg
        check_kernel_path(cfg.train.kernel_path)
        set_threads(cfg.train.threads)
        self.dist = DistContext.from_env()
        self.device = self.dist.device(resolve_device(cfg.train.device))
        check_compile(cfg.train.compile, self.device.type)
        if self.device.type == "cpu" and cfg.train.cpu_keep_heap:
            keep_cpu_heap()
        self.dist.init(self.device)
        self.autocast = autocast_factory(cfg.train.precision, self.device, warn=self.log)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.data = build_data(cfg.data, cfg.seed)
        self.generators = {"data": seed_generator(self.device, cfg.seed + 1),
                           "attack": seed_generator(self.device, cfg.seed + 2 + 1000 * self.dist.rank)}
        self.loader = DeviceLoader(self.data.train, cfg.data.batch_size, shuffle=True,
                                   crop_padding=cfg.data.crop_padding, flip=cfg.data.flip, drop_last=False,
                                   device=self.device, generator=self.generators["data"],
                                   shard=(self.dist.rank, self.dist.world))
        self.model = build_model(cfg.model, self.data.shape, self.data.num_classes, self.data.mean,
                                 self.data.std).to(self.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model = torch.compile(self.model) if cfg.train.compile else self.model
        self.train_model = self.forward_model  # what the loss runs through: DDP-wrapped across ranks
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.forward_model, device_ids=ids)
        self.bctx = BuildContext(model=self.model, num_classes=self.data.num_classes, input_shape=self.data.shape,
                                 train_size=len(self.data.train), steps_per_epoch=len(self.loader),
                                 epochs=cfg.train.epochs, device=self.device, dist=self.dist, generators=self.generators,
                                 eps=cfg.method.eps, norm=cfg.method.norm, data=self.data)
        self.method = build_method(cfg.method, self.bctx)
        self.method_modules = {k: m.to(self.device) for k, m in self.method.modules().items()}
        method_named = [(f"{key}.{n}", p) for key, m in self.method_modules.items() for n, p in m.named_parameters()]
        self.method_params = [p for _, p in method_named]
        named = list(self.model.named_parameters()) + method_named     # ASAM's official convention reads the names
        self.trainable = [p for _, p in named]
        self.optimizer = build_optimizer(cfg.optim, named, self.bctx)
        self.scaler = LossScaler(cfg.train.precision == "fp16", self.device)
        self.optimizer.guard = self.scaler.finite if self.scaler.enabled else None
        self.schedule = LR_SCHEDULES.build(cfg.optim.schedule)
        n_eval = min(cfg.monitor.eval_points, len(self.data.test))
        n_val = min(cfg.monitor.val_points or len(self.data.val), len(self.data.val))
        self.eval_sets = {"val": self.on_device(self.data.val, n_val), "test": self.on_device(self.data.test, n_eval)}
        if cfg.monitor.train_points:
            self.eval_sets["trainset"] = self.on_device(self.data.train, min(cfg.monitor.train_points, len(self.data.train)))
        self.hooks = build_hooks(cfg, self)
        self.final_evaluation = FinalEvaluation.build(cfg, self)

    def on_device(self, data, n: int | None = None):
        """The first n points of a split, this rank's share of them, on the device."""
        n = len(data) if n is None else n
        idx = self.dist.shard(n)
        return to_float(data.x[idx].to(self.device)), data.y[idx].to(self.device)

    def evaluate(self, x, y, protocols, model=None, run_precision: bool = True) -> dict:
        """Accuracies under registered protocols (:mod:`robustlab.protocols`) at the run's threat model, over all
        ranks' shares, under the run's precision (or fp32 with ``run_precision=False``): {"clean": acc, "robust":
        [robust acc per protocol], "nonfinite": points with non-finite outputs, "seconds": s}."""
        eps, norm = self.cfg.method.eps, self.cfg.method.norm
        res = evaluate(model if model is not None else self.model, x, y, protocols, eps, norm,
                       self.cfg.data.eval_batch_size, self.autocast if run_precision else contextlib.nullcontext)
        counts = torch.stack([torch.tensor(float(len(y))), res["clean_correct"].sum().float(),
                              torch.tensor(float(res["nonfinite"]))]
                             + [res[p.title(eps, norm)]["robust"].sum().float() for p in protocols])
        counts = self.dist.sum(counts.to(self.device)).cpu()
        n = counts[0].item()
        return {"clean": counts[1].item() / n if n else math.nan, "seconds": res["seconds"],
                "nonfinite": int(counts[2].item()),
                "robust": [counts[3 + i].item() / n if n else math.nan for i in range(len(protocols))]}

    def write(self, fn, *args, **kw):
        """Only rank 0 writes files."""
        if self.dist.is_main:
            fn(*args, **kw)

    def _call(self, phase: str, *args):
        """Every hook's ``phase``; the first non-None answer (``stop``'s message) is returned."""
        answers = [getattr(hook, phase)(self, *args) for hook in self.hooks]
        return next((a for a in answers if a is not None), None)

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self) -> dict:
        check_out_folder(self.run_dir, "--out", "run", "config.yaml")
        done = run_folder.finished_results(self.run_dir, self.cfg, self.log)
        if done is None and DistContext.from_env().is_main:     # servers that must answer, before any work
            from robustlab.tracking import preflight_trackers
            preflight_trackers(self.cfg.train.trackers)
        if done is not None:
            self.log(f"{self.run_dir}: already finished; not retraining")
            return done
        self._build()  # data errors surface here, before anything is written
        if self.cfg.train.init_from and not (self.ckpt_dir / "last.pt").is_file():
            run_folder.load_initial_weights(self.model, self.cfg.train.init_from, self.cfg.model.name, self.log,
                                            self.run_dir)
        try:
            return self._run()
        except KeyboardInterrupt:    # Ctrl-C, or SIGTERM through the command line: a dead run must not look alive
            if self.dist.is_main:
                run_folder.mark_interrupted(self.run_dir)
            raise
        finally:
            self._call("close")
            self.dist.close()

    def _run(self) -> dict:
        if (self.ckpt_dir / "last.pt").is_file():   # before anything is written: an unreadable checkpoint changes nothing
            self._resume(self.ckpt_dir / "last.pt")
        run_folder.write_run_files(self, self.state.epoch)
        self._call("start", self.state.epoch)
        self.write(write_jsonl, self.run_dir / "metrics.jsonl", self.state.history)
        self._started = time.perf_counter() - self.state.seconds    # as if the earlier attempts had run just before
        status, message = "finished", ""
        try:
            for epoch in range(self.state.epoch, self.cfg.train.epochs):
                self._write_results("running", self.seconds())
                message = self._epoch(epoch)
                if message:
                    break
        except Diverged as exc:
            status, message = "diverged", str(exc)
            self.log(f"{self.run_dir}: {message}; last good checkpoint kept")
        final = self.final_evaluation.evaluate(self, self.hooks) if status == "finished" and self.final_evaluation else {}
        results = self._write_results(status, self.seconds(), final, message)
        self._call("finish", results)
        if self.dist.is_main:
            run_folder.write_report(self.run_dir, self.log)
        return results

    def _epoch(self, epoch: int) -> str | None:
        """Train one epoch, then the phases: measure, decide (best checkpoint by the monitor's score; hooks' rules),
        persist (hooks' files), record (last.pt, metrics.jsonl), publish, stop. Returns a stop message or None."""
        mode, state = progress_mode(self.cfg.train.progress), self.state
        row, state.step = self._train_epoch(epoch, state.step, mode)
        measured = measured_epoch(self.cfg, epoch)
        if mode == "bar" and self.dist.is_main and measured:   # the bar has ended; say what the pause is
            self.log(EpochMonitor.line(self, epoch))
        self._call("measure", epoch, row)
        self.method.on_epoch_end(EpochContext(epoch, state.step, self.model, row))
        state.history.append(row)
        key = score_key(row)
        self._call("decide", epoch, row, state.history, key)
        self._call("persist", epoch, row)
        if measured and (epoch_score := score(row, key)) > state.best["score"]:
            state.best = {"epoch": epoch + 1, "score": epoch_score}
            self.write(ckpt_io.save_weights, self.ckpt_dir / "best.pt", model=self.model, epoch=epoch + 1,
                       config=self.cfg.to_dict(), metrics=row)
        state.epoch, state.seconds = epoch + 1, self.seconds()
        self.save_last()
        self.write(write_jsonl, self.run_dir / "metrics.jsonl", state.history)
        self._call("publish", epoch, row)
        self.dist.barrier()
        if mode != "none" and self.dist.is_main:
            self.log(format_row(row))
        return self._call("stop", epoch, row)

    def seconds(self) -> float:
        """Wall seconds of this run so far: its earlier attempts' (to their last checkpoints) plus this one's."""
        return time.perf_counter() - self._started

    # ---- checkpoints --------------------------------------------------------------------------------------
    def _components_state(self) -> dict:
        hooks = {hook.name: hook.state_dict() for hook in self.hooks}
        return {"method": self.method.state_dict(), "loss_scaler": self.scaler.state_dict(),
                **{name: st for name, st in hooks.items() if st is not None}}

    def save_last(self) -> None:
        """The resumable checkpoint: every rank's RNG states (a collective call), written by rank 0."""
        rng_ranks = self.dist.gather(ckpt_io.rng_state(self.generators))
        s = self.state
        self.write(ckpt_io.save_checkpoint, self.ckpt_dir / "last.pt", model=self.model, optimizer=self.optimizer,
                   epoch=s.epoch, step=s.step, history=s.history, best=s.best, seconds=s.seconds,
                   config=self.cfg.to_dict(),
                   rng=rng_ranks[0], rng_ranks=rng_ranks if self.dist.enabled else None,
                   components=self._components_state())

    def _resume(self, path: Path) -> None:
        state = run_folder.load_resumable(path, self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        ranks = state.get("rng_ranks")
        ckpt_io.restore_rng(ranks[self.dist.rank] if ranks and len(ranks) == self.dist.world else state["rng"],
                            self.generators)
        comp = state["components"]
        self.method.load_state_dict(comp["method"])
        self.scaler.load_state_dict(comp.get("loss_scaler", {}))
        for hook in self.hooks:
            if hook.name in comp:
                hook.load_state_dict(comp[hook.name])
        # a checkpoint written before runs kept their seconds: the epochs' own training and monitor time
        seconds = state.get("seconds", ckpt_io.history_seconds(state["history"]))
        self.state = RunState(state["history"], state["best"], state["epoch"], state["step"], float(seconds))
        self.log(f"{self.run_dir}: resuming after epoch {state['epoch']}")

    # ---- one epoch, one step ----------------------------------------------------------------------------
    def _train_epoch(self, epoch: int, step: int, mode: str) -> tuple[dict, int]:
        cfg = self.cfg
        per_epoch = len(self.loader)
        self.method.on_epoch_start(EpochContext(epoch, step, self.model))
        self.optimizer.on_epoch_start(EpochContext(epoch, step, self.model))
        self.train_model.train()
        for m in self.method_modules.values():
            m.train()
        tally, lr, t0 = EpochTally(self.device), 0.0, time.perf_counter()
        for i, batch in enumerate(wrap(self.loader, mode, per_epoch, f"epoch {epoch + 1}/{cfg.train.epochs}")):
            if cfg.train.channels_last:
                batch.x = batch.x.contiguous(memory_format=torch.channels_last)
            lr = set_hyperparameters(self.optimizer, self.schedule, cfg.optim.lr, step, per_epoch * cfg.train.epochs,
                                     per_epoch)
            progress = epoch + i / per_epoch
            out, ctx = self._step(batch, progress)
            step += 1
            self.method.after_step(StepContext(epoch, step, progress), ctx)
            self._call("after_step", epoch, step, ctx)
            tally.add(out, batch.y)
            if (i + 1) % NONFINITE_CHECK_EVERY == 0 and self.dist.any(tally.bad):
                raise Diverged(f"non-finite loss in epoch {epoch + 1}, step {i + 1}")
        if self.dist.any(tally.bad):
            raise Diverged(f"non-finite loss in epoch {epoch + 1}")
        if self.dist.any(~finite_weights(self.trainable)):   # a last step can leave NaN weights behind a finite loss
            raise Diverged(f"non-finite weights after epoch {epoch + 1}")
        return {"epoch": epoch + 1, "lr": lr, **tally.columns(self.dist), "seconds": time.perf_counter() - t0}, step

    def _step(self, batch, progress: float):
        """Craft the method's inputs (through the plain model), then one ``optimizer.step(closure)``: the
        closure runs the loss through the DDP-wrapped model when distributed, and may be called several times
        (``ctx["pass"]``; BatchNorm running statistics are updated on the first pass only)."""
        with self.autocast():
            ctx = self.method.prepare(self.forward_model, batch, progress)
        outputs = []

        def closure():
            ctx["pass"] = len(outputs)
            self.optimizer.zero_grad(set_to_none=True)
            freeze = bn_statistics_frozen(self.model, *self.method_modules.values()) if outputs else contextlib.nullcontext()
            with self.autocast(), freeze:
                out = self.method.loss(self.train_model, batch, ctx)
            self.scaler.scale(out.loss).backward()
            self.dist.average_gradients(self.method_params)    # DDP averages the model's
            self.scaler.unscale_(self.optimizer.params())
            if not outputs and self.cfg.monitor.grad_norm:
                ctx["grad_norm_sq"] = squared_grad_norm(self.trainable)
            outputs.append(out)
            return out.loss

        self.optimizer.step(closure)
        self.scaler.update()
        return outputs[0], ctx

    def _write_results(self, status, seconds, final=None, message="") -> dict:
        history = self.state.history
        res = {"status": status, "message": message, "epochs_completed": len(history),
               "epochs": self.cfg.train.epochs, "best_epoch": self.state.best.get("epoch", 0),
               "robust_overfitting": robust_overfitting(history),
               "last": history[-1] if history else {}, "final_eval": final or {}, "train_seconds": seconds,
               "co_epoch": next((r["epoch"] for r in history if r.get("co_fired")), None),
               "monitor": EpochMonitor.describe(self)}
        self.write(write_json, self.run_dir / "results.json", res)
        return res


def finite_weights(params) -> torch.Tensor:
    """True (a device tensor, no host sync) when every parameter is finite."""
    return torch.stack([torch.isfinite(p).all() for p in params]).all()


def train(cfg: Config, run_dir: str | Path, log=print, command: list[str] | None = None) -> dict:
    return Trainer(cfg, run_dir, log, command).run()
