"""The alarm evaluator: CloudWatch's documented rule (pure `evaluate()`), and the component
against real moto servers, publishing the real alarm notification through moto's SNS.

The tables are the CloudWatch user guide's "How alarm state is evaluated when data is
missing" (awsdocs/amazon-cloudwatch-user-guide, doc_source/AlarmThatSendsEmail.md; the same
text is at docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarms-and-missing-data.html).
In a row, 0 is a non-breaching datapoint, X a breaching one, - a missing one, oldest first;
CloudWatch retrieves the 5 most recent datapoints for EvaluationPeriods 3.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gameday.assertions.eventually import eventually
from gameday.environments.local.alarms import (ALARM, INSUFFICIENT_DATA, OK, AlarmEvaluator, evaluate,
                                       evaluation_range)
from gameday.environments.local.provision import NAMESPACE
from gameday.aws import LOCAL_ACCOUNT_ID
from gameday.config import GamedayConfig
from tests.support import provisioned_context

RETAIN = "retain"  # the tables' "Retain current state"
TREATMENTS = ("missing", "ignore", "breaching", "notBreaching")  # the tables' column order
THRESHOLD = 10.0


def _points(row: str) -> list[float | None]:
    """'0 - X - X' -> [5.0, None, 15.0, None, 15.0] for a GreaterThanThreshold 10 alarm."""
    return [{"0": THRESHOLD - 5, "X": THRESHOLD + 5, "-": None}[c] for c in row.split()]


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


# -- the component, against real moto --------------------------------------------------------------------

PERIOD_S = 1
LOCAL_PROFILE = {"period_s": PERIOD_S, "evaluation_periods": 1, "datapoints_to_alarm": 1, "metric_flush_s": 0.2}
# A datapoint keeps deciding for evaluation_range(1) periods; then a tick (grace + calls on a busy
# 2-core machine) and SNS delivery. Deadlines are derived from the profile plus that margin.
MARGIN_S = 5.0


def _deadline(periods: int) -> float:
    return periods * PERIOD_S + MARGIN_S


class SnsSink:
    """An http endpoint on loopback, subscribed to a topic like any SNS subscriber."""

    def __init__(self):
        self.messages: list[dict] = []
        self.lock = threading.Lock()
        self.slow_once: dict[str, float] = {}  # AlarmName -> seconds its first delivery is held
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                hold = sink._hold_for(body)
                if hold:
                    time.sleep(hold)  # the fault itself: a slow subscriber holding moto's Publish
                with sink.lock:
                    sink.messages.append({"at": time.time(), "body": body, "held": hold})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def _hold_for(self, body: dict) -> float:
        try:
            name = json.loads(body.get("Message", "")).get("AlarmName")
        except (ValueError, AttributeError):
            return 0.0
        with self.lock:
            return self.slow_once.pop(name, 0.0)

    def alarm_messages(self, alarm_name: str) -> list[dict]:
        """The notifications for one alarm, each with its parsed Message."""
        with self.lock:
            out = []
            for m in self.messages:
                body = m["body"]
                if body.get("Type") != "Notification":
                    continue
                msg = json.loads(body["Message"])
                if msg.get("AlarmName") == alarm_name:
                    out.append({**body, "Message": msg, "received_at": m["at"], "held": m["held"]})
            return out

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def env():
    cfg = GamedayConfig.model_validate({"profiles": {"local": LOCAL_PROFILE}})
    with provisioned_context(cfg) as ctx:
        sink = SnsSink()
        for region, topic in ctx.provisioned.topic_arns.items():
            ctx.internal_client("sns", region).subscribe(TopicArn=topic, Protocol="http", Endpoint=sink.url)
        evaluator = AlarmEvaluator(ctx).start()
        try:
            yield ctx, evaluator, sink
        finally:
            evaluator.stop()
            sink.stop()


_counter = iter(range(10**6))


def _make_alarm(ctx, region="us-east-1", *, metric="RequestCount", statistic="Sum", threshold=500.0,
                comparison="GreaterThanThreshold", treat="notBreaching", actions=True) -> tuple[str, str]:
    """A seed-like alarm on its own load balancer name, so tests do not see each other's data."""
    n = next(_counter)
    name, lb = f"test-{metric}-{n}-{region}", f"test-lb-{n}"
    topic = ctx.provisioned.topic_arns[region]
    ctx.internal_client("cloudwatch", region).put_metric_alarm(
        AlarmName=name, AlarmDescription=f"test alarm {n}", Namespace=NAMESPACE, MetricName=metric,
        Dimensions=[{"Name": "LoadBalancer", "Value": lb}], Statistic=statistic, Period=PERIOD_S,
        EvaluationPeriods=1, DatapointsToAlarm=1, Threshold=threshold, ComparisonOperator=comparison,
        TreatMissingData=treat, ActionsEnabled=actions, AlarmActions=[topic], OKActions=[topic])
    return name, lb


