"""The run log: ONE schema for everything a run records, and the only readers of its files.

A run directory holds three logs on one time base, `time` (wall epoch seconds, float) and `mono`
(time.monotonic(): the same clock for every process of a host, so it orders what happened on one
host even when the wall clock steps):

  scenarios/<name>/history.jsonl  client operations (ClientOp), Jepsen style: invoke, then ok / fail / info
  env/events.jsonl                the environment's timeline (Event: one model per `kind`)
  journal.jsonl                   the fault journal (FaultStep), written before a fault is applied

Fault steps are read as the operations of a `nemesis` process (nemesis_ops), as Jepsen records them,
and run_log(run_dir) merges client ops, nemesis ops and environment events into one time-ordered stream.

Writers write the canonical names once. Files written before this schema (schema 1: events with
"t"/"ts", journal lines with "ts"/"at"/"event" and the fault's fields twice, histories with a
recorder's own spellings) are read through migrate_v1, the one place that knows the old names.

Histories reach a million entries: read_history keeps them plain dicts and validates them through
pydantic only when asked (validate=True; `validate_history` for a check path and the tests).
"""

from __future__ import annotations

import gc
import heapq
import json
import math
import time as _time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Literal, NamedTuple, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

SCHEMA_VERSION = 2
OP_TYPES = ("invoke", "ok", "fail", "info")
JOURNAL_ACTIONS = ("intent", "injected", "inject_failed", "rolled_back", "rollback_failed")
NEMESIS = "nemesis"


class RunLogError(ValueError):
    """A run log that cannot be read; str() is one line naming the file (and line) and the problem."""


# -- the time base ---------------------------------------------------------------------------------------

def stamp(wall: float | None = None) -> tuple[float, float]:
    """(time, mono) for now, or for a past wall time `wall` (its mono derived from this process's clocks)."""
    now_wall, now_mono = _time.time(), _time.monotonic()
    if wall is None:
        return now_wall, now_mono
    return float(wall), now_mono - (now_wall - float(wall))


