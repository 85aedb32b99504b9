"""The signals AWS gives, served by the local environment's moto (issue 19, item 4): the rules as
tables, then each signal in a real moto server with the corrections (tests/support.provisioned_context),
and each check's twin: the same calls against moto as it ships (`python -m moto.server`, no
correction), where the check must FAIL. The running components' side (the alarm evaluator, the
DNS server, the health checkers, the replicator) is tests/test_aws_signals_live.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from gameday import aws
from gameday.assertions.eventually import eventually
from gameday.environments.local import ecs_model
from gameday.environments.local.ecs import AZ_TAG
from gameday.environments.local.healthchecks import report_due
from gameday.environments.local.moto_fix_cloudwatch import (action_item, configuration_item, select_history,
                                                             state_update_item)
from gameday.environments.local.moto_fix_ecs import AZ_TAG as FIX_AZ_TAG
from gameday.environments.local.moto_fix_ecs import stop_code, task_availability_zone
from gameday.environments.local.moto_fix_route53 import (INSYNC, PENDING, Change, health_status_report,
                                                          new_change_id)
from gameday.environments.local.replication import replication_latency_data
from gameday.net import free_port
from tests.support import provisioned_context

T0 = datetime(2026, 12, 4, 3, 0, 0, tzinfo=timezone.utc)
TOPIC = "arn:aws:sns:us-east-1:123456789012:gameday-failover"


# -- the rules, as tables ------------------------------------------------------------------------------------

@pytest.mark.parametrize("old, new, summary", [
    (("OK", "fine", None), ("ALARM", "Threshold Crossed", '{"version":"1.0","threshold":500.0}'),
     "Alarm updated from OK to ALARM"),
    (("ALARM", "x", "{}"), ("OK", "y", None), "Alarm updated from ALARM to OK"),
    (("INSUFFICIENT_DATA", "Unchecked: Initial alarm creation", "{}"), ("OK", "z", "not json"),
     "Alarm updated from INSUFFICIENT_DATA to OK"),
])
def test_a_state_update_item_is_written_as_cloudwatch_writes_it(old, new, summary):
    item = state_update_item("a", old, new, T0)
    assert (item["HistoryItemType"], item["AlarmType"]) == ("StateUpdate", "MetricAlarm")
    assert item["HistorySummary"] == summary
    data = json.loads(item["HistoryData"])
    assert data["version"] == "1.0"
    assert data["oldState"]["stateValue"] == old[0] and data["newState"]["stateValue"] == new[0]
    assert data["oldState"]["stateReason"] == old[1] and data["newState"]["stateReason"] == new[1]
    # stateReasonData is an object when there is one, absent when there is none (or it is not JSON)
    assert data["newState"].get("stateReasonData") == (json.loads(new[2]) if new[2] and new[2][0] == "{" else None)
    assert "stateReasonData" not in data["oldState"]


@pytest.mark.parametrize("error, summary, state", [
    (None, f"Successfully executed action {TOPIC}", "Succeeded"),
    ("AuthorizationError: denied", f'Failed to execute action {TOPIC}. Received error: "AuthorizationError: denied"',
     "Failed"),
])
def test_an_action_item_says_what_happened_to_the_action(error, summary, state):
    item = action_item("a", TOPIC, error, T0, T0 - timedelta(seconds=1), published_message='{"AlarmName":"a"}')
    assert item["HistoryItemType"] == "Action" and item["HistorySummary"] == summary
    data = json.loads(item["HistoryData"])
    assert data["actionState"] == state and data["notificationResource"] == TOPIC
    assert data["stateUpdateTimestamp"] == int((T0 - timedelta(seconds=1)).timestamp() * 1000)


def test_history_data_stays_within_awss_length_limit_and_valid_json():
    long_message = "m" * 10_000
    item = action_item("a", TOPIC, None, T0, None, published_message=long_message)
    assert len(item["HistoryData"]) <= 4095 and json.loads(item["HistoryData"])["actionState"] == "Succeeded"


def _items():
    return [configuration_item("a", "Create", T0),
            state_update_item("a", ("INSUFFICIENT_DATA", "", None), ("OK", "", None), T0 + timedelta(seconds=1)),
            state_update_item("b", ("OK", "", None), ("ALARM", "", None), T0 + timedelta(seconds=2)),
            action_item("b", TOPIC, None, T0 + timedelta(seconds=3), None),
            state_update_item("a", ("OK", "", None), ("ALARM", "", None), T0 + timedelta(seconds=4))]


@pytest.mark.parametrize("filters, want", [
    ({}, ["a:StateUpdate@4", "b:Action@3", "b:StateUpdate@2", "a:StateUpdate@1", "a:ConfigurationUpdate@0"]),
    ({"alarm_name": "a", "item_type": "StateUpdate"}, ["a:StateUpdate@4", "a:StateUpdate@1"]),
    ({"scan_by": "TimestampAscending", "item_type": "StateUpdate"}, ["a:StateUpdate@1", "b:StateUpdate@2",
                                                                     "a:StateUpdate@4"]),
    ({"start": T0 + timedelta(seconds=2), "end": T0 + timedelta(seconds=3)}, ["b:Action@3", "b:StateUpdate@2"]),
    ({"alarm_types": ["CompositeAlarm"]}, []),
])
def test_describe_alarm_history_filters(filters, want):
    page, token = select_history(_items(), **filters)
    assert [f"{i['AlarmName']}:{i['HistoryItemType']}@{int((i['Timestamp'] - T0).total_seconds())}"
            for i in page] == want and token is None


def test_describe_alarm_history_pages_with_next_token_and_refuses_bad_input():
    first, token = select_history(_items(), max_records=2)
    second, token2 = select_history(_items(), max_records=2, next_token=token)
    third, token3 = select_history(_items(), max_records=2, next_token=token2)
    assert len(first) == len(second) == 2 and len(third) == 1 and token3 is None
    assert first + second + third == select_history(_items())[0]
    for bad in ({"max_records": 0}, {"max_records": 101}, {"item_type": "Nope"}, {"scan_by": "Up"},
                {"next_token": "x"}):
        with pytest.raises(ValueError):
            select_history(_items(), **bad)


# every reason the local scheduler stops a task with (ecs_model.REASON_*), and a user's
SCHEDULER_REASONS = [
    (ecs_model.REASON_EXITED, "EssentialContainerExited"),
    (ecs_model.REASON_NOT_LISTENING.format(s=5), "TaskFailedToStart"),
    (ecs_model.REASON_SPAWN.format(error="no such file"), "TaskFailedToStart"),
    (ecs_model.REASON_AZ.format(az="us-east-1a"), "ServiceSchedulerInitiated"),
    (ecs_model.REASON_SCALE_IN.format(deployment="ecs-svc/1"), "ServiceSchedulerInitiated"),
    (ecs_model.REASON_SHUTDOWN, "ServiceSchedulerInitiated"),
    (ecs_model.REASON_ORPHAN, "ServiceSchedulerInitiated"),
    ("gameday fault: stop one task", "UserInitiated"),
    ("Task stopped by user", "UserInitiated"),
    ("", "UserInitiated"),
]


@pytest.mark.parametrize("reason, code", SCHEDULER_REASONS)
def test_stop_code_of_each_reason(reason, code):
    assert stop_code(reason) == code


def test_every_scheduler_reason_has_its_stop_code_row():
    """A REASON_* added to the model without a row here (and in moto_fix_ecs.REASON_PREFIXES) fails."""
    reasons = {v for k, v in vars(ecs_model).items() if k.startswith("REASON_")} - {ecs_model.REASON_API}
    covered = {r for r, _ in SCHEDULER_REASONS}
    assert all(any(c.startswith(r.split("{")[0]) for c in covered) for r in reasons), sorted(reasons)
    assert FIX_AZ_TAG == AZ_TAG  # the tag the scheduler writes is the one the correction reads


@pytest.mark.parametrize("tags, subnet_az, want", [
    ([{"key": AZ_TAG, "value": "us-east-1b"}], "us-east-1a", "us-east-1b"),
    ([{"key": "other", "value": "x"}], "us-east-1a", "us-east-1a"),
    (None, None, None),
])
def test_a_tasks_availability_zone(tags, subnet_az, want):
    assert task_availability_zone(tags, subnet_az) == want


@pytest.mark.parametrize("change, now, want", [
    (Change("C1", "Z1", 100.0, followed=False), 100.0, INSYNC),          # nobody serves the zone
    (Change("C1", "Z1", 100.0, followed=True), 100.5, PENDING),
    (Change("C1", "Z1", 100.0, followed=True, served_at=100.2), 100.5, INSYNC),
    (Change("C1", "Z1", 100.0, followed=True, unserved_insync_s=60), 159.9, PENDING),
    (Change("C1", "Z1", 100.0, followed=True, unserved_insync_s=60), 160.0, INSYNC),   # never forever
    (Change("C1", "Z1", 100.0, followed=True, released=True), 100.1, INSYNC),          # its follower stopped
])
def test_a_changes_status(change, now, want):
    assert change.status(now) == want


def test_change_ids_are_route53s_form_and_distinct():
    import random
    import re

    rng = random.Random(1)
    ids = {new_change_id(rng) for _ in range(1000)}
    assert len(ids) == 1000 and all(re.fullmatch(r"/change/C[A-Z0-9]{13}", i) for i in ids)


@pytest.mark.parametrize("ok, status, kind, want", [
    (True, 200, "HTTP", "Success: HTTP Status Code 200, OK"),
    (False, 503, "HTTP", "Failure: HTTP Status Code 503, Service Unavailable"),
    (True, 301, "HTTP", "Success: HTTP Status Code 301, Moved Permanently"),
    (False, None, "HTTP", "Failure: Connection timed out."),
    (True, None, "TCP", "Success: TCP connection established"),
])
def test_health_status_report_text(ok, status, kind, want):
    assert health_status_report(ok, http_status=status, check_type=kind).startswith(want)


@pytest.mark.parametrize("last, at, text, now, due", [
    (None, None, "Success: HTTP Status Code 200, OK", 0.0, True),
    ("Success: HTTP Status Code 200, OK", 10.0, "Success: HTTP Status Code 200, OK", 11.0, False),
    ("Success: HTTP Status Code 200, OK", 10.0, "Success: HTTP Status Code 200, OK", 15.0, True),
    ("Success: HTTP Status Code 200, OK", 10.0, "Failure: HTTP Status Code 503, Service Unavailable", 10.1, True),
])
def test_a_checker_reports_on_change_and_when_its_report_is_old(last, at, text, now, due):
    assert report_due(last, at, text, now, refresh_s=5.0) is due


def test_replication_latency_datapoints_have_awss_shape():
    data = replication_latency_data("gameday-items", {"us-west-2": [12.0, 30.0, 18.0], "eu-west-1": []}, T0)
    assert data == [{"MetricName": "ReplicationLatency", "Timestamp": T0, "Unit": "Milliseconds",
                     "Dimensions": [{"Name": "TableName", "Value": "gameday-items"},
                                    {"Name": "ReceivingRegion", "Value": "us-west-2"}],
                     "StatisticValues": {"SampleCount": 3.0, "Sum": 60.0, "Minimum": 12.0, "Maximum": 30.0}}]


# -- in moto: the corrected server, and moto as it ships (the twins) ------------------------------------------

@pytest.fixture(scope="module")
def ctx():
    with provisioned_context() as c:
        yield c


@pytest.fixture(scope="module")
def plain_moto():
    """moto as it ships: `python -m moto.server`, none of moto_corrections' modules."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        def answers():
            try:
                aws.client("sts", "us-east-1", url, retries=0, timeout_s=1.0).get_caller_identity()
            except Exception as e:  # noqa: BLE001 - not listening yet
                raise AssertionError(str(e)) from None

        eventually(answers, deadline_s=30.0, what="plain moto server answers", interval_s=0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def alarm_transition(cw, name: str, old: str, new: str) -> dict:
    """The StateUpdate item of `name`'s old -> new change, in AWS's shape (AssertionError otherwise)."""
    try:
        items = cw.describe_alarm_history(AlarmName=name, HistoryItemType="StateUpdate")["AlarmHistoryItems"]
    except ClientError as e:
        raise AssertionError(f"DescribeAlarmHistory failed: {e}") from None
    found = [i for i in items if i.get("HistorySummary") == f"Alarm updated from {old} to {new}"]
    assert found, f"no {old} -> {new} item in {items}"
    data = json.loads(found[0]["HistoryData"])
    assert (data["oldState"]["stateValue"], data["newState"]["stateValue"]) == (old, new)
    assert found[0]["AlarmType"] == "MetricAlarm" and isinstance(found[0]["Timestamp"], datetime)
    return found[0]


def _set_alarm_states(cw, name: str) -> dict:
    cw.put_metric_alarm(AlarmName=name, Namespace="AWS/ApplicationELB", MetricName="RequestCount",
                        Dimensions=[{"Name": "LoadBalancer", "Value": "app/x/1"}], Statistic="Sum", Period=5,
                        EvaluationPeriods=1, Threshold=500, ComparisonOperator="GreaterThanThreshold")
    reason_data = json.dumps({"version": "1.0", "threshold": 500.0, "recentDatapoints": [900.0]})
    cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="Threshold Crossed: 1 datapoint [900.0]",
                       StateReasonData=reason_data)
    transitioned = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    # the same state again: a new reason, no transition
    cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="still crossed")
    return transitioned


