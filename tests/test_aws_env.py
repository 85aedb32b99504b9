"""The aws environment against moto (a real moto server on loopback; AWS_ENDPOINT_URL points every
boto3 client there, as it would point them at a real account's endpoints): a correctly wired seed
stack passes preflight and each broken wire is found as one line; a foreign account is refused
before any other call; NACL blackhole injected and fully rolled back; a stop-condition alarm
aborts and rolls back; a SIGKILLed injector is cleaned up by `gameday rollback`; caps refuse an
over-limit plan or fault; FIS (not in moto) through botocore's Stubber only.

moto gaps filled, each in one place: tasks carry their AZ in a tag (moto's Fargate has none),
and DescribeTable's Replicas (moto has no global tables) are filled from the tables that really
exist in each region of the moto server.
"""

from __future__ import annotations

import functools
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
import requests
from botocore.stub import ANY, Stubber
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from gameday.environments.aws import (AccountRefused, AwsConfigError, AwsEnvironment, GuardrailViolation, PreflightFailed,
                              RunAborted, guardrails)
from gameday.environments.aws.discovery import AZ_TAG, ORIGINAL_SUBNETS_TAG
from gameday.environments.aws.plan import scenario_catalogue
from gameday.environments.local.moto_region import MotoServer
from gameday.faults import (FaultError, Nemesis, api_fault, block_region, lambda_fault, lose_az, pause_replication,
                            replication_drop, stop_tasks)
from gameday.faults.journal import read_journal
from gameday.config import load_config

REPO = Path(__file__).resolve().parents[1]
REGIONS = ("us-east-1", "us-west-2")
ACCOUNT = "123456789012"          # moto's account
ADDRESSES = {"us-east-1": "127.0.1.1", "us-west-2": "127.0.2.1"}   # data in the record only, never contacted
SERVICE, CLUSTER, TABLE, TOPIC, LAMBDA = "gameday-service", "gameday", "gameday-items", "gameday-failover", "gameday-failover"
STOP_ALARM = "gameday-stop"
MUTATING = ("Create", "Delete", "Put", "Update", "Stop", "Start", "Run", "Tag", "Untag", "Change", "Set",
            "Subscribe", "Unsubscribe", "Publish", "Register", "Replace", "Associate", "Disassociate", "Modify")


def eventually(check, deadline_s: float, what: str):
    return retry(stop=stop_after_delay(deadline_s), wait=wait_fixed(0.1), reraise=True,
                 retry=retry_if_exception_type(AssertionError))(check)()


# -- the seed stack in moto ------------------------------------------------------------------------

def _c(service: str, region: str = "us-east-1"):
    """A test-side client (the stack's builder and inspector), cached: client creation costs more
    than the call on a busy machine."""
    return _client(service, region, os.environ.get("AWS_ENDPOINT_URL"))


@functools.lru_cache(maxsize=None)
def _client(service: str, region: str, endpoint: str | None):
    return boto3.client(service, region_name=region)