def iso(t: float | None) -> str | None:
    """An epoch time as ISO-8601 UTC (for people; the logs store epoch seconds)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds")


def parse_time(value: Any, where: str) -> float:
    """Epoch seconds from an epoch number or an ISO-8601 string (a naive one is UTC); RunLogError naming `where`."""
    if isinstance(value, bool) or value is None:
        raise RunLogError(f"{where}: expected a time, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise RunLogError(f"{where}: expected a time, got {value!r}")
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise RunLogError(f"{where}: not an ISO-8601 time: {value!r}") from None
        if dt.tzinfo is None:  # the harness writes UTC; a naive stamp is read as UTC, not local time
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    raise RunLogError(f"{where}: expected a time, got {type(value).__name__}")


# -- the schema --------------------------------------------------------------------------------------------

Time = Annotated[float, Field(allow_inf_nan=False)]


class _Record(BaseModel):
    # extra fields are carried: emitters add context (a task's container, a Lambda's logs) that readers
    # may show; the declared fields are the ones readers rely on, with their types
    model_config = ConfigDict(extra="allow")


class ClientOp(_Record):
    """One entry of a client history (docs/load.md, "The client history")."""
    type: Literal["invoke", "ok", "fail", "info"]
    time: Time
    mono: Time | None = None          # None only in histories recorded before schema 2
    id: str | int | None = None
    process: str | int | None = None
    op: str | None = None             # write | read | ping
    kind: str | None = None           # write | read_own | read_cross | ping
    key: Any = None
    value: Any = None
    region: str | None = None         # the region aimed at
    address: str | None = None
    served_by: str | None = None      # the region whose load balancer answered
    task: str | None = None
    az: str | None = None
    status: int | None = None
    latency_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    error: str | None = None
    role: str | None = None
    name: str | None = None
    worker: str | None = None
    dns_at: float | None = None
    dns_ttl: float | None = None


class Fault(_Record):
    id: str = Field(min_length=1)
    kind: str
    target: str
    params: dict


class FaultStep(BaseModel):
    """One line of the fault journal: a step of the nemesis."""
    model_config = ConfigDict(extra="forbid")
    seq: int
    time: Time
    mono: Time | None = None          # None only in journals written before schema 2
    process: Literal["nemesis"] = NEMESIS
    action: Literal["intent", "injected", "inject_failed", "rolled_back", "rollback_failed"]
    fault: Fault
    scenario: str | None = None
    detail: dict = Field(default_factory=dict)


class _Event(_Record):
    seq: int
    time: Time
    mono: Time | None = None          # None only in timelines written before schema 2


class AlarmEvent(_Event):
    kind: Literal["alarm"]
    region: str
    alarm: str
    old: str
    new: str
    reason: str | None = None
    value: float | None = None
    source: str | None = None


class AlarmActionEvent(_Event):
    kind: Literal["alarm_action"]
    region: str
    alarm: str
    new: str
    topic: str
    message_id: str | None = None
    after_s: float | None = None
    error: str | None = None


class ApiFaultEvent(_Event):
    kind: Literal["api_fault"]
    action: Literal["add", "remove"]
    rule: dict | None = None
    id: str | None = None


class ControlPlaneEvent(_Event):
    kind: Literal["control_plane"]
    action: Literal["block", "unblock"]
    region: str
    includes_route53: bool | None = None


class DataPlaneEvent(_Event):
    kind: Literal["data_plane"]
    action: Literal["block", "unblock"]
    region: str
    mode: str | None = None
    # who blocked: "block_region" (the fault) or "network_acl" (ACLs changed through the AWS API)
    source: str | None = None
    serving_subnets: list[str] | None = None     # network_acl: the load balancer's subnets still admitting clients
    unreachable_azs: list[str] | None = None     # network_acl: AZs whose tasks no serving node reaches


class DnsChangeEvent(_Event):
    kind: Literal["dns_change"]
    name: str
    type: str
    old: list[str]
    new: list[str]
    # why the answer moved: a change batch applied as it was made, a zone change the DNS server's
    # poll found (made straight against the API), or health; and what the batch said. On the aws
    # environment the signal source that saw it ("dns:<name server>", environments/aws/signals_dns.py)
    source: Literal["change", "poll", "health"] | str | None = None
    change_id: str | None = None
    comment: str | None = None
    changes: list[str] | None = None
    old_lasted_s: float | None = None   # how long the old answer was published


class DnsRefreshEvent(_Event):
    kind: Literal["dns_refresh"]
    state: Literal["ok", "failing"]
    after_failures: int | None = None
    zone_age_s: float | None = None
    error: str | None = None
    serving: str | None = None


class DockerEvent(_Event):
    kind: Literal["docker"]
    action: str
    region: str | None = None
    run: str | None = None
    image: str | None = None
    image_s: float | None = None
    containers: int | None = None


class EcsEvent(_Event):
    kind: Literal["ecs"]
    action: str                       # task_started | task_running | task_stopped | scaled | az_(un)available | ...
    region: str
    task: str | None = None
    az: str | None = None
    reason: str | None = None
    port: int | None = None
    pid: int | None = None
    exit_code: int | None = None
    after_s: float | None = None
    tasks_lost: int | None = None
    missing: int | None = None
    old: int | None = None
    new: int | None = None


class EnvironmentEvent(_Event):
    kind: Literal["environment"]
    action: str                       # ready | stopped
    timings: dict | None = None


class GuardrailEvent(_Event):
    kind: Literal["guardrail"]
    action: str                       # account_allowed | stop_condition
    account: str | None = None
    reason: str | None = None


class LambdaFaultEvent(_Event):
    kind: Literal["lambda_fault"]
    action: Literal["set", "clear"]
    mode: str | None = None
    delay_s: float | None = None


class LambdaInitEvent(_Event):
    kind: Literal["lambda_init"]
    trigger: str
    initialization_type: str | None = None   # absent in runs before Lambda init types were recorded
    ok: bool
    pid: int | None = None
    init_s: float | None = None
    import_ms: float | None = None
    error: dict | str | None = None
    handler: str | None = None
    version: str | None = None    # the function version the environment runs (an alias may move: UpdateAlias)


class LambdaInvocationEvent(_Event):
    kind: Literal["lambda_invocation"]
    request_id: str
    attempt: int
    invocation_type: str
    outcome: str                      # ok | error | timeout | ...
    duration_s: float | None = None
    cold_start: bool | None = None
    init_s: float | None = None
    error: dict | None = None
    result: Any = None
    logs: list[str] = Field(default_factory=list)
    alarm: dict | None = None
    region: str | None = None
    topic_arn: str | None = None
    message_id: str | None = None
    sns_timestamp: str | None = None
    received_ts: float | None = None  # the Lambda runner's own epoch stamps of the invocation's steps
    start_ts: float | None = None
    end_ts: float | None = None
    overhead_ms: float | None = None
    worker_pid: int | None = None
    will_retry: bool | None = None
    retry_in_s: float | None = None


class LambdaDiscardEvent(_Event):
    """An asynchronous event Lambda dropped without a successful attempt (what an on-failure
    destination would receive): EventAgeExceeded or RetriesExhausted. A kind of its own, so no
    check that looks for an invocation mistakes a discard for one."""
    kind: Literal["lambda_discard"]
    request_id: str
    condition: str                    # EventAgeExceeded | RetriesExhausted
    approximate_invoke_count: int
    age_s: float
    function_arn: str | None = None
    region: str | None = None
    message_id: str | None = None
    alarm: dict | None = None


class ReplicationEvent(_Event):
    kind: Literal["replication"]
    action: Literal["pause", "resume", "set_lag", "set_drop_fraction"]
    source: str | None = None
    destination: str | None = None
    direction: str | None = None
    backlog: int | None = None
    extra_lag_s: float | None = None
    drop_fraction: float | None = None


class ReplicationLagEvent(_Event):
    kind: Literal["replication_lag"]
    direction: str
    lag_s: float
    pending: int | None = None
    paused: bool | None = None
    applied: int | None = None


class Route53HealthEvent(_Event):
    kind: Literal["route53_health"]
    health_check_id: str
    region: str | None = None
    healthy: bool
    reason: str | None = None
    failure_threshold: int | None = None
    target: str | None = None


class TargetHealthEvent(_Event):
    kind: Literal["target_health"]
    region: str
    target: str
    az: str | None = None
    healthy: bool


# posted by the harness through the control API (POST /events): the nemesis, the load, the scenarios
class FaultEvent(_Event):
    kind: Literal["fault"]
    action: str                       # inject | rollback
    ok: bool | None = None
    id: str | None = None
    fault_kind: str | None = None
    target: str | None = None
    description: str | None = None
    params: dict | None = None
    scenario: str | None = None
    detail: dict | None = None
    duration_s: float | None = None
    error: str | None = None
    by: str | None = None


class LoadEvent(_Event):
    kind: Literal["load"]
    action: str
    rates: str | None = None
    users: int | None = None
    dir: str | None = None


class ScenarioEvent(_Event):
    kind: Literal["scenario"]
    action: str                       # start | finish
    name: str


class FisEvent(_Event):
    kind: Literal["fis"]              # an AWS FIS experiment run by the local environment (environments/local/fis.py)
    action: str                       # start | stop | stop_condition | state | action_start | action_end
    id: str                           # the experiment's id
    region: str | None = None
    status: str | None = None         # the experiment's state (action "state")
    reason: str | None = None
    actions: dict | None = None       # action name -> actionId (start) or state (state)
    name: str | None = None           # the action (action_start / action_end)
    action_id: str | None = None
    effect_ms: float | None = None    # from StartExperiment accepted to the action's effect in place
    notes: list | None = None         # what of the action is not modelled locally
    alarm: str | None = None          # the stop condition's alarm ARN


class NoteEvent(_Event):
    kind: Literal["note"]             # a POST /events body without a kind


EVENT_MODELS = (AlarmEvent, AlarmActionEvent, ApiFaultEvent, ControlPlaneEvent, DataPlaneEvent, DnsChangeEvent,
                DnsRefreshEvent, DockerEvent, EcsEvent, EnvironmentEvent, GuardrailEvent, LambdaFaultEvent,
                LambdaInitEvent, LambdaInvocationEvent, LambdaDiscardEvent, ReplicationEvent, ReplicationLagEvent, Route53HealthEvent,
                TargetHealthEvent, FaultEvent, LoadEvent, ScenarioEvent, FisEvent, NoteEvent)
EVENT_KINDS = tuple(m.model_fields["kind"].annotation.__args__[0] for m in EVENT_MODELS)
Event = Annotated[Union[EVENT_MODELS], Field(discriminator="kind")]  # type: ignore[valid-type]

_event_adapter: TypeAdapter = TypeAdapter(Event)
_op_adapter: TypeAdapter = TypeAdapter(ClientOp)
_step_adapter: TypeAdapter = TypeAdapter(FaultStep)


def _problem(e: ValidationError, skip: str | None = None) -> str:
    """The first error of a validation, as `field 'a.b': message (got value)` (`skip`: a union's tag in the path)."""
    err = e.errors(include_url=False)[0]
    path = list(err["loc"])
    if path and skip is not None and path[0] == skip:
        path = path[1:]
    loc = ".".join(str(x) for x in path)
    got = "" if err["type"] == "missing" else f" (got {err.get('input')!r:.80})"
    return f"field '{loc}': {err['msg']}{got}" if loc else f"{err['msg']}{got}"


def validate_event(event: dict) -> BaseModel:
    """The event's model; ValueError naming its kind and the bad field."""
    kind = event.get("kind")
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}; the run log knows {', '.join(EVENT_KINDS)} (gameday/runlog.py)")
    try:
        return _event_adapter.validate_python(event, strict=True)
    except ValidationError as e:
        raise ValueError(f"event {kind!r}: {_problem(e, skip=kind)}") from None


