"""CloudWatch's alarm rules as a pure model: no threads, no sockets, no boto3, no clock reads.

Inputs are what CloudWatch would see (the alarm as describe_alarms returns it, one value per
period over the evaluation range, the time `now`); outputs are the new state and the decisions
the adapter (`alarms.AlarmEvaluator`) carries out against moto: write a state, run a state
change's actions. The parts:

- `evaluate()`: one evaluation range -> the state and CloudWatch's reason text (Period,
  EvaluationPeriods N, DatapointsToAlarm M, TreatMissingData, the evaluation range of N + 2).
- `step_alarm()`: the alarm's state machine at one period boundary: what the evaluator believed
  (`AlarmRecord`), reconciled with what moto shows (a new alarm starts in INSUFFICIENT_DATA, a
  re-put one keeps its state, a SetAlarmState is a state change with actions), then evaluated;
  a change is a `Transition` (actions run once per change), no change at most a `Sync`.
- `TickSchedule`: which period boundary is due at `now` (its data is in after the grace), the
  first one being the first that ends after the start; `QueryWindow`: the GetMetricData range
  for the alarms due at a boundary and where each returned datapoint lands.

Rules followed: CloudWatch user guide, "Alarm evaluation" and "Configuring how CloudWatch alarms
treat missing data" (docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarms-and-missing-data.html);
the choices made where the guide leaves room: docs/local-environment.md, "CloudWatch alarm evaluator".
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Sequence, Union

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
STATE_REASON_MAX = 1023  # SetAlarmState's limit


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


# -- timestamps ----------------------------------------------------------------------------------------------

def cw_time(value: Any) -> str:
    """CloudWatch's timestamps in notifications and reason data: 2025-09-16T16:59:17.131+0000."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        return value
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _epoch(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


# -- which alarms, which periods -----------------------------------------------------------------------------

def unsupported_reason(alarm: dict) -> str | None:
    """Why the local evaluator cannot evaluate this describe_alarms entry (None: it can)."""
    if alarm.get("Metrics"):
        return "metric math alarms are not evaluated locally"
    if not alarm.get("Statistic"):
        return "extended statistics (percentiles) are not evaluated locally"
    if alarm.get("ComparisonOperator") not in COMPARISONS:
        return f"ComparisonOperator {alarm.get('ComparisonOperator')} (anomaly detection) is not evaluated locally"
    if not alarm.get("Period"):
        return "no Period"
    return None


def is_due(alarm: dict, boundary: int) -> bool:
    """An alarm is evaluated at the end of each of its periods: boundaries that are multiples of Period."""
    return boundary % int(alarm["Period"]) == 0


def tick_step(period_s: int, alarm_periods: Sequence[int]) -> int:
    """The tick step that lands on every alarm's period boundary."""
    return math.gcd(int(period_s), *(int(p) for p in alarm_periods))


def period_starts(boundary: int, count: int, period: int) -> list[int]:
    """Start of each of the `count` periods ending at `boundary`, oldest first."""
    return [boundary - (count - i) * period for i in range(count)]


class TickSchedule:
    """Which period boundary to evaluate at `now`, for one region's loop.

    A boundary is due once `grace_s` has passed after it (the load balancers flush a period's
    last sub-bucket just after it ends). The first due boundary is the first one that ends after
    `started_at`: an earlier period has no data from metric sources started just before the
    evaluator (the stack arms the load balancers' metrics, then starts it), so a
    breaching-when-missing alarm (HealthyHostCount) would fire, and fail over, at every start."""

    def __init__(self, step: int, grace_s: float, started_at: float):
        self.step, self.grace_s = int(step), float(grace_s)
        self.last = int(math.floor(started_at / self.step)) * self.step

    def newest_boundary(self, now: float) -> int:
        """The newest boundary whose grace has passed at `now`."""
        return int(math.floor((now - self.grace_s) / self.step)) * self.step

    def due(self, now: float) -> int | None:
        """The boundary to evaluate now, or None when the newest one was already evaluated."""
        boundary = self.newest_boundary(now)
        return boundary if boundary > self.last else None

    def wake_at(self) -> float:
        """When the next boundary becomes due."""
        return (self.last // self.step + 1) * self.step + self.grace_s

    def done(self, boundary: int) -> int:
        """Record `boundary` as evaluated; returns how many boundaries in between were passed over."""
        missed = max(0, (boundary - self.last) // self.step - 1)
        self.last = boundary
        return missed


@dataclass(frozen=True)
class QueryWindow:
    """One GetMetricData range for the alarms of one Period due at `boundary`: `span` periods
    ending at `boundary`, enough for the largest evaluation range among them."""
    period: int
    start: int
    span: int

    @classmethod
    def for_alarms(cls, alarms: Sequence[dict], boundary: int) -> "QueryWindow":
        periods = {int(a["Period"]) for a in alarms}
        if len(periods) != 1:
            raise ValueError(f"one window per Period, got {sorted(periods)}")
        period = periods.pop()
        span = max(evaluation_range(int(a["EvaluationPeriods"])) for a in alarms)
        return cls(period, boundary - span * period, span)

    def slot(self, ts: float) -> int | None:
        """Which period of the window a datapoint stamped `ts` (a period start) belongs to."""
        k = round((ts - self.start) / self.period)
        return k if 0 <= k < self.span else None

    def series_for(self, alarm: dict, values: Sequence[float | None]) -> list[float | None]:
        """The alarm's own evaluation range: the newest N + 2 of the window's `values`."""
        return list(values[self.span - evaluation_range(int(alarm["EvaluationPeriods"])):])


# -- the alarm's state machine -------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlarmRecord:
    """What the evaluator believes about one alarm."""
    state: str
    since: float                          # epoch s of the last state change
    moto_reason: str | None = None        # the StateReason we last wrote to moto (None: moto's own)
    attempted_reason: str | None = None   # a write that failed (it may still have landed)
    last_value: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Transition:
    """A state change: the adapter writes it to moto (write), emits an "alarm" event and runs the
    new state's actions. source: "evaluation" or "SetAlarmState" (already in moto)."""
    old: str
    new: str
    reason: str
    value: float | None
    source: str = "evaluation"
    write: bool = True
    reason_data: str | None = None


@dataclass(frozen=True)
class Sync:
    """No state change, but moto shows something else (a new alarm moto calls OK, a re-put one):
    write the state without actions, so describe_alarms tells the truth."""
    state: str
    reason: str


Decision = Union[Transition, Sync]


@dataclass(frozen=True)
class AlarmStep:
    record: AlarmRecord                # once every decision is carried out
    decisions: tuple[Decision, ...]    # in order
    evaluation: Evaluation
    on_write_failure: AlarmRecord      # what to keep when the write of the last decision fails


def _changed(record: AlarmRecord, tr: Transition, now: float) -> AlarmRecord:
    return replace(record, state=tr.new, since=now, moto_reason=tr.reason, attempted_reason=None, reason=tr.reason)


def reconcile(record: AlarmRecord | None, alarm: dict, now: float) -> tuple[AlarmRecord, Transition | None]:
    """The alarm's state before this evaluation, from our record and what moto shows."""
    moto_state, moto_reason = alarm.get("StateValue", OK), alarm.get("StateReason", "")
    created = moto_reason == MOTO_CREATION_REASON
    if record is None:
        # PutMetricAlarm puts a new alarm in INSUFFICIENT_DATA, then evaluates it; moto says OK
        updated = _epoch(alarm.get("StateUpdatedTimestamp"))
        return AlarmRecord(state=INSUFFICIENT_DATA if created else moto_state,
                           since=now if updated is None else updated,
                           moto_reason=None if created else moto_reason, reason=moto_reason), None
    if created:
        # PutMetricAlarm again on an existing alarm: "its state is left unchanged"
        return replace(record, moto_reason=None), None
    if moto_state != record.state and moto_reason not in (record.moto_reason, record.attempted_reason):
        # someone called SetAlarmState: a state change like any other, with its actions
        tr = Transition(record.state, moto_state, moto_reason[:STATE_REASON_MAX], None,
                        source="SetAlarmState", write=False)
        return _changed(record, tr, now), tr
    if moto_state != record.state:
        # our own earlier write landed although the call failed: the evaluation redoes that transition
        return replace(record, attempted_reason=None), None
    return record, None


def reason_data(alarm: dict, values: Sequence[float | None], starts: Sequence[int], now: float) -> str:
    """SetAlarmState's StateReasonData, in CloudWatch's form."""
    return json.dumps({
        "version": "1.0", "queryDate": cw_time(now),
        "startDate": cw_time(starts[0]) if starts else "",
        "statistic": alarm.get("Statistic"), "period": int(alarm["Period"]),
        "recentDatapoints": [v for v in values if v is not None],
        "threshold": float(alarm["Threshold"]),
        "evaluatedDatapoints": [{"timestamp": cw_time(t), "value": v}
                                for t, v in zip(starts, values) if v is not None][-int(alarm["EvaluationPeriods"]):],
    })


def step_alarm(record: AlarmRecord | None, alarm: dict, values: Sequence[float | None], boundary: int,
               now: float) -> AlarmStep:
    """One alarm at one period boundary: `alarm` is its describe_alarms entry, `values` its
    evaluation range ending at `boundary` (oldest first, None = missing)."""
    rec, forced = reconcile(record, alarm, now)
    decisions: list[Decision] = [forced] if forced else []
    starts = period_starts(boundary, len(values), int(alarm["Period"]))
    ev = evaluate(values, threshold=alarm["Threshold"], comparison=alarm["ComparisonOperator"],
                  evaluation_periods=int(alarm["EvaluationPeriods"]),
                  datapoints_to_alarm=alarm.get("DatapointsToAlarm"),
                  treat_missing_data=alarm.get("TreatMissingData") or "missing",
                  current_state=rec.state, timestamps=starts)
    rec = replace(rec, last_value=ev.value)
    reason = ev.reason[:STATE_REASON_MAX]
    if ev.state != rec.state:
        tr = Transition(rec.state, ev.state, reason, ev.value, reason_data=reason_data(alarm, values, starts, now))
        return AlarmStep(_changed(rec, tr, now), tuple(decisions + [tr]), ev,
                         on_write_failure=replace(rec, attempted_reason=reason))
    if alarm.get("StateValue") == rec.state and rec.moto_reason is not None:
        return AlarmStep(rec, tuple(decisions), ev, on_write_failure=rec)
    return AlarmStep(replace(rec, moto_reason=reason, reason=reason), tuple(decisions + [Sync(rec.state, reason)]),
                     ev, on_write_failure=rec)
