"""CloudWatch's alarm rules (environments/local/alarm_model.py) on a fake clock: no moto, no threads.

The source is the CloudWatch user guide, "Using Amazon CloudWatch alarms" -> "Configuring how
CloudWatch alarms treat missing data"
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarms-and-missing-data.html; the
docs corpus holds it as docs.aws.amazon.com/ja_jp/AmazonCloudWatch/latest/monitoring/alarms-and-missing-data.md,
the same text is in awsdocs/amazon-cloudwatch-user-guide, doc_source/AlarmThatSendsEmail.md):
its two tables (one evaluation each), then timelines that run the alarm's state machine period
after period the way the adapter does, each row asserting the state after every period's boundary.
In a row, 0 is a non-breaching datapoint, X a breaching one, - a missing one, oldest first;
CloudWatch retrieves the 5 most recent datapoints for EvaluationPeriods 3.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest

from gameday.clock import FakeClock
from gameday.environments.local.alarm_model import (
    ALARM, INSUFFICIENT_DATA, MOTO_CREATION_REASON, OK, AlarmRecord, QueryWindow, Sync, TickSchedule, Transition,
    evaluate, evaluation_range, is_due, reason_data, step_alarm, tick_step, unsupported_reason)

RETAIN = "retain"  # the tables' "Retain current state"
TREATMENTS = ("missing", "ignore", "breaching", "notBreaching")  # the tables' column order
THRESHOLD = 10.0
STATE_CHARS = {"I": INSUFFICIENT_DATA, "O": OK, "A": ALARM}


def _points(row: str) -> list[float | None]:
    """'0 - X - X' -> [5.0, None, 15.0, None, 15.0] for a GreaterThanThreshold 10 alarm."""
    return [{"0": THRESHOLD - 5, "X": THRESHOLD + 5, "-": None}[c] for c in row.replace(" ", "")]


# -- the guide's tables: one evaluation of a 5-period range ------------------------------------------------

# (datapoints, MISSING, IGNORE, BREACHING, NOT BREACHING), Datapoints to Alarm = Evaluation Periods = 3
TABLE_3_OF_3 = [
    ("0 - X - X", OK, OK, OK, OK),
    ("0 - - - -", OK, OK, OK, OK),
    ("- - - - -", INSUFFICIENT_DATA, RETAIN, ALARM, OK),
    ("0 X X - X", ALARM, ALARM, ALARM, ALARM),
    ("- - - - X", INSUFFICIENT_DATA, RETAIN, ALARM, OK),
    ("X - - - -", ALARM, RETAIN, ALARM, OK),
]
# the same, Datapoints to Alarm 2 of Evaluation Periods 3 (an M out of N alarm)
TABLE_2_OF_3 = [
    ("0 - X - X", ALARM, ALARM, ALARM, ALARM),
    ("0 0 X 0 X", ALARM, ALARM, ALARM, ALARM),
    ("0 - X - -", OK, OK, ALARM, OK),
    ("- - - - 0", OK, OK, ALARM, OK),
    ("- - - - X", INSUFFICIENT_DATA, RETAIN, ALARM, OK),
]


def _table_cases():
    for m, table in ((3, TABLE_3_OF_3), (2, TABLE_2_OF_3)):
        for row, *expected in table:
            for treatment, want in zip(TREATMENTS, expected):
                yield pytest.param(m, row, treatment, want, id=f"{m}of3[{row.replace(' ', '')}]-{treatment}")


@pytest.mark.parametrize("m, row, treatment, want", list(_table_cases()))
def test_cloudwatch_missing_data_tables(m, row, treatment, want):
    # Every cell of both documented tables. A rule that fills missing points when enough real
    # ones exist, fills more than needed, ignores real points outside the newest N, or misses the
    # "oldest breaching point is old enough" case (row X----) fails a cell here.
    pts = _points(row)
    assert len(pts) == evaluation_range(3)
    # "Retain current state" must keep whatever the state was; other cells must not depend on it
    for current in (OK, ALARM, INSUFFICIENT_DATA):
        ev = evaluate(pts, threshold=THRESHOLD, comparison="GreaterThanThreshold", evaluation_periods=3,
                      datapoints_to_alarm=m, treat_missing_data=treatment, current_state=current)
        expected = current if want == RETAIN else want
        assert ev.state == expected, f"{row} M={m} {treatment} from {current}: {ev}"
        assert ev.reason, "CloudWatch always gives a reason"


@pytest.mark.parametrize("comparison, at, below, above", [
    # value == threshold is the boundary: only the "or equal" operators breach on it
    ("GreaterThanThreshold", OK, OK, ALARM),
    ("GreaterThanOrEqualToThreshold", ALARM, OK, ALARM),
    ("LessThanThreshold", OK, ALARM, OK),
    ("LessThanOrEqualToThreshold", ALARM, ALARM, OK),
])
def test_comparison_operators_at_the_threshold(comparison, at, below, above):
    # A strict/non-strict mix-up (> for >=, or < for <=) or a swapped direction fails here.
    for value, want in ((500.0, at), (499.999, below), (500.001, above)):
        ev = evaluate([value], threshold=500, comparison=comparison, evaluation_periods=1)
        assert ev.state == want, f"{value} {comparison} 500 -> {ev.state}, want {want}"


def test_only_the_newest_n_real_datapoints_decide():
    # Enough real points: missing ones are not filled in, older real ones do not count.
    # (A rule counting breaches over the whole range would say ALARM for 2 of 3 here.)
    ev = evaluate([15.0, 15.0, 5.0, None, 5.0], threshold=10, comparison="GreaterThanThreshold",
                  evaluation_periods=2, datapoints_to_alarm=2, treat_missing_data="breaching")
    assert (ev.state, ev.filled) == (OK, 0)


def test_reason_text_matches_cloudwatchs_wording():
    # The failover Lambda and humans read NewStateReason; keep CloudWatch's own phrasing.
    ts = datetime(2025, 6, 3, 17, 43, tzinfo=timezone.utc).timestamp()
    ev = evaluate([1234.0], threshold=0, comparison="GreaterThanThreshold", evaluation_periods=1,
                  current_state=OK, timestamps=[ts])
    assert ev.reason == ("Threshold Crossed: 1 out of the last 1 datapoints [1234.0 (03/06/25 17:43:00)] was "
                         "greater than the threshold (0.0) (minimum 1 datapoint for OK -> ALARM transition).")


@pytest.mark.parametrize("kwargs", [
    {"comparison": "GreaterThanUpperThreshold"},
    {"treat_missing_data": "zero"},
    {"datapoints_to_alarm": 4},
    {"evaluation_periods": 6},
])
def test_invalid_alarm_definitions_are_refused(kwargs):
    base = {"threshold": 1, "comparison": "GreaterThanThreshold", "evaluation_periods": 3}
    with pytest.raises(ValueError):
        evaluate([1.0] * 5, **{**base, **kwargs})


# -- the state machine over time ------------------------------------------------------------------------------

PERIOD_S = 60
GRACE_S = 0.3


class Cloud:
    """The adapter's wiring on a FakeClock with moto replaced by a dict: the alarm as describe_alarms
    returns it, one datapoint per period. Carries out the model's decisions as AlarmEvaluator does."""

    def __init__(self, clock: FakeClock, *, n=1, m=None, treat="notBreaching", comparison="GreaterThanThreshold",
                 threshold=THRESHOLD):
        self.clock = clock
        self.alarm = {"AlarmName": "a", "Period": PERIOD_S, "EvaluationPeriods": n, "DatapointsToAlarm": m or n,
                      "Threshold": threshold, "ComparisonOperator": comparison, "TreatMissingData": treat,
                      "Statistic": "Sum", "StateValue": OK, "StateReason": MOTO_CREATION_REASON}
        self.schedule = TickSchedule(PERIOD_S, GRACE_S, clock.time())
        self.data: dict[int, float] = {}
        self.record: AlarmRecord | None = None
        self.announced: list[tuple[str, str, str]] = []   # (old, new, source): events + actions
        self.writes = 0                                   # SetAlarmState calls
        self.fail_next_write = False

    def put(self, value: float | None) -> None:
        """A datapoint in the period that is open now (None: nothing published)."""
        if value is not None:
            self.data[math.floor(self.clock.time() / PERIOD_S) * PERIOD_S] = value

    def set_alarm_state(self, state: str, reason: str) -> None:
        self.alarm.update(StateValue=state, StateReason=reason)

    def run_due(self):
        boundary = self.schedule.due(self.clock.time())
        if boundary is None:
            return None
        window = QueryWindow.for_alarms([self.alarm], boundary)
        values = [self.data.get(window.start + k * PERIOD_S) for k in range(window.span)]
        step = step_alarm(self.record, dict(self.alarm), window.series_for(self.alarm, values), boundary,
                          self.clock.time())
        self.record = step.record
        for d in step.decisions:
            if isinstance(d, Sync) or d.write:
                self.writes += 1
                if self.fail_next_write:  # a timed-out call whose write still landed in moto
                    self.fail_next_write = False
                    self.set_alarm_state(d.state if isinstance(d, Sync) else d.new, d.reason)
                    self.record = step.on_write_failure
                    break
                self.set_alarm_state(d.state if isinstance(d, Sync) else d.new, d.reason)
            if isinstance(d, Transition):
                self.announced.append((d.old, d.new, d.source))
        self.schedule.done(boundary)
        return boundary