def validate_op(entry: dict) -> ClientOp:
    try:
        return _op_adapter.validate_python(entry, strict=True)
    except ValidationError as e:
        raise ValueError(f"history entry: {_problem(e)}") from None


def validate_step(line: dict) -> FaultStep:
    try:
        return _step_adapter.validate_python(line, strict=True)
    except ValidationError as e:
        raise ValueError(f"journal line: {_problem(e)}") from None


# -- schema 1 -> 2: the one place that knows the old names ----------------------------------------------------

# a recorder's own spellings of a history field, in the order the old reader preferred them
HISTORY_ALIASES_V1: dict[str, tuple[str, ...]] = {
    "op": ("f",), "key": ("k",), "value": ("v",), "time": ("ts", "wall_time", "at", "t"),
    "region": ("target", "target_region"), "served_by": ("server_region", "served"),
    "status": ("status_code",), "error": ("reason",), "latency_s": ("latency_ms", "latency"),
}
_HISTORY_V1_KEYS = frozenset(a for names in HISTORY_ALIASES_V1.values() for a in names)
_TIME_V1 = ("ts", "at", "t")   # events: "t" (ISO) and "ts" (epoch); journal: "ts" (epoch), "at" and "t" (ISO)


def record_version(record: dict, source: str) -> int:
    """1 for a record written before the run log schema (see migrate_v1), else SCHEMA_VERSION."""
    if source == "history":
        return SCHEMA_VERSION if _HISTORY_V1_KEYS.isdisjoint(record) else 1
    return SCHEMA_VERSION if "time" in record else 1