def test_set_alarm_state_is_in_the_alarm_history_with_awss_fields(ctx):
    cw = ctx.customer_client("cloudwatch", "us-east-1")
    transitioned = _set_alarm_states(cw, "signals-history")
    item = alarm_transition(cw, "signals-history", "INSUFFICIENT_DATA", "ALARM")  # a new alarm: INSUFFICIENT_DATA
    data = json.loads(item["HistoryData"])
    assert data["newState"]["stateReasonData"]["recentDatapoints"] == [900.0]
    assert data["oldState"]["stateReason"] == "Unchecked: Initial alarm creation"
    # one transition: the second SetAlarmState moved StateUpdatedTimestamp only
    assert len(cw.describe_alarm_history(AlarmName="signals-history",
                                         HistoryItemType="StateUpdate")["AlarmHistoryItems"]) == 1
    now = cw.describe_alarms(AlarmNames=["signals-history"])["MetricAlarms"][0]
    assert now["StateTransitionedTimestamp"] == transitioned["StateTransitionedTimestamp"] == item["Timestamp"]
    assert now["StateUpdatedTimestamp"] > now["StateTransitionedTimestamp"]
    created = cw.describe_alarm_history(AlarmName="signals-history", HistoryItemType="ConfigurationUpdate")
    assert [i["HistorySummary"] for i in created["AlarmHistoryItems"]] == ['Alarm "signals-history" created']


