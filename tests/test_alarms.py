"""The alarm evaluator's adapter (environments/local/alarms.py) against real moto servers: metric
data in moto -> the evaluator's threads -> SetAlarmState in moto, "alarm" events on the timeline
and CloudWatch's real notification through moto's SNS to an http subscriber. CloudWatch's rules
themselves (missing data, M of N, operators, state changes over time) are the pure model's,
checked on a fake clock in tests/test_alarm_model.py.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gameday.assertions.eventually import eventually
from gameday.clock import FakeClock
from gameday.environments.local.alarms import ALARM, INSUFFICIENT_DATA, OK, AlarmEvaluator
from gameday.environments.local.context import LocalContext
from gameday.environments.local.provision import NAMESPACE
from gameday.aws import LOCAL_ACCOUNT_ID
from gameday.config import GamedayConfig
from gameday.events import EventLog
from gameday.net import free_port
from tests.support import provisioned_context


# -- the component, against real moto --------------------------------------------------------------------

PERIOD_S = 1
LOCAL_PROFILE = {"period_s": PERIOD_S, "evaluation_periods": 1, "datapoints_to_alarm": 1, "metric_flush_s": 0.2}
# A state change takes a period and the grace; then a tick (calls on a busy 2-core machine) and SNS
# delivery. Deadlines are derived from the profile plus that margin.
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
    # Catches: no evaluation from moto's metric data (or the wrong statistic: two datapoints of
    # 300 are a Sum of 600 > 500, a Maximum or Average of 300 is not), state not written to moto,
    # actions on every breaching tick instead of once per change, and a notification that is not
    # CloudWatch's JSON.
    ctx, evaluator, sink = env
    region = "us-east-1"
    name, lb = _make_alarm(ctx, region)
    _wait_state(ctx, region, name, OK, 2, "new alarm with no data (notBreaching) evaluated to OK")

    t_put = time.time()
    _put(ctx, region, lb, 300, 300)
    alarm_ev, _ = _wait_state(ctx, region, name, ALARM, 2, "600 requests in a period > 500 -> ALARM")
    # the boundary that tick evaluated (the loop ticks at boundary + grace)
    boundary = (alarm_ev["time"] - evaluator.grace_s) // PERIOD_S * PERIOD_S
    assert boundary >= t_put, "ALARM before the breaching period ended"
    print(f"tick latency after the period boundary: {alarm_ev['time'] - boundary:.3f}s "
          f"(grace {evaluator.grace_s:.2f}s; tick cost {evaluator.tick_stats()[region]['mean_ms']} ms mean)")

    # a second breaching period: still ALARM, no new event, nothing published
    _put(ctx, region, lb, 700)
    t_second = time.time()

    def evaluated_later():
        assert evaluator.tick_stats()[region]["last_boundary"] >= int(t_second // PERIOD_S + 1) * PERIOD_S
    eventually(evaluated_later, deadline_s=_deadline(2), what="the second breaching period evaluated")
    # actions run in order per region on one thread: a duplicate ALARM queued by that tick is out
    # once a later probe through the queue is (a private handle, for want of a public one)
    evaluator._actions[region].submit(lambda: None).result(timeout=MARGIN_S)
    # (on a loaded machine a late tick may already bring the ALARM -> OK of the data leaving the
    # range: only the prefix and the single ALARM are the point)
    transitions = [(e["old"], e["new"]) for e in _events(ctx, name)]
    assert transitions[:2] == [(INSUFFICIENT_DATA, OK), (OK, ALARM)] and transitions[2:] in ([], [(ALARM, OK)]), \
        transitions
    msgs = sink.alarm_messages(name)
    notified = [(m["Message"]["OldStateValue"], m["Message"]["NewStateValue"]) for m in msgs]
    assert notified[:2] == transitions[:2] and notified[2:] in ([], [(ALARM, OK)]), notified

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


def test_the_seed_healthy_hosts_alarm_without_data_goes_to_alarm(env):
    # Catches TreatMissingData=breaching lost between the provisioned alarm and the evaluator: a
    # load balancer that publishes no HealthyHostCount (all tasks gone) must alarm, as the seed's
    # failover relies on. When a last count leaves the range is the model's (test_alarm_model.py).
    ctx, evaluator, sink = env
    region = "us-east-1"
    seed = ctx.provisioned.alarm_names[region]["healthy-hosts"]
    ev, _ = _wait_state(ctx, region, seed, ALARM, 2, "seed healthy-hosts alarm with no data -> ALARM")
    assert ev["old"] == INSUFFICIENT_DATA and "treated as [Breaching]" in ev["reason"]


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
    # ALARM went out once. (A late tick on a loaded machine can bring the ALARM -> OK of the data
    # leaving the range within hold_s: its OK is then recorded before the held ALARM; seen at load 25.)
    states = [m["Message"]["NewStateValue"] for m in sink.alarm_messages(name)]
    assert states[0] == OK and states.count(ALARM) == 1, states
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


def test_an_unreachable_region_skips_its_tick_and_is_counted(tmp_path):
    # A region whose moto does not answer (stopped, black-holed) costs that region its tick, not
    # the evaluator: tick() returns no transitions, the skip is counted with its error, and the
    # next tick is tried. Real sockets: a loopback port nobody listens on refuses at once.
    cfg = GamedayConfig.model_validate({"profiles": {"local": LOCAL_PROFILE}})
    dead = f"http://127.0.0.1:{free_port()}"
    ctx = LocalContext(config=cfg, profile=cfg.profile("local"), run_dir=tmp_path, events=EventLog(None),
                       moto_urls={r: dead for r in cfg.regions}, clock=FakeClock())
    evaluator = AlarmEvaluator(ctx)
    region = cfg.regions[0]
    assert evaluator.tick(region, 1_767_225_600) == []
    assert evaluator.tick(region, 1_767_225_601) == []
    stats = evaluator.tick_stats()[region]
    assert stats["skipped"] == 2 and stats["ticks"] == 0
    assert "EndpointConnectionError" in stats["last_error"] or "Connect" in stats["last_error"], stats
    assert evaluator.status()[region] == {}
    evaluator.stop()


def test_the_evaluator_loop_evaluates_each_boundary_once_on_the_context_clock(tmp_path):
    # The adapter waits on ctx.clock: its first tick is the first boundary after the start (an
    # earlier period had no data from the metric sources started just before it), then one per
    # boundary, each once its grace has passed. (No moto here: tick is recorded, not run.)
    cfg = GamedayConfig.model_validate({"profiles": {"local": {"period_s": 5, "metric_flush_s": 0.2}}})
    start = 1_767_225_600
    clock = FakeClock(start=start + 2.0)
    ctx = LocalContext(config=cfg, profile=cfg.profile("local"), run_dir=tmp_path, events=EventLog(None),
                       moto_urls={}, clock=clock)
    evaluator = AlarmEvaluator(ctx)
    ticks: list[tuple[str, int]] = []
    ticked = threading.Condition()

    def record(region, boundary=None):
        with ticked:
            ticks.append((region, boundary))
            ticked.notify_all()
        return []
    evaluator.tick = record
    evaluator.start()
    try:
        for k in (1, 2):
            clock.advance_to(start + 5 * k + evaluator.grace_s - 0.01)
            with ticked:  # just before the grace has passed: nothing new (the threads had 50 ms to wrongly run)
                assert not ticked.wait_for(lambda k=k: any(b == start + 5 * k for _, b in ticks), timeout=0.05), ticks
            clock.advance_to(start + 5 * k + evaluator.grace_s)
            want = {(r, start + 5 * k) for r in cfg.regions}
            with ticked:  # real time only lets the threads run: the clock stands still meanwhile
                assert ticked.wait_for(lambda want=want: want <= set(ticks), timeout=5), ticks
    finally:
        evaluator.stop()
    assert sorted(ticks) == sorted((r, start + 5 * k) for r in cfg.regions for k in (1, 2)), ticks
