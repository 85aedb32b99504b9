"""CloudWatch alarm evaluation for the local environment. moto stores alarms and metric data but
never evaluates an alarm, so this does what CloudWatch does. `evaluate()` is the pure rule (one
value per period over the evaluation range, the alarm's settings and current state -> the new
state and CloudWatch's reason text); `AlarmEvaluator` is the component that applies it at every
period boundary and, only on a state change, sets the state in moto, writes an "alarm" event on
the timeline and publishes CloudWatch's alarm notification to the new state's SNS topics.

The rules followed (CloudWatch user guide, "Alarm evaluation") and the choices made where the
guide leaves room: docs/local-environment.md, "CloudWatch alarm evaluator".
"""

from __future__ import annotations

import json
import logging
import math
import operator
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Sequence

import botocore.exceptions
import botocore.session

from gameday.environments.local.context import LocalContext
from gameday import aws
from gameday.events import iso

log = logging.getLogger("gameday.alarms")

OK, ALARM, INSUFFICIENT_DATA = "OK", "ALARM", "INSUFFICIENT_DATA"
STATES = (OK, ALARM, INSUFFICIENT_DATA)

# ComparisonOperator -> (test, the words CloudWatch's reason text uses)
COMPARISONS = {
    "GreaterThanThreshold": (operator.gt, "greater than"),
    "GreaterThanOrEqualToThreshold": (operator.ge, "greater than or equal to"),
    "LessThanThreshold": (operator.lt, "less than"),
    "LessThanOrEqualToThreshold": (operator.le, "less than or equal to"),
}
MISSING_TREATMENTS = ("missing", "ignore", "breaching", "notBreaching")

# The guide's examples: EvaluationPeriods 3 -> "CloudWatch retrieves the 5 most recent data points".
EVALUATION_RANGE_EXTRA = 2
# moto's StateReason for an alarm no evaluation has touched yet
MOTO_CREATION_REASON = "Unchecked: Initial alarm creation"
# added to profile.metric_flush_s: the load balancers flush a sub-bucket ~10 ms after it closes
GRACE_MARGIN_S = 0.1
STATE_REASON_MAX = 1023  # SetAlarmState's limit
SUBJECT_MAX = 100         # SNS's limit


def evaluation_range(evaluation_periods: int) -> int:
    """How many periods back CloudWatch looks when some of the newest N are missing."""
    return evaluation_periods + EVALUATION_RANGE_EXTRA


@dataclass(frozen=True)
class Evaluation:
    state: str
    reason: str
    breaching_count: int                   # breaching datapoints among the evaluated ones (filled-in included)
    evaluated: tuple[float | None, ...]    # the datapoints the decision used, oldest -> newest; None = filled in
    filled: int                            # missing datapoints filled in with TreatMissingData
    missing: int                           # missing datapoints in the evaluation range
    value: float | None                    # newest real datapoint in the range (None if all missing)
    rule: str                              # which rule decided: data | treat_missing | premature_alarm | retain | no_data


def _stamp(ts: float | None) -> str:
    # CloudWatch writes a datapoint in a reason as "596.36 (16/09/25 16:58:00)": dd/mm/yy, UTC
    return "" if ts is None else " (" + datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%d/%m/%y %H:%M:%S") + ")"


