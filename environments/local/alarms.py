"""CloudWatch alarm evaluation for the local environment. moto stores alarms and metric data but
never evaluates an alarm, so this does what CloudWatch does. The rules are the pure model in
`alarm_model.py` (`evaluate()`: one evaluation range -> state and reason; `step_alarm()`: the
alarm's state machine at a period boundary; `TickSchedule`: which boundary is due). This module
is the adapter: `AlarmEvaluator` runs one thread per region on the context's clock, reads the
alarms and their metric data from moto at every period boundary, asks the model, and carries out
its decisions: sets the state in moto, writes an "alarm" event on the timeline and publishes
CloudWatch's alarm notification (`alarm_notification()`) to the new state's SNS topics.

The rules followed (CloudWatch user guide, "Alarm evaluation") and the choices made where the
guide leaves room: docs/local-environment.md, "CloudWatch alarm evaluator".
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import botocore.exceptions
import botocore.session

from gameday import aws
from gameday.environments.local.alarm_model import (  # noqa: F401 - the rule's names, re-exported
    ALARM, COMPARISONS, EVALUATION_RANGE_EXTRA, INSUFFICIENT_DATA, MISSING_TREATMENTS, MOTO_CREATION_REASON, OK,
    STATE_REASON_MAX, STATES, AlarmRecord, Evaluation, QueryWindow, Sync, TickSchedule, Transition,
    cw_time, evaluate, evaluation_range, is_due, step_alarm, tick_step, unsupported_reason)
from gameday.environments.local.context import LocalContext
from gameday.events import iso

log = logging.getLogger("gameday.alarms")

# added to profile.metric_flush_s: the load balancers flush a sub-bucket ~10 ms after it closes
GRACE_MARGIN_S = 0.1
SUBJECT_MAX = 100         # SNS's limit


# -- the SNS notification ----------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def region_long_name(region: str) -> str:
    """'us-east-1' -> 'US East (N. Virginia)', from botocore's own endpoint data."""
    for partition in botocore.session.get_session().get_data("endpoints")["partitions"]:
        desc = partition.get("regions", {}).get(region, {}).get("description")
        if desc:
            return desc
    return region


def _statistic_name(stat: str) -> str:
    # the notification spells statistics as Java enum constants: Sum -> SUM, SampleCount -> SAMPLE_COUNT
    out = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(stat))
    return out.upper()


def alarm_notification(alarm: dict, *, region: str, old: str, new: str, reason: str,
                       change_time: float) -> tuple[str, str]:
    """(Subject, Message) of the SNS notification CloudWatch publishes for a state change.
    `alarm` is one MetricAlarms entry of describe_alarms."""
    name = alarm["AlarmName"]
    arn = alarm.get("AlarmArn", "")
    trigger: dict[str, Any] = {"MetricName": alarm.get("MetricName"), "Namespace": alarm.get("Namespace")}
    if alarm.get("ExtendedStatistic"):
        trigger.update(StatisticType="ExtendedStatistic", ExtendedStatistic=alarm["ExtendedStatistic"])
    else:
        trigger.update(StatisticType="Statistic", Statistic=_statistic_name(alarm.get("Statistic", "")))
    trigger.update({
        "Unit": alarm.get("Unit"),
        "Dimensions": [{"value": d["Value"], "name": d["Name"]} for d in alarm.get("Dimensions", [])],
        "Period": int(alarm.get("Period", 0)),
        "EvaluationPeriods": int(alarm.get("EvaluationPeriods", 0)),
        "DatapointsToAlarm": int(alarm.get("DatapointsToAlarm") or alarm.get("EvaluationPeriods", 0)),
        "ComparisonOperator": alarm.get("ComparisonOperator"),
        "Threshold": float(alarm.get("Threshold", 0.0)),
        "TreatMissingData": alarm.get("TreatMissingData", ""),
        "EvaluateLowSampleCountPercentile": alarm.get("EvaluateLowSampleCountPercentile", ""),
    })
    message = {
        "AlarmName": name,
        "AlarmDescription": alarm.get("AlarmDescription"),
        "AWSAccountId": arn.split(":")[4] if arn.count(":") >= 5 else aws.LOCAL_ACCOUNT_ID,
        "AlarmConfigurationUpdatedTimestamp": cw_time(alarm.get("AlarmConfigurationUpdatedTimestamp")),
        "NewStateValue": new,
        "NewStateReason": reason,
        "StateChangeTime": cw_time(change_time),
        "Region": region_long_name(region),
        "AlarmArn": arn,
        "OldStateValue": old,
        "OKActions": list(alarm.get("OKActions", [])),
        "AlarmActions": list(alarm.get("AlarmActions", [])),
        "InsufficientDataActions": list(alarm.get("InsufficientDataActions", [])),
        "Trigger": trigger,
    }
    subject = f'{new}: "{name}" in {region_long_name(region)}'[:SUBJECT_MAX]
    return subject, json.dumps(message)