def _run(cloud: Cloud, clock: FakeClock, values) -> str:
    """Publish one value per period, evaluating at each boundary + grace; the states, one char each."""
    states = ""
    for v in values:
        period_start = math.floor(clock.time() / PERIOD_S) * PERIOD_S
        cloud.put(v)
        clock.advance_to(period_start + PERIOD_S + GRACE_S)
        assert cloud.run_due() == period_start + PERIOD_S, "the boundary due is the end of the period just over"
        assert cloud.run_due() is None, "one evaluation per boundary"
        states += {v: k for k, v in STATE_CHARS.items()}[cloud.record.state]
    return states


def _values(row):
    return _points(row) if isinstance(row, str) else row


I, O, A, SET = INSUFFICIENT_DATA, OK, ALARM, "SetAlarmState"
EV = "evaluation"
# (settings, datapoints per period, state after each period's boundary, transitions announced)
TIMELINES = {
    "new alarm, no data, notBreaching: INSUFFICIENT_DATA -> OK at the first boundary":
        ({}, "-", "O", [(I, O, EV)]),
    "new alarm, no data, missing: stays INSUFFICIENT_DATA, nothing announced":
        ({"treat": "missing"}, "---", "III", []),
    "new alarm, no data, ignore: keeps INSUFFICIENT_DATA":
        ({"treat": "ignore"}, "--", "II", []),
    "new alarm, no data, breaching: ALARM at the first boundary":
        ({"treat": "breaching"}, "-", "A", [(I, A, EV)]),
    "breaching stays ALARM: one transition, no repeat":
        ({}, "XXXX", "AAAA", [(I, A, EV)]),
    "N=1: a breaching datapoint decides for the N+2 periods of the range, then ALARM -> OK (notBreaching)":
        ({}, "0XX---", "OAAAAO", [(I, O, EV), (O, A, EV), (A, O, EV)]),
    "N=1 missing: ALARM -> INSUFFICIENT_DATA once the range is empty":
        ({"treat": "missing"}, "X---", "AAAI", [(I, A, EV), (A, I, EV)]),
    "2 of 3: two breaching among the newest three":
        ({"n": 3, "m": 2, "treat": "missing"}, "0X0X", "OOOA", [(I, O, EV), (O, A, EV)]),
    "2 of 3: one breaching of three stays OK":
        ({"n": 3, "m": 2, "treat": "missing"}, "0X00X0", "OOOOOO", [(I, O, EV)]),
    "3 of 3 missing: too few real datapoints, all breaching: INSUFFICIENT_DATA until one does not breach":
        ({"n": 3, "treat": "missing"}, "XX0XXX", "IIOOOA", [(I, O, EV), (O, A, EV)]),
    "3 of 3 missing: the guide's X---- row, reached period by period":
        ({"n": 3, "treat": "missing"}, "X-----", "IIAAAI", [(I, A, EV), (A, I, EV)]),
    "3 of 3 breaching: missing periods complete the three once the non-breaching one left the range":
        ({"n": 3, "treat": "breaching"}, "0XX---", "OOOOOA", [(I, O, EV), (O, A, EV)]),
    "GreaterThanThreshold 10 over 10, 9, 11":
        ({"comparison": "GreaterThanThreshold"}, [10.0, 9.0, 11.0], "OOA", [(I, O, EV), (O, A, EV)]),
    "GreaterThanOrEqualToThreshold 10 over 10, 9, 11":
        ({"comparison": "GreaterThanOrEqualToThreshold"}, [10.0, 9.0, 11.0], "AOA",
         [(I, A, EV), (A, O, EV), (O, A, EV)]),
    "LessThanThreshold 10 over 10, 9, 11":
        ({"comparison": "LessThanThreshold"}, [10.0, 9.0, 11.0], "OAO", [(I, O, EV), (O, A, EV), (A, O, EV)]),
    "LessThanOrEqualToThreshold 10 over 10, 9, 11":
        ({"comparison": "LessThanOrEqualToThreshold"}, [10.0, 9.0, 11.0], "AAO", [(I, A, EV), (A, O, EV)]),
    "HealthyHostCount < 1, breaching: hosts stop reporting -> ALARM once the last count left the range":
        ({"comparison": "LessThanThreshold", "threshold": 1, "treat": "breaching"}, [2.0, None, None, None],
         "OOOA", [(I, O, EV), (O, A, EV)]),
}


