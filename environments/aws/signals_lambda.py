"""`lambda_invocation` events from the failover function's CloudWatch Logs (/aws/lambda/<function>
in its region), read with FilterLogEvents across all its log streams.

Lambda writes, per invocation attempt, into the log stream of the execution environment that ran
it (one stream per environment, so one invocation at a time per stream):
    START RequestId: <id> Version: <version>
    ... the handler's own lines (print, logging: "[INFO]\\t<time>\\t<id>\\t<message>") ...
    [ERROR] <Type>: <message>\\nTraceback ...            (the runtime, for an uncaught exception: one event)
    <time> <id> Task timed out after 3.00 seconds        (a timeout)
    RequestId: <id> Error: Runtime exited ...             (the runtime process died)
    END RequestId: <id>
    REPORT RequestId: <id>\\tDuration: 12.34 ms\\tBilled Duration: 13 ms\\tMemory Size: 128 MB\\t
           Max Memory Used: 40 MB\\t[Init Duration: 130.49 ms\\t][Status: timeout|error\\t[Error Type: X]]
(Lambda developer guide, "Working with Lambda function logs" and the Python runtime's logging).
A function configured with the JSON log format writes the same as records (platform.start,
platform.runtimeDone, platform.report, the runtime's errorType record): they are read as these lines.
An attempt is one event once its REPORT is in, stamped with its START line's timestamp, with the
local Lambda runner's fields (environments/local/lambda_runner.py), so assertions.failover's
lambda_invoked and the reports read both alike. An asynchronous retry keeps its request id: the
attempts of an id are counted in START order. The alarm a handler worked on is known only when its
own lines say so: the reference handler (sut/failover_lambda.py) logs
`alarm notification: {"AlarmName", "NewStateValue", "OldStateValue", "region", "MessageId", "TopicArn"}`
for each SNS record; a handler that logs the SNS event itself (print(json.dumps(event))) works too.

Delivery to CloudWatch Logs is asynchronous and an invocation's lines arrive together when it
ends, so a line may be read after later lines of other streams: each read covers the last
(function timeout + DELIVERY_LATENCY_S) and keeps the ids of the events it has seen, and an
invocation whose REPORT is not in yet waits for a later read.

FilterLogEvents is limited to 5 transactions per second per account and Region (a hard limit,
AWS knowledge center "How do I determine throttling in my CloudWatch logs?"): one read per
interval_s (a fifth of the profile's period, within 1-5 s: 60 calls/min on the compressed profiles,
12 on AWS's 60 s period), and at most MAX_PAGES_PER_POLL pages per read (3 calls/s at the very worst;
a longer answer resumes from its token at the next read).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Mapping

log = logging.getLogger("gameday.aws.signals.lambda")

NAME = "logs:FilterLogEvents"
# Lambda delivers a function's logs to CloudWatch Logs asynchronously, typically within seconds:
# an event is looked for this long after its invocation could have ended
DELIVERY_LATENCY_S = 30.0
MAX_PAGES_PER_POLL = 3
MIN_INTERVAL_S, MAX_INTERVAL_S = 1.0, 5.0
PENDING_MAX_EVENTS = 5000         # lines of invocations whose REPORT has not arrived, kept at most
INVOCATION_TYPE = "Event"         # SNS invokes asynchronously

START_RE = re.compile(r"^START RequestId: (?P<rid>[\w-]+)(?:\s+Version: (?P<version>\S+))?")
END_RE = re.compile(r"^END RequestId: (?P<rid>[\w-]+)")
REPORT_RE = re.compile(r"^REPORT RequestId: (?P<rid>[\w-]+)(?P<rest>.*)", re.S)
REPORT_FIELD_RE = re.compile(r"([A-Za-z][A-Za-z ]*?): ([^\t\n]+)")
TIMEOUT_RE = re.compile(r"Task timed out after (?P<s>[\d.]+) seconds")
UNCAUGHT_RE = re.compile(r"^\[ERROR\] (?P<type>[A-Za-z_][\w.]*)(?::[ \t]?(?P<message>[^\r\n]*))?")
RUNTIME_ERROR_RE = re.compile(r"^RequestId: (?P<rid>[\w-]+) Error: (?P<message>[^\r\n]*)(?:[\r\n]+(?P<type>\S+))?")
PLATFORM_PREFIXES = ("INIT_START", "INIT_REPORT", "INIT_RUNTIME_DONE", "EXTENSION", "TELEMETRY",
                     "RESTORE_START", "RESTORE_REPORT", "XRAY TraceId", "PLATFORM ")


def as_text(message: str) -> str:
    """A log event in Lambda's JSON log format (LoggingConfig LogFormat JSON) as its text-format
    line: platform.start/runtimeDone/report as START/END/REPORT, the runtime's error record as its
    [ERROR] event, an application record as "[LEVEL]\\t<time>\\t<request id>\\t<message>". A text-format
    line is returned as it is."""
    if not message.startswith("{"):
        return message
    try:
        rec = json.loads(message)
    except ValueError:
        return message
    if not isinstance(rec, dict):
        return message
    kind, body = rec.get("type"), rec.get("record")
    if isinstance(kind, str) and kind.startswith("platform.") and isinstance(body, dict):
        return _platform_text(kind, body)
    level = rec.get("level") or rec.get("log_level")
    if "errorType" in rec and level == "ERROR":
        stack = rec.get("stackTrace") or []
        return "\n".join([f"[ERROR] {rec['errorType']}: {rec.get('errorMessage', '')}",
                          *(["Traceback (most recent call last):", *map(str, stack)] if stack else [])])
    if level and "message" in rec:
        text = rec["message"] if isinstance(rec["message"], str) else json.dumps(rec["message"])
        return f"[{level}]\t{rec.get('timestamp', '')}\t{rec.get('requestId', '')}\t{text}"
    return message


def _platform_text(kind: str, body: dict) -> str:
    rid = body.get("requestId", "")
    if kind == "platform.start":
        return f"START RequestId: {rid}" + (f" Version: {body['version']}" if body.get("version") else "")
    if kind == "platform.runtimeDone":
        return f"END RequestId: {rid}"
    if kind != "platform.report":
        return f"PLATFORM {kind}"       # init, restore, extension and telemetry records: no attempt's
    m = body.get("metrics") or {}
    fields = [f"Duration: {float(m.get('durationMs', 0)):.2f} ms", f"Billed Duration: {m.get('billedDurationMs', 0)} ms",
              f"Memory Size: {m.get('memorySizeMB', 0)} MB", f"Max Memory Used: {m.get('maxMemoryUsedMB', 0)} MB"]
    if m.get("initDurationMs") is not None:
        fields.append(f"Init Duration: {float(m['initDurationMs']):.2f} ms")
    if body.get("status") not in (None, "success"):
        fields.append(f"Status: {body['status']}")
    if body.get("errorType"):
        fields.append(f"Error Type: {body['errorType']}")
    return "\t".join([f"REPORT RequestId: {rid}", *fields])


def _ms(value: str | None) -> float | None:
    m = re.match(r"\s*([\d.]+)", value or "")
    return float(m[1]) if m else None


def report_fields(line: str) -> dict:
    """A REPORT line's fields: {"Duration": "12.34 ms", "Init Duration": ..., "Status": ..., ...}."""
    m = REPORT_RE.match(line)
    return {k.strip(): v.strip() for k, v in REPORT_FIELD_RE.findall(m["rest"])} if m else {}