def test_twin_plain_moto_has_no_alarm_history(plain_moto):
    cw = aws.client("cloudwatch", "us-east-1", plain_moto)
    transitioned = _set_alarm_states(cw, "signals-history")
    with pytest.raises(AssertionError, match="DescribeAlarmHistory failed"):
        alarm_transition(cw, "signals-history", "OK", "ALARM")   # moto's new alarm is OK
    assert "StateTransitionedTimestamp" not in transitioned


def test_an_update_of_an_alarm_keeps_its_state_and_history(ctx):
    cw = ctx.customer_client("cloudwatch", "us-east-1")
    _set_alarm_states(cw, "signals-update")
    cw.put_metric_alarm(AlarmName="signals-update", Namespace="AWS/ApplicationELB", MetricName="RequestCount",
                        Statistic="Sum", Period=5, EvaluationPeriods=1, Threshold=600,
                        ComparisonOperator="GreaterThanThreshold")
    assert cw.describe_alarms(AlarmNames=["signals-update"])["MetricAlarms"][0]["StateValue"] == "ALARM"
    cw.delete_alarms(AlarmNames=["signals-update"])
    summaries = [i["HistorySummary"] for i in cw.describe_alarm_history(
        AlarmName="signals-update", ScanBy="TimestampAscending")["AlarmHistoryItems"]]
    assert summaries == ['Alarm "signals-update" created', "Alarm updated from INSUFFICIENT_DATA to ALARM",
                         'Alarm "signals-update" updated', 'Alarm "signals-update" deleted']