# -- the component ---------------------------------------------------------------------------------------

@dataclass
class _TickStats:
    ticks: int = 0
    skipped: int = 0                       # ticks lost to an unreachable/slow moto
    missed_boundaries: int = 0             # boundaries passed over because a tick ran late
    last_ms: float = 0.0
    max_ms: float = 0.0
    total_ms: float = 0.0
    last_boundary: int | None = None
    last_error: str | None = None
    unreachable_since: float | None = None


class AlarmEvaluator:
    """Evaluates every metric alarm of every region at each period boundary (see module doc)."""

    def __init__(self, ctx: LocalContext, *, grace_s: float | None = None, call_timeout_s: float | None = None,
                 publish_timeout_s: float = 10.0):
        self.ctx = ctx
        self.clock = ctx.clock
        prof = ctx.profile
        self.grace_s = grace_s if grace_s is not None else prof.metric_flush_s + GRACE_MARGIN_S
        # one slow region must not hold its own ticks for long either: a call gets well under a period
        self.call_timeout_s = call_timeout_s or min(3.0, max(0.5, 0.4 * prof.period_s))
        # moto's SNS posts to http subscribers inside Publish: give the subscriber time to answer
        self.publish_timeout_s = publish_timeout_s
        self.regions = list(ctx.config.regions)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._known: dict[str, dict[str, AlarmRecord]] = {r: {} for r in self.regions}
        self._stats: dict[str, _TickStats] = {r: _TickStats() for r in self.regions}
        self._schedules = self._new_schedules()
        # the loop and a direct tick() call must not evaluate one region at the same time (double actions)
        self._tick_locks = {r: threading.Lock() for r in self.regions}
        self._warned: set[tuple[str, str]] = set()
        # actions run off the tick thread (CloudWatch runs them asynchronously), in order per region
        self._actions = {r: ThreadPoolExecutor(1, thread_name_prefix=f"alarm-actions-{r}") for r in self.regions}
        self._started = False

    def _new_schedules(self) -> dict[str, TickSchedule]:
        now = self.clock.time()
        return {r: TickSchedule(int(self.ctx.profile.period_s), self.grace_s, now) for r in self.regions}

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> "AlarmEvaluator":
        if self._started:
            return self
        self._started = True
        self._schedules = self._new_schedules()  # the first evaluated boundary is after the start
        for region in self.regions:
            t = threading.Thread(target=self._region_loop, args=(region,), name=f"alarms-{region}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.call_timeout_s * 4 + 1)
        self._threads = []
        for ex in self._actions.values():
            ex.shutdown(wait=True, cancel_futures=True)

    # -- introspection --------------------------------------------------------------------------------------
    def status(self) -> dict:
        with self._lock:
            return {r: {name: {"state": k.state, "since": iso(k.since), "last_value": k.last_value,
                               "reason": k.reason}
                        for name, k in alarms.items()} for r, alarms in self._known.items()}

    def tick_stats(self) -> dict:
        """Per region: ticks run, ticks skipped, cost of a tick in ms (last, mean, max)."""
        with self._lock:
            return {r: {"ticks": s.ticks, "skipped": s.skipped, "missed_boundaries": s.missed_boundaries,
                        "last_ms": round(s.last_ms, 2), "mean_ms": round(s.total_ms / s.ticks, 2) if s.ticks else None,
                        "max_ms": round(s.max_ms, 2), "last_boundary": s.last_boundary, "last_error": s.last_error}
                    for r, s in self._stats.items()}

    # -- clients ----------------------------------------------------------------------------------------------
    def _cw(self, region: str):
        # Same endpoint as ctx.internal_client (the region's moto, no API faults), but with a short
        # timeout and no retries: a stuck region skips a tick instead of stalling for 3 x 5 s.
        return aws.client("cloudwatch", region, self.ctx.moto_urls[region], retries=0, timeout_s=self.call_timeout_s)

    def _sns(self, region: str):
        # no retries either: a Publish that timed out may still have delivered (moto delivers to http
        # subscribers inside Publish), and a transition's actions run once
        return aws.client("sns", region, self.ctx.moto_urls[region], retries=0, timeout_s=self.publish_timeout_s)

    # -- the loop ------------------------------------------------------------------------------------------------
    def _region_loop(self, region: str) -> None:
        schedule = self._schedules[region]
        while not self._stop.is_set():
            boundary = schedule.due(self.clock.time())
            if boundary is None:
                self.clock.wait(self._stop, schedule.wake_at() - self.clock.time())
                continue
            try:
                self.tick(region, boundary)
            except Exception:  # noqa: BLE001 - one bad tick must not end evaluation
                log.exception("alarm evaluation in %s failed", region)
            missed = schedule.done(boundary)
            if missed:
                with self._lock:
                    self._stats[region].missed_boundaries += missed

    def tick(self, region: str, boundary: int | None = None) -> list[dict]:
        """Evaluate the region's alarms whose period ends at `boundary` (default: the newest boundary
        whose grace has passed). Returns the transitions made. Used by the loop; callable directly."""
        if boundary is None:
            boundary = self._schedules[region].newest_boundary(self.clock.time())
        with self._tick_locks[region]:
            return self._tick(region, boundary)

    def _tick(self, region: str, boundary: int) -> list[dict]:
        t0 = time.perf_counter()
        try:
            alarms = self._describe(region)
            due = [a for a in alarms if self._supported(region, a) and is_due(a, boundary)]
            series = self._fetch(region, due, boundary)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            self._unreachable(region, e)
            return []
        self._reachable(region)
        self._schedules[region].step = tick_step(self.ctx.profile.period_s,
                                                 [int(a["Period"]) for a in alarms if a.get("Period")])
        transitions = []
        for a in due:
            try:
                transitions.extend(self._evaluate_alarm(region, a, boundary, series[a["AlarmName"]]))
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
                self._unreachable(region, e)
                break
        ms = (time.perf_counter() - t0) * 1000
        with self._lock:
            s = self._stats[region]
            s.ticks += 1
            s.last_ms = ms
            s.total_ms += ms
            s.max_ms = max(s.max_ms, ms)
            s.last_boundary = boundary
        return transitions

    def _describe(self, region: str) -> list[dict]:
        cw = self._cw(region)
        out: list[dict] = []
        kwargs: dict = {"AlarmTypes": ["MetricAlarm"]}
        while True:
            page = cw.describe_alarms(**kwargs)
            out.extend(page.get("MetricAlarms", []))
            if not page.get("NextToken"):
                return out
            kwargs["NextToken"] = page["NextToken"]

    def _supported(self, region: str, a: dict) -> bool:
        why = unsupported_reason(a)
        if why:
            self._warn_once(region, a["AlarmName"], f"alarm {a['AlarmName']} in {region} skipped: {why}")
        return why is None

    def _fetch(self, region: str, due: list[dict], boundary: int) -> dict[str, list[float | None]]:
        """One value per period over each alarm's evaluation range, ending at `boundary`.

        GetMetricData, one call per distinct Period (the seed: one call per region). moto buckets
        GetMetricData from StartTime in steps of Period, so an aligned StartTime gives aligned
        periods; its GetMetricStatistics buckets from the first datapoint instead."""
        out: dict[str, list[float | None]] = {}
        by_period: dict[int, list[dict]] = {}
        for a in due:
            by_period.setdefault(int(a["Period"]), []).append(a)
        for group in by_period.values():
            window = QueryWindow.for_alarms(group, boundary)
            results = self._get_metric_data(region, group, window, boundary)
            for i, a in enumerate(group):
                out[a["AlarmName"]] = window.series_for(a, results[f"m{i}"])
        return out

    def _get_metric_data(self, region: str, group: list[dict], window: QueryWindow,
                         boundary: int) -> dict[str, list[float | None]]:
        queries = []
        for i, a in enumerate(group):
            stat = {"Metric": {"Namespace": a["Namespace"], "MetricName": a["MetricName"],
                               "Dimensions": a.get("Dimensions", [])},
                    "Period": window.period, "Stat": a["Statistic"]}
            if a.get("Unit"):
                stat["Unit"] = a["Unit"]
            queries.append({"Id": f"m{i}", "MetricStat": stat, "ReturnData": True})
        results: dict[str, list[float | None]] = {q["Id"]: [None] * window.span for q in queries}
        kwargs: dict = {"MetricDataQueries": queries,
                        "StartTime": datetime.fromtimestamp(window.start, tz=timezone.utc),
                        "EndTime": datetime.fromtimestamp(boundary, tz=timezone.utc)}
        cw = self._cw(region)
        while True:
            page = cw.get_metric_data(**kwargs)
            for r in page.get("MetricDataResults", []):
                for ts, v in zip(r.get("Timestamps", []), r.get("Values", [])):
                    k = window.slot(ts.timestamp())
                    if k is not None:
                        results[r["Id"]][k] = v
            if not page.get("NextToken"):
                return results
            kwargs["NextToken"] = page["NextToken"]

    def _evaluate_alarm(self, region: str, a: dict, boundary: int, values: list[float | None]) -> list[dict]:
        """Ask the model, then carry out its decisions in order."""
        name = a["AlarmName"]
        with self._lock:
            record = self._known[region].get(name)
        step = step_alarm(record, a, values, boundary, self.clock.time())
        transitions: list[dict] = []
        try:
            for decision in step.decisions:
                tr = self._carry_out(region, a, decision)
                if tr:
                    transitions.append(tr)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            with self._lock:
                self._known[region][name] = step.on_write_failure
            raise
        with self._lock:
            self._known[region][name] = step.record
        return transitions

    def _carry_out(self, region: str, a: dict, decision: Transition | Sync) -> dict | None:
        name = a["AlarmName"]
        if isinstance(decision, Sync):
            self._cw(region).set_alarm_state(AlarmName=name, StateValue=decision.state, StateReason=decision.reason)
            return None
        if decision.write:
            kwargs = {"AlarmName": name, "StateValue": decision.new, "StateReason": decision.reason}
            if decision.reason_data:
                kwargs["StateReasonData"] = decision.reason_data
            self._cw(region).set_alarm_state(**kwargs)
        return self._announce(region, a, decision)

    def _announce(self, region: str, a: dict, tr: Transition) -> dict:
        """A state change happened: the timeline event, then the new state's actions (off this thread)."""
        name, now = a["AlarmName"], self.clock.time()
        self.ctx.events.emit("alarm", region=region, alarm=name, old=tr.old, new=tr.new, reason=tr.reason,
                             value=tr.value, source=tr.source)
        log.info("alarm %s in %s: %s -> %s (%s)", name, region, tr.old, tr.new, tr.reason)
        topics = {ALARM: a.get("AlarmActions", []), OK: a.get("OKActions", []),
                  INSUFFICIENT_DATA: a.get("InsufficientDataActions", [])}[tr.new]
        if a.get("ActionsEnabled", True) and topics:
            subject, message = alarm_notification(a, region=region, old=tr.old, new=tr.new, reason=tr.reason,
                                                  change_time=now)
            try:
                self._actions[region].submit(self._publish, region, name, tr.new, list(topics), subject, message, now)
            except RuntimeError:  # stopping: the executor is shut down
                log.warning("alarm %s in %s: actions for %s dropped, evaluator stopping", name, region, tr.new)
        return {"region": region, "alarm": name, "old": tr.old, "new": tr.new, "reason": tr.reason,
                "value": tr.value, "source": tr.source}

    def _publish(self, region: str, alarm: str, new: str, topics: list[str], subject: str, message: str,
                 changed_at: float) -> None:
        for arn in topics:
            parts = arn.split(":")
            if len(parts) < 6 or parts[2] != "sns":
                self._warn_once(region, arn, f"alarm action {arn} is not an SNS topic; only SNS actions run locally")
                continue
            topic_region = parts[3]
            if topic_region not in self.ctx.moto_urls:
                self._warn_once(region, arn, f"alarm action {arn}: no local region {topic_region}")
                continue
            try:
                msg_id = self._sns(topic_region).publish(TopicArn=arn, Subject=subject, Message=message)["MessageId"]
                self.ctx.events.emit("alarm_action", region=region, alarm=alarm, new=new, topic=arn,
                                     message_id=msg_id, after_s=round(self.clock.time() - changed_at, 4))
                self._record_action(region, alarm, arn, None, message)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
                # with retries=0 a timeout may still have delivered; never publish twice
                log.warning("alarm %s in %s: publishing %s to %s failed: %s", alarm, region, new, arn, e)
                self.ctx.events.emit("alarm_action", region=region, alarm=alarm, new=new, topic=arn,
                                     error=f"{type(e).__name__}: {e}")
                self._record_action(region, alarm, arn, f"{type(e).__name__}: {e}", None)

    def _record_action(self, region: str, alarm: str, action: str, error: str | None, message: str | None) -> None:
        """The alarm's Action history item, in moto (moto_fix_cloudwatch): what happened to the action."""
        try:
            aws.moto_admin(self.ctx.moto_urls[region], "cloudwatch_alarm_action", timeout_s=self.call_timeout_s,
                           region=region, alarm_name=alarm, action=action, error=error, published_message=message)
        except Exception as e:  # noqa: BLE001 - history is a record; the action itself already ran
            log.warning("alarm %s in %s: recording action %s in the alarm history failed: %s", alarm, region,
                        action, e)

    # -- reachability -------------------------------------------------------------------------------------------
    def _warn_once(self, region: str, key: str, msg: str) -> None:
        if (region, key) not in self._warned:
            self._warned.add((region, key))
            log.warning(msg)

    def _unreachable(self, region: str, e: Exception) -> None:
        with self._lock:
            s = self._stats[region]
            s.skipped += 1
            s.last_error = f"{type(e).__name__}: {e}"
            first = s.unreachable_since is None
            if first:
                s.unreachable_since = self.clock.time()
        if first:
            log.warning("alarm evaluation in %s skipped: its moto does not answer (%s); retrying every period",
                        region, e)

    def _reachable(self, region: str) -> None:
        with self._lock:
            s = self._stats[region]
            since, s.unreachable_since = s.unreachable_since, None
        if since is not None:
            log.warning("alarm evaluation in %s resumed after %.1fs", region, self.clock.time() - since)
