"""The signals AWS gives, from the running local model (issue 19, item 4): the alarm evaluator's
transitions and actions in DescribeAlarmHistory, the replicator's ReplicationLatency in CloudWatch.
Real moto servers with the corrections, real components on a 1 s period; each check has a twin
with the component's report switched off, where the same check must fail. Each test prints how
long after the change the signal was visible (pytest -s shows it). Route 53's signals:
tests/test_aws_signals_route53.py; the rules and moto-level checks: tests/test_aws_signals.py.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from gameday.assertions.eventually import NotWithinDeadline, eventually
from gameday.config import GamedayConfig
from gameday.environments.local.alarms import AlarmEvaluator
from gameday.environments.local.provision import NAMESPACE
from gameday.environments.local.replication import LATENCY_METRIC, LATENCY_NAMESPACE, GlobalTableReplicator
from tests.support import provisioned_context

PERIOD_S = 1
PROFILE = {"period_s": PERIOD_S, "evaluation_periods": 1, "datapoints_to_alarm": 1, "metric_flush_s": 0.2}
# a transition takes a period, the grace and a tick; an action an SNS publish; a latency datapoint a
# monitor period: the margin is for two busy cores
MARGIN_S = 5.0
TWIN_DEADLINE_S = 3 * PERIOD_S + 1.0   # what the switched-off twin is given: several periods, no signal


@pytest.fixture(scope="module")
def ctx():
    cfg = GamedayConfig.model_validate({"profiles": {"local": PROFILE}})
    with provisioned_context(cfg) as c:
        yield c


_names = iter(range(10**6))


def _alarm(ctx, region: str) -> tuple[str, str, str]:
    n = next(_names)
    name, lb, topic = f"signals-live-{n}", f"app/signals-{n}/1", ctx.provisioned.topic_arns[region]
    ctx.internal_client("cloudwatch", region).put_metric_alarm(
        AlarmName=name, Namespace=NAMESPACE, MetricName="RequestCount", Statistic="Sum", Period=PERIOD_S,
        Dimensions=[{"Name": "LoadBalancer", "Value": lb}], EvaluationPeriods=1, DatapointsToAlarm=1,
        Threshold=100, ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching",
        AlarmActions=[topic], OKActions=[topic])
    return name, lb, topic


def _surge(ctx, region: str, lb: str, stop_at: float) -> None:
    """RequestCount above the threshold every period until stop_at (the evaluator reads whole periods)."""
    cw = ctx.internal_client("cloudwatch", region)

    def crossed():
        cw.put_metric_data(Namespace=NAMESPACE, MetricData=[{
            "MetricName": "RequestCount", "Dimensions": [{"Name": "LoadBalancer", "Value": lb}], "Value": 500.0,
            "Timestamp": datetime.now(timezone.utc)}])
        assert time.monotonic() >= stop_at, "surging"

    eventually(crossed, deadline_s=stop_at - time.monotonic() + 1, what="surge", interval_s=0.2)


def alarm_went_off_with_its_action(cw, name: str, topic: str) -> tuple[dict, dict]:
    """The ALARM transition and its action, as DescribeAlarmHistory gives them (AssertionError otherwise)."""
    items = cw.describe_alarm_history(AlarmName=name, ScanBy="TimestampAscending")["AlarmHistoryItems"]
    to_alarm = [i for i in items if i["HistoryItemType"] == "StateUpdate" and i["HistorySummary"].endswith(" to ALARM")]
    assert to_alarm, f"no transition to ALARM in {[i['HistorySummary'] for i in items]}"
    data = json.loads(to_alarm[0]["HistoryData"])
    assert data["newState"]["stateReason"].startswith("Threshold Crossed"), data
    assert data["newState"]["stateReasonData"]["threshold"] == 100.0
    actions = [i for i in items if i["HistoryItemType"] == "Action" and i["Timestamp"] >= to_alarm[0]["Timestamp"]]
    assert [a["HistorySummary"] for a in actions][:1] == [f"Successfully executed action {topic}"], actions
    assert json.loads(actions[0]["HistoryData"])["publishedMessage"].startswith('{"AlarmName": "' + name)
    return to_alarm[0], actions[0]


def _went_off(ctx, region: str, evaluator: AlarmEvaluator, deadline_s: float) -> tuple[dict, dict, float]:
    name, lb, topic = _alarm(ctx, region)
    cw = ctx.internal_client("cloudwatch", region)   # no router here: customers' clients reach us-east-1's moto
    evaluator.start()
    try:
        _surge(ctx, region, lb, time.monotonic() + 2 * PERIOD_S + 0.5)
        (transition, action), _ = eventually(lambda: alarm_went_off_with_its_action(cw, name, topic),
                                             deadline_s=deadline_s, what=f"{name}'s ALARM and action in its history")
        seen_at = datetime.now(timezone.utc)
    finally:
        evaluator.stop()
    events = [e for e in ctx.events.since(0, "alarm") if e["alarm"] == name and e["new"] == "ALARM"]
    assert events, "the evaluator made the transition"
    return transition, action, (seen_at - transition["Timestamp"]).total_seconds()


def test_the_evaluators_alarm_and_action_are_in_the_alarm_history(ctx):
    transition, action, _ = _went_off(ctx, "us-east-1", AlarmEvaluator(ctx), 3 * PERIOD_S + MARGIN_S)
    state = ctx.customer_client("cloudwatch", "us-east-1").describe_alarms(
        AlarmNames=[transition["AlarmName"]])["MetricAlarms"][0]
    assert state["StateValue"] == "ALARM" and state["StateTransitionedTimestamp"] == transition["Timestamp"]
    action_after_ms = (action["Timestamp"] - transition["Timestamp"]).total_seconds() * 1000
    print(f"\nalarm history: StateUpdate recorded in the SetAlarmState call itself (0 ms after the transition); "
          f"Action item {action_after_ms:.0f} ms after it (SNS publish + admin call)")
    assert 0 <= action_after_ms < MARGIN_S * 1000


def test_twin_without_the_evaluators_report_the_history_has_no_action(ctx, monkeypatch):
    evaluator = AlarmEvaluator(ctx)
    monkeypatch.setattr(evaluator, "_record_action", lambda *a, **k: None)
    with pytest.raises(NotWithinDeadline, match="Successfully executed action"):
        _went_off(ctx, "us-west-2", evaluator, TWIN_DEADLINE_S + 2 * PERIOD_S)


def test_an_action_that_failed_is_a_failed_action_item(ctx):
    """The topic is gone: SNS refuses the publish, and the history says so in AWS's words."""
    region, evaluator = "us-east-1", AlarmEvaluator(ctx)
    name, lb, _ = _alarm(ctx, region)
    gone = ctx.provisioned.topic_arns[region] + "-deleted"
    cw = ctx.internal_client("cloudwatch", region)
    cw.put_metric_alarm(**{**_alarm_config(cw, name), "AlarmActions": [gone], "OKActions": []})
    evaluator.start()
    try:
        _surge(ctx, region, lb, time.monotonic() + 2 * PERIOD_S + 0.5)

        def failed():
            items = cw.describe_alarm_history(AlarmName=name, HistoryItemType="Action")["AlarmHistoryItems"]
            want = f"Failed to execute action {gone}. Received error:"
            assert items and items[0]["HistorySummary"].startswith(want), items
            assert json.loads(items[0]["HistoryData"])["actionState"] == "Failed"

        eventually(failed, deadline_s=3 * PERIOD_S + MARGIN_S, what="the failed action in the history")
    finally:
        evaluator.stop()