def _put(ctx, region, lb, *values, metric="RequestCount"):
    """Datapoints with one timestamp (now), so they fall in one period."""
    now = datetime.now(timezone.utc)
    ctx.internal_client("cloudwatch", region).put_metric_data(Namespace=NAMESPACE, MetricData=[{
        "MetricName": metric, "Dimensions": [{"Name": "LoadBalancer", "Value": lb}], "Value": v,
        "Timestamp": now} for v in values])


def _moto_state(ctx, region, name) -> str:
    return ctx.internal_client("cloudwatch", region).describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


def _events(ctx, name) -> list[dict]:
    return [e for e in ctx.events.since(0, kind="alarm") if e["alarm"] == name]


def _wait_state(ctx, region, name, state, periods, what):
    def check():
        events = _events(ctx, name)
        assert events and events[-1]["new"] == state, f"alarm events so far: {[(e['old'], e['new']) for e in events]}"
        assert _moto_state(ctx, region, name) == state
        return events[-1]
    return eventually(check, deadline_s=_deadline(periods), what=what)


def _fail(msg):
    raise AssertionError(msg)


def _wait_notified(sink, name, states):
    def check():
        got = [m["Message"]["NewStateValue"] for m in sink.alarm_messages(name)]
        assert got == states, f"notifications for {name}: {got}"
    eventually(check, deadline_s=MARGIN_S, what=f"{name} notified {states}")