@pytest.mark.parametrize("settings, row, want, announced", TIMELINES.values(), ids=TIMELINES.keys())
def test_alarm_timeline(settings, row, want, announced):
    clock = FakeClock(start=1_767_225_600.0 + 7.5)  # mid-period: the first boundary is the end of this one
    cloud = Cloud(clock, **settings)
    assert _run(cloud, clock, _values(row)) == want
    assert cloud.announced == announced
    # moto shows the state after each boundary; it is written once per change (plus the first sync
    # of a new alarm that stays INSUFFICIENT_DATA, which moto calls OK), never at every period
    assert cloud.alarm["StateValue"] == STATE_CHARS[want[-1]]
    assert cloud.writes == len(announced) + (1 if want[0] == "I" else 0)


def test_set_alarm_state_is_a_transition_with_actions_until_the_next_evaluation():
    # CloudWatch runs the actions of SetAlarmState's state; the next evaluation decides again.
    clock = FakeClock()
    cloud = Cloud(clock)
    assert _run(cloud, clock, [5.0]) == "O"
    cloud.set_alarm_state(ALARM, "forced by the test")
    assert _run(cloud, clock, [5.0]) == "O"
    assert cloud.announced == [(I, O, EV), (O, A, SET), (A, O, EV)]
    # moto already holds the forced state: only the evaluation's own change is written
    assert cloud.writes == 2


