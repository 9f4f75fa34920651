"""The evaluation engine: attacks in order (a protocol's stages), each only on the points still robust, resumable.

Robust accuracy is the per-sample worst case: a point counts as robust only if it is classified correctly
clean and no stage fooled it. After every chunk of points the per-example flags (clean, robust, and which
points each stage has already attacked) are written atomically to a JSON state file, so an interrupted
evaluation resumes at the chunk where it stopped and never re-attacks a point. The state records what it
evaluates by content (a digest of the weights and of the points, the model reference, threat model, eps, the
resolved stages); a state for anything else is refused with one line naming what differs. Progress goes to
``log``: a line per chunk (points done, fooled, robust so far, elapsed, ETA) and, inside a PGD chunk, a line at most
every ``progress_every`` seconds with the restart and step.

Randomness: each stage draws from one generator seeded ``EVAL_SEED`` and carried across its chunks; its state is kept
in the state file after every chunk, so a resumed evaluation draws exactly what an uninterrupted one would, and an
evaluation is a function of the weights, the points, the protocol and the chunk size alone. The per-epoch monitor, the
final evaluation, SWA's evaluation, the sanity checks and ``robustlab eval`` all run here (:mod:`robustlab.protocols`).

Stages:

- ``PGDStage``: robustlab's PGD (L-inf or L2), freezing each point at its first fooling iterate.
- ``AutoAttackStage``: one component of the standard AutoAttack protocol (APGD-CE, APGD-T, FAB-T, Square)
  run by the reference implementation's own code (the ``pyautoattack`` package, extra ``autoattack``) with
  the standard version's parameters; the four in this order on the still-robust points are exactly what
  ``run_standard_evaluation`` does (it too attacks only the points that survived the previous attacks).
  With fewer than 10 classes the targeted attacks target all C - 1 other classes (the standard 9 need 10).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from robustlab.attacks.modes import attack_mode
from robustlab.core.errors import ConfigError
from robustlab.core.flags import flags_tensor, flags_text
from robustlab.core.io import read_json, write_json
from robustlab.core.progress import Progress, duration
from robustlab.attacks.accuracy import EVAL_SEED, AttackSpec, build_eval_attack, fraction, predict

AUTOATTACK_STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")


class StateMismatch(ConfigError):
    """A resumable state written for another evaluation (other weights, points, protocol, eps, ...): refused with
    one line naming what differs."""


def _brief(value) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict) and "name" in value[0]:
        value = " + ".join(str(v["name"]) for v in value)        # stages by name
    text = "absent" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def key_differences(old: dict, new: dict) -> list[str]:
    """``"eps 0.3 -> 0.2"`` for every key whose value differs (stages compared in full, shown by name)."""
    return [f"{k} {_brief(old.get(k))} -> {_brief(new.get(k))}" if _brief(old.get(k)) != _brief(new.get(k))
            else f"{k} settings changed" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


@dataclass
class PGDStage:
    spec: AttackSpec

    @property
    def name(self) -> str:
        return self.spec.describe()

    def describe(self) -> dict:
        return {"name": self.name, **self.spec.to_dict()}

    def fooled(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
               on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
        attack = build_eval_attack(model, self.spec, generator)
        attack.on_step = on_step
        _, fooled = attack.perturb_with_verdict(x, y)
        return fooled

    def steps_per_point(self) -> int:
        return self.spec.steps * self.spec.restarts


def import_autoattack():
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise ImportError("AutoAttack needs the reference code: "
                          "pip install 'robustlab[autoattack]' (the pyautoattack package)") from None
    return AutoAttack


@dataclass
class AutoAttackStage:
    component: str            # apgd-ce | apgd-t | fab-t | square
    eps: float
    norm: str = "linf"
    seed: int = 0

    @property
    def name(self) -> str:
        return self.component

    def describe(self) -> dict:
        return {"name": self.component, "protocol": "AutoAttack standard (pyautoattack)", "eps": self.eps,
                "norm": self.norm, "seed": self.seed}

    def fooled(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
               on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """``generator`` is not used: the reference code seeds itself with ``seed`` for every call."""
        AutoAttack = import_autoattack()
        adversary = AutoAttack(model, norm="Linf" if self.norm == "linf" else "L2", eps=self.eps,
                               version="standard", seed=self.seed, device=x.device)
        adversary.attacks_to_run = [self.component]   # the standard version's parameters, one component
        with torch.no_grad(), attack_mode(model, "eval"):
            classes = model(x[:1]).shape[1]
        if classes - 1 < adversary.apgd_targeted.n_target_classes:   # fewer than 10 classes: all other classes
            adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = classes - 1
        calls = [0]

        def count(*_):                  # progress: the reference code runs a whole chunk in one call
            calls[0] += 1
            if on_step is not None:
                on_step(-1, calls[0])
        hook = model.register_forward_hook(count)
        try:
            with attack_mode(model, "eval"):   # the reference code calls the model as it finds it
                _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=len(x))
        finally:
            hook.remove()
        return y_adv.to(y.device) != y


def generator_state_text(generator: torch.Generator) -> str:
    return bytes(generator.get_state().tolist()).hex()


def stage_generator(device: torch.device, state_text: str | None) -> torch.Generator:
    """The stage's generator: seeded ``EVAL_SEED``, or where a resumed evaluation's stage left it."""
    generator = torch.Generator(device=device).manual_seed(EVAL_SEED)
    if state_text:
        generator.set_state(torch.tensor(list(bytes.fromhex(state_text)), dtype=torch.uint8))
    return generator


def autoattack_stages(eps: float, norm: str, seed: int = 0) -> list[AutoAttackStage]:
    return [AutoAttackStage(c, eps, norm, seed) for c in AUTOATTACK_STANDARD]


def _step_reporter(progress: Progress, stage, points: int, chunk_no: int, chunks: int, log, every: float):
    """Inside a chunk: a line at most every ``every`` seconds with the restart and step and the stage's ETA
    (steps of this chunk count as fractions of its points); for a stage run by outside code in one call (an
    AutoAttack component), the forward passes it has made so far."""
    per_point = getattr(stage, "steps_per_point", None)
    if per_point is None:
        last = [progress.clock()]

        def on_forward(_, calls: int) -> None:
            now = progress.clock()
            if now - last[0] < every:
                return
            last[0] = now
            log(f"{stage.name}: chunk {chunk_no}/{chunks} ({points} points), {calls} forward passes so far, "
                f"{duration(now - progress.start)} elapsed")
        return on_forward
    total_steps = per_point()
    steps = {"last": progress.clock()}

    def on_step(restart: int, step: int) -> None:
        now = progress.clock()
        if now - steps["last"] < every:
            return
        steps["last"] = now
        frac = (restart * stage.spec.steps + step) / total_steps
        elapsed = now - progress.start
        done = progress.done + frac * points
        eta = elapsed / done * (progress.total - done) if done else None
        log(f"{stage.name}: chunk {chunk_no}/{chunks} ({points} points), restart {restart + 1}/{stage.spec.restarts}, "
            f"step {step + 1}/{stage.spec.steps}, {duration(elapsed)} elapsed" + (f", ETA {duration(eta)}" if eta else ""))
    return on_step


def run_cascade(model: nn.Module, x: torch.Tensor, y: torch.Tensor, stages: list, state_path: str | Path | None = None,
                key: dict | None = None, chunk: int = 500, batch_size: int = 500, autocast=contextlib.nullcontext,
                log: Callable[[str], None] = lambda s: None, after_chunk: Callable[[], None] | None = None,
                progress_every: float = 10.0, clean: torch.Tensor | None = None) -> dict:
    """Run ``stages`` in order, each on the still-robust points, persisting flags after every chunk (with
    ``state_path``).

    ``clean``: the points' clean-correct flags when the caller has them (several protocols on the same points).
    Every stage runs the model in eval mode and restores its flags. Returns {"n", "clean_acc", "robust_acc", "stages": [{"name", "robust_acc", "fooled", "seconds"}],
    "clean": bool[n], "robust": bool[n], "fooled_by": {stage: bool[n]}}."""
    key = {**(key or {}), "n": len(y), "stages": [s.describe() for s in stages]}
    path = Path(state_path) if state_path else None
    state = read_json(path) if path is not None and path.is_file() else None
    if state is not None and (not isinstance(state, dict) or "key" not in state):
        raise StateMismatch(f"{path}: not an evaluation state robustlab wrote; choose another --out")
    if state is not None and state["key"] != key:
        raise StateMismatch(f"{path}: holds an evaluation of something else ({'; '.join(key_differences(state['key'], key))}); "
                            "choose another --out, or add --force to discard it and start over")
    if state is None:
        t0 = time.perf_counter()
        clean = predict(model, x, batch_size, autocast).cpu() == y.cpu() if clean is None else clean.cpu()
        state = {"key": key, "clean": flags_text(clean), "robust": flags_text(clean), "stages": {}}
        state["clean_seconds"] = time.perf_counter() - t0
    robust = flags_tensor(state["robust"])
    for stage in stages:
        st = state["stages"].setdefault(stage.name, {"attacked": flags_text(torch.zeros(len(y), dtype=torch.bool)),
                                                     "fooled": flags_text(torch.zeros(len(y), dtype=torch.bool)),
                                                     "seconds": 0.0})
        attacked, fooled_by = flags_tensor(st["attacked"]), flags_tensor(st["fooled"])
        generator = stage_generator(x.device, st.get("generator"))
        todo = (robust & ~attacked).nonzero().squeeze(1)
        if len(todo):
            log(f"{stage.name}: {len(todo)} points to attack in {-(-len(todo) // chunk)} chunk(s) "
                f"({int(robust.sum())} robust so far)")
        progress = Progress(stage.name, len(todo), log, every=progress_every)
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            t0 = time.perf_counter()
            dev = part.to(x.device)
            on_step = _step_reporter(progress, stage, len(part), i // chunk + 1, -(-len(todo) // chunk), log,
                                     progress_every)
            with autocast():
                fooled = stage.fooled(model, x[dev], y[dev], generator, on_step).cpu()
            robust[part[fooled]] = False
            fooled_by[part[fooled]] = True
            attacked[part] = True
            st.update(attacked=flags_text(attacked), fooled=flags_text(fooled_by),
                      seconds=st["seconds"] + time.perf_counter() - t0)
            state["robust"] = flags_text(robust)
            if path is not None:              # the generator's state only where it is kept (a resumable evaluation)
                st["generator"] = generator_state_text(generator)
                write_json(path, state)
            progress.advance(len(part), f"{int(fooled.sum())} of this chunk fooled, {int(robust.sum())}/{len(y)} "
                             "robust so far", force=True)
            if after_chunk is not None:
                after_chunk()
    if path is not None:
        write_json(path, state)
    n = len(y)
    clean = flags_tensor(state["clean"])
    out = {"n": n, "clean_acc": fraction(clean),
           "robust_acc": fraction(robust), "clean": clean, "robust": robust,
           "fooled_by": {}, "stages": []}
    remaining = clean.clone()
    for stage in stages:
        st = state["stages"][stage.name]
        fooled_by = flags_tensor(st["fooled"])
        remaining &= ~fooled_by
        out["fooled_by"][stage.name] = fooled_by
        out["stages"].append({"name": stage.name, "robust_acc": fraction(remaining),
                              "fooled": int(fooled_by.sum()), "seconds": st["seconds"]})
    out["seconds"] = state.get("clean_seconds", 0.0) + sum(s["seconds"] for s in out["stages"])
    return out