def build_seed_stack(cfg) -> dict:
    """VPC + 2 subnets in 2 AZs, ECS cluster/service with a task per AZ, ALB, a table per region,
    alarms -> topic -> failover Lambda, hosted zone + A record with a TTL, a stop-condition alarm."""
    out: dict = {"regions": {}}
    lam_arn = f"arn:aws:lambda:{cfg.failover.region}:{ACCOUNT}:function:{LAMBDA}"
    for r in REGIONS:   # clients made one at a time: boto3's client creation is not thread-safe
        for svc in ("ec2", "ecs", "elbv2", "dynamodb", "sns", "cloudwatch", "lambda", "iam", "route53"):
            _c(svc, r)

    def region_part(r: str) -> None:
        ec2, ecs = _c("ec2", r), _c("ecs", r)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i + 1}.0/24", AvailabilityZone=f"{r}{az}")["Subnet"]["SubnetId"]
                   for i, az in enumerate("ab")]
        sg = ec2.create_security_group(GroupName="svc", Description="service", VpcId=vpc)["GroupId"]
        ecs.create_cluster(clusterName=CLUSTER, tags=[{"key": "environment", "value": "staging"}])
        ecs.register_task_definition(family=SERVICE, containerDefinitions=[
            {"name": "service", "image": "gameday/reference-service", "memory": 256, "cpu": 256}])
        ecs.create_service(cluster=CLUSTER, serviceName=SERVICE, taskDefinition=SERVICE, desiredCount=2,
                           launchType="FARGATE", tags=[{"key": "environment", "value": "staging"}],
                           networkConfiguration={"awsvpcConfiguration": {"subnets": subnets, "securityGroups": [sg]}})
        for az in "ab":
            run_service_task(r, f"{r}{az}")
        lb = _c("elbv2", r).create_load_balancer(Name=cfg.lb_name(r), Subnets=subnets)["LoadBalancers"][0]
        _c("dynamodb", r).create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                                       AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                                       BillingMode="PAY_PER_REQUEST")
        sns = _c("sns", r)
        topic = sns.create_topic(Name=TOPIC)["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint=lam_arn)
        for name, a in cfg.alarms.items():
            put_alarm(r, cfg.alarm_name(r, name), [topic])
        out["regions"][r] = {"subnets": subnets, "lb": lb, "topic": topic}

    with ThreadPoolExecutor(len(REGIONS)) as pool:   # the regions are independent: build them side by side
        list(pool.map(region_part, REGIONS))
    put_alarm("us-east-1", STOP_ALARM, [])
    role = _c("iam").create_role(RoleName="failover", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("failover.py", "def handler(event, context):\n    return None\n")
    _c("lambda", cfg.failover.region).create_function(FunctionName=LAMBDA, Runtime="python3.11", Role=role,
                                                      Handler="failover.handler", Code={"ZipFile": buf.getvalue()})
    r53 = _c("route53")
    out["zone"] = r53.create_hosted_zone(Name="gameday.test", CallerReference="seed")["HostedZone"]["Id"].split("/")[-1]
    set_record(out["zone"], {"TTL": 60, "ResourceRecords": [{"Value": ADDRESSES["us-east-1"]}]})
    return out


def run_service_task(region: str, az: str) -> str:
    return _c("ecs", region).run_task(cluster=CLUSTER, taskDefinition=SERVICE, count=1, launchType="FARGATE",
                                      startedBy="ecs-svc/seed", group=f"service:{SERVICE}",
                                      tags=[{"key": AZ_TAG, "value": az}])["tasks"][0]["taskArn"]


def put_alarm(region: str, name: str, actions: list[str]) -> None:
    _c("cloudwatch", region).put_metric_alarm(
        AlarmName=name, Namespace="AWS/ApplicationELB", MetricName="RequestCount", Statistic="Sum", Period=60,
        EvaluationPeriods=1, Threshold=500, ComparisonOperator="GreaterThanThreshold", AlarmActions=actions)


def set_record(zone: str, body: dict, action: str = "UPSERT") -> None:
    _c("route53").change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": action, "ResourceRecordSet": {"Name": "api.gameday.test.", "Type": "A", **body}}]})


def acl_entries(region: str = "us-east-1") -> dict:
    return {a["NetworkAclId"]: sorted((e["RuleNumber"], e["Egress"], e["RuleAction"], e.get("CidrBlock")) for e in a["Entries"])
            for a in _c("ec2", region).describe_network_acls()["NetworkAcls"]}


def moto_global_tables(session) -> None:
    """Fill DescribeTable's Replicas (2019.11.21 global tables) from the regions where moto really has
    the table, since moto has no replicas: deleting a region's table breaks the global table."""

    def add_replicas(parsed, **_):
        table = parsed.get("Table")
        if not table:
            return
        own = table["TableArn"].split(":")[3]
        table["Replicas"] = []
        for r in REGIONS:
            try:
                _c("dynamodb", r).describe_table(TableName=table["TableName"])
            except _c("dynamodb", r).exceptions.ResourceNotFoundException:
                continue
            if r != own:
                table["Replicas"].append({"RegionName": r, "ReplicaStatus": "ACTIVE"})

    session.events.register("after-call.dynamodb.DescribeTable", add_replicas)


def aws_cfg(zone: str, guardrails: dict | None = None, **aws_over):
    spec = {"allowed_account_ids": [ACCOUNT], "hosted_zone_id": zone,
            "regions": {r: {"cluster": CLUSTER, "service": SERVICE, "load_balancer": f"gameday-lb-{r}",
                            "addresses": [ADDRESSES[r]]} for r in REGIONS},
            "guardrails": {"stop_condition_alarms": [f"us-east-1/{STOP_ALARM}"], **(guardrails or {})}, **aws_over}
    # period 1 s: the stop-condition watcher polls every profile period
    return load_config(None, {"aws": spec, "profiles": {"aws": {"period_s": 1}}})


_SESSIONS: dict[tuple, boto3.session.Session] = {}


def make_env(cfg, run_dir: Path | None = None, *, global_tables: bool = True, fresh: bool = False) -> AwsEnvironment:
    """An environment on a session shared by the tests (its clients are made once, see _c);
    fresh=True for a test that hooks the session's events."""
    key = (global_tables, os.environ.get("AWS_ENDPOINT_URL"))
    session = None if fresh else _SESSIONS.get(key)
    if session is None:
        session = boto3.session.Session()
        if global_tables:
            moto_global_tables(session)
        if not fresh:
            _SESSIONS[key] = session
    env = AwsEnvironment(cfg, run_dir, session=session)
    if not fresh:
        env._clients = _SHARED_CLIENTS.setdefault(key, {})
    return env


_SHARED_CLIENTS: dict[tuple, dict] = {}


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory):
    """One moto server for the module; every boto3 client of this process (and of its children)
    goes to it through AWS_ENDPOINT_URL, with moto's fake credentials and no shared config."""
    server = MotoServer("aws", tmp_path_factory.mktemp("moto-aws")).start()
    empty = tmp_path_factory.mktemp("no-aws-config")
    with pytest.MonkeyPatch.context() as mp:
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
            mp.delenv(k, raising=False)
        mp.setenv("AWS_ENDPOINT_URL", server.url)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", str(empty / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty / "credentials"))
        yield server.url
    server.stop()


_CLEAN: dict = {}


def _fresh_stack(moto_url: str) -> dict:
    requests.post(moto_url + "/moto-api/reset", timeout=5).raise_for_status()
    # moto advances a task's lastStatus on every describe (RUNNING -> DEACTIVATING -> ...); real
    # tasks stay RUNNING until stopped, so hold them there (as the local environment does)
    requests.post(moto_url + "/moto-api/state-manager/set-transition", timeout=5, json={
        "model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}}).raise_for_status()
    s = build_seed_stack(load_config(None))
    s["cfg"] = aws_cfg(s["zone"])
    return s


@pytest.fixture
def stack(moto_url):
    """A fresh seed stack for a test that changes it."""
    _CLEAN.clear()
    return _fresh_stack(moto_url)


def _fingerprint() -> tuple:
    """What the tests on the shared stack may touch and must leave as they found it."""
    return (tuple(acl_entries(r) for r in REGIONS),
            tuple(sorted(_c("ecs", r).list_tasks(cluster=CLUSTER, desiredStatus="RUNNING")["taskArns"]) for r in REGIONS),
            _c("cloudwatch").describe_alarms(AlarmNames=[STOP_ALARM])["MetricAlarms"][0]["StateValue"])


@pytest.fixture
def pristine(moto_url):
    """The seed stack, shared by tests that only read it or restore what they change (checked
    afterwards: a stack left different is rebuilt for the next test)."""
    if "stack" not in _CLEAN:
        _CLEAN["stack"] = _fresh_stack(moto_url)
        _CLEAN["fingerprint"] = _fingerprint()
    yield _CLEAN["stack"]
    if _fingerprint() != _CLEAN.get("fingerprint"):
        _CLEAN.clear()


# -- preflight ---------------------------------------------------------------------------------------

def test_seed_stack_passes_preflight(pristine, tmp_path):
    env = make_env(pristine["cfg"], tmp_path)
    t0 = time.monotonic()
    env.start()
    took = time.monotonic() - t0
    assert env.account_id == ACCOUNT
    assert set(env.targets) == set(REGIONS)
    t = env.targets["us-east-1"]
    assert t.lb_dns and env.lb_url("us-east-1") == f"http://{t.lb_dns}"
    assert set(t.block_subnets) == set(pristine["regions"]["us-east-1"]["subnets"])
    assert env.region_of_address(t.lb_dns) == "us-east-1" and env.region_of_address(ADDRESSES["us-west-2"]) == "us-west-2"
    assert env.resolver().resolve("api.gameday.test") == [ADDRESSES["us-east-1"]]
    st = env.status()
    assert st["alarms"]["us-west-2"] and st["dns"]["answers"]["api.gameday.test."] == [ADDRESSES["us-east-1"]]
    assert json.loads((tmp_path / "env" / "aws.json").read_text())["account"] == ACCOUNT
    ep = env.endpoints
    assert ep["regions"]["us-west-2"] == {"lb_url": f"http://{pristine['regions']['us-west-2']['lb']['DNSName']}",
                                          "lb_address": ADDRESSES["us-west-2"], "addresses": [ADDRESSES["us-west-2"]]}
    assert ep["env"] == "aws" and ep["table"] == "gameday-items"   # the keys the load and read_replicas read
    assert ep["alarm_names"]["us-east-1"]["healthy-hosts"] == "gameday-healthy-hosts-us-east-1"
    # the profile is the stack's own (its alarms' Period is 60 s), not the config's 1 s
    assert ep["record_name"] == "api.gameday.test." and ep["profile"]["period_s"] == 60
    assert ep["profile"]["read_from"]["period_s"] == "DescribeAlarms"
    print(f"\naccount check + discovery + preflight against moto: {took:.3f}s")


def _break_alarm_topic(s):
    put_alarm("us-west-2", "gameday-healthy-hosts-us-west-2", [])


def _break_topic_lambda(s):
    sns = _c("sns", "us-east-1")
    for sub in sns.list_subscriptions_by_topic(TopicArn=s["regions"]["us-east-1"]["topic"])["Subscriptions"]:
        sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])


def _delete_record(s):
    set_record(s["zone"], {"TTL": 60, "ResourceRecords": [{"Value": ADDRESSES["us-east-1"]}]}, action="DELETE")


def _alias_record(s):
    _delete_record(s)
    lb = s["regions"]["us-east-1"]["lb"]
    set_record(s["zone"], {"AliasTarget": {"HostedZoneId": "Z35SXDOTRQ7X7K", "DNSName": lb["DNSName"],
                                           "EvaluateTargetHealth": False}}, action="CREATE")


def _record_elsewhere(s):
    set_record(s["zone"], {"TTL": 60, "ResourceRecords": [{"Value": "127.0.9.9"}]})


def _drop_replica(s):
    _c("dynamodb", "us-west-2").delete_table(TableName=TABLE)


def _one_az(s):
    ecs = _c("ecs", "us-east-1")
    for arn in ecs.list_tasks(cluster=CLUSTER, serviceName=SERVICE)["taskArns"]:
        ecs.stop_task(cluster=CLUSTER, task=arn)
    run_service_task("us-east-1", "us-east-1a")
    run_service_task("us-east-1", "us-east-1a")


def _too_few_tasks(s):
    ecs = _c("ecs", "us-west-2")
    ecs.stop_task(cluster=CLUSTER, task=ecs.list_tasks(cluster=CLUSTER, serviceName=SERVICE)["taskArns"][0])


def _no_lambda(s):
    _c("lambda", "us-west-2").delete_function(FunctionName=LAMBDA)


def _no_lb(s):
    _c("elbv2", "us-west-2").delete_load_balancer(LoadBalancerArn=s["regions"]["us-west-2"]["lb"]["LoadBalancerArn"])


def _no_stop_alarm(s):
    _c("cloudwatch").delete_alarms(AlarmNames=[STOP_ALARM])


def _acl_rule_taken(s):
    acl = _c("ec2").describe_network_acls(Filters=[{"Name": "association.subnet-id",
                                                    "Values": s["regions"]["us-east-1"]["subnets"]}])["NetworkAcls"][0]
    _c("ec2").create_network_acl_entry(NetworkAclId=acl["NetworkAclId"], RuleNumber=1, Protocol="6", RuleAction="allow",
                                       Egress=False, CidrBlock="10.0.0.0/8", PortRange={"From": 443, "To": 443})


MISWIRINGS = {
    "alarm_not_to_topic": (_break_alarm_topic, "us-west-2: alarm gameday-healthy-hosts-us-west-2 does not publish to topic "
                                               "arn:aws:sns:us-west-2:123456789012:gameday-failover (AlarmActions: none)"),
    "topic_not_to_lambda": (_break_topic_lambda, "us-east-1: SNS topic gameday-failover does not invoke the failover Lambda "
                                                 "arn:aws:lambda:us-west-2:123456789012:function:gameday-failover (has no subscriptions)"),
    "record_missing": (_delete_record, "route53: A record api.gameday.test. not found in zone {zone}"),
    "record_without_ttl": (_alias_record, "route53: A record api.gameday.test. has no TTL (an alias record: clients' caches "
                                          "cannot be measured; the seed uses a plain A record with a TTL)"),
    "record_points_nowhere": (_record_elsewhere, "route53: A record api.gameday.test. -> 127.0.9.9 points at no region's "
                                                 "load balancer (set aws.regions.<r>.addresses)"),
    "table_missing_in_a_region": (_drop_replica, "us-west-2: DynamoDB table gameday-items not found"),
    "tasks_in_one_az": (_one_az, "us-east-1: ECS service gameday-service runs its tasks in fewer than 2 AZs (us-east-1a=2)"),
    "too_few_tasks": (_too_few_tasks, "us-west-2: ECS service gameday-service runs 1 task(s); needs at least service.min_tasks=2"),
    "lambda_missing": (_no_lambda, "us-west-2: failover Lambda gameday-failover not found"),
    "load_balancer_missing": (_no_lb, "us-west-2: load balancer gameday-lb-us-west-2 not found"),
    "stop_alarm_missing": (_no_stop_alarm, "us-east-1: stop-condition alarm gameday-stop not found"),
    "nacl_rule_taken": (_acl_rule_taken, "us-east-1: network ACL {acl} already uses rule 1, which block_region needs for "
                                         "its deny entries (aws.guardrails.nacl_rule_number)"),
}
# Independent wires are broken together on one stack (one build each group; the three record
# variants exclude each other); each break must give its own line and nothing else may be reported.
MISWIRING_GROUPS = {
    "most": [k for k in MISWIRINGS if not k.startswith("record_") or k == "record_missing"],
    "alias_record": ["record_without_ttl"],
    "record_elsewhere": ["record_points_nowhere"],
}
# a table gone from one region also means it is no longer a global table
CONSEQUENCES = {"table_missing_in_a_region": ["dynamodb: table gameday-items is not a global table (no replicas)"],
                "too_few_tasks": ["us-west-2: ECS service gameday-service runs its tasks in fewer than 2 AZs (us-west-2b=1)"]}


@pytest.mark.parametrize("group", sorted(MISWIRING_GROUPS))
def test_preflight_finds_each_miswiring(stack, group):
    acl = _c("ec2").describe_network_acls(Filters=[{"Name": "association.subnet-id",
                                                    "Values": stack["regions"]["us-east-1"]["subnets"]}])["NetworkAcls"][0]
    expected: list[str] = []
    for name in MISWIRING_GROUPS[group]:
        brk, line = MISWIRINGS[name]
        brk(stack)
        expected += [line.format(zone=stack["zone"], acl=acl["NetworkAclId"]), *CONSEQUENCES.get(name, [])]
    env = make_env(stack["cfg"])
    with pytest.raises(PreflightFailed) as e:
        env.start()
    lines = [str(p) for p in e.value.problems]
    assert sorted(lines) == sorted(expected), "\n".join(sorted(lines))
    assert all("\n" not in x for x in lines)


def test_every_miswiring_is_tested():
    assert sorted(k for g in MISWIRING_GROUPS.values() for k in g) == sorted(MISWIRINGS)


def test_table_that_is_not_global_is_found(pristine):
    env = make_env(pristine["cfg"], global_tables=False)   # moto's own answer: no Replicas at all
    with pytest.raises(PreflightFailed) as e:
        env.start()
    assert [str(p) for p in e.value.problems] == ["dynamodb: table gameday-items is not a global table (no replicas)"]


def test_production_tagged_resources_are_refused_unless_allowed(stack):
    lb = stack["regions"]["us-west-2"]["lb"]["LoadBalancerArn"]
    _c("elbv2", "us-west-2").add_tags(ResourceArns=[lb], Tags=[{"Key": "environment", "Value": "prod"}])
    with pytest.raises(PreflightFailed) as e:
        make_env(stack["cfg"]).start()
    assert [str(p) for p in e.value.problems] == [
        "us-west-2: load balancer gameday-lb-us-west-2 is tagged environment=prod (production): refused "
        "(aws.guardrails.allow_production_tags=true to allow)"]
    make_env(aws_cfg(stack["zone"], {"allow_production_tags": True})).start()


def test_discovery_by_tags(stack):
    """Names left out of the config are found by tag; two candidates are a problem, not a guess."""
    for r in REGIONS:
        ecs = _c("ecs", r)
        for arn in (ecs.describe_clusters(clusters=[CLUSTER])["clusters"][0]["clusterArn"],
                    ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]["serviceArn"]):
            ecs.tag_resource(resourceArn=arn, tags=[{"key": "gameday", "value": "seed"}])
        _c("elbv2", r).add_tags(ResourceArns=[stack["regions"][r]["lb"]["LoadBalancerArn"]],
                                Tags=[{"Key": "gameday", "Value": "seed"}])
    spec = stack["cfg"].aws.model_dump()
    spec["regions"] = {r: {"addresses": [ADDRESSES[r]]} for r in REGIONS}
    spec["discovery_tags"] = {"gameday": "seed"}
    cfg = load_config(None, {"aws": spec, "profiles": {"aws": {"period_s": 1}}})
    env = make_env(cfg).start()
    assert env.targets["us-west-2"].service.endswith(f"service/{CLUSTER}/{SERVICE}")
    assert env.targets["us-west-2"].lb_dns == stack["regions"]["us-west-2"]["lb"]["DNSName"]
    _c("ecs", "us-east-1").create_cluster(clusterName="other", tags=[{"key": "gameday", "value": "seed"}])
    with pytest.raises(PreflightFailed, match=r"us-east-1: 2 ECS clusters tagged gameday=seed"):
        make_env(cfg).start()