def test_an_action_told_by_the_evaluator_is_an_action_item(ctx):
    cw = ctx.customer_client("cloudwatch", "us-east-1")
    _set_alarm_states(cw, "signals-action")
    aws.moto_admin(ctx.moto_urls["us-east-1"], "cloudwatch_alarm_action", region="us-east-1",
                   alarm_name="signals-action", action=TOPIC, error=None, published_message="{}")
    [item] = cw.describe_alarm_history(AlarmName="signals-action", HistoryItemType="Action")["AlarmHistoryItems"]
    assert item["HistorySummary"] == f"Successfully executed action {TOPIC}"
    with pytest.raises(ValueError, match="no alarm"):
        aws.moto_admin(ctx.moto_urls["us-east-1"], "cloudwatch_alarm_action", region="us-east-1",
                       alarm_name="nope", action=TOPIC)


def _run_and_stop(ecs, cluster: str, family: str, network: dict, reasons: list[str | None]) -> list:
    arns = []
    for reason in reasons:
        arn = ecs.run_task(cluster=cluster, taskDefinition=family, count=1, launchType="FARGATE",
                           tags=[{"key": AZ_TAG, "value": "us-east-1b"}], **network)["tasks"][0]["taskArn"]
        ecs.stop_task(cluster=cluster, task=arn, **({"reason": reason} if reason is not None else {}))
        arns.append(arn)
    described = {t["taskArn"]: t for t in ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]}
    return [described[a] for a in arns]


