"""The local environment as an AWS account: `gameday up --aws-config PATH` writes a gameday.toml for
`--env aws` and `gameday plan -c PATH` finds the stack ready, the way it finds a real one.

One `gameday up --aws-config` for the module (a subprocess, as a user runs it). What is proven:
- the written config loads and names the running environment (endpoint, zone, load balancers, DNS
  server, the same time profile); `gameday plan -c` exits 0 with no preflight line;
- twins: the same file with a wrong table / alias / endpoint makes plan exit 1 (2 for the account)
  naming the problem;
- the aws environment built from it needs no AWS variable, and never reads the user's profile;
- DescribeTargetHealth reports the local load balancer's health checks (unhealthy while the region
  is blocked, healthy again after), and the same check fails on a target group nobody reports on
  and on moto as shipped (canned "healthy").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import boto3
import pytest
import requests
from moto import mock_aws

from gameday import procs
from gameday.assertions.eventually import NotWithinDeadline, eventually
from gameday.config import load_config
from gameday.environments.aws import AwsEnvironment
from gameday.environments.local import moto_fix_elbv2
from gameday.environments.local.aws_account import AwsConfigWriteError, check_target, to_toml

REPO = Path(__file__).resolve().parents[1]
START_DEADLINE_S = 90.0     # environments/local's START_TIMEOUT_S: moto, provisioning, tasks
# no AWS variable of the user's reaches the children: the config alone must be enough
NO_AWS_ENV = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}


def gameday(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gameday.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**NO_AWS_ENV, **(env or {})})


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    """`gameday up --aws-config`: the running environment and the config it wrote."""
    tmp = tmp_path_factory.mktemp("account")
    state_file, config, log = tmp / "state.json", tmp / "aws.toml", tmp / "up.log"
    proc = procs.spawn([sys.executable, "-m", "gameday.cli", "up", "--run-dir", str(tmp / "run"),
                        "--state-file", str(state_file), "--aws-config", str(config)],
                       log_path=log, cwd=REPO, env={"PYTHONUNBUFFERED": "1"})
    try:
        def written():
            assert proc.poll() is None, f"gameday up exited with {proc.returncode}:\n{log.read_text()[-2000:]}"
            assert config.exists() and state_file.exists(), "no aws config yet"

        eventually(written, deadline_s=START_DEADLINE_S, what="gameday up --aws-config", interval_s=0.1)
        endpoints = json.loads(state_file.read_text())
        yield {"config": config, "endpoints": endpoints, "tmp": tmp, "cfg": load_config(config),
               "profile": load_config(config).profile("aws")}
    finally:
        procs.terminate(proc, grace_s=20)


def variant(account, name: str, **aws_over) -> Path:
    """The written config with some [aws] keys changed (a twin)."""
    data = tomllib.loads(account["config"].read_text())
    data["aws"].update(aws_over)
    p = account["tmp"] / f"{name}.toml"
    p.write_text(to_toml(data))
    return p


# -- the written config ------------------------------------------------------------------------------

def test_up_writes_a_config_that_loads_and_names_the_running_environment(account):
    cfg, ep = account["cfg"], account["endpoints"]
    assert cfg.aws.endpoint_url == ep["aws_endpoint"]
    assert cfg.aws.allowed_account_ids == ("123456789012",)
    assert cfg.aws.hosted_zone_id == ep["hosted_zone_id"]
    assert cfg.aws.dns_server == f"127.0.0.1:{ep['dns']['port']}"
    assert cfg.aws.lambda_alias == "live" and cfg.aws.discovery_tags == {"gameday:stack": "gameday"}
    assert cfg.aws.guardrails.stop_condition_alarms == ("us-east-1/gameday-stop-condition",
                                                        "us-west-2/gameday-stop-condition")
    for r, v in ep["regions"].items():
        assert cfg.aws.regions[r].lb_url == v["lb_url"] and cfg.aws.regions[r].addresses == (v["lb_address"],)
    # the scenarios judge the same thresholds on the same clock as the running environment's alarms
    assert account["profile"].period_s == ep["profile"]["period_s"]
    assert account["profile"].dns_ttl_s == ep["profile"]["dns_ttl_s"]
    assert cfg.alarms["request-count"].threshold == ep["alarm_threshold"]


def test_plan_exits_0_against_the_running_environment(account):
    out = gameday("plan", "-c", str(account["config"]))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PREFLIGHT" not in out.stdout and "REFUSED" not in out.stdout, out.stdout
    assert "account     123456789012" in out.stdout


@pytest.mark.parametrize("name, over, code, line", [
    ("table", {"table": "no-such-table"}, 1, "us-east-1: DynamoDB table no-such-table not found"),
    ("alias", {"lambda_alias": "dead"}, 1, "failover Lambda alias gameday-failover:dead not found"),
    ("endpoint", {"endpoint_url": "http://127.0.0.1:9"}, 2, "cannot tell which AWS account"),
])
def test_a_wrong_config_makes_plan_name_the_problem(account, name, over, code, line):
    out = gameday("plan", "-c", str(variant(account, name, **over)))
    assert out.returncode == code, out.stdout + out.stderr
    assert line in out.stdout + out.stderr, out.stdout + out.stderr
    assert "Traceback" not in out.stderr


def test_up_refuses_an_existing_file_and_a_missing_directory(account, tmp_path):
    mine = tmp_path / "gameday.toml"
    mine.write_text("# a user's own config\n")
    out = gameday("up", "--aws-config", str(mine), "--state-file", str(tmp_path / "s.json"))
    assert out.returncode == 2 and "already exists: pass --force" in out.stderr, out.stderr
    assert mine.read_text() == "# a user's own config\n"
    out = gameday("up", "--aws-config", str(tmp_path / "nope" / "aws.toml"), "--state-file", str(tmp_path / "s.json"))
    assert out.returncode == 2 and "does not exist" in out.stderr, out.stderr
    assert not (tmp_path / "s.json").exists()      # refused before anything started
    check_target(mine, force=True)                  # --force: the same file is fine
    with pytest.raises(AwsConfigWriteError, match="is a directory"):
        check_target(tmp_path)


def test_describe_table_lists_the_other_regions_replicas(account):
    """A 2019.11.21 global table as DescribeTable tells it in each region (moto_fix_dynamodb)."""
    cfg = account["cfg"]
    for region in cfg.regions:
        ddb = boto3.client("dynamodb", region_name=region, endpoint_url=cfg.aws.endpoint_url,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        table = ddb.describe_table(TableName=cfg.aws.table)["Table"]
        assert table.get("GlobalTableVersion") == "2019.11.21", table
        assert table["Replicas"] == [{"RegionName": r, "ReplicaStatus": "ACTIVE"} for r in cfg.regions if r != region]


def test_to_toml_reads_back_as_written():
    data = {"a": 1, "b": [1.5, "x\"y"], "t": {"gameday:stack": "gameday", "deep": {"on": True, "rows": [{"k": 2}]}},
            "empty": {}}
    assert tomllib.loads(to_toml(data)) == data
    with pytest.raises(ValueError, match="TOML has no value for None"):
        to_toml({"a": None})


# -- the aws environment from that config -------------------------------------------------------------

def test_the_aws_environment_needs_no_aws_variable_and_reads_no_profile(account, monkeypatch):
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    # a variable pointing elsewhere and a profile that does not exist: neither is read
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_PROFILE", "gameday-no-such-profile")
    env = AwsEnvironment(load_config(account["config"])).start()
    try:
        assert env.account_id == "123456789012"
        ep = account["endpoints"]
        assert env.endpoints["dns"] == {"host": "127.0.0.1", "port": ep["dns"]["port"]}
        assert {r: env.lb_url(r) for r in ep["regions"]} == {r: v["lb_url"] for r, v in ep["regions"].items()}
        # the service name through the configured DNS server, as clients resolve it
        answer = env.resolver(honour_ttl=False).lookup(ep["service_name"])
        assert env.region_of_address(answer.addresses[0]) in ep["regions"]
        assert requests.get(env.lb_url("us-west-2") + "/health", timeout=5).status_code == 200
    finally:
        env.stop()


# -- DescribeTargetHealth is the load balancer's truth ------------------------------------------------------

def target_states(elb, tg: str) -> dict[int, tuple[str, str | None]]:
    return {d["Target"]["Port"]: (d["TargetHealth"]["State"], d["TargetHealth"].get("Reason"))
            for d in elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]}


def all_unhealthy(elb, tg: str) -> None:
    states = target_states(elb, tg)
    assert states and all(s == ("unhealthy", "Target.FailedHealthChecks") for s in states.values()), states


def health_deadline_s(profile) -> float:
    """Unhealthy after UnhealthyThresholdCount failed checks, each up to an interval long (the probe's
    timeout), plus the report to moto; x4 for a busy 2-core machine."""
    return 4 * (profile.unhealthy_threshold + 2) * max(profile.health_check_interval_s, 0.2) + 2


def test_target_health_follows_the_load_balancer_when_a_region_is_blocked(account):
    cfg, ep, region = account["cfg"], account["endpoints"], "us-west-2"
    elb = boto3.client("elbv2", region_name=region, endpoint_url=cfg.aws.endpoint_url,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    tg = elb.describe_target_groups(Names=[f"gameday-tg-{region}"])["TargetGroups"][0]["TargetGroupArn"]
    before = target_states(elb, tg)
    assert len(before) == cfg.service.desired_tasks and all(s == ("healthy", None) for s in before.values()), before
    # the twin: the same targets in a target group no load balancer reports on
    twin = elb.create_target_group(Name="gameday-twin", Protocol="HTTP", Port=8080, TargetType="ip",
                                   VpcId=elb.describe_target_groups(TargetGroupArns=[tg])["TargetGroups"][0]["VpcId"])
    twin_tg = twin["TargetGroups"][0]["TargetGroupArn"]
    elb.register_targets(TargetGroupArn=twin_tg, Targets=[{"Id": "127.0.0.1", "Port": p} for p in before])
    control = ep["control_url"]
    deadline = health_deadline_s(account["profile"])
    requests.post(f"{control}/network/block", json={"region": region, "mode": "hang"}, timeout=5).raise_for_status()
    try:
        eventually(lambda: all_unhealthy(elb, tg), deadline_s=deadline, what="targets unhealthy in DescribeTargetHealth")
        with pytest.raises(AssertionError, match="initial"):   # nobody reports on the twin: the check fails
            all_unhealthy(elb, twin_tg)
    finally:
        requests.post(f"{control}/network/unblock", json={"region": region}, timeout=5).raise_for_status()

    def healthy_again():
        states = target_states(elb, tg)
        assert states and all(s == ("healthy", None) for s in states.values()), states

    eventually(healthy_again, deadline_s=deadline, what="targets healthy again after the block")


def test_moto_as_shipped_fails_the_same_check(monkeypatch):
    """The twin with the correction off: moto's own target group answers "healthy" whatever the
    targets do, and keys targets by Id alone (two ports of 127.0.0.1 are one target)."""
    for name, fn in moto_fix_elbv2.MOTO_AS_SHIPPED.items():
        monkeypatch.setattr(moto_fix_elbv2.FakeTargetGroup, name, fn)
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        elb = boto3.client("elbv2", region_name="us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        tg = elb.create_target_group(Name="t", Protocol="HTTP", Port=8080, VpcId=vpc,
                                     TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
        elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": "127.0.0.1", "Port": 1}, {"Id": "127.0.0.1", "Port": 9}])
        assert list(target_states(elb, tg).values()) == [("healthy", None)]
        with pytest.raises(AssertionError):
            all_unhealthy(elb, tg)


# -- the aws environment's own fault drivers, on the account ---------------------------------------------

def _reaches(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=1.0).status_code == 200
    except requests.RequestException:
        return False


def test_the_aws_environments_nacl_block_black_holes_the_region_and_its_rollback_heals(account, tmp_path):
    """block_region through environments/aws's NACL driver (the same calls it makes on a real
    account): the region's clients time out while the fault is on, and serve again once the
    Nemesis rolled it back; the other region serves throughout. Its twin is
    tests/test_aws_effects_network.py's (the NACL hook off: no black hole)."""
    from gameday.faults import Nemesis, block_region

    env = AwsEnvironment(load_config(account["config"]), run_dir=tmp_path).start()
    east, west = env.lb_url("us-east-1"), env.lb_url("us-west-2")
    deadline = health_deadline_s(account["profile"])
    try:
        # an answer is awaited, not asked once: on two busy cores one can take longer than the 1 s wait
        for url, name in ((east, "us-east-1"), (west, "us-west-2")):
            eventually(lambda u=url, n=name: _check(_reaches(u), f"{n} serves"), deadline_s=deadline,
                       what=f"{name} serving before the fault")
        with Nemesis(env, tmp_path / "journal.jsonl", scenario="account", handle_signals=False) as nemesis:
            nemesis.inject(block_region("us-east-1", mode="hang"))
            assert not _reaches(east), "us-east-1 still answers under the NACL deny entries"
            eventually(lambda: _check(_reaches(west), "us-west-2 serves"), deadline_s=deadline,
                       what="us-west-2 serving while us-east-1 is blocked")
        eventually(lambda: _check(_reaches(east), "us-east-1 serves again"), deadline_s=deadline,
                   what="us-east-1 serving after the rollback")
    finally:
        env.stop()