def _points(items: Sequence[tuple[int, float]], timestamps: Sequence[float] | None) -> str:
    return "[" + ", ".join(f"{float(v)!r}{_stamp(timestamps[i] if timestamps else None)}" for i, v in items) + "]"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _Range:
    """One evaluation range with the alarm's settings, checked: what the rule's branches share."""

    def __init__(self, datapoints: Sequence[float | None], *, threshold: float, comparison: str,
                 evaluation_periods: int, datapoints_to_alarm: int | None, treat_missing_data: str,
                 current_state: str, timestamps: Sequence[float] | None):
        if comparison not in COMPARISONS:
            raise ValueError(f"ComparisonOperator {comparison!r} is not supported; one of {sorted(COMPARISONS)}")
        if treat_missing_data not in MISSING_TREATMENTS:
            raise ValueError(f"TreatMissingData {treat_missing_data!r} is not one of {list(MISSING_TREATMENTS)}")
        if current_state not in STATES:
            raise ValueError(f"current_state {current_state!r} is not one of {list(STATES)}")
        n = int(evaluation_periods)
        m = int(datapoints_to_alarm) if datapoints_to_alarm is not None else n
        if n < 1 or not 1 <= m <= n:
            raise ValueError(f"need 1 <= DatapointsToAlarm ({m}) <= EvaluationPeriods ({n})")
        pts = list(datapoints)
        if len(pts) < n:
            raise ValueError(f"the evaluation range has {len(pts)} datapoints, fewer than EvaluationPeriods ({n})")
        if timestamps is not None and len(timestamps) != len(pts):
            raise ValueError("timestamps must give one period start per datapoint")
        self.pts, self.n, self.m = pts, n, m
        self.current_state, self.timestamps = current_state, timestamps
        self.test, self.words = COMPARISONS[comparison]
        self.thr = float(threshold)
        self.thr_txt = f"the threshold ({self.thr!r})"
        self.reals = [(i, float(v)) for i, v in enumerate(pts) if v is not None]
        self.missing = len(pts) - len(self.reals)
        self.value = self.reals[-1][1] if self.reals else None

    def breaches(self, v: float) -> bool:
        return bool(self.test(float(v), self.thr))


def evaluate(
    datapoints: Sequence[float | None],
    *,
    threshold: float,
    comparison: str,
    evaluation_periods: int,
    datapoints_to_alarm: int | None = None,
    treat_missing_data: str = "missing",
    current_state: str = INSUFFICIENT_DATA,
    timestamps: Sequence[float] | None = None,
) -> Evaluation:
    """CloudWatch's alarm rule over one evaluation range.

    `datapoints` is the evaluation range, one value per period, oldest -> newest, None where
    the period has no datapoint; it must cover at least `evaluation_periods` periods (the
    evaluator passes `evaluation_range(N)`). `timestamps` (period starts, epoch s) only feed
    the reason text. DatapointsToAlarm defaults to EvaluationPeriods, as in PutMetricAlarm.
    """
    r = _Range(datapoints, threshold=threshold, comparison=comparison, evaluation_periods=evaluation_periods,
               datapoints_to_alarm=datapoints_to_alarm, treat_missing_data=treat_missing_data,
               current_state=current_state, timestamps=timestamps)
    # Enough real datapoints in the range: the newest N of them decide, missing ones are not needed.
    if len(r.reals) >= r.n:
        return _crossed(r, r.reals[-r.n:], 0, False)
    fill = r.n - len(r.reals)
    if treat_missing_data in ("breaching", "notBreaching"):
        # "fills in the missing data points with the result you specified ... any real data points
        # in the evaluation range, no matter when they were reported, are included"
        return _crossed(r, r.reals, fill, treat_missing_data == "breaching")
    return _real_only(r, treat_missing_data)