def stopped_task_signals(task: dict, reason: str, code: str) -> None:
    """A stopped task as DescribeTasks shows it in AWS (AssertionError otherwise)."""
    assert task["lastStatus"] == "STOPPED" and task["desiredStatus"] == "STOPPED", task["lastStatus"]
    assert task.get("stoppedReason") == reason and task.get("stopCode") == code, (task.get("stoppedReason"),
                                                                                  task.get("stopCode"))
    assert task.get("availabilityZone") == "us-east-1b", task.get("availabilityZone")
    assert isinstance(task.get("stoppedAt"), datetime) and task.get("stoppingAt") <= task["stoppedAt"]


CASES = [(ecs_model.REASON_EXITED, ecs_model.REASON_EXITED, "EssentialContainerExited"),
         (ecs_model.REASON_SCALE_IN.format(deployment="ecs-svc/1"),) * 2 + ("ServiceSchedulerInitiated",),
         (ecs_model.REASON_NOT_LISTENING.format(s=5),) * 2 + ("TaskFailedToStart",),
         (None, "Task stopped by user", "UserInitiated")]


def test_describe_tasks_tells_how_and_where_a_task_stopped(ctx):
    prov, region = ctx.provisioned, "us-east-1"
    subnet = prov.subnet_ids[region]["us-east-1b"] if "us-east-1b" in prov.subnet_ids.get(region, {}) else None
    network = {"networkConfiguration": {"awsvpcConfiguration": {
        "subnets": [subnet], "securityGroups": [prov.security_group_ids[region]]}}} if subnet else {}
    ecs = ctx.customer_client("ecs", region)
    tasks = _run_and_stop(ecs, prov.cluster, prov.task_family, network, [r for r, _, _ in CASES])
    for t, (_, reason, code) in zip(tasks, CASES):
        stopped_task_signals(t, reason, code)
    # a running task stays RUNNING however often it is described (moto walked it to DEPROVISIONING)
    arn = ecs.run_task(cluster=prov.cluster, taskDefinition=prov.task_family, launchType="FARGATE",
                       tags=[{"key": AZ_TAG, "value": "us-east-1b"}], **network)["tasks"][0]["taskArn"]
    states = [ecs.describe_tasks(cluster=prov.cluster, tasks=[arn])["tasks"][0]["lastStatus"] for _ in range(3)]
    assert states == ["RUNNING"] * 3
    # a second StopTask leaves the first stop as it was
    first = tasks[0]
    ecs.stop_task(cluster=prov.cluster, task=first["taskArn"], reason="again")
    again = ecs.describe_tasks(cluster=prov.cluster, tasks=[first["taskArn"]])["tasks"][0]
    assert (again["stoppedReason"], again["stoppedAt"]) == (first["stoppedReason"], first["stoppedAt"])


def test_twin_plain_moto_does_not_tell_how_a_task_stopped(plain_moto):
    ecs, ec2 = aws.client("ecs", "us-east-1", plain_moto), aws.client("ec2", "us-east-1", plain_moto)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="g", Description="g", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName="c")
    ecs.register_task_definition(family="f", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256",
                                 memory="512", containerDefinitions=[{"name": "x", "image": "i", "memory": 128}])
    network = {"networkConfiguration": {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg]}}}
    tasks = _run_and_stop(ecs, "c", "f", network, [r for r, _, _ in CASES])
    for t, (_, reason, code) in zip(tasks, CASES):
        with pytest.raises(AssertionError):
            stopped_task_signals(t, reason, code)


