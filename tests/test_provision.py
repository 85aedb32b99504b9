"""Provisioning in-process (each moto server makes provision.plan()'s calls itself before it
serves: the stack's cold start, every region's server forked from one zygote: MotoFleet) leaves moto exactly as provisioning over HTTP does (component
tests, tests/support.py): the same resources with the same attributes, compared through the
AWS APIs the components and tests read. Ids moto draws at random (hosted zone, health checks)
are compared by what they point at."""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gameday.config import load_config
from gameday.environments.local import provision
from gameday.environments.local.context import LocalContext
from gameday.environments.local.moto_region import MotoFleet, MotoServer, MotoServerError
from gameday.events import EventLog
from gameday.net import free_port_on_all, region_address

VOLATILE = {"CreationDateTime", "AlarmConfigurationUpdatedTimestamp", "StateUpdatedTimestamp",
            "StateTransitionedTimestamp", "LatestStreamLabel", "LatestStreamArn", "TableId", "createdAt",
            "registeredAt", "updatedAt", "id", "CallerReference", "Id", "HealthCheckId", "ResponseMetadata",
            "deployments", "events", "StateReasonData", "StateReason", "HealthCheckVersion",
            "subnets", "securityGroups"}   # ids; the network part of snapshot() compares what they name


def _context(cfg, servers: dict[str, MotoServer], run_dir: Path) -> LocalContext:
    lb = {r: region_address(i) for i, r in enumerate(cfg.regions)}
    return LocalContext(config=cfg, profile=cfg.profile("local"), run_dir=run_dir,
                        events=EventLog(run_dir / "events.jsonl"), moto_urls={r: s.url for r, s in servers.items()},
                        lb_addresses=lb, lb_port=free_port_on_all(list(lb.values())))


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def snapshot(ctx: LocalContext, prov) -> dict:
    """What the components and tests read of the provisioned resources, random ids left out
    (a health check is named by its region, through its tag)."""
    cfg, out = ctx.config, {}
    for r in cfg.regions:
        ecs = ctx.internal_client("ecs", r)
        out[r] = {
            "table": ctx.internal_client("dynamodb", r).describe_table(TableName=cfg.dynamodb.table)["Table"],
            "topics": ctx.internal_client("sns", r).list_topics()["Topics"],
            "alarms": ctx.internal_client("cloudwatch", r).describe_alarms()["MetricAlarms"],
            "clusters": ecs.describe_clusters(clusters=["gameday"])["clusters"],
            "services": ecs.describe_services(cluster="gameday", services=["gameday-service"])["services"],
            "task_definition": ecs.describe_task_definition(taskDefinition="gameday-service")["taskDefinition"],
            "network": _network(ctx, r)}
    r53 = ctx.internal_client("route53", "us-east-1")
    region_of = {hc_id: r for r, hc_id in prov.health_check_ids.items()}
    checks = r53.list_health_checks()["HealthChecks"]
    out["route53"] = {
        "zones": r53.list_hosted_zones()["HostedZones"],
        "records": [{**rs, "health_check_of": region_of.get(rs.get("HealthCheckId"))} for rs in
                    r53.list_resource_record_sets(HostedZoneId=prov.hosted_zone_id)["ResourceRecordSets"]],
        "health_checks": {region_of[c["Id"]]: {
            "check": c, "tags": r53.list_tags_for_resource(ResourceType="healthcheck", ResourceId=c["Id"])
            ["ResourceTagSet"]["Tags"]} for c in checks}}
    return _strip(json.loads(json.dumps(out, default=str)))