def _crossed(r: _Range, evaluated: list[tuple[int, float]], fill: int, fill_breaches: bool) -> Evaluation:
    """M-of-N over real datapoints plus `fill` filled-in ones."""
    m, timestamps, words, thr_txt = r.m, r.timestamps, r.words, r.thr_txt
    b = [(i, v) for i, v in evaluated if r.breaches(v)]
    ok = [(i, v) for i, v in evaluated if not r.breaches(v)]
    b_count = len(b) + (fill if fill_breaches else 0)
    state = ALARM if b_count >= m else OK
    total = len(evaluated) + fill
    if not evaluated:
        reason = (f"Threshold Crossed: no datapoints were received for {_plural(fill, 'period')} and "
                  f"{_plural(fill, 'missing datapoint')} {'was' if fill == 1 else 'were'} treated as "
                  f"[{'Breaching' if fill_breaches else 'NonBreaching'}].")
    elif state == ALARM:
        reason = (f"Threshold Crossed: {len(b)} out of the last {total} datapoints "
                  f"{_points(b, timestamps)} {'was' if len(b) == 1 else 'were'} {words} {thr_txt}")
    else:
        reason = (f"Threshold Crossed: {_plural(len(ok), 'datapoint')} {_points(ok, timestamps)} "
                  f"{'was' if len(ok) == 1 else 'were'} not {words} {thr_txt}")
    if evaluated and fill:
        reason += (f" and {_plural(fill, 'missing datapoint')} {'was' if fill == 1 else 'were'} treated as "
                   f"[{'Breaching' if fill_breaches else 'NonBreaching'}]")
    if evaluated:
        reason += (f" (minimum {_plural(m, 'datapoint')} for {r.current_state} -> {state} transition)."
                   if state != r.current_state else ".")
    return Evaluation(state, reason, b_count, tuple(v for _, v in evaluated) + (None,) * fill,
                      fill, r.missing, r.value, "treat_missing" if fill else "data")


def _real_only(r: _Range, treat_missing_data: str) -> Evaluation:
    """TreatMissingData missing / ignore with fewer than N real datapoints: only real ones count."""
    n, m, reals, missing, current_state = r.n, r.m, r.reals, r.missing, r.current_state
    if not reals:
        if treat_missing_data == "ignore":
            return Evaluation(current_state, "Retained: no datapoints in the evaluation range and missing data is "
                              "ignored.", 0, (), 0, missing, None, "retain")
        return Evaluation(INSUFFICIENT_DATA, f"Insufficient Data: {_plural(len(r.pts), 'datapoint')} "
                          f"{'was' if len(r.pts) == 1 else 'were'} unknown.", 0, (), 0, missing, None, "no_data")
    b = [(i, v) for i, v in reals if r.breaches(v)]
    if len(b) >= m or any(not r.breaches(v) for _, v in reals):
        return _crossed(r, reals, 0, False)
    # Every real datapoint breaches, but fewer than M of them.
    if treat_missing_data == "missing":
        oldest_age = len(r.pts) - b[0][0]  # the newest period is age 1
        if oldest_age >= m:
            reason = (f"Threshold Crossed: {_plural(len(b), 'datapoint')} "
                      f"{_points(b, r.timestamps)} {'was' if len(b) == 1 else 'were'} {r.words} {r.thr_txt} and "
                      f"the {_plural(missing, 'missing datapoint')} did not change the outcome (the oldest "
                      f"breaching datapoint is {oldest_age} periods old, at least {m})")
            reason += f" (minimum {_plural(m, 'datapoint')} for {current_state} -> {ALARM} transition)." \
                if current_state != ALARM else "."
            return Evaluation(ALARM, reason, len(b), tuple(v for _, v in reals), 0, missing, r.value,
                              "premature_alarm")
        return Evaluation(INSUFFICIENT_DATA, f"Insufficient Data: {_plural(n - len(reals), 'datapoint')} "
                          f"{'was' if n - len(reals) == 1 else 'were'} unknown.", len(b),
                          tuple(v for _, v in reals), 0, missing, r.value, "no_data")
    return Evaluation(current_state, f"Retained: {_plural(n - len(reals), 'datapoint')} missing and missing data "
                      "is ignored.", len(b), tuple(v for _, v in reals), 0, missing, r.value, "retain")


# -- the SNS notification ----------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def region_long_name(region: str) -> str:
    """'us-east-1' -> 'US East (N. Virginia)', from botocore's own endpoint data."""
    for partition in botocore.session.get_session().get_data("endpoints")["partitions"]:
        desc = partition.get("regions", {}).get(region, {}).get("description")
        if desc:
            return desc
    return region