def migrate_v1(record: dict, source: Literal["history", "events", "journal"], where: str = "") -> dict:
    """A schema-1 record as schema 2 (a new dict; `mono` is unknown for old records: None).

    history  a recorder's spellings become the canonical names (HISTORY_ALIASES_V1: `f` -> op, `k` -> key,
             `v` -> value, `ts`/`wall_time`/`at`/`t` -> time (ISO strings become epoch seconds),
             `latency_ms` (ms) / `latency` (s) -> latency_s, `target`/`target_region` -> region,
             `server_region`/`served` -> served_by, `status_code` -> status, `reason` -> error);
             the canonical name wins when both are present and not null
    events   {"seq", "t" (ISO), "ts" (epoch), "kind", ...} -> {"seq", "time", "mono": None, "kind", ...}
    journal  {"seq", "t", "ts", "action", "id", "kind", "target", "params", "scenario", "detail", "event", "at",
             "fault"} -> {"seq", "time", "mono": None, "process": "nemesis", "action", "fault": {id, kind,
             target, params}, "scenario", "detail"} (time from ts, else at, else t; action from action, else event)
    """
    if source == "history":
        return _migrate_history_v1(record, where)
    if source == "events":
        out = {k: v for k, v in record.items() if k not in _TIME_V1}
        out["time"] = _first_time(record, where)
        out.setdefault("mono", None)
        return out
    if source == "journal":
        return _migrate_journal_v1(record, where)
    raise ValueError(f"migrate_v1: unknown source {source!r} (history, events or journal)")


def _first_time(record: dict, where: str) -> float:
    for name in _TIME_V1:
        if record.get(name) is not None:
            return parse_time(record[name], f"{where}: field '{name}'")
    raise RunLogError(f"{where}: no time (neither 'time' nor the old 'ts', 'at' or 't')")


