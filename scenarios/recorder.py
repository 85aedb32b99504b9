"""What a scenario leaves in its run directory (reports/rundata.py reads it back):

  scenarios/<name>/result.json     outcome, faults, metrics, checks, budgets, message
  scenarios/<name>/history.jsonl   the clients' operations (written by the load's runner)
  scenarios/<name>/replicas.json   each region's final table contents

A `ScenarioRecord` collects measured metrics and check results while the scenario runs. Every
expectation goes through `expect()` (an eventually-assertion returning its measured duration) or
`check()` (a checker's CheckResult), so a failure is also a named, invalid check in result.json,
and `verdict()` fails the test naming every check that caught something.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gameday.events import iso

METRIC_KEYS = ("detection_s", "failover_s", "rto_s", "acked_writes", "lost_acked_writes", "divergent_keys",
               "convergence_s", "requests", "error_rate")


class ScenarioFailed(AssertionError):
    """One or more checks of a scenario are invalid; the message names each with its detail."""


@dataclass
class ScenarioRecord:
    name: str
    dir: Path
    started: float = field(default_factory=time.time)
    finished: float | None = None
    metrics: dict[str, Any] = field(default_factory=lambda: {k: None for k in METRIC_KEYS})
    checks: list[dict] = field(default_factory=list)
    budgets: dict[str, float] = field(default_factory=dict)
    faults: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    outcome: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- while the scenario runs ---------------------------------------------------------------------
    def metric(self, key: str, value: float | int | None) -> float | int | None:
        self.metrics[key] = None if value is None else (round(value, 3) if isinstance(value, float) else value)
        return value

    def budget(self, key: str, value: float) -> float:
        self.budgets[key] = value
        return value

    def note(self, text: str) -> None:
        self.notes.append(text)

    def expect(self, name: str, fn: Callable[[], Any], *, metric: str | None = None) -> Any:
        """Run an eventually-assertion; record it as check `name` (and its duration as `metric`).
        An AssertionError is recorded as an invalid check and re-raised: the scenario stops there."""
        try:
            value = fn()
        except AssertionError as e:
            self.checks.append({"name": name, "valid": False, "detail": str(e)})
            raise
        duration = value[1] if isinstance(value, tuple) and len(value) == 2 else value
        if metric is not None and isinstance(duration, (int, float)):
            self.metric(metric, float(duration))
        detail = f"{duration:.2f}s" if isinstance(duration, (int, float)) else "ok"
        self.checks.append({"name": name, "valid": True, "detail": detail})
        return value

    def check(self, result: Any) -> Any:
        """Record a checker's result (assertions.checkers.CheckResult or a dict); its metrics too."""
        r = result if isinstance(result, dict) else {
            "name": result.name, "valid": result.valid, "detail": result.detail,
            "metrics": getattr(result, "metrics", {}) or {}}
        self.checks.append({"name": r["name"], "valid": r["valid"], "detail": str(r.get("detail") or "")})
        for k, v in (r.get("metrics") or {}).items():
            if k in METRIC_KEYS:
                self.metric(k, v)
        return result

    def verdict(self) -> None:
        bad = [c for c in self.checks if c["valid"] is False]
        if bad:
            lines = "\n".join(f"  - {c['name']}: {c['detail']}" for c in bad)
            raise ScenarioFailed(f"{self.name}: {len(bad)} check(s) failed:\n{lines}")

    # -- data files ----------------------------------------------------------------------------------
    def save_replicas(self, replicas: dict[str, dict]) -> Path:
        p = self.dir / "replicas.json"
        p.write_text(json.dumps(replicas, default=str))
        return p

    def write(self) -> Path:
        result = {
            "name": self.name, "outcome": self.outcome or "error",
            "started_at": iso(self.started), "finished_at": iso(self.finished or time.time()),
            "faults": self.faults, "metrics": self.metrics, "checks": self.checks,
            "budgets": self.budgets, "message": self.message, "notes": self.notes,
        }
        p = self.dir / "result.json"
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        tmp.replace(p)
        return p
