"""Signal sources from CloudWatch (environments/aws/signals.py's contract): the aws environment's
`alarm` / `alarm_action` events from DescribeAlarmHistory and its `replication_lag` events from
DynamoDB's ReplicationLatency metric (GetMetricData), in the local environment's own shapes
(gameday/runlog.py: AlarmEvent, AlarmActionEvent, ReplicationLagEvent), so the scenario checks
(assertions/failover.py's alarm_fires, the failback rule, the report's alarm band) read them unchanged.

Each region has its own reader (its own AWS state: what it has seen, since when); one source per
API fans out over the regions, because a SIGNAL_SOURCES factory builds one source.

Budgets (CloudWatch service quotas, per account and region): DescribeAlarmHistory 3 transactions/s
(not adjustable), GetMetricData 50 transactions/s. Each reader reads every `interval_s` = a quarter of
the profile's period, never more often than once a second: on AWS (60 s periods) 4 calls/min per region
and API, on the stand-in account (5 s periods) 48 calls/min (0.8/s, a quarter of the history quota),
plus one call per further page (100 history items a page).
"""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import datetime, timezone

INTERVAL_FRACTION = 0.25    # of the profile's period: a transition is read within a quarter period
MIN_INTERVAL_S = 1.0        # at most 1 call/s per region and API: a third of DescribeAlarmHistory's 3/s quota
HISTORY_API = "cloudwatch:DescribeAlarmHistory"
LATENCY_API = "cloudwatch:GetMetricData"
STATE_UPDATE, ACTION = "StateUpdate", "Action"
LATENCY_NAMESPACE, LATENCY_METRIC = "AWS/DynamoDB", "ReplicationLatency"
# GetMetricData's Period: 1, 5, 10, 30 (high resolution) or a multiple of 60
VALID_PERIODS = (1, 5, 10, 30)
LATENCY_LOOKBACK_PERIODS = 5    # a datapoint published late (AWS: minutes) is still read this far back


def interval_for(period_s: float) -> float:
    return max(MIN_INTERVAL_S, INTERVAL_FRACTION * float(period_s))


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _epoch(t) -> float:
    if isinstance(t, datetime):
        return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
    return float(t)


def started_at(env) -> float:
    """The run's start: nothing that happened before it is reported. The environment's own
    `started_at` when it has one, else its account check (start()'s first event), else now."""
    t = getattr(env, "started_at", None)
    if t is not None:
        return float(t)
    try:
        allowed = [e for e in env.events(0, "guardrail") if e.get("action") == "account_allowed"]
    except Exception:  # noqa: BLE001 - an environment without a timeline: from now on
        allowed = []
    return float(allowed[0]["time"]) if allowed else time.time()


# -- DescribeAlarmHistory -> alarm, alarm_action -----------------------------------------------------------

def _history_data(item: dict) -> dict:
    try:
        data = json.loads(item.get("HistoryData") or "{}")
    except ValueError:   # HistoryData is cut at 4095 characters: a long message may not parse
        return {}
    return data if isinstance(data, dict) else {}


def alarm_event(region: str, item: dict) -> dict | None:
    """A StateUpdate item as the local evaluator's `alarm` event (value: the newest evaluated datapoint)."""
    data = _history_data(item)
    old, new = (data.get("oldState") or {}), (data.get("newState") or {})
    summary = str(item.get("HistorySummary") or "")
    if not new.get("stateValue") and summary.startswith("Alarm updated from "):
        parts = summary.removeprefix("Alarm updated from ").split(" to ")   # "Alarm updated from OK to ALARM"
        if len(parts) == 2:
            old, new = {"stateValue": parts[0]}, {"stateValue": parts[1]}
    if not (old.get("stateValue") and new.get("stateValue")):
        return None
    ev = {"kind": "alarm", "time": _epoch(item["Timestamp"]), "region": region, "alarm": item["AlarmName"],
          "old": old["stateValue"], "new": new["stateValue"], "reason": new.get("stateReason")}
    points = (new.get("stateReasonData") or {}).get("recentDatapoints") or []
    if points and isinstance(points[-1], (int, float)):
        ev["value"] = float(points[-1])
    return ev