def alarm_in(line: str) -> tuple[dict, str | None, dict] | None:
    """(alarm {AlarmName, NewStateValue, OldStateValue}, its region, SNS fields) from one handler
    line: the reference handler's `alarm notification: {...}`, or a logged SNS event/message."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        body, _ = json.JSONDecoder().raw_decode(line, start)   # text may follow the object
    except ValueError:
        return None
    sns: dict = {}
    if isinstance(body, dict) and isinstance(body.get("Records"), list) and body["Records"]:
        sns = (body["Records"][0] or {}).get("Sns") or {}
        try:
            body = json.loads(sns.get("Message") or "")
        except (TypeError, ValueError):
            return None
    if not (isinstance(body, dict) and "AlarmName" in body and "NewStateValue" in body):
        return None
    alarm = {"AlarmName": body["AlarmName"], "NewStateValue": body["NewStateValue"],
             "OldStateValue": body.get("OldStateValue")}
    # the reference handler's line says the region it acted on ("region"); an alarm message's own
    # "Region" is CloudWatch's long name ("US East (N. Virginia)"): the ARNs say the code
    region = body.get("region") or _arn_region(body.get("AlarmArn")) or _arn_region(body.get("TopicArn") or sns.get("TopicArn"))
    return alarm, region, {"topic_arn": body.get("TopicArn") or sns.get("TopicArn"),
                           "message_id": body.get("MessageId") or sns.get("MessageId")}


def _arn_region(arn) -> str | None:
    parts = str(arn or "").split(":")
    return parts[3] if len(parts) > 3 and parts[3] else None


def _error_of(lines: list[str], fields: dict) -> dict | None:
    """The attempt's error: the runtime's [ERROR] line, its timeout line, or its exit error."""
    for line in lines:
        if m := TIMEOUT_RE.search(line):
            return {"type": "Sandbox.Timedout", "message": f"Task timed out after {m['s']} seconds"}
    for line in lines:
        if m := UNCAUGHT_RE.match(line):
            return {"type": m["type"], "message": (m["message"] or "").strip()}
    for line in lines:
        if m := RUNTIME_ERROR_RE.match(line):
            return {"type": fields.get("Error Type") or m["type"] or "Runtime.Error", "message": m["message"].strip()}
    if fields.get("Status") == "timeout":      # JSON log format: no "Task timed out" line, the report says it
        return {"type": "Sandbox.Timedout", "message": "Task timed out (REPORT Status: timeout)"}
    if fields.get("Status") == "error":
        return {"type": fields.get("Error Type") or "Runtime.Error", "message": f"REPORT Status: {fields['Status']}"}
    return None


def _outcome(error: dict | None, fields: dict) -> str:
    if fields.get("Status") == "timeout" or (error or {}).get("type") == "Sandbox.Timedout":
        return "timeout"
    return "error" if error is not None or fields.get("Status") == "error" else "ok"


def _invocation(stream: str, start: dict | None, body: list[dict], end: dict | None, report: dict) -> dict:
    """One attempt's event (without its attempt number) from its log events."""
    rid = REPORT_RE.match(report["message"])["rid"]
    fields = report_fields(report["message"])
    lines = [e["message"] for e in body]
    duration_s = (_ms(fields.get("Duration")) or 0.0) / 1000
    init_ms = _ms(fields.get("Init Duration"))
    end_ts = (end or report)["timestamp"] / 1000
    start_ts = start["timestamp"] / 1000 if start else end_ts - duration_s
    error = _error_of(lines, fields)
    ev = {"kind": "lambda_invocation", "time": start_ts, "request_id": rid, "invocation_type": INVOCATION_TYPE,
          "outcome": _outcome(error, fields), "duration_s": round(duration_s, 4), "cold_start": init_ms is not None,
          "init_s": round(init_ms / 1000, 4) if init_ms is not None else None, "error": error, "result": None,
          "logs": lines, "alarm": None, "region": None, "topic_arn": None, "message_id": None,
          "start_ts": round(start_ts, 4), "end_ts": round(end_ts, 4),
          "version": START_RE.match(start["message"])["version"] if start else None, "log_stream": stream,
          "billed_duration_s": round((_ms(fields.get("Billed Duration")) or 0.0) / 1000, 4),
          "memory_size_mb": _ms(fields.get("Memory Size")), "max_memory_used_mb": _ms(fields.get("Max Memory Used"))}
    found = next((a for a in map(alarm_in, lines) if a is not None), None)
    if found is not None:
        ev["alarm"], ev["region"], sns = found
        ev.update({k: v for k, v in sns.items() if v})
    return ev