def _alarm_config(cw, name: str) -> dict:
    a = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    keys = ("AlarmName", "Namespace", "MetricName", "Statistic", "Period", "Dimensions", "EvaluationPeriods",
            "DatapointsToAlarm", "Threshold", "ComparisonOperator", "TreatMissingData")
    return {k: a[k] for k in keys if k in a}


def replication_latency(cw, table: str, receiving: str, since: datetime, writes: int) -> dict:
    """ReplicationLatency datapoints in the source region's CloudWatch, counting `writes` replicated writes."""
    points = cw.get_metric_statistics(
        Namespace=LATENCY_NAMESPACE, MetricName=LATENCY_METRIC, StartTime=since,
        EndTime=datetime.now(timezone.utc) + timedelta(seconds=5), Period=60,
        Statistics=["SampleCount", "Average", "Maximum"], Unit="Milliseconds",
        Dimensions=[{"Name": "TableName", "Value": table}, {"Name": "ReceivingRegion", "Value": receiving}],
    )["Datapoints"]
    count = sum(p["SampleCount"] for p in points)
    assert count >= writes, f"{count} replicated writes in ReplicationLatency, want {writes}: {points}"
    assert all(0 <= p["Average"] <= p["Maximum"] < 60_000 for p in points), points
    return {"samples": count, "max_ms": max(p["Maximum"] for p in points),
            "mean_ms": sum(p["Average"] * p["SampleCount"] for p in points) / count}


def _replicate(ctx, replicator: GlobalTableReplicator, deadline_s: float) -> tuple[dict, float]:
    table, writes = ctx.config.dynamodb.table, 20
    # GetMetricStatistics counts from a whole second: start at the next one, after any earlier test's datapoints
    since = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=1)
    replicator.start()
    try:
        ddb = ctx.customer_client("dynamodb", "us-east-1")
        t0 = time.monotonic()
        for i in range(writes):
            ddb.put_item(TableName=table, Item={"pk": {"S": f"signals-{since.timestamp()}-{i}"}, "v": {"N": str(i)}})
        cw = ctx.customer_client("cloudwatch", "us-east-1")   # the source region's CloudWatch
        return eventually(lambda: replication_latency(cw, table, "us-west-2", since, writes),
                          deadline_s=deadline_s, what="ReplicationLatency datapoints", started=t0)
    finally:
        replicator.stop()


def test_replicated_writes_are_in_replication_latency(ctx):
    stats, after_s = _replicate(ctx, GlobalTableReplicator(ctx), 2 * PERIOD_S + MARGIN_S)
    print(f"\nReplicationLatency: {stats['samples']:.0f} writes (mean {stats['mean_ms']:.1f} ms, max "
          f"{stats['max_ms']:.1f} ms) visible {after_s * 1000:.0f} ms after the first write (flush every period)")


def test_twin_without_publishing_there_is_no_replication_latency(ctx, monkeypatch):
    replicator = GlobalTableReplicator(ctx)
    monkeypatch.setattr(replicator, "_publish_latency", lambda: None)
    with pytest.raises(NotWithinDeadline, match="ReplicationLatency"):
        _replicate(ctx, replicator, TWIN_DEADLINE_S)
