"""Network and ECS changes made through the AWS API take effect on the running local environment,
as they would in AWS (issue 19): plain boto3 clients at the router (ctx.router_url), a real stack.

- a deny-all network ACL entry on the load balancer's subnets black-holes the region's data plane
  (clients time out, as under block_region "hang"); deleting it heals; an ACL cutting off one AZ's
  subnet leaves the region serving without that AZ's tasks (environments/local/network_acls.py,
  the rules in nacl_model.py);
- UpdateService with one AZ's subnet moves every task to that AZ; the subnets put back let the
  scheduler spread again (ecs.py, the rule in ecs_model.py);
- the block_region fault and a network ACL's block are two sources: lifting one leaves the other.

Each effect has a twin with the effect switched off, shown to fail the same assertion.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import boto3
import pytest
import requests

from gameday import aws
from gameday.assertions.deadlines import HARNESS_MARGIN_S
from gameday.assertions.eventually import NotWithinDeadline, eventually
from gameday.config import load_config
from gameday.environments.local.ecs import AZ_TAG, EcsReconciler
from gameday.environments.local.stack import LocalStack

CFG = load_config(None)
REGION = "us-west-2"
CLIENT_TIMEOUT_S = 0.5          # what a client waits for an answer before it gives up
DENY_RULE = 1                   # before the default ACL's allow-all (rule 100)
MEASURED: dict[str, list[float]] = {}   # what each effect took (ms), printed at the end (pytest -s)


@pytest.fixture(scope="module")
def stack():
    s = LocalStack(CFG, Path(tempfile.mkdtemp(prefix="gameday-aws-effects-network-")))
    s.start()
    try:
        yield s
    finally:
        hook_ms = s.network_acls.status()[REGION]["refresh_ms"]
        s.stop()
        MEASURED["the NACL hook's own cost (re-read + verdict), last call"] = [hook_ms]
        for what, ms in MEASURED.items():
            print(f"\n{what}: {', '.join('n/a' if x is None else f'{x:.0f}' for x in ms)} ms")


def customer(stack, service: str):
    """A plain boto3 client at the router, as `--env aws` pointed at this account makes them."""
    return boto3.client(service, region_name=REGION, endpoint_url=stack.ctx.router_url, **aws.LOCAL_CREDENTIALS)


def measure(what: str, since: float) -> None:
    MEASURED.setdefault(what, []).append((time.monotonic() - since) * 1000)


def serves(stack) -> None:
    try:
        r = requests.get(stack.ctx.lb_url(REGION) + CFG.service.health_path, timeout=CLIENT_TIMEOUT_S)
    except requests.RequestException as e:   # an observation for eventually() to retry, not a crash
        raise AssertionError(f"{REGION}'s load balancer did not answer: {e}") from e
    assert r.status_code == 200, f"{REGION}'s load balancer answered {r.status_code}: {r.text[:200]}"


def times_out(stack) -> None:
    try:
        r = requests.get(stack.ctx.lb_url(REGION) + CFG.service.health_path, timeout=CLIENT_TIMEOUT_S)
    except requests.Timeout:
        return
    raise AssertionError(f"{REGION}'s load balancer answered {r.status_code} instead of hanging")


def answers_instead_of_hanging(stack) -> None:
    """A twin's side of times_out: the region answers, so times_out fails with its own message.
    Retried within a deadline, because on two busy cores one answer can take longer than a client's
    wait: a region that hangs never answers, so one answer is proof and one timeout is not."""
    def check():
        try:
            times_out(stack)
        except AssertionError as e:
            assert "instead of hanging" in str(e), e
            return
        except requests.RequestException as e:       # refused or reset: not an answer either
            raise AssertionError(f"{REGION}'s load balancer did not answer: {e}") from e
        raise AssertionError(f"{REGION}'s load balancer did not answer within {CLIENT_TIMEOUT_S} s")
    eventually(check, deadline_s=CLIENT_TIMEOUT_S + HARNESS_MARGIN_S, what=f"{REGION} answers instead of hanging")


def heal_deadline(stack) -> float:
    """Targets that failed their checks under the block pass HealthyThresholdCount checks again."""
    p = stack.ctx.profile
    return (p.healthy_threshold + 1) * p.health_check_interval_s + HARNESS_MARGIN_S


def deny_all(ec2, acl: str, on: bool) -> None:
    for egress in (False, True):
        if on:
            ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=DENY_RULE, Protocol="-1", RuleAction="deny",
                                         Egress=egress, CidrBlock="0.0.0.0/0")
        else:
            ec2.delete_network_acl_entry(NetworkAclId=acl, RuleNumber=DENY_RULE, Egress=egress)


# -- network ACLs --------------------------------------------------------------------------------------------

def test_a_deny_all_entry_black_holes_the_region_and_deleting_it_heals(stack):
    ec2, acl = customer(stack, "ec2"), stack.ctx.provisioned.network_acl_ids[REGION]
    eventually(lambda: serves(stack), deadline_s=heal_deadline(stack), what="the region serves before")
    deny_all(ec2, acl, True)
    returned = time.monotonic()
    try:
        assert stack.lbs.status()[REGION]["blocked"] == "hang"   # on before the call returned
        times_out(stack)
        measure("CreateNetworkAclEntry returned -> a client's first timeout", returned)
    finally:
        deny_all(ec2, acl, False)
    healed = time.monotonic()
    eventually(lambda: serves(stack), deadline_s=heal_deadline(stack), what="the region serves again")
    measure("DeleteNetworkAclEntry returned -> the region serves (targets healthy again)", healed)


def test_twin_with_the_hook_not_registered_the_deny_entry_changes_nothing(stack, monkeypatch):
    hooks = {k: [c for c in v if getattr(c, "__self__", None) is not stack.network_acls]
             for k, v in stack.ctx.aws_call_hooks.items()}
    monkeypatch.setattr(stack.ctx, "aws_call_hooks", hooks)
    ec2, acl = customer(stack, "ec2"), stack.ctx.provisioned.network_acl_ids[REGION]
    eventually(lambda: serves(stack), deadline_s=heal_deadline(stack), what="the region serves before")
    deny_all(ec2, acl, True)
    try:
        answers_instead_of_hanging(stack)
    finally:
        deny_all(ec2, acl, False)


def _target_states(stack) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for t in stack.lbs.status()[REGION]["targets"]:
        out.setdefault(t["az"], set()).add(t["state"])
    return out


def test_an_acl_cutting_off_one_subnet_takes_only_that_azs_tasks_out(stack):
    ec2 = customer(stack, "ec2")
    cut_az, kept_az = CFG.az_names(REGION)
    subnet = stack.ctx.provisioned.subnet_ids[REGION][cut_az]
    acls = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])["NetworkAcls"]
    association = next(a["NetworkAclAssociationId"] for a in acls[0]["Associations"] if a["SubnetId"] == subnet)
    # a new custom ACL has only the `*` rules: it denies everything
    custom = ec2.create_network_acl(VpcId=stack.ctx.provisioned.vpc_ids[REGION])["NetworkAcl"]["NetworkAclId"]
    moved = ec2.replace_network_acl_association(AssociationId=association, NetworkAclId=custom)["NewAssociationId"]
    p = stack.ctx.profile
    cut_deadline = (p.unhealthy_threshold + 1) * p.health_check_interval_s + HARNESS_MARGIN_S
    try:
        def only_the_cut_az_unhealthy():
            states = _target_states(stack)
            assert states.get(cut_az) == {"unhealthy"} and states.get(kept_az) == {"healthy"}, states
        eventually(only_the_cut_az_unhealthy, deadline_s=cut_deadline, what=f"{cut_az}'s targets unhealthy")
        # the region still serves, through the other AZ's tasks (awaited: one answer can outlast a client's wait)
        eventually(lambda: serves(stack), deadline_s=CLIENT_TIMEOUT_S + HARNESS_MARGIN_S,
                   what=f"{REGION} serving through {kept_az}")
    finally:
        ec2.replace_network_acl_association(AssociationId=moved, NetworkAclId=acls[0]["NetworkAclId"])
        ec2.delete_network_acl(NetworkAclId=custom)

    def all_healthy():
        assert set().union(*_target_states(stack).values()) == {"healthy"}, _target_states(stack)
    eventually(all_healthy, deadline_s=heal_deadline(stack), what="every target healthy again")


def _fault_on_then_an_acl_block_on_and_off(stack, ec2, acl: str) -> None:
    eventually(lambda: serves(stack), deadline_s=heal_deadline(stack), what="the region serves before")
    stack.block_data_plane(REGION, "hang")
    deny_all(ec2, acl, True)
    deny_all(ec2, acl, False)


def test_the_block_region_fault_and_an_acl_block_are_lifted_separately(stack):
    ec2, acl = customer(stack, "ec2"), stack.ctx.provisioned.network_acl_ids[REGION]
    try:
        _fault_on_then_an_acl_block_on_and_off(stack, ec2, acl)
        times_out(stack)   # the ACL's heal left the fault's block on
        deny_all(ec2, acl, True)
        stack.block_data_plane(REGION, None)
        times_out(stack)   # the fault's rollback left the ACL's block on
    finally:
        stack.block_data_plane(REGION, None)
        if any(e["RuleNumber"] == DENY_RULE for e in ec2.describe_network_acls(
                NetworkAclIds=[acl])["NetworkAcls"][0]["Entries"]):
            deny_all(ec2, acl, False)
    eventually(lambda: serves(stack), deadline_s=heal_deadline(stack), what="the region serves with both lifted")


def test_twin_with_one_block_for_both_sources_the_acls_heal_lifts_the_fault(stack, monkeypatch):
    network = stack.ctx.network

    def one_block(region, source, mode):   # what set_blocked did before the sources were kept apart
        with network.lock:
            if mode is None:
                network.blocked_regions.pop(region, None)
            else:
                network.blocked_regions[region] = mode
        return mode
    monkeypatch.setattr(network, "set_block", one_block)
    try:
        acl = stack.ctx.provisioned.network_acl_ids[REGION]
        _fault_on_then_an_acl_block_on_and_off(stack, customer(stack, "ec2"), acl)
        answers_instead_of_hanging(stack)
    finally:
        stack.block_data_plane(REGION, None)


# -- ECS: the service's subnets ---------------------------------------------------------------------------------

def _running_azs(stack) -> list[str]:
    ecs = customer(stack, "ecs")
    arns = ecs.list_tasks(cluster="gameday", serviceName="gameday-service", desiredStatus="RUNNING")["taskArns"]
    tasks = ecs.describe_tasks(cluster="gameday", tasks=arns, include=["TAGS"])["tasks"] if arns else []
    return sorted({t["key"]: t["value"] for t in x.get("tags", [])}.get(AZ_TAG, "?") for x in tasks)


def _set_subnets(stack, azs: list[str]) -> None:
    prov = stack.ctx.provisioned
    vpc = {"subnets": [prov.subnet_ids[REGION][az] for az in azs], "securityGroups": [prov.security_group_ids[REGION]],
           "assignPublicIp": "DISABLED"}
    customer(stack, "ecs").update_service(cluster="gameday", service="gameday-service",
                                          networkConfiguration={"awsvpcConfiguration": vpc})


def _move_deadline(stack) -> float:
    """A replacement provisions, starts and runs; then the task it replaces stops."""
    p = stack.ctx.profile
    return p.task_provisioning_s + 3 * p.reconcile_interval_s + HARNESS_MARGIN_S


def _every_task_in(stack, az: str) -> None:
    azs = _running_azs(stack)
    assert azs == [az] * CFG.service.desired_tasks, f"running tasks' AZs: {azs}"


def _first_task_started_in(stack, az: str, seq: int) -> float | None:
    for e in stack.ctx.events.since(seq, kind="ecs"):
        if e["action"] == "task_started" and e["region"] == REGION and e["az"] == az:
            return e["mono"]
    return None


def test_update_service_to_one_azs_subnet_moves_every_task_there_and_back_spreads(stack):
    a, b = CFG.az_names(REGION)
    eventually(lambda: _every_task_spread(stack), deadline_s=_move_deadline(stack), what="tasks spread before")
    seq = stack.ctx.events.since()[-1]["seq"]
    try:
        _set_subnets(stack, [b])
        returned = time.monotonic()
        eventually(lambda: _every_task_in(stack, b), deadline_s=_move_deadline(stack), what=f"every task in {b}")
        measure("UpdateService returned -> every task in the remaining AZ", returned)
        started = _first_task_started_in(stack, b, seq)
        MEASURED.setdefault("UpdateService returned -> the first task started in the remaining AZ", []).append(
            (started - returned) * 1000)
    finally:
        _set_subnets(stack, [a, b])
    # put back: no rebalancing, but a replacement goes to the emptiest AZ again
    ecs = customer(stack, "ecs")
    victim = ecs.list_tasks(cluster="gameday", serviceName="gameday-service", desiredStatus="RUNNING")["taskArns"][0]
    ecs.stop_task(cluster="gameday", task=victim, reason="test: spread again")
    eventually(lambda: _every_task_spread(stack), deadline_s=_move_deadline(stack), what="tasks spread again")


def _every_task_spread(stack) -> None:
    azs = _running_azs(stack)
    assert azs == sorted(CFG.az_names(REGION)), f"running tasks' AZs: {azs}"


def test_twin_with_ecs_ignoring_the_subnets_no_task_moves(stack, monkeypatch):
    a, b = CFG.az_names(REGION)
    real = EcsReconciler._service_desired
    monkeypatch.setattr(EcsReconciler, "_service_desired", lambda self, region: (*real(self, region)[:2], None))
    eventually(lambda: _every_task_spread(stack), deadline_s=_move_deadline(stack), what="tasks spread before")
    try:
        _set_subnets(stack, [b])
        with pytest.raises(NotWithinDeadline):
            eventually(lambda: _every_task_in(stack, b), deadline_s=_move_deadline(stack), what=f"every task in {b}")
    finally:
        _set_subnets(stack, [a, b])