def _stream_invocations(stream: str, events: list[dict]) -> tuple[list[dict], list[dict]]:
    """(finished attempts, the log events still waiting for their REPORT) of one stream, in order.
    Lines before a START (an init's output) belong to the attempt that START begins, as the local
    runner records them; platform lines (INIT_START, ...) are nobody's."""
    done: list[dict] = []
    first = 0                               # where the current attempt's events begin
    start = end = None
    body: list[dict] = []
    for i, e in enumerate(events):
        msg = e["message"]
        if START_RE.match(msg):
            start, end = e, None
        elif END_RE.match(msg):
            end = e
        elif REPORT_RE.match(msg):
            done.append(_invocation(stream, start, body, end, e))
            first, start, end, body = i + 1, None, None, []
        elif not msg.startswith(PLATFORM_PREFIXES) and end is None:
            body.append(e)
    return done, events[first:]


def parse_invocations(log_events: list[dict], attempts_before: Mapping[str, int] | None = None
                      ) -> tuple[list[dict], list[dict]]:
    """Lambda's log events (FilterLogEvents' `events`: logStreamName, timestamp ms, message) ->
    (one `lambda_invocation` event per attempt whose REPORT is in, by start time; the events of
    attempts not finished yet, to be given again with the next ones). `attempts_before`: attempts
    already counted per request id (a retry keeps its id: its attempt is the next number)."""
    streams: dict[str, list[dict]] = {}
    for e in sorted(log_events, key=lambda e: e["timestamp"]):   # stable: same-ms lines keep their order
        streams.setdefault(e["logStreamName"], []).append({**e, "message": as_text(e["message"].rstrip("\n"))})
    done: list[dict] = []
    pending: list[dict] = []
    for stream, events in streams.items():
        finished, waiting = _stream_invocations(stream, events)
        done += finished
        pending += waiting
    done.sort(key=lambda ev: ev["time"])
    counts = dict(attempts_before or {})
    for ev in done:
        counts[ev["request_id"]] = ev["attempt"] = counts.get(ev["request_id"], 0) + 1
    return done, pending