def _migrate_history_v1(entry: dict, where: str) -> dict:
    out = {k: v for k, v in entry.items() if k not in _HISTORY_V1_KEYS}
    for name, aliases in HISTORY_ALIASES_V1.items():
        if out.get(name) is not None:
            continue
        alias = next((a for a in aliases if entry.get(a) is not None), None)
        if alias is None:
            continue
        value = entry[alias]
        if name == "time":
            value = parse_time(value, f"{where}: field '{alias}'")
        elif alias == "latency_ms":
            try:
                value = float(value) / 1000.0
            except (TypeError, ValueError):
                raise RunLogError(f"{where}: field 'latency_ms' is not a number: {value!r}") from None
        out[name] = value
    return out


def _migrate_journal_v1(rec: dict, where: str) -> dict:
    f = rec.get("fault") if isinstance(rec.get("fault"), dict) else {}
    fault = {k: f.get(k, rec.get(k)) for k in ("id", "kind", "target", "params")}
    return {"seq": rec.get("seq"), "time": _first_time(rec, where), "mono": None, "process": NEMESIS,
            "action": rec.get("action", rec.get("event")), "fault": fault, "scenario": rec.get("scenario"),
            "detail": rec.get("detail") if rec.get("detail") is not None else {}}


MIGRATIONS = {1: migrate_v1}   # version -> the function taking a record of that version to the next


def upgrade(record: dict, source: Literal["history", "events", "journal"], where: str = "") -> dict:
    """The record in the current schema (itself when it already is)."""
    version = record_version(record, source)
    while version < SCHEMA_VERSION:
        record = MIGRATIONS[version](record, source, where)
        version += 1
    return record


# -- reading files -----------------------------------------------------------------------------------------

@dataclass
class JsonLines:
    records: list[dict]
    truncated_tail: bool = False  # last line cut short (a process killed mid-write): dropped, reported


_CHUNK = 20000   # lines parsed per json.loads call: one C call per chunk, twice as fast as one per line


def read_lines(path: Path | str, rel: str | None = None) -> JsonLines:
    """One JSON object per line. A bad line in the middle is corruption (RunLogError naming rel:line);
    a final line without its newline that does not parse is a write cut short by a kill: dropped and
    reported (truncated_tail), so a SIGKILLed run can still be explained."""
    path = Path(path)
    rel = rel or str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RunLogError(f"{rel}: missing") from None
    except OSError as e:
        raise RunLogError(f"{rel}: cannot read: {e}") from None
    except UnicodeDecodeError as e:
        raise RunLogError(f"{rel}: not UTF-8 text (byte {e.start})") from None
    lines = text.split("\n")
    last = lines.pop()   # "" when the file ends with its newline; else a line whose write may be cut short
    was_enabled = gc.isenabled()
    gc.disable()   # a million new dicts would trigger ever longer collections that find nothing to free
    try:
        out = _parse_lines(lines, rel)
    finally:
        if was_enabled:
            gc.enable()
    truncated = False
    if last.strip():
        try:
            out.append(_parse_line(last, rel, len(lines) + 1))
        except RunLogError:
            truncated = True
    return JsonLines(out, truncated)


def _parse_lines(lines: list[str], rel: str) -> list[dict]:
    out: list[dict] = []
    for start in range(0, len(lines), _CHUNK):
        chunk = lines[start:start + _CHUNK]
        try:
            recs = json.loads("[" + ",".join(chunk) + "]")
        except ValueError:
            recs = None   # a blank or bad line somewhere: parse this chunk line by line to name it
        if recs is None or set(map(type, recs)) != {dict}:
            recs = [_parse_line(line, rel, start + i + 1) for i, line in enumerate(chunk) if line.strip()]
        out += recs
    return out


def _parse_line(line: str, rel: str, n: int) -> dict:
    try:
        rec = json.loads(line)
    except ValueError as e:
        msg = getattr(e, "msg", str(e))
        raise RunLogError(f"{rel}:{n}: not valid JSON: {msg} (column {getattr(e, 'colno', '?')})") from None
    if not isinstance(rec, dict):
        raise RunLogError(f"{rel}:{n}: expected a JSON object, got {type(rec).__name__}")
    return rec


def _checked(records: list[dict], rel: str, source: str, validate) -> list[dict]:
    """Records upgraded to the current schema and, when asked, validated: RunLogError naming rel:line."""
    for i, rec in enumerate(records):
        where = f"{rel}:{i + 1}"
        if record_version(rec, source) != SCHEMA_VERSION:
            rec = records[i] = upgrade(rec, source, where)
        if validate is not None:
            try:
                validate(rec)
            except ValueError as e:
                raise RunLogError(f"{where}: {e}") from None
    return records


