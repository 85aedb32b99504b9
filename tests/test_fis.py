"""FIS experiments run on the local environment (environments/local/fis.py, moto_fix_fis.py), driven
with plain boto3 through the router as a customer would: each action has its effect while it runs
and none once the experiment stops or its duration ends; GetExperiment / ListExperiments report the
runner's states. Each effect test has a twin (the effect switched off in the runner) proving the
check fails without it.

Two setups: real moto servers + the router + a FisRunner on a FakeClock (the schedule, stop
conditions, failures, the API and network-ACL actions), and one running LocalStack (replication
and the Lambda runner are real processes and threads there)."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from gameday import aws
from gameday.assertions.eventually import NotWithinDeadline, eventually
from gameday.clock import FakeClock
from gameday.config import load_config
from gameday.environments.local.fis import (DISRUPT_CONNECTIVITY, LAMBDA_ERROR, PAUSE_REPLICATION,
                                            FisRunner)
from gameday.environments.local.router import AwsRouter
from tests.support import provisioned_context

CFG = load_config(None)
WEST, EAST = "us-west-2", "us-east-1"
ACCOUNT = aws.LOCAL_ACCOUNT_ID
DEADLINE_S = 10.0          # a state the runner publishes within one scheduler step (ms), on a busy machine


def fis_client(ctx, region: str):
    return aws.client("fis", region, ctx.router_url)


def start(ctx, region: str, actions: dict, targets: dict | None = None, stop_conditions=None) -> tuple[str, float]:
    """Template + experiment through the router; (experiment id, time.monotonic() when StartExperiment returned)."""
    fis = fis_client(ctx, region)
    tpl = fis.create_experiment_template(
        clientToken=uuid.uuid4().hex, description="gameday test", roleArn=f"arn:aws:iam::{ACCOUNT}:role/fis",
        stopConditions=stop_conditions or [{"source": "none"}], targets=targets or {}, actions=actions,
    )["experimentTemplate"]
    exp = fis.start_experiment(clientToken=uuid.uuid4().hex, experimentTemplateId=tpl["id"])["experiment"]
    return exp["id"], time.monotonic()


def state_of(ctx, region: str, exp_id: str) -> tuple[str, dict[str, str]]:
    exp = fis_client(ctx, region).get_experiment(id=exp_id)["experiment"]
    return exp["state"]["status"], {n: a["state"]["status"] for n, a in exp["actions"].items()}


def reaches(ctx, region: str, exp_id: str, status: str, actions: dict | None = None) -> dict:
    def check():
        got = state_of(ctx, region, exp_id)
        assert got[0] == status and (actions is None or got[1] == actions), got
        return fis_client(ctx, region).get_experiment(id=exp_id)["experiment"]
    return eventually(check, deadline_s=DEADLINE_S, what=f"experiment {exp_id} {status} {actions or ''}")[0]


def wait_action(duration: str, start_after: list[str] | None = None) -> dict:
    return {"actionId": "aws:fis:wait", "parameters": {"duration": duration}, **(
        {"startAfter": start_after} if start_after else {})}


# -- moto servers + router + runner on a fake clock ---------------------------------------------------------
@pytest.fixture(scope="module")
def parts():
    with provisioned_context() as ctx:
        ctx.clock = FakeClock()
        router = AwsRouter(ctx).start()
        runner = FisRunner(ctx, router=router).start()
        try:
            yield ctx, runner, router
        finally:
            runner.stop()
            router.stop()


def test_actions_run_on_their_schedule_and_get_experiment_says_so(parts):
    ctx, runner, _ = parts
    exp_id, _ = start(ctx, WEST, {"first": wait_action("PT2S"), "second": wait_action("PT1S", ["first"])})
    reaches(ctx, WEST, exp_id, "running", {"first": "running", "second": "pending"})
    ctx.clock.advance(2.0)
    reaches(ctx, WEST, exp_id, "running", {"first": "completed", "second": "running"})
    ctx.clock.advance(1.0)
    exp = reaches(ctx, WEST, exp_id, "completed", {"first": "completed", "second": "completed"})
    first, second = exp["actions"]["first"], exp["actions"]["second"]
    assert (second["startTime"] - first["startTime"]).total_seconds() == pytest.approx(2.0)
    assert (second["endTime"] - second["startTime"]).total_seconds() == pytest.approx(1.0)
    listed = {e["id"]: e["state"]["status"] for e in fis_client(ctx, WEST).list_experiments()["experiments"]}
    assert listed[exp_id] == "completed"


def test_stop_experiment_stops_the_running_actions_and_cancels_the_rest(parts):
    ctx, _, _ = parts
    exp_id, _ = start(ctx, WEST, {"first": wait_action("PT60S"), "second": wait_action("PT1S", ["first"])})
    reaches(ctx, WEST, exp_id, "running", {"first": "running", "second": "pending"})
    answer = fis_client(ctx, WEST).stop_experiment(id=exp_id)["experiment"]
    assert answer["state"] == {"status": "stopping", "reason": "Experiment is stopping."}   # as AWS answers it
    exp = reaches(ctx, WEST, exp_id, "stopped", {"first": "stopped", "second": "cancelled"})
    assert "StopExperiment" in exp["state"]["reason"]
    ctx.clock.advance(120.0)   # its schedule is over: nothing moves it again
    assert state_of(ctx, WEST, exp_id)[0] == "stopped"


def test_a_stop_condition_in_alarm_stops_the_experiment(parts):
    ctx, _, _ = parts
    alarm = ctx.provisioned.alarm_names[WEST]["request-count"]
    arn = f"arn:aws:cloudwatch:{WEST}:{ACCOUNT}:alarm:{alarm}"
    exp_id, _ = start(ctx, WEST, {"wait": wait_action("PT60S")},
                      stop_conditions=[{"source": "aws:cloudwatch:alarm", "value": arn}])
    reaches(ctx, WEST, exp_id, "running", {"wait": "running"})
    ctx.internal_client("cloudwatch", WEST).set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test")
    try:
        def stopped():
            ctx.clock.advance(0.25)   # the runner reads its stop conditions every 0.25 s of its clock
            return reaches(ctx, WEST, exp_id, "stopped", {"wait": "stopped"})
        exp = eventually(stopped, deadline_s=DEADLINE_S, what="stop condition")[0]
        assert arn in exp["state"]["reason"] and "ALARM" in exp["state"]["reason"]
    finally:
        ctx.internal_client("cloudwatch", WEST).set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="test")


def test_an_action_whose_target_is_not_here_fails_the_experiment(parts):
    ctx, _, router = parts
    subnet = f"arn:aws:ec2:{WEST}:{ACCOUNT}:subnet/subnet-00000000"
    exp_id, _ = start(ctx, WEST, {
        "cut": {"actionId": DISRUPT_CONNECTIVITY, "parameters": {"duration": "PT60S", "scope": "all"},
                "targets": {"Subnets": "subnets"}},
        "later": wait_action("PT1S", ["cut"])},
        targets={"subnets": {"resourceType": "aws:ec2:subnet", "resourceArns": [subnet], "selectionMode": "ALL"}})
    exp = reaches(ctx, WEST, exp_id, "failed", {"cut": "failed", "later": "cancelled"})
    assert "subnet-00000000 not found" in exp["state"]["reason"]
    assert not router.status()["api_faults"]


def test_an_action_the_local_environment_does_not_model_fails_with_the_reason(parts):
    ctx, _, _ = parts
    exp_id, _ = start(ctx, WEST, {"x": {"actionId": "aws:ecs:drain-container-instances",
                                        "parameters": {"duration": "PT1M"}}})
    exp = reaches(ctx, WEST, exp_id, "failed", {"x": "failed"})
    assert "not modelled by the local environment" in exp["state"]["reason"]


def test_moto_alone_never_completes_an_experiment_nobody_runs(parts):
    """moto's own progression ("immediate": completed at once) is switched off: an experiment no
    runner claimed stays initiating, and StopExperiment stops it (nothing to undo)."""
    ctx, _, _ = parts
    fis = aws.client("fis", EAST, ctx.moto_urls[EAST])   # straight to moto: the runner never hears of it
    tpl = fis.create_experiment_template(clientToken=uuid.uuid4().hex, description="t", roleArn="arn:aws:iam::1:role/x",
                                         stopConditions=[{"source": "none"}], actions={"w": wait_action("PT1S")})
    exp = fis.start_experiment(clientToken=uuid.uuid4().hex, experimentTemplateId=tpl["experimentTemplate"]["id"])
    exp_id = exp["experiment"]["id"]
    assert exp["experiment"]["state"]["status"] == "initiating"
    for _ in range(3):   # each GetExperiment is one of moto's advance() ticks
        assert fis.get_experiment(id=exp_id)["experiment"]["state"]["status"] == "initiating"
    fis.stop_experiment(id=exp_id)
    assert fis.get_experiment(id=exp_id)["experiment"]["state"]["status"] == "stopped"


# -- API errors (aws:fis:inject-api-*) ---------------------------------------------------------------------------
def api_error_experiment(ctx, action_id: str = "aws:fis:inject-api-internal-error") -> tuple[str, float]:
    return start(ctx, WEST, {"api": {
        "actionId": action_id, "targets": {"Roles": "roles"},
        "parameters": {"duration": "PT60S", "service": "ec2", "operations": "DescribeVpcs", "percentage": "100"}}},
        targets={"roles": {"resourceType": "aws:iam:role", "resourceArns": [f"arn:aws:iam::{ACCOUNT}:role/app"],
                           "selectionMode": "ALL"}})


def ec2_calls_fail(ctx, started: float, status: int, code: str | None = None) -> float:
    """Seconds from `started` until DescribeVpcs in WEST fails with HTTP `status` (and `code`), while
    DescribeSubnets does not."""
    ec2 = aws.client("ec2", WEST, ctx.router_url, retries=0)

    def fails():
        try:
            ec2.describe_vpcs()
        except ClientError as e:
            got = (e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"])
            assert got[0] == status and code in (None, got[1]), got
            return
        raise AssertionError("DescribeVpcs succeeded")
    took = eventually(fails, deadline_s=DEADLINE_S, what=f"DescribeVpcs failing with {status}", started=started)[1]
    ec2.describe_subnets()   # another operation is untouched
    return took


@pytest.mark.parametrize("action_id, status, code", [("aws:fis:inject-api-internal-error", 500, None),
                                                     ("aws:fis:inject-api-unavailable-error", 503, None),
                                                     ("aws:fis:inject-api-throttle-error", 503, "RequestLimitExceeded")])
def test_api_error_experiment_fails_the_ec2_calls_until_it_stops(parts, action_id, status, code):
    ctx, runner, router = parts
    exp_id, returned = api_error_experiment(ctx, action_id)
    try:
        ec2_calls_fail(ctx, returned, status, code)
        assert any("cannot be told apart" in n for n in runner.experiment(exp_id)["notes"]["api"])
    finally:
        fis_client(ctx, WEST).stop_experiment(id=exp_id)
    reaches(ctx, WEST, exp_id, "stopped")
    assert not router.status()["api_faults"]
    aws.client("ec2", WEST, ctx.router_url, retries=0).describe_vpcs()


def test_api_error_twin_the_check_fails_without_the_effect(parts):
    ctx, runner, _ = parts
    runner.disabled_effects.add("aws:fis:inject-api-internal-error")
    try:
        exp_id, _ = api_error_experiment(ctx)
        reaches(ctx, WEST, exp_id, "running")
        with pytest.raises(NotWithinDeadline, match="DescribeVpcs succeeded"):
            ec2_calls_fail(ctx, time.monotonic() - DEADLINE_S + 1.0, 500)
        fis_client(ctx, WEST).stop_experiment(id=exp_id)
        reaches(ctx, WEST, exp_id, "stopped")
    finally:
        runner.disabled_effects.discard("aws:fis:inject-api-internal-error")


# -- aws:network:disrupt-connectivity ------------------------------------------------------------------------------
def disrupt_experiment(ctx, region: str, duration: str) -> tuple[str, float]:
    arns = [f"arn:aws:ec2:{region}:{ACCOUNT}:subnet/{s}" for s in ctx.provisioned.subnet_ids[region].values()]
    return start(ctx, region, {"cut": {"actionId": DISRUPT_CONNECTIVITY, "targets": {"Subnets": "subnets"},
                                       "parameters": {"duration": duration, "scope": "all"}}},
                 targets={"subnets": {"resourceType": "aws:ec2:subnet", "resourceArns": arns, "selectionMode": "ALL"}})


def subnet_acls(ctx, region: str) -> dict[str, dict]:
    """subnet id -> the network ACL it is associated with (as a customer reads it)."""
    subnets = list(ctx.provisioned.subnet_ids[region].values())
    acls = aws.client("ec2", region, ctx.router_url).describe_network_acls(
        Filters=[{"Name": "association.subnet-id", "Values": subnets}])["NetworkAcls"]
    return {a["SubnetId"]: acl for acl in acls for a in acl["Associations"] if a["SubnetId"] in subnets}


def denies_all(acl: dict) -> bool:
    tags = {t["Key"]: t["Value"] for t in acl.get("Tags", [])}
    first = {e["Egress"]: e for e in sorted(acl["Entries"], key=lambda e: -e["RuleNumber"])}   # lowest number wins
    return tags.get("managedByFIS") == "true" and all(
        e["RuleAction"] == "deny" and e["Protocol"] == "-1" and e["CidrBlock"] == "0.0.0.0/0" for e in first.values()) \
        and set(first) == {True, False}


def subnets_cut_off(ctx, region: str, started: float) -> float:
    def check():
        acls = subnet_acls(ctx, region)
        assert set(acls) == set(ctx.provisioned.subnet_ids[region].values()), acls
        assert all(denies_all(acl) for acl in acls.values()), {s: acl["NetworkAclId"] for s, acl in acls.items()}
    return eventually(check, deadline_s=DEADLINE_S, what=f"{region}'s subnets on a deny-all clone", started=started)[1]


def test_disrupt_connectivity_puts_the_subnets_on_a_denying_clone_of_their_acl_until_it_ends(parts):
    ctx, _, _ = parts
    original = ctx.provisioned.network_acl_ids[WEST]
    assert {acl["NetworkAclId"] for acl in subnet_acls(ctx, WEST).values()} == {original}
    exp_id, returned = disrupt_experiment(ctx, WEST, "PT2S")
    subnets_cut_off(ctx, WEST, returned)
    clone = next(iter(subnet_acls(ctx, WEST).values()))["NetworkAclId"]
    ctx.clock.advance(2.0)
    reaches(ctx, WEST, exp_id, "completed", {"cut": "completed"})
    assert {acl["NetworkAclId"] for acl in subnet_acls(ctx, WEST).values()} == {original}
    left = aws.client("ec2", WEST, ctx.router_url).describe_network_acls()["NetworkAcls"]
    assert clone not in {acl["NetworkAclId"] for acl in left}   # the clone is deleted


def test_disrupt_connectivity_twin_the_check_fails_without_the_effect(parts):
    ctx, runner, _ = parts
    runner.disabled_effects.add(DISRUPT_CONNECTIVITY)
    try:
        exp_id, _ = disrupt_experiment(ctx, WEST, "PT60S")
        reaches(ctx, WEST, exp_id, "running")
        with pytest.raises(NotWithinDeadline, match="deny-all clone"):
            subnets_cut_off(ctx, WEST, time.monotonic() - DEADLINE_S + 1.0)
        fis_client(ctx, WEST).stop_experiment(id=exp_id)
        reaches(ctx, WEST, exp_id, "stopped")
    finally:
        runner.disabled_effects.discard(DISRUPT_CONNECTIVITY)


# -- one running LocalStack: replication and the Lambda runner -----------------------------------------------------
HOLD_S = 1.0    # a replicated write arrives within ~0.1-0.3 s here (stream polls 0.05-0.2 s): 1 s held is a pause


@pytest.fixture(scope="module")
def stack():
    from gameday.environments.local.stack import LocalStack

    s = LocalStack(CFG, Path(tempfile.mkdtemp(prefix="gameday-fis-")))
    s.start()
    try:
        yield s
    finally:
        s.stop()


def pause_experiment(ctx, duration: str) -> tuple[str, float]:
    arn = f"arn:aws:dynamodb:{WEST}:{ACCOUNT}:table/{CFG.dynamodb.table}"
    return start(ctx, WEST, {"pause": {"actionId": PAUSE_REPLICATION, "targets": {"Tables": "tables"},
                                       "parameters": {"duration": duration}}},
                 targets={"tables": {"resourceType": "aws:dynamodb:global-table", "resourceArns": [arn],
                                     "selectionMode": "ALL"}})


def write(ctx, region: str) -> str:
    key = f"fis-{uuid.uuid4().hex[:12]}"
    aws.client("dynamodb", region, ctx.router_url).put_item(
        TableName=CFG.dynamodb.table, Item={"pk": {"S": key}, "v": {"S": "x"}})
    return key


def present(ctx, region: str, key: str) -> bool:
    return "Item" in aws.client("dynamodb", region, ctx.router_url).get_item(
        TableName=CFG.dynamodb.table, Key={"pk": {"S": key}}, ConsistentRead=True)


def held_back(ctx, key: str) -> None:
    """The write made in WEST is still not in EAST HOLD_S later (AssertionError when it arrived)."""
    t0 = time.monotonic()
    arrived = Retrying(stop=stop_after_delay(HOLD_S), wait=wait_fixed(0.05), retry=retry_if_result(lambda got: not got),
                       retry_error_callback=lambda state: False)(present, ctx, EAST, key)
    assert not arrived, f"write {key} reached {EAST} {time.monotonic() - t0:.2f}s after it was made in {WEST}"


def arrives(ctx, key: str) -> float:
    return eventually(lambda: _assert(present(ctx, EAST, key)), deadline_s=DEADLINE_S,
                      what=f"write {key} replicated to {EAST}")[1]


def _assert(condition: bool) -> None:
    assert condition


def test_pause_replication_holds_writes_from_the_region_until_the_experiment_stops(stack):
    ctx = stack.ctx
    exp_id, returned = pause_experiment(ctx, "PT60S")
    eventually(lambda: _assert(stack.replication.status()[f"{WEST}->{EAST}"]["paused"]),
               deadline_s=DEADLINE_S, what="replication paused", started=returned)
    try:
        reaches(ctx, WEST, exp_id, "running", {"pause": "running"})
        assert not stack.replication.status()[f"{EAST}->{WEST}"]["paused"]   # only FROM the target's region
        key = write(ctx, WEST)
        held_back(ctx, key)
    finally:
        fis_client(ctx, WEST).stop_experiment(id=exp_id)
    arrives(ctx, key)
    reaches(ctx, WEST, exp_id, "stopped", {"pause": "stopped"})


def test_pause_replication_ends_with_its_duration(stack):
    ctx = stack.ctx
    exp_id, _ = pause_experiment(ctx, "PT2S")
    reaches(ctx, WEST, exp_id, "running", {"pause": "running"})
    key = write(ctx, WEST)
    held_back(ctx, key)
    arrives(ctx, key)
    reaches(ctx, WEST, exp_id, "completed", {"pause": "completed"})


def test_pause_replication_twin_the_check_fails_without_the_effect(stack):
    ctx = stack.ctx
    stack.fis.disabled_effects.add(PAUSE_REPLICATION)
    try:
        exp_id, _ = pause_experiment(ctx, "PT60S")
        reaches(ctx, WEST, exp_id, "running", {"pause": "running"})
        key = write(ctx, WEST)
        with pytest.raises(AssertionError, match=f"reached {EAST}"):
            held_back(ctx, key)
        fis_client(ctx, WEST).stop_experiment(id=exp_id)
        reaches(ctx, WEST, exp_id, "stopped")
    finally:
        stack.fis.disabled_effects.discard(PAUSE_REPLICATION)


def lambda_experiment(stack, action_id: str, **params) -> tuple[str, float]:
    region = CFG.failover.region
    arn = f"arn:aws:lambda:{region}:{ACCOUNT}:function:{CFG.aws.lambda_name}"
    return start(stack.ctx, region, {"fault": {
        "actionId": action_id, "targets": {"Functions": "fn"},
        "parameters": {"duration": "PT60S", "invocationPercentage": "100", **params}}},
        targets={"fn": {"resourceType": "aws:lambda:function", "resourceArns": [arn], "selectionMode": "ALL"}})


NO_ALARM = {"Records": []}   # the seed handler answers it without changing anything


def next_invocation_fails(stack) -> None:
    record = stack.lambdas.invoke(NO_ALARM, wait_s=30)
    assert record["outcome"] != "ok" and record["error"]["type"] == "GamedayInjectedFault", \
        f"the invocation's outcome was {record['outcome']!r} (error {record['error']})"


def test_lambda_invocation_error_fails_the_next_invocation_until_it_stops(stack):
    region = CFG.failover.region
    exp_id, returned = lambda_experiment(stack, LAMBDA_ERROR, preventExecution="true")
    eventually(lambda: _assert((stack.lambdas.fault or {}).get("mode") == "error"),
               deadline_s=DEADLINE_S, what="Lambda fault set", started=returned)
    try:
        next_invocation_fails(stack)
    finally:
        fis_client(stack.ctx, region).stop_experiment(id=exp_id)
    reaches(stack.ctx, region, exp_id, "stopped")
    assert stack.lambdas.fault is None
    assert stack.lambdas.invoke(NO_ALARM, wait_s=30)["outcome"] == "ok"


def test_lambda_invocation_error_twin_the_check_fails_without_the_effect(stack):
    region = CFG.failover.region
    stack.fis.disabled_effects.add(LAMBDA_ERROR)
    try:
        exp_id, _ = lambda_experiment(stack, LAMBDA_ERROR, preventExecution="true")
        reaches(stack.ctx, region, exp_id, "running")
        with pytest.raises(AssertionError, match="outcome was 'ok'"):
            next_invocation_fails(stack)
        fis_client(stack.ctx, region).stop_experiment(id=exp_id)
        reaches(stack.ctx, region, exp_id, "stopped")
    finally:
        stack.fis.disabled_effects.discard(LAMBDA_ERROR)


def test_lambda_add_delay_starts_invocations_late(stack):
    region = CFG.failover.region
    exp_id, _ = lambda_experiment(stack, "aws:lambda:invocation-add-delay", startupDelayMilliseconds="400",
                                  invocationPercentage="50")
    try:
        reaches(stack.ctx, region, exp_id, "running")
        assert stack.lambdas.fault == {"mode": "delay", "delay_s": 0.4}
        t0 = time.monotonic()
        assert stack.lambdas.invoke(NO_ALARM, wait_s=30)["outcome"] == "ok"
        assert time.monotonic() - t0 >= 0.4
        notes = stack.fis.experiment(exp_id)["notes"]["fault"]
        assert any("invocationPercentage 50 not modelled" in n for n in notes)
    finally:
        fis_client(stack.ctx, region).stop_experiment(id=exp_id)
    reaches(stack.ctx, region, exp_id, "stopped")
    assert stack.lambdas.fault is None


def test_disrupt_connectivity_black_holes_the_region_data_plane(stack):
    import requests

    ctx = stack.ctx
    if ("ec2", "ReplaceNetworkAclAssociation") not in ctx.aws_call_hooks:
        pytest.skip("the network-ACL enforcement (a ctx.after_aws_call hook on the NACL operations, another "
                    "helper's part) is not wired in this tree yet: the ACL state is checked by "
                    "test_disrupt_connectivity_puts_the_subnets_on_a_denying_clone_of_their_acl_until_it_ends")
    url = ctx.lb_url(WEST) + CFG.service.health_path

    def answers() -> bool:
        try:
            return requests.get(url, timeout=0.5).status_code < 500
        except requests.RequestException:
            return False

    eventually(lambda: _assert(answers()), deadline_s=DEADLINE_S, what=f"{WEST} answering before")
    exp_id, returned = disrupt_experiment(ctx, WEST, "PT60S")
    try:
        eventually(lambda: _assert(not answers()), deadline_s=DEADLINE_S, what=f"{WEST} black-holed", started=returned)
    finally:
        fis_client(ctx, WEST).stop_experiment(id=exp_id)
    eventually(lambda: _assert(answers()), deadline_s=DEADLINE_S, what=f"{WEST} answering again")
    reaches(ctx, WEST, exp_id, "stopped")
