"""Reading a run directory back: every file the run wrote, loaded with errors that name the
file and the problem (ReportError), so a corrupted or partial run gives one clear line.

Layout (gameday/rundir.py makes the directory):

  env/events.jsonl                  the environment's timeline (alarm, lambda_invocation, dns_change, ...)
  env/config.json, env/state.json   the validated config and the endpoints (profile, regions' addresses)
  journal.jsonl                     faults: intent / injected / rolled_back / rollback_failed
  scenarios/<name>/result.json      a scenario's outcome, faults, metrics, checks, budgets, message
  scenarios/<name>/history.jsonl    client operations (Jepsen-style invoke / ok / fail / info)
  scenarios/<name>/replicas.json    final table contents per region {region: {key: value}}
  scenarios/<name>/locust.html, locust_stats.csv   Locust's own report
  junit.xml, logs/                  pytest's JUnit XML, process logs

The three logs (events, journal, histories) are read through gameday/runlog.py: one schema, one time
base (`time`, epoch seconds), old runs migrated there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

from gameday import runlog
from gameday.runlog import OP_TYPES, JsonLines, RunLogError

OUTCOMES = ("passed", "failed", "error", "skipped")


class ReportError(Exception):
    """A run directory that cannot be reported on; str() is one line naming the file and the problem."""


# -- time ----------------------------------------------------------------------------------------------

def parse_time(value: Any, where: str) -> float:
    """Epoch seconds from an ISO-8601 string or an epoch number; ReportError naming `where` otherwise."""
    try:
        return runlog.parse_time(value, where)
    except RunLogError as e:
        raise ReportError(str(e)) from None


iso = runlog.iso


# -- files ---------------------------------------------------------------------------------------------

def read_json(path: Path, rel: str, *, expect: type = dict) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{rel}: missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{rel}: cannot read: {e}") from None
    if not text.strip():
        raise ReportError(f"{rel}: empty file (the run was interrupted while writing it?)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{rel}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, expect):
        raise ReportError(f"{rel}: expected a JSON {expect.__name__}, got {type(data).__name__}")
    return data


def _as_report_error(read: Callable[..., JsonLines], path: Path, rel: str, **kw: Any) -> JsonLines:
    try:
        return read(path, rel, **kw)
    except RunLogError as e:
        raise ReportError(str(e)) from None


def read_jsonl(path: Path, rel: str) -> JsonLines:
    """One JSON object per line (gameday.runlog.read_lines), errors as ReportError naming rel:line."""
    return _as_report_error(runlog.read_lines, path, rel)


# -- client history: entries carry the run log's canonical names (gameday/runlog.py ClientOp) ------------

@dataclass(frozen=True, slots=True)
class Op:
    type: str                 # invoke | ok | fail | info
    op: str | None            # write | read
    key: Any
    value: Any
    region: str | None        # the region the client aimed at
    served_by: str | None     # the region whose load balancer answered
    status: Any
    latency_s: float | None
    time: float               # wall epoch seconds
    error: str | None


def normalize_op(entry: dict, where: str) -> Op:
    """One history entry (canonical names: histories recorded with other spellings were migrated when
    read, gameday.runlog.read_history) as an Op, checking the fields the reports compute with."""
    typ = entry.get("type")
    if typ not in OP_TYPES:
        raise ReportError(f"{where}: history entry without a valid type (invoke|ok|fail|info): {typ!r}")
    t = entry.get("time")
    if type(t) is not float:
        if t is None:
            raise ReportError(f"{where}: history entry without a time")
        t = parse_time(t, where)
    latency = entry.get("latency_s")
    if latency is not None and type(latency) is not float:
        try:
            latency = float(latency)
        except (TypeError, ValueError):
            raise ReportError(f"{where}: latency is not a number: {latency!r}") from None
    get = entry.get
    return Op(typ, get("op"), get("key"), get("value"), get("region"), get("served_by"), get("status"),
              latency, t, get("error"))


# -- the run -------------------------------------------------------------------------------------------

@dataclass
class Scenario:
    name: str
    dir: Path
    rel: str                       # "scenarios/<dir name>", for messages and links
    result: dict
    started: float | None
    finished: float | None

    @property
    def history_path(self) -> Path:
        return self.dir / "history.jsonl"

    @property
    def replicas_path(self) -> Path:
        return self.dir / "replicas.json"

    @cached_property
    def raw_history(self) -> JsonLines | None:
        if not self.history_path.exists():
            return None
        return _as_report_error(runlog.read_history, self.history_path, f"{self.rel}/history.jsonl")

    @cached_property
    def history(self) -> list[Op] | None:
        raw = self.raw_history
        if raw is None:
            return None
        rel = f"{self.rel}/history.jsonl"
        return [normalize_op(e, f"{rel}:{i + 1}") for i, e in enumerate(raw.records)]

    @cached_property
    def replicas(self) -> dict[str, dict] | None:
        if not self.replicas_path.exists():
            return None
        rel = f"{self.rel}/replicas.json"
        data = read_json(self.replicas_path, rel)
        for region, table in data.items():
            if not isinstance(table, dict):
                raise ReportError(f"{rel}: region {region!r} should map keys to values, got {type(table).__name__}")
        return data


def _require(cond: bool, rel: str, problem: str) -> None:
    if not cond:
        raise ReportError(f"{rel}: {problem}")


def validate_result(result: dict, rel: str) -> None:
    """The fields the report relies on, with types; anything else in result.json is carried along."""
    _require(isinstance(result.get("name"), str) and result["name"] != "", rel, "missing field 'name' (a string)")
    _require(result.get("outcome") in OUTCOMES, rel,
             f"field 'outcome' must be one of {', '.join(OUTCOMES)} (got {result.get('outcome')!r})")
    for f in ("started_at", "finished_at"):
        if result.get(f) is not None:
            parse_time(result[f], f"{rel}: field '{f}'")
    faults = result.get("faults", [])
    _require(isinstance(faults, list), rel, "field 'faults' must be a list")
    for i, fl in enumerate(faults):
        _require(isinstance(fl, dict) and isinstance(fl.get("kind"), str), rel, f"faults[{i}] needs a 'kind' string")
        if fl.get("injected_at") is not None:
            parse_time(fl["injected_at"], f"{rel}: faults[{i}].injected_at")
        if fl.get("rolled_back_at") is not None:
            parse_time(fl["rolled_back_at"], f"{rel}: faults[{i}].rolled_back_at")
    metrics = result.get("metrics", {})
    _require(isinstance(metrics, dict), rel, "field 'metrics' must be an object")
    for k, v in metrics.items():
        _require(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)), rel,
                 f"metrics.{k} must be a number or null (got {v!r})")
    checks = result.get("checks", [])
    _require(isinstance(checks, list), rel, "field 'checks' must be a list")
    for i, c in enumerate(checks):
        _require(isinstance(c, dict) and isinstance(c.get("name"), str), rel, f"checks[{i}] needs a 'name' string")
        _require(c.get("valid") in (True, False, "unknown"), rel,
                 f"checks[{i}] ({c.get('name')}): 'valid' must be true, false or \"unknown\" (got {c.get('valid')!r})")
    budgets = result.get("budgets", {}) or {}
    _require(isinstance(budgets, dict), rel, "field 'budgets' must be an object")


@dataclass
class Run:
    dir: Path
    run_id: str
    scenarios: list[Scenario]
    events: list[dict]             # env/events.jsonl, canonical (gameday/runlog.py Event): {seq, time, mono, kind, ...}
    journal: list[dict]            # journal.jsonl, canonical (FaultStep): {seq, time, mono, process, action, fault, ...}
    config: dict | None             # env/config.json (GamedayConfig dump)
    endpoints: dict | None          # env/state.json (what `gameday up --json` printed)
    meta: dict                      # run.json, if something wrote one
    warnings: list[str] = field(default_factory=list)

    @cached_property
    def region_of_ip(self) -> dict[str, str]:
        """Load balancer address -> region, so DNS answers read as region names."""
        if self.endpoints and isinstance(self.endpoints.get("regions"), dict):
            return {v["lb_address"]: r for r, v in self.endpoints["regions"].items()
                    if isinstance(v, dict) and "lb_address" in v}
        from gameday.net import region_address
        return {region_address(i): r for i, r in enumerate(self.regions)}

    @cached_property
    def regions(self) -> list[str]:
        if self.config and isinstance(self.config.get("regions"), list):
            return list(self.config["regions"])
        if self.endpoints and isinstance(self.endpoints.get("regions"), dict):
            return list(self.endpoints["regions"])
        seen: dict[str, None] = {}
        for e in self.events:
            if isinstance(e.get("region"), str):
                seen[e["region"]] = None
        return list(seen)

    def files(self, pattern: str) -> Iterator[Path]:
        return iter(sorted(p for p in self.dir.glob(pattern) if p.is_file()))


def load_run(run_dir: Path | str) -> Run:
    """Load everything a report needs; ReportError (one line, naming the file) when it cannot."""
    given = Path(run_dir)
    if not given.exists():
        raise ReportError(f"{given}: no such run directory")
    if not given.is_dir():
        raise ReportError(f"{given}: not a directory")
    root = given.resolve()  # `latest` is a link: the run id is the real directory's name
    warnings: list[str] = []

    scen_root = root / "scenarios"
    if not scen_root.is_dir():
        raise ReportError(f"{given}/scenarios: missing; not a gameday run directory, or the run "
                          f"stopped before any scenario ran")
    scenarios: list[Scenario] = []
    for d in sorted(p for p in scen_root.iterdir() if p.is_dir()):
        rel = f"scenarios/{d.name}"
        result = read_json(d / "result.json", f"{rel}/result.json")
        validate_result(result, f"{rel}/result.json")
        started = parse_time(result["started_at"], "") if result.get("started_at") is not None else None
        finished = parse_time(result["finished_at"], "") if result.get("finished_at") is not None else None
        scenarios.append(Scenario(result["name"], d, rel, result, started, finished))
    if not scenarios:
        raise ReportError(f"{given}/scenarios: no scenario results (no scenarios/<name>/result.json)")
    names = [s.name for s in scenarios]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ReportError(f"{given}/scenarios: two result.json files claim the name {sorted(dup)[0]!r}")
    scenarios.sort(key=lambda s: (s.started if s.started is not None else math.inf, s.name))

    events: list[dict] = []
    ev_path = root / "env" / "events.jsonl"
    if ev_path.exists():
        lines = _as_report_error(runlog.read_events, ev_path, "env/events.jsonl")
        events = lines.records
        if lines.truncated_tail:
            warnings.append("env/events.jsonl: last line was cut short (process killed mid-write); ignored")
    else:
        warnings.append("env/events.jsonl: missing (the environment did not start?); no alarm/DNS/Lambda bands")

    journal: list[dict] = []
    j_path = root / "journal.jsonl"
    if j_path.exists():
        lines = _as_report_error(runlog.read_journal_lines, j_path, "journal.jsonl")
        journal = lines.records
        if lines.truncated_tail:
            warnings.append("journal.jsonl: last line was cut short (process killed mid-write); ignored")

    config = read_json(root / "env" / "config.json", "env/config.json") if (root / "env" / "config.json").exists() else None
    endpoints = read_json(root / "env" / "state.json", "env/state.json") if (root / "env" / "state.json").exists() else None
    meta = read_json(root / "run.json", "run.json") if (root / "run.json").exists() else {}
    return Run(root, str(meta.get("run_id") or root.name), scenarios, events, journal, config, endpoints, meta, warnings)
