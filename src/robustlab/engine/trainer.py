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
"""
from __future__ import annotations

import contextlib
import math
import random
import time
from pathlib import Path
from typing import Callable

import torch

from robustlab.attacks import AttackSpec, evaluate
from robustlab.attacks.modes import bn_statistics_frozen
from robustlab.config import Config, ConfigError, config_from_dict, epoch_dependent_keys
from robustlab.core import checkpoint as ckpt_io
from robustlab.core.context import BuildContext, EpochContext, StepContext
from robustlab.core.distributed import DistContext
from robustlab.core.io import read_json, read_jsonl, save_torch, write_json, write_jsonl, write_text
from robustlab.core.kernel_paths import check_kernel_path
from robustlab.core.outputs import check_out_folder
from robustlab.core.yamlio import read_yaml
from robustlab.models.split_bn import bn_branch, split_layers
from robustlab.core.runtime import autocast_factory, keep_cpu_heap, resolve_device, set_threads
from robustlab.data import DeviceLoader, build_data, to_float
from robustlab.diagnostics import DIAGNOSTICS, co_fires, robust_overfitting
from robustlab.engine.env import environment, with_start_history
from robustlab.engine.progress import progress_mode, wrap
from robustlab.methods import build_method
from robustlab.models import build_model
from robustlab.optim import LossScaler, build_optimizer, set_hyperparameters
from robustlab.optim.schedules import LR_SCHEDULES
from robustlab.optim.swa import build_averager

NONFINITE_CHECK_EVERY = 20  # steps between host syncs that look for a NaN/inf loss (and at epoch end)


class Diverged(RuntimeError):
    pass


def seed_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path, log: Callable[[str], None] = print,
                 command: list[str] | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.log = log
        self.command = command      # the user's command line when this process is a study's worker
        self.ckpt_dir = self.run_dir / "checkpoints"

    # ---- set-up ----------------------------------------------------------------------------------
    def _check_folder(self) -> dict | None:
        """Refuse a folder holding another config; return results if the run already finished."""
        cfg_path = self.run_dir / "config.yaml"
        if cfg_path.is_file():
            try:
                stored = config_from_dict(read_yaml(cfg_path, "config file"))
            except ConfigError as exc:
                raise ConfigError(f"{self.run_dir}: holds a run whose config.yaml this robustlab cannot read ({exc}); "
                                  "choose another --out") from None
            if stored.to_dict() != self.cfg.to_dict():
                if not self._extension_of(stored):
                    raise ConfigError(f"{self.run_dir}: holds a run with a different config; choose another --out "
                                      "or delete the folder")
                return None
        res_path = self.run_dir / "results.json"
        if res_path.is_file():
            res = read_json(res_path)
            if res.get("status") == "finished":
                return res
        return None

    def _extension_of(self, stored: Config) -> bool:
        """True when this config only raises ``train.epochs`` of the stored run and the run can go on: the lr
        schedule and every other component must not depend on the total epoch count (their values for the epochs
        already trained would change) and the run must not have stopped early. Raises with the reason otherwise."""
        old, new = stored.train.epochs, self.cfg.train.epochs
        same_otherwise = config_from_dict(stored.to_dict(), {"train.epochs": new}).to_dict() == self.cfg.to_dict()
        if not same_otherwise:
            return False
        if new < old:
            raise ConfigError(f"train.epochs: got {new}; {self.run_dir} holds a run of {old} epochs and a run can "
                              "only be extended; choose another --out")
        blockers = epoch_dependent_keys(self.cfg)
        if blockers:
            raise ConfigError(f"train.epochs: cannot extend {self.run_dir} from {old} to {new} epochs: {'; '.join(blockers)} "
                              "depends on the total epoch count, so the epochs already trained would have run with other "
                              "values; start a new run (train.init_from: <run>/checkpoints/last.pt fine-tunes from it)")
        res_path = self.run_dir / "results.json"
        res = read_json(res_path) if res_path.is_file() else {}
        if res.get("status") == "finished" and res.get("epochs_completed", old) < old:
            raise ConfigError(f"train.epochs: cannot extend {self.run_dir}: it stopped early after epoch "
                              f"{res['epochs_completed']} ({res.get('message') or 'stopped'})")
        self.log(f"{self.run_dir}: extending from {old} to {new} epochs")
        return True

    def _build(self) -> None:
        cfg = self.cfg
        check_kernel_path(cfg.train.kernel_path)
        set_threads(cfg.train.threads)
        self.dist = DistContext.from_env()
        self.device = self.dist.device(resolve_device(cfg.train.device))
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
        self.method_params = [p for m in self.method_modules.values() for p in m.parameters()]
        self.optimizer = build_optimizer(cfg.optim, list(self.model.parameters()) + self.method_params, self.bctx)
        self.scaler = LossScaler(cfg.train.precision == "fp16", self.device)
        self.optimizer.guard = self.scaler.finite if self.scaler.enabled else None
        self.schedule = LR_SCHEDULES.build(cfg.optim.schedule)
        self.diagnostics = [DIAGNOSTICS.build(d, self.bctx) for d in cfg.monitor.diagnostics]
        n_eval = min(cfg.monitor.eval_points, len(self.data.test))
        n_val = min(cfg.monitor.val_points or len(self.data.val), len(self.data.val))
        self.eval_sets = {"val": self._on_device(self.data.val, n_val), "test": self._on_device(self.data.test, n_eval)}
        if cfg.monitor.train_points:
            self.eval_sets["trainset"] = self._on_device(self.data.train, min(cfg.monitor.train_points, len(self.data.train)))
        self.trainable = list(self.model.parameters()) + self.method_params
        self.swa = build_averager(cfg.train.swa, self.model, cfg.method.eps, cfg.method.norm,
                                  adversarial_method=cfg.method.name != "standard")

    def _on_device(self, data, n: int | None = None):
        """The first n points of a split, this rank's share of them, on the device."""
        n = len(data) if n is None else n
        idx = self.dist.shard(n)
        return to_float(data.x[idx].to(self.device)), data.y[idx].to(self.device)

    def _evaluate(self, x, y, specs, autocast=None, model=None) -> dict:
        """Accuracies over all ranks' shares: {"clean": acc, "<protocol>": robust acc, "seconds": s}."""
        res = evaluate(model if model is not None else self.model, x, y, specs, self.cfg.data.eval_batch_size,
                       autocast or contextlib.nullcontext)
        counts = torch.stack([torch.tensor(float(len(y))), res["clean_correct"].sum().float(),
                              torch.tensor(float(res["nonfinite"]))]
                             + [res[s.describe()]["robust"].sum().float() for s in specs])
        counts = self.dist.sum(counts.to(self.device)).cpu()
        n = counts[0].item()
        out = {"clean": counts[1].item() / n if n else math.nan, "seconds": res["seconds"],
               "nonfinite": int(counts[2].item())}
        out.update({s.describe(): counts[3 + i].item() / n if n else math.nan for i, s in enumerate(specs)})
        return out

    def _write(self, fn, *args, **kw):
        """Only rank 0 writes files."""
        if self.dist.is_main:
            fn(*args, **kw)

    def _monitor_specs(self) -> list[AttackSpec]:
        eps = self.cfg.method.eps
        if eps <= 0:
            return []
        m = self.cfg.monitor
        specs = [AttackSpec("pgd", eps, m.attack_alpha, m.attack_steps, m.attack_restarts, self.cfg.method.norm)]
        if m.fgsm:
            specs.append(AttackSpec("fgsm", eps, None, 1, 1, self.cfg.method.norm))
        return specs

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self) -> dict:
        check_out_folder(self.run_dir, "--out", "run", "config.yaml")
        done = self._check_folder()
        if done is None and DistContext.from_env().is_main:     # servers that must answer, before any work
            from robustlab.tracking import preflight_trackers
            preflight_trackers(self.cfg.train.trackers)
        if done is not None:
            self.log(f"{self.run_dir}: already finished; not retraining")
            return done
        self._build()  # data errors surface here, before anything is written
        if self.cfg.train.init_from and not (self.ckpt_dir / "last.pt").is_file():
            self._init_weights(self.cfg.train.init_from)
        try:
            return self._run()
        except KeyboardInterrupt:    # Ctrl-C, or SIGTERM through the command line: a dead run must not look alive
            self._mark_interrupted()
            raise
        finally:
            self._track("close")
            self.dist.close()

    def _start_trackers(self, start_epoch: int) -> list:
        """The config's tracking sinks (rank 0 only), started with the resolved config."""
        if not (self.dist.is_main and self.cfg.train.trackers):
            return []
        from robustlab.core.layout import load_manifest, study_of
        from robustlab.tracking import RunIdentity, build_trackers
        study = study_of(self.run_dir)
        study_name = load_manifest(study).get("name", study.name) if study else None
        identity = RunIdentity(self.run_dir, self.run_dir.resolve().name, study_name)
        self.trackers = build_trackers(self.cfg.train.trackers, identity)
        self._track("start", self.cfg.to_dict(), start_epoch)
        return self.trackers

    def _track(self, call: str, *args) -> None:
        """Call every sink; a sink that fails is reported and dropped (metrics.jsonl is the record, a dashboard
        is a copy: it must never stop or lose a run)."""
        for tracker in list(getattr(self, "trackers", [])):
            try:
                getattr(tracker, call)(*args)
            except Exception as exc:
                self.log(f"{self.run_dir}: tracker {tracker.cfg.name!r} failed in {call} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); it is dropped for this run")
                self.trackers.remove(tracker)
    def _init_weights(self, path: str) -> None:
        """Fine-tuning: the model starts from the weights in ``train.init_from`` (a checkpoint or safetensors file)."""
        from robustlab.core.weights import read_weights
        state = read_weights(path, key="train.init_from")
        try:
            self.model.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"train.init_from: {path} does not fit model {self.cfg.model.name!r} "
                              f"({str(exc).strip().splitlines()[-1].strip()})") from None
        self.log(f"{self.run_dir}: weights initialised from {path}")

    def _mark_interrupted(self) -> None:
        path = self.run_dir / "results.json"
        if self.dist.is_main and path.is_file():
            res = read_json(path)
            if res.get("status") == "running":
                res.update(status="interrupted", interrupted_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           message="interrupted; rerun the same command to resume from the last epoch's checkpoint")
                write_json(path, res)

    def _run(self) -> dict:
        history, best, start_epoch, step = [], {"epoch": 0, "score": -math.inf}, 0, 0
        last = self.ckpt_dir / "last.pt"
        if last.is_file():                 # before anything is written: an unreadable checkpoint changes nothing
            history, best, start_epoch, step = self._resume(last)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write(write_text, self.run_dir / "config.yaml", self.cfg.to_yaml())   # an extension's new epochs too
        if self.cfg.data.labels.noise > 0:  # the noisy labels are part of the run
            self._write(save_torch, self.run_dir / "labels.pt", {"train_labels": self.data.train.y.cpu(),
                                                                "original_train_labels": self.data.original_train_labels})
        env = environment(self.device, self.cfg.seed, self.command)
        env["world_size"] = self.dist.world
        env_path = self.run_dir / "env.json"
        previous = _read_or_none(env_path)
        self._write(write_json, env_path, with_start_history(env, previous, start_epoch))
        self.trackers = self._start_trackers(start_epoch)
        self._write(write_jsonl, self.run_dir / "metrics.jsonl", history)
        t_start = time.perf_counter()
        epochs = self.cfg.train.epochs
        status, message = "finished", ""
        mode = progress_mode(self.cfg.train.progress)
        try:
            for epoch in range(start_epoch, epochs):
                self._write_results("running", history, best, time.perf_counter() - t_start)
                row, step = self._train_epoch(epoch, step, mode)
                if mode == "bar" and self.dist.is_main:   # the bar has ended; say what the pause is
                    self.log(self._monitor_line(epoch))
                row.update(self._monitor(epoch))
                row.update(self._swa_epoch(epoch))
                for diag in self.diagnostics:
                    if diag.due(epoch):
                        row.update(diag.measure(self.model, epoch))
                self.method.on_epoch_end(EpochContext(epoch, step, self.model, row))
                history.append(row)
                key = next((k for k in ("val_pgd_acc", "test_pgd_acc", "val_clean_acc") if k in row), None)
                score = row.get(key, 0.0) if key else 0.0
                score = -math.inf if score is None or math.isnan(score) else score
                row["co_fired"] = bool(key and key.endswith("pgd_acc") and co_fires(
                    [r.get(key) for r in history], [r.get(key.replace("pgd", "clean")) for r in history]))
                if score > best["score"]:
                    best = {"epoch": epoch + 1, "score": score}
                    self._write(ckpt_io.save_weights, self.ckpt_dir / "best.pt", model=self.model, epoch=epoch + 1,
                                config=self.cfg.to_dict(), metrics=row)
                self._save_last(epoch + 1, step, history, best)
                if self._keep(epoch + 1):
                    self._write(ckpt_io.save_weights, self.ckpt_dir / ckpt_io.epoch_file(epoch + 1), model=self.model,
                                epoch=epoch + 1, config=self.cfg.to_dict(), metrics=row)
                self._write(write_jsonl, self.run_dir / "metrics.jsonl", history)
                self._track("log_epoch", row)
                self.dist.barrier()
                if mode != "none" and self.dist.is_main:
                    self.log(format_row(row))
                if row["co_fired"] and self.cfg.monitor.co_action != "none":
                    message = self._co_stop(epoch + 1, best, history, step)
                    break
        except Diverged as exc:
            status, message = "diverged", str(exc)
            self.log(f"{self.run_dir}: {message}; last good checkpoint kept")
        final = self._final_eval() if status == "finished" else {}
        results = self._write_results(status, history, best, time.perf_counter() - t_start, final, message)
        self._track("finish", results)
        if self.dist.is_main:
            try:
                from robustlab.report import write_run_report
                write_run_report(self.run_dir)
            except Exception as exc:  # a report must never lose a trained run
                self.log(f"{self.run_dir}: report failed ({type(exc).__name__}: {exc})")
        return results

    # ---- checkpoints --------------------------------------------------------------------------------------
    def _components_state(self) -> dict:
        state = {"method": self.method.state_dict(), "loss_scaler": self.scaler.state_dict(),
                 "diagnostics": [d.state_dict() for d in self.diagnostics]}
        if self.swa is not None:
            state["swa"] = self.swa.state_dict()
        return state

    def _save_last(self, epoch: int, step: int, history: list, best: dict) -> None:
        """The resumable checkpoint: every rank's RNG states (a collective call), written by rank 0."""
        rng_ranks = self.dist.gather(ckpt_io.rng_state(self.generators))
        self._write(ckpt_io.save_checkpoint, self.ckpt_dir / "last.pt", model=self.model, optimizer=self.optimizer,
                    epoch=epoch, step=step, history=history, best=best, config=self.cfg.to_dict(), rng=rng_ranks[0],
                    rng_ranks=rng_ranks if self.dist.enabled else None, components=self._components_state())

    def _resume(self, path: Path) -> tuple[list, dict, int, int]:
        try:
            state = ckpt_io.load_checkpoint(path, map_location=self.device)
        except ValueError as exc:
            raise ConfigError(f"{exc}; the run cannot resume from it (delete {path} to restart the run from scratch)") from None
        if state["format"] != ckpt_io.FORMAT:
            raise ConfigError(f"{path}: written by an older robustlab (checkpoint format {state['format']}); it can be "
                              f"evaluated but not resumed; choose another --out")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        ranks = state.get("rng_ranks")
        rng = ranks[self.dist.rank] if ranks and len(ranks) == self.dist.world else state["rng"]
        ckpt_io.restore_rng(rng, self.generators)
        comp = state["components"]
        self.method.load_state_dict(comp["method"])
        self.scaler.load_state_dict(comp.get("loss_scaler", {}))
        for diag, st in zip(self.diagnostics, comp.get("diagnostics", [])):
            diag.load_state_dict(st)
        if self.swa is not None and "swa" in comp:
            self.swa.load_state_dict(comp["swa"])
        self.log(f"{self.run_dir}: resuming after epoch {state['epoch']}")
        return state["history"], state["best"], state["epoch"], state["step"]

    def _keep(self, epoch: int) -> bool:
        """Whether the weights after this (1-based) epoch are kept as checkpoints/epoch_NNNN.pt."""
        t = self.cfg.train
        return epoch in t.keep_epochs or (t.keep_every > 0 and epoch % t.keep_every == 0)

    def _co_stop(self, epoch: int, best: dict, history: list, step: int) -> str:
        """The live CO rule fired and monitor.co_action asks to stop (and, for rollback, to make the best
        checkpoint the final model)."""
        message = f"CO detected at epoch {epoch}; stopped"
        if self.cfg.monitor.co_action == "rollback" and (self.ckpt_dir / "best.pt").is_file():
            self.model.load_state_dict(ckpt_io.load_checkpoint(self.ckpt_dir / "best.pt", self.device)["model"])
            self._save_last(epoch, step, history, best)
            message += f" and rolled back to the best checkpoint (epoch {best['epoch']})"
            self.dist.barrier()
        self.log(f"{self.run_dir}: {message}")
        return message

    # ---- one epoch, one step ----------------------------------------------------------------------------
    def _train_epoch(self, epoch: int, step: int, mode: str) -> tuple[dict, int]:
        cfg = self.cfg
        per_epoch = len(self.loader)
        total = per_epoch * cfg.train.epochs
        self.method.on_epoch_start(EpochContext(epoch, step, self.model))
        self.optimizer.on_epoch_start(EpochContext(epoch, step, self.model))
        self.train_model.train()
        for m in self.method_modules.values():
            m.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        extra: dict[str, torch.Tensor] = {}
        gn_sum, gn_max, trace = torch.zeros((), device=self.device), torch.zeros((), device=self.device), []
        seen, lr = 0, 0.0
        t0 = time.perf_counter()
        for i, batch in enumerate(wrap(self.loader, mode, per_epoch, f"epoch {epoch + 1}/{cfg.train.epochs}")):
            if cfg.train.channels_last:
                batch.x = batch.x.contiguous(memory_format=torch.channels_last)
            lr = set_hyperparameters(self.optimizer, self.schedule, cfg.optim.lr, step, total, per_epoch)
            progress = epoch + i / per_epoch
            out, ctx = self._step(batch, progress)
            step += 1
            self.method.after_step(StepContext(epoch, step, progress), ctx)
            if self.swa is not None:
                self.swa.after_step(self.model, epoch, step)
            n = len(batch.y)
            loss = out.loss.detach()
            bad |= ~torch.isfinite(loss)
            loss_sum += loss.float() * n
            correct += (out.logits.detach().argmax(1) == batch.y).sum()
            for k, v in out.metrics.items():
                extra[k] = extra.get(k, 0.0) + v.detach().float() * n
            if "grad_norm_sq" in ctx:
                gn_sum += ctx["grad_norm_sq"]
                gn_max = torch.maximum(gn_max, ctx["grad_norm_sq"])
                if cfg.monitor.grad_norm_trace:
                    trace.append(ctx["grad_norm_sq"])
            seen += n
            if (i + 1) % NONFINITE_CHECK_EVERY == 0 and self.dist.any(bad):
                raise Diverged(f"non-finite loss in epoch {epoch + 1}, step {i + 1}")
        if self.dist.any(bad):
            raise Diverged(f"non-finite loss in epoch {epoch + 1}")
        if self.dist.any(~finite_weights(self.trainable)):   # a last step can leave NaN weights behind a finite loss
            raise Diverged(f"non-finite weights after epoch {epoch + 1}")
        keys = sorted(extra)
        sums = self.dist.sum(torch.stack([loss_sum.float(), correct.float(), torch.tensor(float(seen), device=self.device)]
                                         + [extra[k] for k in keys])).tolist()
        seen = sums[2]
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": sums[0] / seen, "train_acc": sums[1] / seen}
        row.update({k: sums[3 + j] / seen for j, k in enumerate(keys)})
        if cfg.monitor.grad_norm:   # every rank holds the same all-reduced gradients: no reduction needed
            row["grad_norm_sq_mean"], row["grad_norm_sq_max"] = (gn_sum / per_epoch).item(), gn_max.item()
        if trace:
            self._write_trace(epoch + 1, torch.stack(trace).tolist())
        row["seconds"] = time.perf_counter() - t0
        return row, step

    def _write_trace(self, epoch: int, values: list[float]) -> None:
        """grad_norm_trace.jsonl: one line per epoch with every step's squared gradient norm (a rerun of an epoch
        after a resume replaces its line)."""
        path = self.run_dir / "grad_norm_trace.jsonl"
        rows = [r for r in read_jsonl(path) if r["epoch"] < epoch] + [{"epoch": epoch, "grad_norm_sq": values}]
        self._write(write_jsonl, path, rows)

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
            self._sync_method_grads()
            self.scaler.unscale_(self.optimizer.params())
            if not outputs and self.cfg.monitor.grad_norm:
                ctx["grad_norm_sq"] = squared_grad_norm(self.trainable)
            outputs.append(out)
            return out.loss

        self.optimizer.step(closure)
        self.scaler.update()
        return outputs[0], ctx

    def _sync_method_grads(self) -> None:
        """Average the gradients of method-owned modules across ranks (DDP averages the model's)."""
        if not (self.dist.enabled and self.method_params):
            return
        grads = [p.grad for p in self.method_params if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            flat = self.dist.sum(flat) / self.dist.world
            for g, part in zip(grads, flat.split([g.numel() for g in grads])):
                g.copy_(part.view_as(g))

    def _swa_epoch(self, epoch: int) -> dict:
        """Once averaging has started: recalibrate the averaged model's BatchNorm statistics, evaluate it like the
        model (``swa_*`` columns) and keep it as checkpoints/swa.pt."""
        if self.swa is None or self.swa.snapshots == 0:
            return {}
        t0 = time.perf_counter()
        self.swa.recalibrate(self.data.train.x, self.data.train.y, self.cfg.data.batch_size, self.autocast, self.device)
        row = {"swa_snapshots": self.swa.snapshots}
        specs = self._monitor_specs()
        for split in ("val", "test"):
            if len(getattr(self.data, split)) == 0:     # as the monitor: every rank takes part or none
                continue
            xs, ys = self.eval_sets[split]
            res = self._evaluate(xs, ys, specs, self.autocast, model=self.swa.module)
            row[f"swa_{split}_clean_acc"] = res["clean"]
            for spec in specs:
                row[f"swa_{split}_{spec.name}_acc"] = res[spec.describe()]
        self._write(ckpt_io.save_weights, self.ckpt_dir / "swa.pt", model=self.swa.module, epoch=epoch + 1,
                    config=self.cfg.to_dict(), metrics=row)
        row["swa_seconds"] = time.perf_counter() - t0
        return row

    def _monitor_description(self) -> dict:
        """What the per-epoch accuracies are measured with: attacks, eps, points per split (for reports)."""
        return {"attacks": [s.describe() for s in self._monitor_specs()], "eps": self.cfg.method.eps,
                "norm": self.cfg.method.norm,
                "points": {split: len(y) * self.dist.world for split, (_, y) in self.eval_sets.items()}}

    def _monitor_line(self, epoch: int) -> str:
        sets = ", ".join(f"{len(y) * self.dist.world} {split}" for split, (_, y) in self.eval_sets.items())
        attacks = " + ".join(s.describe() for s in self._monitor_specs()) or "clean accuracy"
        return f"epoch {epoch + 1}/{self.cfg.train.epochs}: monitor {attacks} on {sets} points ..."

    def _monitor(self, epoch: int) -> dict:
        t0 = time.perf_counter()
        row = {}
        specs = self._monitor_specs()
        for split, (x, y) in self.eval_sets.items():
            if len(getattr(self.data, split if split != "trainset" else "train")) == 0:
                continue
            res = self._evaluate(x, y, specs, self.autocast)
            if res["nonfinite"]:        # before any checkpoint of this epoch is kept, before a row is logged
                raise Diverged(f"non-finite outputs on {res['nonfinite']} of the {split} monitor points after epoch "
                               f"{epoch + 1}")
            row[f"{split}_clean_acc"] = res["clean"]
            for spec in specs:
                row[f"{split}_{spec.name}_acc"] = res[spec.describe()]
        if "test" in self.eval_sets and len(self.data.test):
            x, y = self.eval_sets["test"]
            for branch in self._aux_branches():     # split BN: the branches not deployed, beside the deployed one
                with bn_branch(self.model, branch):
                    res = self._evaluate(x, y, specs, self.autocast)
                row[f"test_{branch}_branch_clean_acc"] = res["clean"]
                for spec in specs:
                    row[f"test_{branch}_branch_{spec.name}_acc"] = res[spec.describe()]
        row["eval_seconds"] = time.perf_counter() - t0
        return row

    def _aux_branches(self) -> list[str]:
        """The auxiliary (not deployed) branches of a split-BN model (robustlab.models.split_bn); [] otherwise.
        Evaluation uses the deployed branch; these are measured beside it."""
        layers = split_layers(self.model)
        return [b for b in layers[0].branches if b != layers[0].deployed] if layers else []

    def _final_eval(self) -> dict:
        fe = self.cfg.final_eval
        n = min(fe.points, len(self.data.test))
        if n == 0 or self.cfg.method.eps <= 0:
            return {}
        spec = AttackSpec("pgd", self.cfg.method.eps, fe.alpha, fe.steps, fe.restarts, self.cfg.method.norm)
        x, y = self._on_device(self.data.test, n)
        out = {"attack": spec.to_dict(), "protocol": spec.describe(), "n_examples": n}
        for which in ("last", "best"):
            if which == "best":
                path = self.ckpt_dir / "best.pt"
                if not path.is_file():
                    continue
                self.model.load_state_dict(ckpt_io.load_checkpoint(path, self.device)["model"])
            res = self._evaluate(x, y, [spec])
            out[which] = {"clean_acc": res["clean"], "robust_acc": res[spec.describe()], "seconds": res["seconds"]}
            for branch in self._aux_branches():
                with bn_branch(self.model, branch):
                    res = self._evaluate(x, y, [spec])
                out[which].setdefault("branches", {})[branch] = {"clean_acc": res["clean"],
                                                                  "robust_acc": res[spec.describe()]}
        if self.swa is not None and self.swa.snapshots > 0:    # the averaged, recalibrated model of the last epoch
            res = self._evaluate(x, y, [spec], model=self.swa.module)
            out["swa"] = {"clean_acc": res["clean"], "robust_acc": res[spec.describe()], "seconds": res["seconds"],
                          "snapshots": self.swa.snapshots}
        if "best" in out and "last" in out:      # robust overfitting under the final protocol
            out["best_minus_last"] = out["best"]["robust_acc"] - out["last"]["robust_acc"]
        # leave the model holding the last weights
        self.model.load_state_dict(ckpt_io.load_checkpoint(self.ckpt_dir / "last.pt", self.device)["model"])
        return out

    def _write_results(self, status, history, best, seconds, final=None, message="") -> dict:
        res = {"status": status, "message": message, "epochs_completed": len(history),
               "epochs": self.cfg.train.epochs, "best_epoch": best.get("epoch", 0),
               "robust_overfitting": robust_overfitting(history),
               "last": history[-1] if history else {}, "final_eval": final or {}, "train_seconds": seconds,
               "co_epoch": next((r["epoch"] for r in history if r.get("co_fired")), None),
               "monitor": self._monitor_description()}
        self._write(write_json, self.run_dir / "results.json", res)
        return res


def _read_or_none(path: Path) -> dict | None:
    try:
        return read_json(path) if path.is_file() else None
    except ValueError:      # a torn env.json from an old writer: the history starts again
        return None


def finite_weights(params) -> torch.Tensor:
    """True (a device tensor, no host sync) when every parameter is finite."""
    return torch.stack([torch.isfinite(p).all() for p in params]).all()


def squared_grad_norm(params) -> torch.Tensor:
    """sum_p ||dL/dp||^2 over the parameters that have a gradient, on the device (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.stack(torch._foreach_norm(grads)).float().pow(2).sum()


def format_row(row: dict) -> str:
    keys = ["epoch", "lr", "train_loss", "train_acc", "val_clean_acc", "val_pgd_acc", "test_clean_acc", "test_pgd_acc",
            "test_fgsm_acc", "seconds"]     # val_pgd_acc (or val_clean_acc without an attack) picks best.pt
    parts = []
    for k in keys:
        if k in row and row[k] is not None:
            v = row[k]
            parts.append(f"{k}={v}" if isinstance(v, int) else f"{k}={v:.4g}")
    return " ".join(parts)


def train(cfg: Config, run_dir: str | Path, log=print, command: list[str] | None = None) -> dict:
    return Trainer(cfg, run_dir, log, command).run()