class LambdaLogSource:
    """A signals.SignalSource: the function's attempts from its log group, incrementally."""

    name = NAME

    def __init__(self, client, log_group: str, *, function_timeout_s: float, interval_s: float,
                 clock=time.time, since: float | None = None):
        self.client = client
        self.log_group = log_group
        self.interval_s = interval_s
        self.window_s = function_timeout_s + DELIVERY_LATENCY_S
        self.clock = clock
        # an attempt in flight when we start still shows: its START is up to a timeout old
        self.since = (clock() if since is None else since) - function_timeout_s
        self.calls = 0                         # FilterLogEvents calls made (its budget: module docstring)
        self._seen: dict[str, int] = {}        # eventId -> timestamp ms, within the window
        self._pending: list[dict] = []
        self._attempts: dict[str, int] = {}
        self._resume: tuple[int, str] | None = None   # (startTime, nextToken) of an answer not read to its end

    def poll(self) -> list[dict]:
        fresh = [e for e in self._read() if e["eventId"] not in self._seen]
        for e in fresh:
            self._seen[e["eventId"]] = e["timestamp"]
        done, self._pending = parse_invocations(self._pending + fresh, self._attempts)
        if len(self._pending) > PENDING_MAX_EVENTS:
            log.warning("%s: %d lines without a REPORT; dropping the oldest", self.log_group, len(self._pending))
            self._pending = self._pending[-PENDING_MAX_EVENTS:]
        for ev in done:
            self._attempts[ev["request_id"]] = ev["attempt"]
        return done

    def _read(self) -> list[dict]:
        if self._resume is not None:
            start_ms, token = self._resume
        else:
            start_ms, token = int(max(self.since, self.clock() - self.window_s) * 1000), None
            self._seen = {k: ts for k, ts in self._seen.items() if ts >= start_ms}
        self._resume = None
        out: list[dict] = []
        for _ in range(MAX_PAGES_PER_POLL):
            kwargs = {"logGroupName": self.log_group, "startTime": start_ms, **({"nextToken": token} if token else {})}
            self.calls += 1
            try:
                page = self.client.filter_log_events(**kwargs)
            except self.client.exceptions.ResourceNotFoundException:
                return out     # Lambda creates the group when the function first logs
            out += page.get("events", [])
            token = page.get("nextToken")
            if not token:
                return out
        self._resume = (start_ms, token)
        return out

    def status(self) -> dict:
        return {"log_group": self.log_group, "calls": self.calls, "pending_lines": len(self._pending),
                "request_ids": len(self._attempts)}


def interval_for(period_s: float) -> float:
    """A fifth of the alarm period, within 1-5 s: 1 call/s (a fifth of FilterLogEvents' 5 per
    second) on the compressed profiles, 12 calls/min on AWS's 60 s period."""
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, period_s / 5))


def function_timeout_s(env) -> float:
    """The function's own Timeout (GetFunctionConfiguration), else the config's failover.timeout_s."""
    cfg = env.config
    try:
        lam = env.observer("lambda", cfg.failover.region)
        return float(lam.get_function_configuration(FunctionName=cfg.aws.lambda_name)["Timeout"])
    except Exception as e:  # noqa: BLE001 - no lambda:GetFunctionConfiguration permission: the config says it
        log.info("reading the function's timeout failed (%s); using failover.timeout_s", e)
        return float(cfg.failover.timeout_s)


def make(env) -> LambdaLogSource | None:
    """signals.SIGNAL_SOURCES' factory: the failover function's log group in its region."""
    cfg = env.config
    if not cfg.aws.lambda_name:
        return None
    return LambdaLogSource(env.observer("logs", cfg.failover.region), f"/aws/lambda/{cfg.aws.lambda_name}",
                           function_timeout_s=function_timeout_s(env), interval_s=interval_for(env.profile.period_s))