def action_event(region: str, item: dict, new_of: dict[tuple[str, int], str], last_new: dict[str, str]) -> dict | None:
    """An Action item as the local evaluator's `alarm_action` event. Which state's action it was: the
    published message's NewStateValue, else the transition its stateUpdateTimestamp names, else the
    alarm's last transition seen."""
    data = _history_data(item)
    name, when = item["AlarmName"], _epoch(item["Timestamp"])
    topic = data.get("notificationResource")
    if not topic:
        summary = str(item.get("HistorySummary") or "")   # "Successfully executed action arn:..."
        topic = next((w.rstrip(".") for w in summary.split() if w.startswith("arn:")), None)
    if not topic:
        return None
    new, updated_ms = None, data.get("stateUpdateTimestamp")
    try:
        new = json.loads(data.get("publishedMessage") or "{}").get("NewStateValue")
    except (ValueError, AttributeError):
        pass
    if new is None and isinstance(updated_ms, (int, float)):
        new = new_of.get((name, int(updated_ms)))
    new = new or last_new.get(name)
    if new is None:
        return None
    ev = {"kind": "alarm_action", "time": when, "region": region, "alarm": name, "new": new, "topic": topic}
    if isinstance(updated_ms, (int, float)):
        ev["after_s"] = round(max(0.0, when - updated_ms / 1000.0), 4)
    if data.get("actionState") == "Failed" or str(item.get("HistorySummary", "")).startswith("Failed"):
        ev["error"] = str(data.get("error") or item.get("HistorySummary"))
    return ev


def _item_key(item: dict) -> tuple:
    return (item["AlarmName"], item.get("HistoryItemType"), _epoch(item["Timestamp"]),
            item.get("HistorySummary"), item.get("HistoryData"))


class AlarmHistoryReader:
    """One region's alarm history, read incrementally: each read asks from the newest item seen
    (StartDate, ScanBy TimestampAscending, every page), minus `lookback_s` for an item written late
    with an earlier Timestamp; items already reported (same alarm, type, Timestamp and content: two
    items may share a Timestamp) are kept for that window and never reported twice."""

    name = HISTORY_API

    def __init__(self, client, region: str, alarms: list[str], since: float, interval_s: float,
                 lookback_s: float | None = None):
        self.client, self.region, self.alarms = client, region, set(alarms)
        self.since, self.interval_s = float(since), float(interval_s)
        self.lookback_s = float(lookback_s if lookback_s is not None else max(5.0, 2 * interval_s))
        self.newest = self.since
        self.calls = 0
        self._seen: dict[tuple, float] = {}
        self._new_of: dict[tuple[str, int], str] = {}   # (alarm, transition ms) -> new state
        self._last_new: dict[str, str] = {}

    def _items(self, start: float) -> list[dict]:
        # whole seconds: StartDate's precision is not documented, an earlier start costs only a re-read
        kw = {"StartDate": _dt(math.floor(start)), "ScanBy": "TimestampAscending", "MaxRecords": 100}
        out: list[dict] = []
        while True:
            self.calls += 1
            page = self.client.describe_alarm_history(**kw)
            out += page.get("AlarmHistoryItems", [])
            if not page.get("NextToken"):
                return out
            kw["NextToken"] = page["NextToken"]

    def poll(self) -> list[dict]:
        start = max(self.since, self.newest - self.lookback_s)
        items = self._items(start)
        self._seen = {k: t for k, t in self._seen.items() if t >= start - 1.0}
        out: list[dict] = []
        for item in sorted(items, key=lambda i: _epoch(i["Timestamp"])):   # stable: the page order for ties
            t, key = _epoch(item["Timestamp"]), _item_key(item)
            if t < self.since or key in self._seen or item["AlarmName"] not in self.alarms:
                continue
            self._seen[key] = t
            self.newest = max(self.newest, t)
            ev = self._event(item)
            if ev is not None:
                out.append(ev)
        return out

    def _event(self, item: dict) -> dict | None:
        kind = item.get("HistoryItemType")
        if kind == STATE_UPDATE:
            ev = alarm_event(self.region, item)
            if ev is not None:
                self._new_of[(ev["alarm"], round(ev["time"] * 1000))] = ev["new"]
                self._last_new[ev["alarm"]] = ev["new"]
            return ev
        if kind == ACTION:
            return action_event(self.region, item, self._new_of, self._last_new)
        return None   # ConfigurationUpdate: not a signal of the run


# -- GetMetricData ReplicationLatency -> replication_lag ----------------------------------------------------

def metric_period(period_s: float) -> int:
    """The smallest period GetMetricData takes that is at least the profile's period."""
    p = math.ceil(float(period_s))
    return next((v for v in VALID_PERIODS if v >= p), 60 * math.ceil(p / 60))


