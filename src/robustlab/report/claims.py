"""Claims: what a study's runs must show, checked as counted fractions over seeds and CPU kernel paths.

Training is chaotic: the same seed follows another trajectory on another CPU kernel path, so a finding is a
fraction of runs, never one machine's run. A study file may carry ``claims:``, each a statement with the rule a run
must meet and the fraction of runs that must meet it **on every kernel path** the study ran on::

    claims:
      - says: "FGSM-AT shows catastrophic overfitting (robust accuracy collapses, clean accuracy holds)"
        group: FGSM-AT            # the trials' label
        verdict: [co]             # robustlab.diagnostics.collapse_verdict: co, failure, none
        at_least: 0.8             # of the runs on each kernel path
      - says: "N-FGSM-AT holds: no collapse, final PGD-50 accuracy >= 0.5"
        group: N-FGSM-AT
        verdict: [none]
        metric: final_robust_acc  # a column of the study table (table.csv)
        min: 0.5
        bounds: [{metric: final_clean_acc, min: 0.9}]   # more bounds the same run must meet
      - says: "ARAT's clean accuracy is above PGD-AT's at equal or better PGD-50-10 accuracy"
        group: ARAT
        versus: [PGD-AT]          # paired: the run of each of these labels with the same seed and kernel path
        above: [final_clean_acc]  # columns where the group's run must be strictly higher than every partner's
        not_below: [final_robust_acc]   # columns where it must be at least as high
        at_least: 0.8

Runs count when they ended (finished or diverged) and their figures are in; a diverged run meets a claim only through
its verdict, and a finished run still waiting for an evaluation or for its comparison partner to end is counted as
pending, not as a miss.
:func:`evaluate_claims` gives, per claim, the count over all runs and per kernel path, and whether it holds; the
study report puts these first, and ``benchmarks/claims_evidence.py`` turns recorded evidence into the figures of
README and docs.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass

from robustlab.core.errors import ConfigError
from robustlab.core.schema import build, resolve, spec

VERDICTS = ("co", "failure", "none")
ENDED = ("finished", "diverged")
LATER = "eval_"     # columns filled after a run ends (``robustlab eval STUDY_DIR``); a blank one is still to come


@dataclass
class Bound:
    metric: str = spec("", doc="a column of the study table (table.csv)")
    min: typing.Optional[float] = spec(None)
    max: typing.Optional[float] = spec(None)

    def check(self, key: str) -> None:
        if not self.metric or (self.min is None and self.max is None):
            raise ConfigError(f"{key.rstrip('.')}: a bound needs a metric and min or max")

    def met_by(self, row: dict) -> bool:
        value = _number(row.get(self.metric))
        if value is None:
            return False
        return not ((self.min is not None and value < self.min) or (self.max is not None and value > self.max))

    def text(self) -> str:
        parts = [f">= {self.min:g}" if self.min is not None else "", f"<= {self.max:g}" if self.max is not None else ""]
        return f"{self.metric} " + " and ".join(p for p in parts if p)


@dataclass
class Claim:
    says: str = spec("", doc="the statement, as README or docs would make it")
    group: str = spec("", doc="the label of the trials it is about")
    verdict: list[str] = spec(default_factory=list, doc="collapse verdicts that meet it (co, failure, none); empty: any")
    metric: typing.Optional[str] = spec(None, doc="a column of the study table that must lie in [min, max]")
    min: typing.Optional[float] = spec(None)
    max: typing.Optional[float] = spec(None)
    bounds: list[Bound] = spec(default_factory=list, doc="more metric bounds the same run must meet: [{metric, min, max}]")
    versus: list[str] = spec(default_factory=list, doc="labels compared with, run by run: the partner of a run has "
                             "its seed and kernel path")
    above: list[str] = spec(default_factory=list, doc="with versus: columns where a run must be strictly higher than "
                            "every partner")
    not_below: list[str] = spec(default_factory=list, doc="with versus: columns where a run must be >= every partner")
    below: list[str] = spec(default_factory=list, doc="with versus: columns where a run must be strictly lower than "
                            "every partner (a smaller best-last gap, a lower cost)")
    at_least: float = spec(0.8, lo=0.0, hi=1.0, doc="fraction of the runs on each kernel path that must meet it")

    def check(self, key: str) -> None:
        where = key.rstrip(".")
        if not self.says or not self.group:
            raise ConfigError(f"{where}: says and group are required")
        bad = [v for v in self.verdict if v not in VERDICTS]
        if bad:
            raise ConfigError(f"{key}verdict: got {bad[0]!r}; allowed: {', '.join(VERDICTS)}")
        if self.metric is None and (self.min is not None or self.max is not None):
            raise ConfigError(f"{key}metric: min/max given without a metric")
        if self.metric is not None and self.min is None and self.max is None:
            raise ConfigError(f"{key}metric: {self.metric!r} needs min or max")
        if bool(self.versus) != bool(self.above or self.not_below or self.below):
            raise ConfigError(f"{key}versus: a comparison needs both versus (labels) and above, not_below or below "
                              "(columns)")
        if self.group in self.versus:
            raise ConfigError(f"{key}versus: {self.group!r} is the claim's own group")
        if not self.verdict and self.metric is None and not self.bounds and not self.versus:
            raise ConfigError(f"{where}: give a verdict, a metric or a comparison (a claim every run meets says nothing)")

    def all_bounds(self) -> list[Bound]:
        head = [Bound(self.metric, self.min, self.max)] if self.metric is not None else []
        return head + list(self.bounds)

    def met_by(self, row: dict, partners: dict | None = None) -> bool:
        """``partners``: label -> the ended run of that label with this run's seed and kernel path (see
        :func:`pair_key`); a comparison is not met when a partner is missing or a figure is."""
        if self.verdict and row.get("collapse") not in self.verdict:
            return False
        if not all(b.met_by(row) for b in self.all_bounds()):
            return False
        for label in self.versus:
            other = (partners or {}).get(label)
            if other is None:
                return False
            for column, sign, strict in ([(c, 1, True) for c in self.above] + [(c, 1, False) for c in self.not_below]
                                         + [(c, -1, True) for c in self.below]):
                mine, theirs = _number(row.get(column)), _number(other.get(column))
                if mine is None or theirs is None or sign * mine < sign * theirs or (strict and mine == theirs):
                    return False
        return True

    def compared_columns(self) -> list[str]:
        return list(self.above) + list(self.not_below) + list(self.below)

    def rule(self) -> str:
        parts = []
        if self.verdict:
            parts.append("verdict " + " or ".join(self.verdict))
        parts += [b.text() for b in self.all_bounds()]
        if self.versus:
            vs = " and ".join(self.versus)
            parts += ([f"{c} above {vs}" for c in self.above] + [f"{c} not below {vs}" for c in self.not_below]
                      + [f"{c} below {vs}" for c in self.below])
            parts[-1] += " (same seed and kernel path)"
        return f"{', '.join(parts)}; in >= {self.at_least:.0%} of the runs on every kernel path"


def _number(value) -> float | None:
    if value is None or value == "":
        return None
    value = float(value)
    return None if math.isnan(value) else value


def pair_key(row: dict) -> tuple:
    """What pairs a run with its partners in a comparison: its seed and its kernel path."""
    seed = row.get("seed")
    return (None if seed in (None, "") else int(float(seed)), str(row.get("kernel_path") or "?"))


def parse_claims(raw, key: str = "study.claims") -> list[Claim]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(c, dict) for c in raw):
        raise ConfigError(f"{key}: expected a list of mappings (says, group, verdict, metric, min, max, at_least)")
    claims = []
    for i, c in enumerate(raw):
        claim = build(Claim, c, f"{key}[{i}].")
        resolve(claim, f"{key}[{i}].")
        claims.append(claim)
    return claims


def evaluate_claims(claims: list[Claim], rows: list[dict]) -> list[dict]:
    """Per claim: ``{"claim", "met", "runs", "paths": {path: (met, runs)}, "holds", "pending", "awaiting"}``. A claim
    holds when every kernel path that has runs of its group meets ``at_least``; with no counted run it does not hold.

    An ended run is counted only when its figures are in: a finished run that lacks an evaluation column the claim
    reads (``eval_*``, written by ``robustlab eval STUDY_DIR`` after the run), or whose comparison partner has not
    ended (a row of that label and seed that has not ended, its kernel path still unknown or the same) or lacks a
    compared evaluation column, is *awaiting* (counted in ``pending``, not as a miss). A partner with no row at all,
    or a diverged one, is a miss: nothing will come. Other blank columns are facts (no ``lost_epoch``: robustness was
    never lost) and are read as they are."""
    out = []
    by_pair = {(str(r.get("label")), *pair_key(r)): r for r in rows if r.get("status") in ENDED}
    unended = {(str(r.get("label")), pair_key(r)[0], str(r.get("kernel_path") or "?"))
               for r in rows if r.get("status") not in ENDED}
    for c in claims:
        group = [r for r in rows if str(r.get("label")) == c.group]
        ended = [r for r in group if r.get("status") in ENDED]
        paths: dict[str, list[int]] = {}
        awaiting = 0
        for r in ended:
            partners = {label: by_pair.get((label, *pair_key(r))) for label in c.versus}
            if _awaiting(c, r, partners, unended):
                awaiting += 1
                continue
            counts = paths.setdefault(str(r.get("kernel_path") or "?"), [0, 0])
            counts[0] += c.met_by(r, {k: v for k, v in partners.items() if v is not None})
            counts[1] += 1
        met = sum(k for k, _ in paths.values())
        holds = bool(paths) and all(k >= c.at_least * n for k, n in paths.values())
        out.append({"claim": c, "met": met, "runs": sum(n for _, n in paths.values()),
                    "paths": {p: tuple(v) for p, v in sorted(paths.items())}, "holds": holds,
                    "pending": len(group) - len(ended) + awaiting, "awaiting": awaiting})
    return out


def _awaiting(claim: Claim, row: dict, partners: dict, unended: set) -> bool:
    """Whether an ended run's figures for this claim are still to come (see :func:`evaluate_claims`)."""
    compared = [c for c in claim.compared_columns() if c.startswith(LATER)]
    own = [b.metric for b in claim.all_bounds() if b.metric.startswith(LATER)] + compared

    def missing(run, columns):
        return run.get("status") == "finished" and any(_number(run.get(c)) is None for c in columns)
    if missing(row, own):
        return True
    seed, path = pair_key(row)
    return any((label, seed, path) in unended or (label, seed, "?") in unended if partner is None
               else missing(partner, compared) for label, partner in partners.items())


def count_text(result: dict) -> str:
    """``9 of 10 runs (AVX2 5/5, DEFAULT 4/5)``."""
    per = ", ".join(f"{p} {k}/{n}" for p, (k, n) in result["paths"].items())
    waiting = result.get("awaiting", 0)
    not_ended = result["pending"] - waiting
    return f"{result['met']} of {result['runs']} runs" + (f" ({per})" if per else "") + (
        f", {not_ended} not ended" if not_ended else "") + (
        f", {waiting} ended awaiting a partner's run or an evaluation" if waiting else "")


def verdict_word(result: dict, shout: bool = False) -> str:
    """"holds" / "does not hold"; while runs of its group have not ended, "open" (none ended) or "holds so far" /
    "does not hold so far" (a study run in parts must not read as decided)."""
    if result["pending"] and not result["runs"]:
        return "open"
    word = ("HOLDS" if shout else "holds") if result["holds"] else "does not hold"
    return word + (" so far" if result["pending"] else "")


def claim_lines(results: list[dict]) -> list[str]:
    """One line per claim for reports and logs."""
    return [f"{verdict_word(r, shout=True)}: {r['claim'].says}: {count_text(r)} "
            f"[rule: {r['claim'].rule()}]" for r in results]