def read_history(path: Path | str, rel: str | None = None, *, validate: bool = False) -> JsonLines:
    """A client history (history.jsonl or one worker's part): entries as plain dicts with the canonical
    names (old spellings migrated). validate=True checks every entry against ClientOp (slow at 1M: for
    checks and tests; readers that need a field check it themselves)."""
    lines = read_lines(path, rel)
    recs, name = lines.records, rel or str(path)
    if validate or not all(map(_HISTORY_V1_KEYS.isdisjoint, recs)):   # map: no Python frame per entry
        _checked(recs, name, "history", validate_op if validate else None)
    return lines


def validate_history(entries: Iterable[dict], rel: str = "history") -> None:
    """Every entry against ClientOp; RunLogError naming the first bad one (rel:line)."""
    _checked(list(entries), rel, "history", validate_op)


def read_events(path: Path | str, rel: str | None = None, *, validate: bool = True) -> JsonLines:
    """The environment's timeline, each event upgraded and checked against its kind's model."""
    lines = read_lines(path, rel)
    _checked(lines.records, rel or str(path), "events", validate_event if validate else None)
    return lines


def read_journal_lines(path: Path | str, rel: str | None = None, *, validate: bool = True) -> JsonLines:
    """The fault journal's lines, upgraded and checked against FaultStep."""
    lines = read_lines(path, rel)
    _checked(lines.records, rel or str(path), "journal", validate_step if validate else None)
    return lines


# -- the nemesis as a process of the history, and the merged run log ----------------------------------------

# journal action -> the nemesis operations it records: (f, type), Jepsen's outcome of that step
_NEMESIS_STEPS = {
    "intent": (("start", "invoke"),),
    "injected": (("start", "ok"),),
    "inject_failed": (("start", "info"),),            # inject raised: part of it may be in effect
    "rolled_back": (("stop", "invoke"), ("stop", "ok")),
    "rollback_failed": (("stop", "invoke"), ("stop", "info")),  # the fault may still be in effect
}


def nemesis_ops(steps: Iterable[dict]) -> list[dict]:
    """Journal lines (canonical) as operations of the `nemesis` process, in journal order:
    {type, process: "nemesis", f: "start" | "stop", id: "<fault id>:<f>", value: {id, kind, target,
    params}, time, mono, action, scenario, detail}. The journal records no rollback intent, so a
    rollback's invoke is stamped with its completion's time (a zero-length stop)."""
    out: list[dict] = []
    for s in steps:
        fault = s["fault"]
        for f, typ in _NEMESIS_STEPS[s["action"]]:
            out.append({"type": typ, "process": NEMESIS, "f": f, "id": f"{fault['id']}:{f}", "value": fault,
                        "time": s["time"], "mono": s.get("mono"), "action": s["action"],
                        "scenario": s.get("scenario"), "detail": s.get("detail") or {}})
    return out


class LogRecord(NamedTuple):
    time: float
    source: Literal["client", "nemesis", "env"]
    record: dict
    scenario: str | None = None     # client ops: the scenario whose history they are in


def run_log(run_dir: Path | str, *, validate: bool = False) -> Iterator[LogRecord]:
    """Everything a run recorded, in time order: client operations of every scenario, the nemesis's
    operations (from journal.jsonl) and the environment's events. Missing files are simply absent;
    same-instant records keep the order env, nemesis, client and each file's own order."""
    root = Path(run_dir)
    streams: list[list[LogRecord]] = []
    ev = root / "env" / "events.jsonl"
    if ev.exists():
        streams.append([LogRecord(e["time"], "env", e) for e in read_events(ev, "env/events.jsonl").records])
    jr = root / "journal.jsonl"
    if jr.exists():
        steps = read_journal_lines(jr, "journal.jsonl").records
        streams.append([LogRecord(o["time"], "nemesis", o) for o in nemesis_ops(steps)])
    for hist in sorted((root / "scenarios").glob("*/history.jsonl")):
        rel = f"scenarios/{hist.parent.name}/history.jsonl"
        name = hist.parent.name
        streams.append([LogRecord(e["time"], "client", e, name)
                        for e in read_history(hist, rel, validate=validate).records])
    for s in streams:
        s.sort(key=lambda r: r.time)
    return heapq.merge(*streams, key=lambda r: r.time)