def _network(ctx: LocalContext, region: str) -> dict:
    """The account's network, load balancer and function by what they are, not by their ids."""
    ec2, elb = ctx.internal_client("ec2", region), ctx.internal_client("elbv2", region)
    vpc_ids = [v["VpcId"] for v in ec2.describe_vpcs(Filters=[{"Name": "tag:gameday:stack", "Values": ["gameday"]}])["Vpcs"]]
    out = {
        "vpcs": [v["CidrBlock"] for v in ec2.describe_vpcs(VpcIds=vpc_ids)["Vpcs"]],
        "subnet_azs": sorted((s["AvailabilityZone"], s["CidrBlock"]) for s in ec2.describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": vpc_ids}])["Subnets"]),
        "load_balancers": [(lb["LoadBalancerName"], sorted(z["ZoneName"] for z in lb["AvailabilityZones"]))
                           for lb in elb.describe_load_balancers()["LoadBalancers"]],
        "target_groups": [(tg["TargetGroupName"], tg["TargetType"]) for tg in elb.describe_target_groups()["TargetGroups"]]}
    if region == ctx.config.failover.region:
        lam = ctx.internal_client("lambda", region)
        out["functions"] = [(f["FunctionName"], f["Handler"]) for f in lam.list_functions()["Functions"]]
        out["aliases"] = [(a["Name"], a["FunctionVersion"]) for a in lam.list_aliases(
            FunctionName=ctx.config.aws.lambda_name)["Aliases"]]
    return out


def _regions(cfg) -> list[str]:
    return list(dict.fromkeys([*cfg.regions, "us-east-1"]))


def _servers(cfg, run_dir: Path) -> dict[str, MotoServer]:
    return {r: MotoServer(r, run_dir / "logs") for r in _regions(cfg)}


@pytest.mark.parametrize("routing", ["simple", "failover"])
def test_in_process_provisioning_equals_provisioning_over_http(routing):
    cfg = load_config(None, {"route53": {"routing": routing}, "failover": {"failback": "automatic"}})
    run_dir = Path(tempfile.mkdtemp(prefix="gameday-provision-"))
    # in-process as the stack does it: every region's server forked from one zygote (MotoFleet)
    fleet, over_http = MotoFleet(_regions(cfg), run_dir / "in" / "logs").launch(), _servers(cfg, run_dir / "http")
    in_proc = fleet.servers
    try:
        ctx_in, ctx_http = _context(cfg, in_proc, run_dir / "in"), _context(cfg, over_http, run_dir / "http")
        ctx_http.lb_port = ctx_in.lb_port   # the health checks' port is part of what is compared
        fleet.send_plans(provision.plan(ctx_in))
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda s: s.start(), over_http.values()))
        fleet.wait_ready()
        prov_in = provision.provisioned(ctx_in, {k: v for s in in_proc.values() for k, v in s.results.items()})
        prov_http = provision.provision(ctx_http)
        assert prov_in.topic_arns == prov_http.topic_arns and prov_in.alarm_names == prov_http.alarm_names
        assert set(prov_in.health_check_ids) == set(prov_http.health_check_ids) == (
            set(cfg.regions) if routing == "failover" else set())
        got, want = snapshot(ctx_in, prov_in), snapshot(ctx_http, prov_http)
        assert got == want
        # the comparison sees what matters: every resource is there
        assert want["us-west-2"]["table"]["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        # the configured alarms and the stop condition --env aws runs watch (provision.STOP_CONDITION_ALARM)
        assert len(want["us-east-1"]["alarms"]) == len(prov_http.alarm_names["us-east-1"]) + 1 > 1
        assert want["us-west-2"]["services"][0]["desiredCount"] == cfg.service.desired_tasks
        assert {rs["Type"] for rs in want["route53"]["records"]} >= {"A", "NS", "SOA"}
        assert want["us-west-2"]["network"]["aliases"] == [["live", "1"]]
        assert [az for az, _ in want["us-east-1"]["network"]["subnet_azs"]] == cfg.az_names("us-east-1")
    finally:
        fleet.stop()
        for s in over_http.values():
            s.stop()


def test_a_failing_provisioning_call_is_one_clear_error_naming_the_region_and_log():
    run_dir = Path(tempfile.mkdtemp(prefix="gameday-provision-"))
    server = MotoServer("us-west-2", run_dir / "logs")
    bad = [{"service": "dynamodb", "region": "us-west-2", "op": "create_table",
            "params": {"TableName": "t", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                       "AttributeDefinitions": [], "BillingMode": "PAY_PER_REQUEST"}}]
    names_region_and_log = r"moto server for us-west-2 exited with 1; see .*moto-us-west-2\.log"
    with pytest.raises(MotoServerError, match=names_region_and_log) as e:
        server.start(plan=bad)
    assert "ValidationException" in str(e.value) or "ClientError" in str(e.value)
    assert server.proc.poll() is not None


def test_a_failing_call_in_one_forked_region_is_one_clear_error_and_stops_the_whole_fleet():
    run_dir = Path(tempfile.mkdtemp(prefix="gameday-provision-"))
    fleet = MotoFleet(["us-east-1", "us-west-2"], run_dir / "logs").launch()
    bad = [{"service": "dynamodb", "region": "us-west-2", "op": "create_table",
            "params": {"TableName": "t", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                       "AttributeDefinitions": [], "BillingMode": "PAY_PER_REQUEST"}}]
    fleet.send_plans({"us-west-2": bad})
    with pytest.raises(MotoServerError, match=r"moto server for us-west-2 exited with 1; see .*moto-us-west-2\.log") as e:
        fleet.wait_ready()
    assert "ValidationException" in str(e.value) or "ClientError" in str(e.value)
    # the region that was fine is stopped too, and so is the zygote: nothing is left running
    assert fleet.proc.poll() is not None
    east = fleet.servers["us-east-1"].proc
    assert east is None or east.poll() is not None