def _upsert(r53, zone: str, value: str) -> dict:
    return r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {"Name": f"signals.{value.replace('.', '-')}.gameday.test.",
                                                  "Type": "A", "TTL": 1, "ResourceRecords": [{"Value": value}]}}]}
    )["ChangeInfo"]


def change_pending_until_served(r53, zone: str, tell_served) -> dict:
    """A change to a followed zone: PENDING, with its own id, until `tell_served(change_id)`; then INSYNC."""
    info = _upsert(r53, zone, "127.0.9.1")
    other = _upsert(r53, zone, "127.0.9.2")
    assert info["Id"] != other["Id"], "every change has its own id"
    assert info["Status"] == "PENDING", info
    assert r53.get_change(Id=info["Id"])["ChangeInfo"]["Status"] == "PENDING"
    tell_served(info["Id"])
    assert r53.get_change(Id=info["Id"])["ChangeInfo"]["Status"] == "INSYNC"
    assert r53.get_change(Id=other["Id"])["ChangeInfo"]["Status"] == "PENDING"
    return info


def test_a_change_is_pending_until_the_dns_server_serves_it(ctx):
    moto = ctx.moto_urls["us-east-1"]
    r53, zone = ctx.customer_client("route53", "us-east-1"), ctx.provisioned.hosted_zone_id
    assert _upsert(r53, zone, "127.0.9.3")["Status"] == "INSYNC"   # no DNS server follows the zone yet
    aws.moto_admin(moto, "route53_dns_follow", zone_ids=[zone])
    try:
        change_pending_until_served(r53, zone, lambda cid: aws.moto_admin(moto, "route53_change_served", change_id=cid))
        with pytest.raises(ClientError, match="NoSuchChange"):
            r53.get_change(Id="/change/CNEVERISSUED00")
    finally:
        aws.moto_admin(moto, "route53_dns_follow", zone_ids=[])


def test_twin_plain_moto_answers_insync_at_once(plain_moto):
    r53 = aws.client("route53", "us-east-1", plain_moto)
    zone = r53.create_hosted_zone(Name="gameday.test.", CallerReference="signals")["HostedZone"]["Id"]
    with pytest.raises(AssertionError, match="own id|INSYNC"):
        change_pending_until_served(r53, zone, lambda cid: None)


def health_observation(r53, hid: str, status: str) -> dict:
    """GetHealthCheckStatus's observation carries the checker's status (AssertionError otherwise)."""
    obs = r53.get_health_check_status(HealthCheckId=hid)["HealthCheckObservations"]
    assert [o["StatusReport"]["Status"] for o in obs] == [status], obs
    assert obs[0]["Region"] and obs[0]["IPAddress"] and isinstance(obs[0]["StatusReport"]["CheckedTime"], datetime)
    return obs[0]


def _health_check(r53) -> str:
    return r53.create_health_check(CallerReference=f"signals-{free_port()}", HealthCheckConfig={
        "Type": "HTTP", "IPAddress": "127.0.1.1", "Port": 8080, "ResourcePath": "/health"})["HealthCheck"]["Id"]


def test_get_health_check_status_is_what_the_checkers_observed(ctx):
    r53 = ctx.customer_client("route53", "us-east-1")
    hid = _health_check(r53)
    assert r53.get_health_check_status(HealthCheckId=hid)["HealthCheckObservations"] == []  # nobody checked yet
    failing = health_status_report(False, http_status=503)
    aws.moto_admin(ctx.moto_urls["us-east-1"], "route53_health_observed", health_check_id=hid, region="us-east-1",
                   ip_address="127.0.0.1", status=failing, checked_time=T0.timestamp())
    assert health_observation(r53, hid, failing)["StatusReport"]["CheckedTime"] == T0


def test_twin_plain_moto_reports_a_canned_success(plain_moto):
    r53 = aws.client("route53", "us-east-1", plain_moto)
    with pytest.raises(AssertionError, match="Success"):
        health_observation(r53, _health_check(r53), health_status_report(False, http_status=503))