class ReplicationLatencyReader:
    """One source region's ReplicationLatency towards each other region: one `replication_lag` event
    per datapoint (time = the datapoint's timestamp, the start of its period), read once its period
    has ended (EndTime is the last whole period: a datapoint is not reported half-filled). lag_s is
    the period's Maximum (as the local replicator's lag_s: the worst lag of its window), applied its
    SampleCount (writes replicated), average_s its Average."""

    name = LATENCY_API

    def __init__(self, client, region: str, table: str, receiving: list[str], since: float, period_s: int,
                 interval_s: float):
        self.client, self.region, self.table, self.receiving = client, region, table, list(receiving)
        self.since, self.period_s, self.interval_s = float(since), int(period_s), float(interval_s)
        self.calls = 0
        self._seen: set[tuple[str, float]] = set()

    def _queries(self) -> list[dict]:
        out = []
        for i, dst in enumerate(self.receiving):
            metric = {"Namespace": LATENCY_NAMESPACE, "MetricName": LATENCY_METRIC,
                      "Dimensions": [{"Name": "TableName", "Value": self.table},
                                     {"Name": "ReceivingRegion", "Value": dst}]}
            for stat in ("Maximum", "Average", "SampleCount"):
                out.append({"Id": f"r{i}_{stat.lower()}", "ReturnData": True,
                            "MetricStat": {"Metric": metric, "Period": self.period_s, "Stat": stat}})
        return out

    def _results(self, start: float, end: float) -> dict[str, dict[float, float]]:
        kw = {"MetricDataQueries": self._queries(), "StartTime": _dt(start), "EndTime": _dt(end),
              "ScanBy": "TimestampAscending"}
        out: dict[str, dict[float, float]] = {}
        while True:
            self.calls += 1
            page = self.client.get_metric_data(**kw)
            for r in page.get("MetricDataResults", []):
                out.setdefault(r["Id"], {}).update(zip(map(_epoch, r.get("Timestamps", [])), r.get("Values", [])))
            if not page.get("NextToken"):
                return out
            kw["NextToken"] = page["NextToken"]

    def poll(self, now: float | None = None) -> list[dict]:
        now = time.time() if now is None else now
        p = self.period_s
        # aligned to the period: the datapoints' timestamps do not depend on when the read started
        start = math.floor(max(self.since, now - LATENCY_LOOKBACK_PERIODS * p) / p) * p
        end = math.floor(now / p) * p
        if end <= start:
            return []
        res = self._results(start, end)
        self._seen = {(d, t) for d, t in self._seen if t >= start}
        out = []
        for i, dst in enumerate(self.receiving):
            peaks = res.get(f"r{i}_maximum", {})
            for t in sorted(peaks):
                if t < self.since or (dst, t) in self._seen:
                    continue
                self._seen.add((dst, t))
                ev = {"kind": "replication_lag", "time": t, "direction": f"{self.region}->{dst}",
                      "lag_s": round(peaks[t] / 1000.0, 4), "period_s": p}
                if t in res.get(f"r{i}_samplecount", {}):
                    ev["applied"] = int(res[f"r{i}_samplecount"][t])
                if t in res.get(f"r{i}_average", {}):
                    ev["average_s"] = round(res[f"r{i}_average"][t] / 1000.0, 4)
                out.append(ev)
        return sorted(out, key=lambda e: e["time"])


# -- one source per API over the regions ---------------------------------------------------------------------

class Regions:
    """A source over one reader per region, read in turn. A region that fails does not hold back the
    others: their events are returned, its error kept in `errors` (region -> the last one); a read in
    which every region failed or none found anything raises the first error, so the poller counts it."""

    def __init__(self, name: str, readers: list, interval_s: float):
        self.name, self.readers, self.interval_s = name, readers, interval_s
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def calls(self) -> dict[str, int]:
        return {r.region: r.calls for r in self.readers}

    def poll(self) -> list[dict]:
        with self._lock:
            found, failed = [], None
            for r in self.readers:
                try:
                    found += r.poll()
                except Exception as e:  # noqa: BLE001 - kept, raised below when there is nothing else to say
                    self.errors[r.region] = f"{type(e).__name__}: {e}"[:300]
                    failed = failed or e
            if failed is not None and not found:
                raise failed
            return sorted(found, key=lambda e: e["time"])


def alarm_history(env) -> Regions | None:
    """SIGNAL_SOURCES factory: `alarm` and `alarm_action` from each region's DescribeAlarmHistory."""
    since, interval = started_at(env), interval_for(env.profile.period_s)
    readers = [AlarmHistoryReader(env.observer("cloudwatch", r), r, t.alarms, since, interval)
               for r, t in env.targets.items() if t.alarms]
    return Regions(HISTORY_API, readers, interval) if readers else None


def replication_latency(env) -> Regions | None:
    """SIGNAL_SOURCES factory: `replication_lag` from each region's ReplicationLatency towards the others."""
    regions = list(env.targets)
    if len(regions) < 2:
        return None
    since, interval = started_at(env), interval_for(env.profile.period_s)
    period = metric_period(env.profile.period_s)
    readers = [ReplicationLatencyReader(env.observer("cloudwatch", r), r, env.table,
                                        [d for d in regions if d != r], since, period, interval)
               for r in regions]
    return Regions(LATENCY_API, readers, interval)