def test_put_metric_alarm_again_keeps_the_state_and_only_resyncs_moto():
    # "When you update an existing alarm, its state is left unchanged"; moto resets it to OK.
    clock = FakeClock()
    cloud = Cloud(clock)
    assert _run(cloud, clock, [50.0]) == "A"
    cloud.set_alarm_state(OK, MOTO_CREATION_REASON)
    assert _run(cloud, clock, [50.0]) == "A"
    assert cloud.announced == [(I, A, EV)]
    assert cloud.alarm["StateValue"] == ALARM and cloud.writes == 2


@pytest.mark.parametrize("landed", [True, False])
def test_a_failed_write_is_redone_once_and_announced_once(landed):
    # A SetAlarmState call that timed out may have landed: either way the next evaluation makes the
    # change once; a landed write must not read as someone else's SetAlarmState.
    clock = FakeClock()
    cloud = Cloud(clock)
    assert _run(cloud, clock, [5.0]) == "O"
    cloud.fail_next_write = True
    _run(cloud, clock, [50.0])
    assert cloud.record.state == OK and cloud.record.attempted_reason
    if not landed:
        cloud.set_alarm_state(OK, cloud.record.moto_reason)
    assert _run(cloud, clock, [50.0]) == "A"
    assert cloud.announced == [(I, O, EV), (O, A, EV)]