def test_breaching_period_goes_to_alarm_once_and_publishes_the_real_notification(env):
    # Catches: no evaluation from moto's metric data, state not written to moto, actions on every
    # breaching tick instead of once per change, and a notification that is not CloudWatch's JSON.
    ctx, evaluator, sink = env
    region = "us-east-1"
    name, lb = _make_alarm(ctx, region)
    _wait_state(ctx, region, name, OK, 2, "new alarm with no data (notBreaching) evaluated to OK")

    t_put = time.time()
    _put(ctx, region, lb, 600)
    alarm_ev, _ = _wait_state(ctx, region, name, ALARM, 2, "600 requests in a period > 500 -> ALARM")
    # the boundary that tick evaluated (the loop ticks at boundary + grace)
    boundary = (alarm_ev["time"] - evaluator.grace_s) // PERIOD_S * PERIOD_S
    assert boundary >= t_put, "ALARM before the breaching period ended"
    print(f"tick latency after the period boundary: {alarm_ev['time'] - boundary:.3f}s "
          f"(grace {evaluator.grace_s:.2f}s; tick cost {evaluator.tick_stats()[region]['mean_ms']} ms mean)")

    # a second breaching period: still ALARM, no new event, nothing published
    _put(ctx, region, lb, 700)

    # the alarm goes back to OK once breaching data has left the evaluation range (notBreaching)
    def back_to_ok():
        msgs = sink.alarm_messages(name)
        assert [m["Message"]["NewStateValue"] for m in msgs][-1:] == [OK] and len(msgs) >= 3, \
            f"notifications so far: {[m['Message']['NewStateValue'] for m in msgs]}"
        return msgs
    msgs, _ = eventually(back_to_ok, deadline_s=_deadline(2 * evaluation_range(1) + 2),
                         what="alarm back to OK after the data stops")
    # actions run in order per region: by the time the OK went out, a duplicate ALARM would have too
    transitions = [(e["old"], e["new"]) for e in _events(ctx, name)]
    assert transitions == [(INSUFFICIENT_DATA, OK), (OK, ALARM), (ALARM, OK)]
    assert [(m["Message"]["OldStateValue"], m["Message"]["NewStateValue"]) for m in msgs] == transitions

    alarm_msg = msgs[1]
    print(f"state change -> SNS delivery: {alarm_msg['received_at'] - alarm_ev['time']:.3f}s")
    assert alarm_msg["Subject"] == f'ALARM: "{name}" in US East (N. Virginia)'
    assert alarm_msg["TopicArn"] == ctx.provisioned.topic_arns[region]
    m = alarm_msg["Message"]
    arn = ctx.internal_client("cloudwatch", region).describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["AlarmArn"]
    assert m["AlarmName"] == name and m["AlarmDescription"].startswith("test alarm")
    assert m["AWSAccountId"] == LOCAL_ACCOUNT_ID
    assert m["AlarmArn"] == arn
    assert m["Region"] == "US East (N. Virginia)"
    assert (m["OldStateValue"], m["NewStateValue"]) == (OK, ALARM)
    topic = ctx.provisioned.topic_arns[region]
    assert (m["AlarmActions"], m["OKActions"], m["InsufficientDataActions"]) == ([topic], [topic], [])
    datetime.strptime(m["AlarmConfigurationUpdatedTimestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")
    assert m["NewStateReason"].startswith("Threshold Crossed: 1 out of the last 1 datapoints [600.0 (")
    assert m["NewStateReason"].endswith("was greater than the threshold (500.0) "
                                        "(minimum 1 datapoint for OK -> ALARM transition).")
    # CloudWatch's timestamp form: 2025-09-16T16:59:17.131+0000
    datetime.strptime(m["StateChangeTime"], "%Y-%m-%dT%H:%M:%S.%f%z")
    assert m["StateChangeTime"].endswith("+0000")
    assert m["Trigger"] == {
        "MetricName": "RequestCount", "Namespace": NAMESPACE, "StatisticType": "Statistic", "Statistic": "SUM",
        "Unit": None, "Dimensions": [{"value": lb, "name": "LoadBalancer"}], "Period": PERIOD_S,
        "EvaluationPeriods": 1, "DatapointsToAlarm": 1, "ComparisonOperator": "GreaterThanThreshold",
        "Threshold": 500.0, "TreatMissingData": "notBreaching", "EvaluateLowSampleCountPercentile": "",
    }


def test_below_threshold_stays_ok(env):
    # Catches a boundary or statistic error (Sum of 500 is not > 500) and spurious transitions.
    ctx, evaluator, sink = env
    region = "us-west-2"
    name, lb = _make_alarm(ctx, region)
    _wait_state(ctx, region, name, OK, 2, "new alarm evaluated to OK")
    # two datapoints in one period: Sum 250 + 250 = 500, exactly the threshold, not above it
    _put(ctx, region, lb, 250, 250)

    def evaluated_the_data():
        # the evaluator saw the period's Sum (not a missing period, which notBreaching also calls OK)
        assert evaluator.status()[region][name]["last_value"] == 500.0, evaluator.status()[region][name]
    eventually(evaluated_the_data, deadline_s=_deadline(2), what="evaluator saw Sum 500", interval_s=0.02)
    assert [(e["old"], e["new"]) for e in _events(ctx, name)] == [(INSUFFICIENT_DATA, OK)]
    assert _moto_state(ctx, region, name) == OK


def test_missing_data_with_breaching_alarms_healthy_host_count(env):
    # Catches TreatMissingData=breaching being ignored: a load balancer that stops publishing
    # HealthyHostCount (all tasks gone) must alarm, as the seed's healthy-hosts alarm relies on.
    ctx, evaluator, sink = env
    region = "us-east-1"
    # the provisioned seed alarm never gets data here: breaching from its first evaluation
    seed = ctx.provisioned.alarm_names[region]["healthy-hosts"]
    ev, _ = _wait_state(ctx, region, seed, ALARM, 2, "seed healthy-hosts alarm with no data -> ALARM")
    assert ev["old"] == INSUFFICIENT_DATA and "treated as [Breaching]" in ev["reason"]

    name, lb = _make_alarm(ctx, region, metric="HealthyHostCount", statistic="Minimum", threshold=1,
                           comparison="LessThanThreshold", treat="breaching")
    t_put = time.time()
    _put(ctx, region, lb, 2, metric="HealthyHostCount")
    _wait_state(ctx, region, name, OK, 2, "2 healthy hosts -> OK")
    # no more datapoints: once the last real one leaves the evaluation range, missing = breaching
    ev, took = _wait_state(ctx, region, name, ALARM, evaluation_range(1) + 2, "no HealthyHostCount -> ALARM")
    assert ev["old"] == OK
    # not before the real datapoint has left the evaluation range (N + 2 periods after the one it is in)
    assert ev["time"] - t_put >= evaluation_range(1) * PERIOD_S, ev
    _wait_notified(sink, name, [OK, ALARM])


def test_actions_disabled_changes_state_but_publishes_nothing(env):
    # Catches ignoring ActionsEnabled: the state still changes (CloudWatch evaluates), no SNS.
    ctx, evaluator, sink = env
    region = "us-west-2"
    off, lb_off = _make_alarm(ctx, region, actions=False)
    on, lb_on = _make_alarm(ctx, region)  # the control: same data, actions enabled
    for name in (off, on):
        _wait_state(ctx, region, name, OK, 2, f"{name} evaluated to OK")
    _put(ctx, region, lb_off, 900)
    _put(ctx, region, lb_on, 900)
    for name in (off, on):
        _wait_state(ctx, region, name, ALARM, 2, f"{name} -> ALARM")
    # the control's ALARM notification arrives; actions run in order per region, so the disabled
    # alarm's (queued earlier or at the same tick) would have arrived by then too
    _wait_notified(sink, on, [OK, ALARM])
    assert sink.alarm_messages(off) == []
    assert not [e for e in ctx.events.since(0, kind="alarm_action") if e["alarm"] == off]


def test_put_metric_alarm_again_keeps_the_state(env):
    # "When you update an existing alarm, its state is left unchanged": re-putting an alarm in
    # ALARM must not replay INSUFFICIENT_DATA -> ... transitions or publish again.
    ctx, evaluator, sink = env
    region = "us-east-1"
    name, lb = _make_alarm(ctx, region, treat="missing")
    _put(ctx, region, lb, 800)
    _wait_state(ctx, region, name, ALARM, 2, "-> ALARM")
    n_events = len(_events(ctx, name))
    _put(ctx, region, lb, 800)  # keeps the data in the evaluation range while the alarm is re-put
    cw = ctx.internal_client("cloudwatch", region)
    a = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    cw.put_metric_alarm(AlarmName=name, AlarmDescription="updated", Namespace=NAMESPACE, MetricName="RequestCount",
                        Dimensions=a["Dimensions"], Statistic="Sum", Period=PERIOD_S, EvaluationPeriods=1,
                        DatapointsToAlarm=1, Threshold=500, ComparisonOperator="GreaterThanThreshold",
                        TreatMissingData="missing", AlarmActions=a["AlarmActions"], OKActions=a["OKActions"])
    t0 = time.time()

    def resynced():
        assert evaluator.tick_stats()[region]["last_boundary"] >= int(t0 // PERIOD_S + 1) * PERIOD_S
        assert _moto_state(ctx, region, name) == ALARM
    eventually(resynced, deadline_s=_deadline(2), what="re-put alarm shown as ALARM again in moto")
    assert len(_events(ctx, name)) == n_events


def test_a_publish_that_times_out_is_not_published_twice(env):
    # moto's SNS posts to http subscribers inside Publish, so a slow subscriber makes Publish
    # time out although the message went out. The evaluator must not publish again (once per
    # transition): catches an SNS client that silently retries.
    ctx, evaluator, sink = env
    region = "us-west-2"
    name, lb = _make_alarm(ctx, region)
    _wait_state(ctx, region, name, OK, 2, "new alarm evaluated to OK")
    _wait_notified(sink, name, [OK])
    hold_s = 1.5
    saved, evaluator.publish_timeout_s = evaluator.publish_timeout_s, 0.5
    try:
        with sink.lock:
            sink.slow_once[name] = hold_s
        _put(ctx, region, lb, 900)
        _wait_state(ctx, region, name, ALARM, 2, "-> ALARM")

        def published():
            acts = [e for e in ctx.events.since(0, kind="alarm_action") if e["alarm"] == name and e["new"] == ALARM]
            assert acts, "no ALARM action finished yet"
            return acts
        actions, _ = eventually(published, deadline_s=MARGIN_S + hold_s, what="ALARM action finished")
    finally:
        evaluator.publish_timeout_s = saved
    # the held delivery is recorded once the subscriber answers
    eventually(lambda: any(m["held"] for m in sink.alarm_messages(name)) or _fail("held delivery not recorded"),
               deadline_s=MARGIN_S + hold_s, what="held delivery")
    assert [m["Message"]["NewStateValue"] for m in sink.alarm_messages(name)] == [OK, ALARM]
    assert len(actions) == 1 and "ReadTimeout" in actions[0].get("error", ""), actions


def test_set_alarm_state_runs_the_actions_until_the_next_evaluation(env):
    # CloudWatch runs the actions of a state set with SetAlarmState (moto does not), and the
    # state lasts until the next evaluation. Catches a SetAlarmState that is silently overwritten
    # (no ALARM notification: scenarios that force an alarm would never fail over) or one that sticks.
    ctx, evaluator, sink = env
    region = "us-east-1"
    name, lb = _make_alarm(ctx, region)
    _wait_state(ctx, region, name, OK, 2, "new alarm evaluated to OK")
    ctx.internal_client("cloudwatch", region).set_alarm_state(AlarmName=name, StateValue=ALARM,
                                                             StateReason="forced by the test")
    _wait_notified(sink, name, [OK, ALARM, OK])
    msgs = sink.alarm_messages(name)
    assert msgs[1]["Message"]["NewStateReason"] == "forced by the test"
    events = _events(ctx, name)
    assert [(e["old"], e["new"], e["source"]) for e in events] == [
        (INSUFFICIENT_DATA, OK, "evaluation"), (OK, ALARM, "SetAlarmState"), (ALARM, OK, "evaluation")]
    assert _moto_state(ctx, region, name) == OK


def test_the_first_evaluation_is_of_a_period_the_evaluator_watched(env):
    # A period that ended before the evaluator started has no data from metric sources started
    # just before it (the stack arms the load balancers' metrics, then starts the evaluator):
    # evaluating it counts HealthyHostCount as missing = breaching and fails over at every start
    # (seen end to end: two spurious Route 53 flips right after `up`). The first evaluated
    # boundary must come after the start; it must still come within one period + grace.
    ctx, _, _ = env
    fresh = AlarmEvaluator(ctx)
    ticks: list[tuple[str, int, float]] = []
    fresh.tick = lambda region, boundary=None: ticks.append((region, boundary, time.time())) or []
    t_start = time.time()
    fresh.start()
    try:
        eventually(lambda: len({r for r, _, _ in ticks}) == len(ctx.config.regions) or _fail(f"ticks: {ticks}"),
                   deadline_s=_deadline(1), what="first tick in every region")
    finally:
        fresh.stop()
    for region, boundary, at in ticks:
        assert boundary > t_start, f"{region}: evaluated boundary {boundary} <= start {t_start:.3f}"
        assert at - t_start <= PERIOD_S + fresh.grace_s + MARGIN_S