def _check(ok: bool, what: str) -> None:
    assert ok, f"not yet: {what}"


def test_the_aws_environments_lose_az_moves_the_tasks_and_its_rollback_restores_the_subnets(account, tmp_path):
    """lose_az through environments/aws's driver (UpdateService without the AZ's subnet, then
    StopTask on its tasks there): the local scheduler places the replacements in the other AZ
    only; the rollback puts the subnets back."""
    from gameday.faults import Nemesis, lose_az

    cfg = load_config(account["config"])
    env = AwsEnvironment(cfg, run_dir=tmp_path).start()
    region, lost = "us-west-2", "us-west-2a"
    ecs = env.observer("ecs", region)
    t = env.targets[region]

    def task_azs() -> list[str]:
        arns = ecs.list_tasks(cluster=t.cluster, serviceName=t.service, desiredStatus="RUNNING")["taskArns"]
        return sorted(x.get("availabilityZone") for x in ecs.describe_tasks(cluster=t.cluster, tasks=arns)["tasks"]
                      if x.get("lastStatus") == "RUNNING") if arns else []

    def subnets() -> list[str]:
        svc = ecs.describe_services(cluster=t.cluster, services=[t.service])["services"][0]
        return sorted(svc["networkConfiguration"]["awsvpcConfiguration"]["subnets"])

    before = subnets()
    # the profile's provisioning and task start, a reconcile, and health checks; x3 for 2 busy cores
    deadline = 3 * (account["profile"].task_provisioning_s + account["profile"].reconcile_interval_s + 5)
    try:
        assert lost in task_azs(), task_azs()
        with Nemesis(env, tmp_path / "journal.jsonl", scenario="account", handle_signals=False) as nemesis:
            nemesis.inject(lose_az(region, lost))

            def moved() -> None:
                azs = task_azs()
                assert len(azs) >= cfg.service.min_tasks and lost not in azs, azs

            eventually(moved, deadline_s=deadline, what=f"tasks out of {lost}")
            assert len(subnets()) == len(before) - 1
        assert subnets() == before
    finally:
        env.stop()