def test_scenario_baseline_works_on_the_stack(stack, tmp_path):
    """The scenarios' baseline step (record back on the initial region, alarms out of ALARM, DNS
    answering it) runs on the aws environment's names and clients."""
    from gameday.scenarios.baseline import restore_baseline

    set_record(stack["zone"], {"TTL": 60, "ResourceRecords": [{"Value": ADDRESSES["us-west-2"]}]})
    env = make_env(stack["cfg"], tmp_path).start()
    # a deployed stack's alarms have been evaluated by CloudWatch long before a run; moto evaluates
    # none, and the baseline waits for an alarm never evaluated (tests/test_baseline.py)
    for region, names in env.endpoints["alarm_names"].items():
        for name in names.values():
            _c("cloudwatch", region).set_alarm_state(AlarmName=name, StateValue="OK",
                                                     StateReason="Threshold Crossed: the stand-in's evaluation")
    restore_baseline(env)
    assert env.resolver(honour_ttl=False).lookup("api.gameday.test").addresses == [ADDRESSES["us-east-1"]]


# -- the account allow-list ------------------------------------------------------------------------------

def test_missing_allow_list_is_a_clear_error(pristine, tmp_path):
    cfg = load_config(None, {"aws": {"hosted_zone_id": pristine["zone"]}})
    with pytest.raises(AwsConfigError, match="needs aws.allowed_account_ids"):
        AwsEnvironment(cfg)
    with pytest.raises(AwsConfigError, match="aws.profile 'nope' is not a profile in your AWS config"):
        AwsEnvironment(aws_cfg(pristine["zone"], profile="nope"))
    p = tmp_path / "g.toml"
    p.write_text(f'[aws]\nhosted_zone_id = "{pristine["zone"]}"\n')
    r = subprocess.run([sys.executable, "-m", "gameday.cli", "plan", "-c", str(p)], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "needs aws.allowed_account_ids" in r.stderr and "Traceback" not in r.stderr


def test_foreign_account_refused_before_any_change(pristine, tmp_path):
    cfg = aws_cfg(pristine["zone"], allowed_account_ids=["999999999999"])
    env = make_env(cfg, tmp_path, fresh=True)
    calls: list[str] = []
    env.session.events.register("before-call", lambda model, **_: calls.append(f"{model.service_model.service_name}:{model.name}"))
    with pytest.raises(AccountRefused, match=r"account 123456789012 .* is not in aws.allowed_account_ids \(999999999999\)"):
        env.start()
    assert calls == ["sts:GetCallerIdentity"], calls
    # nothing can be called through the environment after a refusal, mutating or not
    with pytest.raises(AccountRefused):
        env.client("ec2", "us-east-1")
    with pytest.raises(AccountRefused):
        Nemesis(env, tmp_path / "journal.jsonl", handle_signals=False).inject(block_region("us-east-1"))
    assert calls == ["sts:GetCallerIdentity"] and not (tmp_path / "journal.jsonl").exists()
    assert not [c for c in calls if c.split(":")[1].startswith(MUTATING)]


# -- faults --------------------------------------------------------------------------------------------

def _deny_rules(region: str = "us-east-1") -> set:
    return {(acl, e[1]) for acl, entries in acl_entries(region).items() for e in entries if e[0] == 1 and e[2] == "deny"}


def test_nacl_blackhole_injected_and_fully_rolled_back(pristine, tmp_path):
    env = make_env(pristine["cfg"], tmp_path).start()
    before = acl_entries("us-east-1")
    other_before = acl_entries("us-west-2")
    with Nemesis(env, tmp_path / "journal.jsonl", scenario="nacl", handle_signals=False) as n:
        rec = n.inject(block_region("us-east-1", mode="hang"))
        acls = set(rec.injected["acls"])
        assert acls and _deny_rules() == {(a, eg) for a in acls for eg in (False, True)}
        assert acl_entries("us-west-2") == other_before     # only the blocked region
    assert acl_entries("us-east-1") == before
    faults_, _ = read_journal(tmp_path / "journal.jsonl")
    assert [f.state for f in faults_] == ["rolled_back"]
    # a mode that NACLs cannot do is refused before anything is journaled or changed
    with pytest.raises(FaultError, match="only mode='hang'"):
        Nemesis(env, tmp_path / "j2.jsonl", handle_signals=False).inject(block_region("us-east-1", mode="refuse"))
    assert not (tmp_path / "j2.jsonl").exists() and acl_entries("us-east-1") == before


def test_rollback_without_the_injected_line(pristine, tmp_path):
    """Killed between applying and journaling: the rollback finds the deny entries from the fault's
    params alone (the reserved rule number)."""
    env = make_env(pristine["cfg"], tmp_path).start()
    before = acl_entries()
    f = block_region("us-east-1")
    env.apply(f)
    assert _deny_rules()
    env.revert(f, None)
    assert acl_entries() == before


def test_stop_condition_alarm_aborts_and_rolls_back(stack, tmp_path):
    env = make_env(stack["cfg"], tmp_path).start()
    before = acl_entries()
    aborted: list[str] = []
    n = Nemesis(env, tmp_path / "journal.jsonl", scenario="stop", handle_signals=False)
    watcher = env.guard(n, on_abort=aborted.append)
    try:
        n.inject(block_region("us-east-1"))
        assert _deny_rules()
        _c("cloudwatch").set_alarm_state(AlarmName=STOP_ALARM, StateValue="ALARM", StateReason="error budget burned")
        t0 = time.monotonic()

        def rolled_back():
            assert aborted and not n.active() and acl_entries() == before

        # one poll per profile period (the stack's alarms: 60 s) but at most 5 s apart, plus the
        # rollback's few calls; a watcher reading once a period would miss this deadline
        poll_s = guardrails.stop_condition_interval_s(env.profile)
        assert watcher.interval_s == poll_s == min(env.profile.period_s, 5.0)
        eventually(rolled_back, deadline_s=2 * poll_s + 5, what="abort")
        took = time.monotonic() - t0
        assert "gameday-stop (us-east-1) is in ALARM: error budget burned" in aborted[0]
        assert watcher.status()["tripped"] and env.events(kind="guardrail")[-1]["action"] == "stop_condition"
        with pytest.raises(RunAborted):
            n.inject(block_region("us-east-1"))
        assert acl_entries() == before
        print(f"\nstop-condition ALARM -> everything rolled back: {took:.2f}s (poll every {poll_s}s)")
    finally:
        env.stop()
        n.close(raise_on_failure=False)


INJECTOR = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from gameday.environments.aws import AwsEnvironment
    from gameday.faults import Nemesis, block_region
    from gameday.config import load_config
    run = Path(sys.argv[1])
    env = AwsEnvironment(load_config(run / "gameday.json"), run).start(preflight=False)
    n = Nemesis(env, run / "journal.jsonl", scenario="killed")
    n.inject(block_region("us-east-1"))
    print("injected", flush=True)
    time.sleep(120)
""")


def test_sigkill_mid_fault_then_gameday_rollback_restores(pristine, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "gameday.json").write_text(pristine["cfg"].model_dump_json())
    before = acl_entries()
    child = subprocess.Popen([sys.executable, "-c", INJECTOR, str(run)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = child.stdout.readline()
        assert line.strip() == "injected", child.stderr.read() if child.poll() is not None else line
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    assert _deny_rules(), "the fault should still be in effect after SIGKILL"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "gameday.cli", "rollback", str(run)], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rolled back  block_region us-east-1" in r.stdout
    assert acl_entries() == before
    faults_, _ = read_journal(run / "journal.jsonl")
    assert [f.state for f in faults_] == ["rolled_back"]
    r2 = subprocess.run([sys.executable, "-m", "gameday.cli", "rollback", str(run)], cwd=REPO, capture_output=True,
                        text=True, timeout=60)
    assert r2.returncode == 0 and "nothing to roll back" in r2.stdout
    print(f"\n`gameday rollback` after SIGKILL (new process, STS + discovery + NACL cleanup): {took:.2f}s")


def test_lose_az_moves_the_service_out_and_back(stack, tmp_path):
    cfg = aws_cfg(stack["zone"], {"max_fraction_of_service": 0.5})
    env = make_env(cfg, tmp_path).start()
    subnets = stack["regions"]["us-east-1"]["subnets"]
    ecs = _c("ecs", "us-east-1")

    def svc():
        return ecs.describe_services(cluster=CLUSTER, services=[SERVICE], include=["TAGS"])["services"][0]

    with Nemesis(env, tmp_path / "journal.jsonl", handle_signals=False) as n:
        rec = n.inject(lose_az("us-east-1", "a"))
        assert len(rec.injected["stopped"]) == 1
        assert svc()["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == [subnets[1]]
        assert {t["key"] for t in svc()["tags"]} >= {ORIGINAL_SUBNETS_TAG}
    assert svc()["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == subnets
    assert ORIGINAL_SUBNETS_TAG not in {t["key"] for t in svc().get("tags", [])}


# -- caps ---------------------------------------------------------------------------------------------

def test_caps_refuse_an_over_limit_fault_before_anything(stack, tmp_path):
    env = make_env(stack["cfg"], tmp_path).start()     # default caps: 2 tasks, 50% of a service
    ecs = _c("ecs", "us-east-1")
    running = ecs.list_tasks(cluster=CLUSTER, serviceName=SERVICE, desiredStatus="RUNNING")["taskArns"]
    with pytest.raises(GuardrailViolation, match=r"max_fraction_of_service: .*2 of 2 tasks \(100%\)"):
        Nemesis(env, tmp_path / "journal.jsonl", handle_signals=False).inject(stop_tasks("us-east-1", all=True))
    assert not (tmp_path / "journal.jsonl").exists()
    assert ecs.list_tasks(cluster=CLUSTER, serviceName=SERVICE, desiredStatus="RUNNING")["taskArns"] == running
    with Nemesis(env, tmp_path / "journal.jsonl", handle_signals=False) as n:   # within the caps: allowed
        assert len(n.inject(stop_tasks("us-east-1", count=1)).injected["stopped"]) == 1
        # one task is down and not replaced (moto has no scheduler): a second one would make 100%
        with pytest.raises(GuardrailViolation, match="max_fraction_of_service"):
            n.inject(stop_tasks("us-east-1", count=1))


def _plan(monkeypatch, cfg_path: Path, *args: str):
    """`gameday plan` in this process (typer's runner), its AWS session the tests' one (moto's
    global tables filled in, see moto_global_tables)."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    import gameday.environments.aws.environment as aws_environment
    from gameday.cli import app

    session = make_env(load_config(cfg_path)).session
    monkeypatch.setattr(aws_environment, "boto3", SimpleNamespace(session=SimpleNamespace(Session=lambda **_: session)))
    return CliRunner().invoke(app, ["plan", "-c", str(cfg_path), *args])


def test_plan_changes_nothing_and_caps_refuse_an_over_limit_plan(pristine, tmp_path, monkeypatch):
    cfg_path = tmp_path / "gameday.json"
    cfg = aws_cfg(pristine["zone"], {"max_fraction_of_service": 1.0}).model_dump(mode="json")
    cfg["profiles"]["aws"]["period_s"] = 60     # AWS's real period: the surge is 1.5 x 500 / 60 s = 12.5/s
    cfg_path.write_text(json.dumps(cfg))
    before = (acl_entries("us-east-1"), _c("ecs").list_tasks(cluster=CLUSTER)["taskArns"])
    ok = _plan(monkeypatch, cfg_path)
    assert ok.exit_code == 0, ok.output
    assert "account     123456789012" in ok.output and "all_tasks_stopped_fails_over: ok" in ok.output
    assert f"network ACLs of {', '.join(pristine['regions']['us-east-1']['subnets'])}" in ok.output
    assert (acl_entries("us-east-1"), _c("ecs").list_tasks(cluster=CLUSTER)["taskArns"]) == before

    capped = json.loads(cfg_path.read_text())
    capped["aws"]["guardrails"].update(max_rps=20, max_fraction_of_service=0.5)
    cfg_path.write_text(json.dumps(capped))
    over = _plan(monkeypatch, cfg_path)
    assert over.exit_code == 2, over.output
    assert "surge_fails_over: OVER CAP" in over.output
    assert "REFUSED guardrail max_rps: the load offers 22.5 requests/s; the cap is 20" in over.output
    assert "REFUSED guardrail max_fraction_of_service: stop_tasks would have 2 of 2 tasks (100%) down" in over.output
    assert "region_blackhole_fails_over: ok" in over.output
    only = _plan(monkeypatch, cfg_path, "-k", "region_blackhole")           # deselect what is over the caps
    assert only.exit_code == 0 and "1 scenario(s)" in only.output
    assert (acl_entries("us-east-1"), _c("ecs").list_tasks(cluster=CLUSTER)["taskArns"]) == before


def test_plan_covers_every_scenario_of_the_suite():
    import ast

    names = {node.name.removeprefix("test_") for f in (REPO / "scenarios").glob("test_*.py")
             for node in ast.parse(f.read_text()).body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    assert names == set(scenario_catalogue(load_config(None))), "environments/aws/plan.py is out of date with scenarios/"


# -- FIS (not in moto): botocore Stubber -------------------------------------------------------------------

def test_pause_replication_through_fis(pristine, tmp_path):
    cfg = aws_cfg(pristine["zone"], fis_role_arn=f"arn:aws:iam::{ACCOUNT}:role/fis")
    env = make_env(cfg, tmp_path).start()
    assert "pause_replication" in env.capabilities
    fis = env.session.client("fis", region_name="us-east-1")
    env._clients = {**env._clients, ("fis", "us-east-1"): fis}   # this env only
    tags = {"gameday:fault": "pause_replication:us-east-1->us-west-2", "gameday:run": tmp_path.name}
    table_arn = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{TABLE}"
    with Stubber(fis) as stub:
        stub.add_response("create_experiment_template", {"experimentTemplate": {"id": "EXT1"}}, {
            "clientToken": ANY, "description": ANY, "roleArn": f"arn:aws:iam::{ACCOUNT}:role/fis", "tags": tags,
            "stopConditions": [{"source": "aws:cloudwatch:alarm",
                                "value": f"arn:aws:cloudwatch:us-east-1:{ACCOUNT}:alarm:{STOP_ALARM}"}],
            "targets": {"Tables": {"resourceType": "aws:dynamodb:global-table", "resourceArns": [table_arn],
                                   "selectionMode": "ALL"}},
            "actions": {"fault": {"actionId": "aws:dynamodb:global-table-pause-replication",
                                  "parameters": {"duration": "PT30M"}, "targets": {"Tables": "Tables"}}}})
        stub.add_response("start_experiment", {"experiment": {"id": "EXP1"}},
                          {"clientToken": ANY, "experimentTemplateId": "EXT1", "tags": tags})
        # rollback from the journal's intent alone: templates found by their tags
        stub.add_response("list_experiment_templates", {"experimentTemplates": [
            {"id": "EXT1", "tags": tags}, {"id": "OTHER", "tags": {"gameday:run": "another"}}]}, {})
        stub.add_response("list_experiments", {"experiments": [
            {"id": "EXP1", "experimentTemplateId": "EXT1", "state": {"status": "running"}},
            {"id": "EXP0", "experimentTemplateId": "OTHER", "state": {"status": "running"}}]}, {})
        stub.add_response("stop_experiment", {"experiment": {"id": "EXP1"}}, {"id": "EXP1"})
        stub.add_response("delete_experiment_template", {"experimentTemplate": {"id": "EXT1"}}, {"id": "EXT1"})
        f = pause_replication("us-east-1", "us-west-2")
        f.check(env)
        done = env.apply(f)
        assert done == {"template_id": "EXT1", "experiment_id": "EXP1",
                        "action": "aws:dynamodb:global-table-pause-replication"}
        undone = env.revert(f)
        assert undone == {"stopped_experiments": ["EXP1"], "deleted_templates": ["EXT1"]}
        stub.assert_no_pending_responses()


def test_fis_backed_faults_are_missing_without_a_fis_role(pristine, tmp_path):
    env = make_env(pristine["cfg"], tmp_path).start()
    assert {"stop_tasks", "lose_az", "block_data_plane"} <= env.capabilities
    assert not {"pause_replication", "api_fault", "lambda_fault", "block_control_plane"} & env.capabilities
    from gameday.environments.base import CapabilityMissing

    with pytest.raises(CapabilityMissing, match="cannot pause replication"):
        Nemesis(env, tmp_path / "j.jsonl", handle_signals=False).inject(pause_replication("us-east-1", "us-west-2"))
    # the driver table has no entry for the local model's mutation: refused by name, nothing called
    with pytest.raises(CapabilityMissing, match="the aws environment has no driver for fault kind 'replication_drop'"):
        env.apply(replication_drop(0.5))


def test_a_backend_a_fault_kind_does_not_have_is_refused_by_name(pristine, tmp_path):
    cfg = aws_cfg(pristine["zone"], fault_backends={"block_region": "alias", "lambda_fault": "nacl"})
    env = make_env(cfg, tmp_path)
    with pytest.raises(FaultError, match="aws.fault_backends.block_region: 'alias' is not a backend of block_region: "
                                         "one of nacl, fis"):
        env.driver(block_region("us-east-1"))
    with pytest.raises(FaultError, match="'nacl' is not a backend of lambda_fault: one of alias, fis"):
        env.driver(lambda_fault("error"))


def test_block_region_through_fis_when_configured(pristine, tmp_path):
    cfg = aws_cfg(pristine["zone"], fis_role_arn=f"arn:aws:iam::{ACCOUNT}:role/fis", fault_backends={"block_region": "fis"})
    env = make_env(cfg, tmp_path).start()
    before = acl_entries()
    fis = env.session.client("fis", region_name="us-east-1")
    env._clients = {**env._clients, ("fis", "us-east-1"): fis}   # this env only
    subnets = [f"arn:aws:ec2:us-east-1:{ACCOUNT}:subnet/{s}" for s in env.targets["us-east-1"].block_subnets]
    assert sorted(s.rsplit("/", 1)[1] for s in subnets) == sorted(pristine["regions"]["us-east-1"]["subnets"])
    with Stubber(fis) as stub:
        stub.add_response("create_experiment_template", {"experimentTemplate": {"id": "EXT2"}}, {
            "clientToken": ANY, "description": ANY, "roleArn": ANY, "tags": ANY, "stopConditions": ANY,
            "targets": {"Subnets": {"resourceType": "aws:ec2:subnet", "resourceArns": subnets, "selectionMode": "ALL"}},
            "actions": {"fault": {"actionId": "aws:network:disrupt-connectivity",
                                  "parameters": {"duration": "PT30M", "scope": "all"}, "targets": {"Subnets": "Subnets"}}}})
        stub.add_response("start_experiment", {"experiment": {"id": "EXP2"}},
                          {"clientToken": ANY, "experimentTemplateId": "EXT2", "tags": ANY})
        stub.add_response("list_experiments", {"experiments": [
            {"id": "EXP2", "experimentTemplateId": "EXT2", "state": {"status": "running"}}]}, {})
        stub.add_response("stop_experiment", {"experiment": {"id": "EXP2"}}, {"id": "EXP2"})
        stub.add_response("delete_experiment_template", {"experimentTemplate": {"id": "EXT2"}}, {"id": "EXT2"})
        with Nemesis(env, tmp_path / "journal.jsonl", handle_signals=False) as n:
            rec = n.inject(block_region("us-east-1"))
            assert rec.injected["experiment_id"] == "EXP2"
            assert acl_entries() == before          # FIS does the blocking, not the NACL driver
        stub.assert_no_pending_responses()
    assert [f.state for f in read_journal(tmp_path / "journal.jsonl")[0]] == ["rolled_back"]


def test_api_faults_fis_cannot_do_are_refused_before_the_journal(pristine, tmp_path):
    cfg = aws_cfg(pristine["zone"], fis_role_arn=f"arn:aws:iam::{ACCOUNT}:role/fis",
                  fis_api_fault_role_arns=[f"arn:aws:iam::{ACCOUNT}:role/app"])
    env = make_env(cfg, tmp_path).start()
    assert "api_fault" in env.capabilities
    n = Nemesis(env, tmp_path / "journal.jsonl", handle_signals=False)
    from gameday.environments.base import CapabilityMissing

    # not a fault of the scenario: AWS has no way to do it, so a scenario needing it is skipped
    with pytest.raises(CapabilityMissing, match="cannot fail route53 API calls: FIS's .* fail EC2 calls only"):
        n.inject(api_fault("route53", "us-east-1", effect="throttle", operation="ChangeResourceRecordSets"))
    with pytest.raises(FaultError, match="no 'latency' API fault"):
        n.inject(api_fault("ec2", "us-east-1", effect="latency", latency_s=1, operation="DescribeInstances"))
    assert not (tmp_path / "journal.jsonl").exists()


def test_lambda_fault_through_an_alias(stack, tmp_path):
    """The topic invokes alias `live`; the fault points it at a broken version, rollback points it
    back (also from the fault's params alone, as after a SIGKILL)."""
    lam = _c("lambda", "us-west-2")
    good = lam.publish_version(FunctionName=LAMBDA)["Version"]
    broken = lam.publish_version(FunctionName=LAMBDA, Description="raises")["Version"]
    lam.create_alias(FunctionName=LAMBDA, Name="live", FunctionVersion=good)
    cfg = aws_cfg(stack["zone"], lambda_alias="live", lambda_broken_version=broken)
    with pytest.raises(PreflightFailed, match="does not invoke the failover Lambda .*:function:gameday-failover:live"):
        make_env(cfg, tmp_path).start()            # the topics still invoke the unqualified function
    alias_arn = f"arn:aws:lambda:us-west-2:{ACCOUNT}:function:{LAMBDA}:live"
    for r in REGIONS:
        sns = _c("sns", r)
        for sub in sns.list_subscriptions_by_topic(TopicArn=stack["regions"][r]["topic"])["Subscriptions"]:
            sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
        sns.subscribe(TopicArn=stack["regions"][r]["topic"], Protocol="lambda", Endpoint=alias_arn)
    env = make_env(cfg, tmp_path).start()
    assert "lambda_fault" in env.capabilities and env.backend("lambda_fault") == "alias"
    with Nemesis(env, tmp_path / "journal.jsonl", handle_signals=False) as n:
        rec = n.inject(lambda_fault("error"))
        assert rec.injected == {"alias": "live", "original_version": good, "version": broken}
        assert lam.get_alias(FunctionName=LAMBDA, Name="live")["FunctionVersion"] == broken
    assert lam.get_alias(FunctionName=LAMBDA, Name="live")["FunctionVersion"] == good
    env.apply(lambda_fault("error"))
    env.revert(lambda_fault("error"), None)
    alias = lam.get_alias(FunctionName=LAMBDA, Name="live")
    assert alias["FunctionVersion"] == good and not alias.get("Description")


FIS_ROLE = f"arn:aws:iam::{ACCOUNT}:role/fis"
APP_ROLE = f"arn:aws:iam::{ACCOUNT}:role/app"
FIS_CASES = {
    "lambda_error": (lambda_fault("error"), "us-west-2", "aws:lambda:invocation-error",
                     {"duration": "PT30M", "invocationPercentage": "100", "preventExecution": "true"},
                     {"Functions": {"resourceType": "aws:lambda:function", "selectionMode": "ALL",
                                    "resourceArns": [f"arn:aws:lambda:us-west-2:{ACCOUNT}:function:{LAMBDA}"]}}),
    "lambda_delay": (lambda_fault("delay", delay_s=2.5), "us-west-2",
                     "aws:lambda:invocation-add-delay",
                     {"duration": "PT30M", "invocationPercentage": "100", "startupDelayMilliseconds": "2500"},
                     {"Functions": {"resourceType": "aws:lambda:function", "selectionMode": "ALL",
                                    "resourceArns": [f"arn:aws:lambda:us-west-2:{ACCOUNT}:function:{LAMBDA}"]}}),
    "ec2_throttle": (api_fault("ec2", "us-east-1", effect="throttle", rate=0.5,
                                                           operation="DescribeInstances"),
                     "us-east-1", "aws:fis:inject-api-throttle-error",
                     {"duration": "PT30M", "service": "ec2", "operations": "DescribeInstances", "percentage": "50"},
                     {"Roles": {"resourceType": "aws:iam:role", "resourceArns": [APP_ROLE], "selectionMode": "ALL"}}),
}


@pytest.mark.parametrize("case", sorted(FIS_CASES))
def test_fis_experiment_for_each_fis_fault(pristine, tmp_path, case):
    fault, region, action, params, targets = FIS_CASES[case]
    cfg = aws_cfg(pristine["zone"], fis_role_arn=FIS_ROLE, fis_api_fault_role_arns=[APP_ROLE])
    env = make_env(cfg, tmp_path).start()
    fis = env.session.client("fis", region_name=region)
    env._clients = {**env._clients, ("fis", region): fis}   # this env only
    with Stubber(fis) as stub:
        stub.add_response("create_experiment_template", {"experimentTemplate": {"id": "EXT"}}, {
            "clientToken": ANY, "description": ANY, "roleArn": FIS_ROLE, "stopConditions": ANY, "targets": targets,
            "tags": {"gameday:fault": f"{fault.kind}:{fault.target}", "gameday:run": tmp_path.name},
            "actions": {"fault": {"actionId": action, "parameters": params, "targets": {k: k for k in targets}}}})
        stub.add_response("start_experiment", {"experiment": {"id": "EXP"}},
                          {"clientToken": ANY, "experimentTemplateId": "EXT", "tags": ANY})
        stub.add_response("list_experiments", {"experiments": [
            {"id": "EXP", "experimentTemplateId": "EXT", "state": {"status": "running"}}]}, {})
        stub.add_response("stop_experiment", {"experiment": {"id": "EXP"}}, {"id": "EXP"})
        stub.add_response("delete_experiment_template", {"experimentTemplate": {"id": "EXT"}}, {"id": "EXT"})
        with Nemesis(env, tmp_path / "journal.jsonl", handle_signals=False) as n:
            assert n.inject(fault).injected["action"] == action
        stub.assert_no_pending_responses()
