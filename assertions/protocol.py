"""Checkers as parts (Jepsen's checker protocol): a checker has a `name` and
`check(run) -> CheckResult`, where `run` is a RunView, everything one run offers a checker (its
history, the replicas' final contents, divergence samples, the fault time, and the budgets, SLO
and deadlines the scenario holds it to). `compose({"name": checker, ...})` is itself a checker:
its result is valid only when every part's is, names each part's result, and turns a part that
raises into `unknown` with the traceback, so one broken checker never hides the others.

The parts wrap the pure functions of assertions/checkers.py, which scenarios also call directly.
A live scenario and `gameday report` (reports/recheck.py) use the same parts.
"""

from __future__ import annotations

import dataclasses
import functools
import traceback
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

from gameday.assertions.checkers import (UNKNOWN, CheckResult, Placement, Valid, convergence, divergent_keys,
                                         error_budget, lost_acked_writes, placement, read_your_writes, rto)


@dataclass(frozen=True)
class RunView:
    """What checkers read of one run. None means the run does not have it (a part that needs it
    says `unknown`). Times are epoch seconds; budgets are fractions; deadlines are seconds."""
    history: Sequence[dict] | None = None          # canonical entries (assertions/checkers.py)
    replicas: dict | None = None                   # {region: {key: value}}, final contents
    divergence_samples: Sequence[tuple[float, int]] | None = None   # (time, divergent keys)
    fault_time: float | None = None
    healthy_region: str | None = None              # rto counts only successes served by it
    lost_writes_allowed: int = 0                   # RPO: acked writes that may be lost
    clock_skew_s: float = 0.0
    error_budget: float | None = None              # share of failed + unknown operations allowed
    error_window: tuple[float, float | None] | None = None
    window_budget: float | None = None
    slo: float = 0.95                              # success rate that counts as recovered
    rto_deadline_s: float | None = None
    convergence_deadline_s: float | None = None
    convergence_started: float | None = None

    def missing(self, needs: Sequence[str]) -> list[str]:
        return [n for n in needs if getattr(self, n) is None]

    @functools.cached_property
    def placement(self) -> Placement:
        """The history read once, for every part that reads it (computed at the first one): the
        dominant cost of checking a long history. The history must not change after that."""
        return placement(self.history)


@runtime_checkable
class Checker(Protocol):
    name: str

    def check(self, run: RunView) -> CheckResult: ...


@dataclass(frozen=True)
class _Part:
    """A checker over the RunView fields in `needs`; unknown, saying which, when the run lacks one."""
    name: ClassVar[str] = "part"
    needs: ClassVar[tuple[str, ...]] = ()

    def check(self, run: RunView) -> CheckResult:
        missing = run.missing(self.needs)
        if missing:
            return CheckResult(self.name, UNKNOWN, f"the run has no {' and no '.join(missing)}: nothing to check")
        return self.judge(run)

    def judge(self, run: RunView) -> CheckResult:
        raise NotImplementedError


@dataclass(frozen=True)
class LostAckedWrites(_Part):
    name: ClassVar[str] = "lost_acked_writes"
    needs: ClassVar[tuple[str, ...]] = ("history", "replicas")

    def judge(self, run: RunView) -> CheckResult:
        return lost_acked_writes(run.placement, run.replicas, allowed=run.lost_writes_allowed,
                                 clock_skew_s=run.clock_skew_s)


@dataclass(frozen=True)
class DivergentKeys(_Part):
    name: ClassVar[str] = "divergent_keys"
    needs: ClassVar[tuple[str, ...]] = ("replicas",)

    def judge(self, run: RunView) -> CheckResult:
        return divergent_keys(run.replicas)


@dataclass(frozen=True)
class ReadYourWrites(_Part):
    name: ClassVar[str] = "read_your_writes"
    needs: ClassVar[tuple[str, ...]] = ("history",)

    def judge(self, run: RunView) -> CheckResult:
        return read_your_writes(run.placement)


@dataclass(frozen=True)
class ErrorBudget(_Part):
    name: ClassVar[str] = "error_budget"
    needs: ClassVar[tuple[str, ...]] = ("history", "error_budget")

    def judge(self, run: RunView) -> CheckResult:
        return error_budget(run.placement, budget=run.error_budget, window=run.error_window,
                            window_budget=run.window_budget)


@dataclass(frozen=True)
class Rto(_Part):
    """rto over the run's history from its fault time; `bucket_s` and `hold_s` are the part's own."""
    name: ClassVar[str] = "rto"
    needs: ClassVar[tuple[str, ...]] = ("history", "fault_time")
    bucket_s: float = 1.0
    hold_s: float | None = None

    def judge(self, run: RunView) -> CheckResult:
        return rto(run.placement, run.fault_time, slo=run.slo, bucket_s=self.bucket_s, region=run.healthy_region,
                   deadline_s=run.rto_deadline_s, hold_s=self.hold_s)


@dataclass(frozen=True)
class Convergence(_Part):
    name: ClassVar[str] = "convergence"
    needs: ClassVar[tuple[str, ...]] = ("divergence_samples", "convergence_deadline_s")

    def judge(self, run: RunView) -> CheckResult:
        return convergence(run.divergence_samples, run.convergence_deadline_s, started=run.convergence_started)


@dataclass(frozen=True)
class CompositeResult(CheckResult):
    """A composed check: valid False if any part is False, else "unknown" if any is, else True;
    `results` holds each part's result under the name it was composed by."""
    results: dict[str, CheckResult] = field(default_factory=dict)


@dataclass(frozen=True)
class Composite:
    """compose()'s checker: runs every part on the same run, in the order given."""
    parts: Mapping[str, Checker]
    name: str = "all"

    def check(self, run: RunView) -> CompositeResult:
        results = {n: _run_part(n, c, run) for n, c in self.parts.items()}
        return _combine(self.name, results)


def compose(parts: Mapping[str, Checker], *, name: str = "all") -> Composite:
    """One checker made of named parts (a composite is a part too, so composites nest)."""
    if not isinstance(parts, Mapping):
        raise TypeError(f"compose takes {{name: checker}}, got {type(parts).__name__}")
    for n, c in parts.items():
        if not callable(getattr(c, "check", None)):
            raise TypeError(f"compose: part {n!r} is not a checker (it has no check(run)): {c!r}")
    return Composite(dict(parts), name)


def _run_part(name: str, checker: Checker, run: RunView) -> CheckResult:
    """The part's result under `name`; a part that raises, or returns something else, is unknown."""
    try:
        result = checker.check(run)
        if not isinstance(result, CheckResult):
            raise TypeError(f"check() returned {type(result).__name__}, not a CheckResult")
    except Exception as e:  # noqa: BLE001 - one broken checker must not hide the others' verdicts
        return CheckResult(name, UNKNOWN, f"checker crashed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
    return result if result.name == name else dataclasses.replace(result, name=name)


def _combine(name: str, results: dict[str, CheckResult]) -> CompositeResult:
    vals = [r.valid for r in results.values()]
    valid: Valid
    if any(v is False for v in vals):
        valid = False
    elif results and all(v is True for v in vals):
        valid = True
    else:
        valid = UNKNOWN
    metrics: dict[str, Any] = {}
    for r in results.values():
        metrics.update(r.metrics)
    bad = [r for r in results.values() if r.valid is not True]
    detail = f"{sum(v is True for v in vals)} of {len(results)} checks valid"
    if bad:
        detail += ": " + "; ".join(f"{r.name} {'FAILED' if r.valid is False else 'unknown'}: {r.detail}" for r in bad)
    return CompositeResult(name, valid, detail, metrics, results)