def test_an_alarm_seen_first_after_a_restart_keeps_moto_state_and_its_time():
    updated = datetime(2026, 1, 1, tzinfo=timezone.utc)
    alarm = {"AlarmName": "a", "Period": 60, "EvaluationPeriods": 1, "Threshold": 10.0,
             "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
             "StateValue": ALARM, "StateReason": "earlier evaluation", "StateUpdatedTimestamp": updated}
    step = step_alarm(None, alarm, [50.0, None, None], 1_767_225_900, now=1_767_225_900.3)
    assert step.decisions == () and step.record.state == ALARM
    assert step.record.since == updated.timestamp()


def test_reason_data_carries_the_evaluated_datapoints():
    alarm = {"Period": 60, "EvaluationPeriods": 1, "Threshold": 10.0, "Statistic": "Sum"}
    data = json.loads(reason_data(alarm, [None, 3.0, 12.0], [0, 60, 120], now=180.25))
    assert data["queryDate"] == "1970-01-01T00:03:00.250+0000"
    assert data["recentDatapoints"] == [3.0, 12.0]
    assert data["evaluatedDatapoints"] == [{"timestamp": "1970-01-01T00:02:00.000+0000", "value": 12.0}]


# -- which boundary, which datapoints ---------------------------------------------------------------------------

@pytest.mark.parametrize("started, now, due", [
    (1000.5, 1000.5, None),        # nothing before the start is evaluated
    (1000.5, 1005.29, None),       # the period [1000, 1005) ended, its grace has not passed
    (1000.5, 1005.3, 1005),        # boundary + grace
    (1000.5, 1017.0, 1015),        # late: the newest boundary, not every one in between
    (1000.0, 1000.3, None),        # started on a boundary: that period was not watched
    (1000.0, 1005.3, 1005),
])
def test_the_boundary_due(started, now, due):
    schedule = TickSchedule(5, 0.3, started)
    assert schedule.due(now) == due


def test_schedule_wakes_at_the_next_boundary_and_counts_missed_ones():
    schedule = TickSchedule(5, 0.3, 1000.5)
    assert schedule.wake_at() == pytest.approx(1005.3)
    assert schedule.done(1005) == 0
    assert schedule.due(1010.29) is None and schedule.wake_at() == pytest.approx(1010.3)
    assert schedule.done(1020) == 2  # 1010 and 1015 were passed over


@pytest.mark.parametrize("periods, step", [([], 5), ([5, 10], 5), ([2], 1), ([10, 15], 5)])
def test_tick_step_lands_on_every_alarms_boundary(periods, step):
    assert tick_step(5, periods) == step


def test_query_window_covers_the_largest_range_and_slots_by_period_start():
    alarms = [{"Period": 60, "EvaluationPeriods": 1}, {"Period": 60, "EvaluationPeriods": 3}]
    w = QueryWindow.for_alarms(alarms, 600)
    assert (w.start, w.span) == (300, 5)
    assert [w.slot(t) for t in (300, 359.6, 540, 600, 240)] == [0, 1, 4, None, None]
    assert w.series_for(alarms[0], [1, 2, 3, 4, 5]) == [3, 4, 5]
    assert w.series_for(alarms[1], [1, 2, 3, 4, 5]) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        QueryWindow.for_alarms([{"Period": 60, "EvaluationPeriods": 1}, {"Period": 10, "EvaluationPeriods": 1}], 600)


@pytest.mark.parametrize("alarm, due_at_120, why", [
    ({"Period": 60, "Statistic": "Sum", "ComparisonOperator": "GreaterThanThreshold"}, True, None),
    ({"Period": 90, "Statistic": "Sum", "ComparisonOperator": "GreaterThanThreshold"}, False, None),
    ({"Period": 60, "ExtendedStatistic": "p99", "ComparisonOperator": "GreaterThanThreshold"}, True, "extended"),
    ({"Period": 60, "Statistic": "Sum", "ComparisonOperator": "LessThanLowerThreshold"}, True, "anomaly"),
    ({"Metrics": [{}], "Period": 60, "Statistic": "Sum"}, True, "metric math"),
])
def test_which_alarms_are_evaluated_at_a_boundary(alarm, due_at_120, why):
    assert is_due(alarm, 120) == due_at_120
    reason = unsupported_reason(alarm)
    assert (reason is None) if why is None else (why in reason)