def _cw_time(value: Any) -> str:
    """CloudWatch's notification timestamps: 2025-09-16T16:59:17.131+0000."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        return value
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


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
        "AlarmConfigurationUpdatedTimestamp": _cw_time(alarm.get("AlarmConfigurationUpdatedTimestamp")),
        "NewStateValue": new,
        "NewStateReason": reason,
        "StateChangeTime": _cw_time(change_time),
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
class _Known:
    """What the evaluator believes about one alarm."""
    state: str
    since: str
    moto_reason: str | None = None        # the StateReason we last wrote to moto
    attempted_reason: str | None = None   # a write that failed (it may still have landed)
    last_value: float | None = None
    reason: str = ""


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
        self._known: dict[str, dict[str, _Known]] = {r: {} for r in self.regions}
        self._stats: dict[str, _TickStats] = {r: _TickStats() for r in self.regions}
        self._steps: dict[str, int] = {r: int(prof.period_s) for r in self.regions}
        # the loop and a direct tick() call must not evaluate one region at the same time (double actions)
        self._tick_locks = {r: threading.Lock() for r in self.regions}
        self._warned: set[tuple[str, str]] = set()
        # actions run off the tick thread (CloudWatch runs them asynchronously), in order per region
        self._actions = {r: ThreadPoolExecutor(1, thread_name_prefix=f"alarm-actions-{r}") for r in self.regions}
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> "AlarmEvaluator":
        if self._started:
            return self
        self._started = True
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
            return {r: {name: {"state": k.state, "since": k.since, "last_value": k.last_value, "reason": k.reason}
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
        # The first evaluation is of the first period that ends after the start: an earlier one has
        # no data from metric sources started just before the evaluator (the stack arms the load
        # balancers' metrics, then starts us), so a breaching-when-missing alarm (HealthyHostCount)
        # would fire, and fail over, at every start.
        last: int | None = int(math.floor(time.time() / self._steps[region])) * self._steps[region]
        while not self._stop.is_set():
            step = self._steps[region]
            now = time.time()
            boundary = int(math.floor((now - self.grace_s) / step)) * step  # newest boundary whose data is in
            if last is not None and boundary <= last:
                nxt = (last // step + 1) * step
                self._stop.wait(max(0.0, nxt + self.grace_s - time.time()))
                continue
            if last is not None and boundary - last > step:
                with self._lock:
                    self._stats[region].missed_boundaries += (boundary - last) // step - 1
            try:
                self.tick(region, boundary)
            except Exception:  # noqa: BLE001 - one bad tick must not end evaluation
                log.exception("alarm evaluation in %s failed", region)
            last = boundary

    def tick(self, region: str, boundary: int | None = None) -> list[dict]:
        """Evaluate the region's alarms whose period ends at `boundary` (default: the newest boundary
        whose grace has passed). Returns the transitions made. Used by the loop; callable directly."""
        if boundary is None:
            boundary = int(math.floor((time.time() - self.grace_s) / self._steps[region])) * self._steps[region]
        with self._tick_locks[region]:
            return self._tick(region, boundary)

    def _tick(self, region: str, boundary: int) -> list[dict]:
        t0 = time.perf_counter()
        try:
            alarms = self._describe(region)
            due = [a for a in alarms if self._supported(region, a) and boundary % int(a["Period"]) == 0]
            series = self._fetch(region, due, boundary)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            self._unreachable(region, e)
            return []
        self._reachable(region)
        periods = {int(a["Period"]) for a in alarms if a.get("Period")}
        self._steps[region] = math.gcd(int(self.ctx.profile.period_s), *periods)
        transitions = []
        for a in due:
            try:
                tr = self._evaluate_alarm(region, a, boundary, series[a["AlarmName"]])
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
                self._unreachable(region, e)
                break
            transitions.extend(tr)
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
        why = None
        if a.get("Metrics"):
            why = "metric math alarms are not evaluated locally"
        elif not a.get("Statistic"):
            why = "extended statistics (percentiles) are not evaluated locally"
        elif a.get("ComparisonOperator") not in COMPARISONS:
            why = f"ComparisonOperator {a.get('ComparisonOperator')} (anomaly detection) is not evaluated locally"
        elif not a.get("Period"):
            why = "no Period"
        if why and (region, a["AlarmName"]) not in self._warned:
            self._warned.add((region, a["AlarmName"]))
            log.warning("alarm %s in %s skipped: %s", a["AlarmName"], region, why)
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
        cw = self._cw(region)
        for period, group in by_period.items():
            span = max(evaluation_range(int(a["EvaluationPeriods"])) for a in group)
            start = boundary - span * period
            queries = []
            for i, a in enumerate(group):
                stat = {"Metric": {"Namespace": a["Namespace"], "MetricName": a["MetricName"],
                                   "Dimensions": a.get("Dimensions", [])},
                        "Period": period, "Stat": a["Statistic"]}
                if a.get("Unit"):
                    stat["Unit"] = a["Unit"]
                queries.append({"Id": f"m{i}", "MetricStat": stat, "ReturnData": True})
            results: dict[str, list[float | None]] = {q["Id"]: [None] * span for q in queries}
            kwargs: dict = {"MetricDataQueries": queries,
                            "StartTime": datetime.fromtimestamp(start, tz=timezone.utc),
                            "EndTime": datetime.fromtimestamp(boundary, tz=timezone.utc)}
            while True:
                page = cw.get_metric_data(**kwargs)
                for r in page.get("MetricDataResults", []):
                    for ts, v in zip(r.get("Timestamps", []), r.get("Values", [])):
                        k = round((ts.timestamp() - start) / period)
                        if 0 <= k < span:
                            results[r["Id"]][k] = v
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
            for i, a in enumerate(group):
                out[a["AlarmName"]] = results[f"m{i}"][span - evaluation_range(int(a["EvaluationPeriods"])):]
        return out

    def _evaluate_alarm(self, region: str, a: dict, boundary: int, values: list[float | None]) -> list[dict]:
        name = a["AlarmName"]
        period = int(a["Period"])
        transitions: list[dict] = []
        current = self._current_state(region, a, transitions)
        starts = [boundary - (len(values) - i) * period for i in range(len(values))]
        ev = evaluate(values, threshold=a["Threshold"], comparison=a["ComparisonOperator"],
                      evaluation_periods=int(a["EvaluationPeriods"]),
                      datapoints_to_alarm=a.get("DatapointsToAlarm"),
                      treat_missing_data=a.get("TreatMissingData") or "missing",
                      current_state=current, timestamps=starts)
        with self._lock:
            known = self._known[region].get(name)
            if known:
                known.last_value = ev.value
        if ev.state != current:
            tr = self._transition(region, a, current, ev.state, ev.reason, ev.value,
                                  reason_data=self._reason_data(a, boundary, values, starts, ev))
            if tr:
                transitions.append(tr)
        else:
            self._sync(region, a, current, ev.reason)
        return transitions

    def _current_state(self, region: str, a: dict, transitions: list[dict]) -> str:
        """The state the alarm is in before this evaluation, reconciling what moto says."""
        name = a["AlarmName"]
        moto_state, moto_reason = a.get("StateValue", OK), a.get("StateReason", "")
        created = moto_reason == MOTO_CREATION_REASON
        with self._lock:
            known = self._known[region].get(name)
        if known is None:
            state = INSUFFICIENT_DATA if created else moto_state
            updated = a.get("StateUpdatedTimestamp")
            since = updated.timestamp() if isinstance(updated, datetime) else time.time()
            with self._lock:
                self._known[region][name] = _Known(state=state, since=iso(since),
                                                   moto_reason=None if created else moto_reason,
                                                   reason=moto_reason)
            return state
        if created:
            # PutMetricAlarm again on an existing alarm: CloudWatch leaves its state unchanged
            with self._lock:
                known.moto_reason = None
            return known.state
        if moto_state != known.state and moto_reason not in (known.moto_reason, known.attempted_reason):
            # someone called SetAlarmState: a state change like any other, with its actions
            tr = self._transition(region, a, known.state, moto_state, moto_reason, None,
                                  source="SetAlarmState", write=False)
            if tr:
                transitions.append(tr)
            return moto_state
        if moto_state != known.state:
            # our own earlier write landed although the call failed: the evaluation redoes that transition
            with self._lock:
                known.attempted_reason = None
        return known.state

    def _reason_data(self, a: dict, boundary: int, values: list, starts: list[int], ev: Evaluation) -> str:
        return json.dumps({
            "version": "1.0", "queryDate": _cw_time(time.time()),
            "startDate": _cw_time(starts[0]) if starts else "",
            "statistic": a.get("Statistic"), "period": int(a["Period"]),
            "recentDatapoints": [v for v in values if v is not None],
            "threshold": float(a["Threshold"]),
            "evaluatedDatapoints": [{"timestamp": _cw_time(t), "value": v}
                                    for t, v in zip(starts, values) if v is not None][-int(a["EvaluationPeriods"]):],
        })

    def _sync(self, region: str, a: dict, state: str, reason: str) -> None:
        """No transition, but moto shows something else (a new alarm moto calls OK, or one re-put):
        write our state without actions, so describe_alarms tells the truth."""
        with self._lock:
            known = self._known[region][a["AlarmName"]]
            in_sync = a.get("StateValue") == state and known.moto_reason is not None
        if in_sync:
            return
        self._cw(region).set_alarm_state(AlarmName=a["AlarmName"], StateValue=state,
                                         StateReason=reason[:STATE_REASON_MAX])
        with self._lock:
            known.moto_reason = reason[:STATE_REASON_MAX]
            known.reason = known.moto_reason

    def _transition(self, region: str, a: dict, old: str, new: str, reason: str, value: float | None, *,
                    reason_data: str | None = None, source: str = "evaluation", write: bool = True) -> dict | None:
        name = a["AlarmName"]
        reason = reason[:STATE_REASON_MAX]
        with self._lock:
            known = self._known[region][name]
        if write:
            try:
                kwargs = {"AlarmName": name, "StateValue": new, "StateReason": reason}
                if reason_data:
                    kwargs["StateReasonData"] = reason_data
                self._cw(region).set_alarm_state(**kwargs)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                known.attempted_reason = reason
                raise
        now = time.time()
        with self._lock:
            known.state, known.since = new, iso(now)
            known.moto_reason, known.attempted_reason, known.reason = reason, None, reason
        self.ctx.events.emit("alarm", region=region, alarm=name, old=old, new=new, reason=reason, value=value,
                             source=source)
        log.info("alarm %s in %s: %s -> %s (%s)", name, region, old, new, reason)
        topics = {ALARM: a.get("AlarmActions", []), OK: a.get("OKActions", []),
                  INSUFFICIENT_DATA: a.get("InsufficientDataActions", [])}[new]
        if a.get("ActionsEnabled", True) and topics:
            subject, message = alarm_notification(a, region=region, old=old, new=new, reason=reason, change_time=now)
            try:
                self._actions[region].submit(self._publish, region, name, new, list(topics), subject, message, now)
            except RuntimeError:  # stopping: the executor is shut down
                log.warning("alarm %s in %s: actions for %s dropped, evaluator stopping", name, region, new)
        return {"region": region, "alarm": name, "old": old, "new": new, "reason": reason, "value": value,
                "source": source}

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
                                     message_id=msg_id, after_s=round(time.time() - changed_at, 4))
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
                # with retries=0 a timeout may still have delivered; never publish twice
                log.warning("alarm %s in %s: publishing %s to %s failed: %s", alarm, region, new, arn, e)
                self.ctx.events.emit("alarm_action", region=region, alarm=alarm, new=new, topic=arn,
                                     error=f"{type(e).__name__}: {e}")

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
                s.unreachable_since = time.time()
        if first:
            log.warning("alarm evaluation in %s skipped: its moto does not answer (%s); retrying every period",
                        region, e)

    def _reachable(self, region: str) -> None:
        with self._lock:
            s = self._stats[region]
            since, s.unreachable_since = s.unreachable_since, None
        if since is not None:
            log.warning("alarm evaluation in %s resumed after %.1fs", region, time.time() - since)
