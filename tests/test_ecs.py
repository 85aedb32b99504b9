"""The ECS service scheduler's adapter and the reference service, end to end: real task
processes, moto's ECS API, real load balancers, the AWS router's API faults.

The scheduling rules themselves (desired count and min/max, AZ spread and which AZ a replacement
goes to, provisioning time, launch throttling, target tracking, the scale-in victim) are checked
on model time in test_ecs_model.py; here is what only real processes show: a stopped task's
process really dies and a replacement really listens, the lost AZ's processes are killed at once,
moto records what the model decided, orphans of an earlier scheduler are stopped.

One environment for the module (moto per region, router, scheduler, load balancers); each test
leaves its region steady (desired tasks running and healthy) for the next.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from dataclasses import dataclass

import pytest
import requests

from gameday.assertions.eventually import eventually
from gameday.environments.local.ecs import REASON_EXITED, REASON_ORPHAN, STOP_GRACE_S, EcsReconciler
from gameday.environments.local.loadbalancer import LoadBalancers
from gameday.environments.local.router import AwsRouter
from gameday.config import load_config
from gameday.net import free_port_on_all
from tests.support import alive, descendants, provisioned_context

# a short provisioning: the exact rule is test_ecs_model's; here only that replacements wait for it
CFG = load_config(None, overrides={"service": {"desired_tasks": 2, "min_tasks": 2, "max_tasks": 3},
                                   "profiles": {"local": {"task_provisioning_s": 0.5}}})
PROFILE = CFG.profile("local")
# A python task process on two busy cores: start to listening in about 0.4-1 s; give it 5 s.
TASK_START_BUDGET_S = 5.0
# stop (or loss) -> the scheduler notices -> replacement listening -> the LB's first passing check
REPLACE_S = PROFILE.reconcile_interval_s + PROFILE.task_provisioning_s + TASK_START_BUDGET_S + 2 * PROFILE.health_check_interval_s + 1.0
# a target that stops answering: unhealthy_threshold failed checks, each up to the check timeout
UNHEALTHY_S = (PROFILE.unhealthy_threshold + 1) * (PROFILE.health_check_interval_s + max(0.2, PROFILE.health_check_interval_s)) + 1.0
MEASURED: dict[str, float] = {}
ORPHANS: dict[str, dict] = {}   # group -> the task left in us-east-1's moto before start(), described after it


@dataclass
class Env:
    ctx: object
    router: AwsRouter
    ecs: EcsReconciler
    lbs: LoadBalancers


@pytest.fixture(scope="module")
def env():
    t_setup = time.monotonic()
    with provisioned_context(CFG) as ctx:
        MEASURED["moto_and_provision_s"] = time.monotonic() - t_setup
        router = AwsRouter(ctx).start()
        ctx.lb_port = free_port_on_all(list(ctx.lb_addresses.values()))
        ecs = EcsReconciler(ctx)
        orphans = _leave_orphans(ctx)
        lbs = None
        try:
            t0 = time.monotonic()
            ecs.start()
            MEASURED["start_returns_s"] = time.monotonic() - t0
            ORPHANS.update(_after_start(ctx, orphans))
            lbs = LoadBalancers(ctx, ecs).start()
            e = Env(ctx, router, ecs, lbs)
            for r in CFG.regions:
                # four python processes booting at once on two shared cores: the stack's own 30 s
                steady(e, r, deadline_s=30)
            MEASURED["start_to_all_healthy_s"] = time.monotonic() - t0
            yield e
        finally:
            if lbs:
                lbs.stop()
            ecs.stop()
            router.stop()
            print("\nmeasured:", json.dumps({k: round(v, 3) for k, v in MEASURED.items()}))


# -- helpers ---------------------------------------------------------------------------------------------

def _leave_orphans(ctx) -> dict[str, str]:
    """What an earlier scheduler that died would leave: a RUNNING task of the service with no
    process, and one task of another group that is not the scheduler's business."""
    ecs = ctx.internal_client("ecs", "us-east-1")
    out = {}
    for group in ("service:gameday-service", "family:someone-else"):
        subnets = list(ctx.provisioned.subnet_ids["us-east-1"].values())[:1]
        arn = ecs.run_task(cluster="gameday", taskDefinition="gameday-service", count=1, launchType="FARGATE",
                           group=group, networkConfiguration={"awsvpcConfiguration": {
                               "subnets": subnets, "securityGroups": [ctx.provisioned.security_group_ids["us-east-1"]]}},
                           )["tasks"][0]["taskArn"]
        out[arn] = group
    return out


def _after_start(ctx, orphans: dict[str, str]) -> dict[str, dict]:
    """The orphans as start() left them; then the other group's task goes, so that moto lists
    exactly the scheduler's tasks as RUNNING again."""
    ecs = ctx.internal_client("ecs", "us-east-1")
    described = ecs.describe_tasks(cluster="gameday", tasks=list(orphans))["tasks"]
    out = {orphans[t["taskArn"]]: t for t in described}
    for arn, group in orphans.items():
        if group != "service:gameday-service":
            ecs.stop_task(cluster="gameday", task=arn, reason="test cleanup")
    return out


def tasks(e: Env, region: str) -> list[dict]:
    return e.ecs.status()[region]["tasks"]


def lb_states(e: Env, region: str) -> dict[str, str]:
    return {t["task"]: t["state"] for t in e.lbs.status()[region]["targets"]}


def running_in_moto(e: Env, region: str) -> list[str]:
    return e.ctx.customer_client("ecs", region).list_tasks(cluster="gameday", desiredStatus="RUNNING")["taskArns"]


def steady(e: Env, region: str, n: int | None = None, deadline_s: float = REPLACE_S) -> tuple[list[dict], float]:
    """Wait until n tasks (default: the configured desired count) run, each healthy at the LB,
    and moto's ECS lists exactly those as RUNNING."""
    n = n or CFG.service.desired_tasks

    def check():
        st = e.ecs.status()[region]
        running = [t for t in st["tasks"] if t["state"] == "RUNNING"]
        assert st["desired"] == n and len(running) == n and st["pending"] == 0, st
        states = lb_states(e, region)
        assert states == {t["task_id"]: "healthy" for t in running}, states
        assert sorted(running_in_moto(e, region)) == sorted(t["task_arn"] for t in running)
        return running

    return eventually(check, deadline_s=deadline_s, what=f"{n} healthy tasks in {region}", interval_s=0.05)


def describe(e: Env, region: str, arn: str) -> dict:
    return e.ctx.customer_client("ecs", region).describe_tasks(cluster="gameday", tasks=[arn])["tasks"][0]


def ecs_events(e: Env, since: int, action: str) -> list[dict]:
    return [ev for ev in e.ctx.events.since(since, "ecs") if ev.get("action") == action]


def last_seq(e: Env) -> int:
    evs = e.ctx.events.since(0)
    return evs[-1]["seq"] if evs else 0


# -- the scheduler ------------------------------------------------------------------------------------------

def test_tasks_are_spread_over_azs_and_visible_in_ecs(env):
    for region in CFG.regions:
        running, _ = steady(env, region)
        assert {t["az"] for t in running} == set(CFG.az_names(region))
        described = env.ctx.customer_client("ecs", region).describe_tasks(
            cluster="gameday", tasks=[t["task_arn"] for t in running], include=["TAGS"])["tasks"]
        for d in described:
            assert d["lastStatus"] == "RUNNING" and d["desiredStatus"] == "RUNNING"
            assert d["group"] == "service:gameday-service" and d["startedBy"].startswith("ecs-svc/")
            assert d["launchType"] == "FARGATE"
        # describing again does not move a running task towards STOPPED (moto's default would)
        again = describe(env, region, running[0]["task_arn"])
        assert again["lastStatus"] == "RUNNING"
        for t in running:
            r = requests.get(f"http://127.0.0.1:{t['port']}/health", timeout=2)
            assert r.status_code == 200 and r.json() == {"task": t["task_id"], "az": t["az"], "region": region}
    MEASURED["task_start_to_running_s"] = max(t["running_after_s"] for r in CFG.regions for t in tasks(env, r))


def test_a_task_stopped_with_boto3_and_one_whose_process_dies_are_both_replaced(env):
    """One replacement round for both ways a task ends: stop_task through the API (its process
    gets SIGTERM) and a process that dies by itself (its task is stopped in moto)."""
    region = "us-west-2"
    running, _ = steady(env, region)
    stopped, died = running
    since = last_seq(env)
    t0 = time.monotonic()
    env.ctx.customer_client("ecs", region).stop_task(cluster="gameday", task=stopped["task_arn"], reason="gameday test")
    os.kill(died["pid"], signal.SIGKILL)

    _, gone_s = eventually(lambda: _assert_dead(stopped["pid"]), deadline_s=PROFILE.reconcile_interval_s + STOP_GRACE_S + 2,
                           what="stopped task's process exits", started=t0)

    def scheduler_let_both_go():
        live = {t["task_id"] for t in tasks(env, region)}
        assert not live & {stopped["task_id"], died["task_id"]}, live

    # the StopTask wakes the scheduler at once, the dead process is seen at a tick after the kill:
    # until then the dead task still counts as running (and healthy, for a second of failed health
    # checks) beside a replacement, which `steady` alone would take for the end of the round
    eventually(scheduler_let_both_go, deadline_s=2 * PROFILE.reconcile_interval_s + 2,
               what="the scheduler to let both tasks go", started=t0)
    now_running, _ = steady(env, region, deadline_s=REPLACE_S)
    MEASURED["stop_task_to_process_gone_s"] = gone_s
    MEASURED["stop_task_to_replacements_healthy_s"] = time.monotonic() - t0
    assert not {stopped["task_id"], died["task_id"]} & {t["task_id"] for t in now_running}
    assert {t["az"] for t in now_running} == set(CFG.az_names(region))  # the replacements refill both AZs
    d = describe(env, region, stopped["task_arn"])
    assert d["lastStatus"] == "STOPPED" and d["stoppedReason"] == "gameday test"
    d = describe(env, region, died["task_arn"])
    assert d["lastStatus"] == "STOPPED" and d["desiredStatus"] == "STOPPED", d["lastStatus"]
    assert d["stoppedReason"].startswith(REASON_EXITED), d["stoppedReason"]
    reasons = {ev["task"]: ev["reason"] for ev in ecs_events(env, since, "task_stopped")}
    assert reasons[stopped["task_id"]] == "gameday test" and reasons[died["task_id"]].startswith(REASON_EXITED)
    assert len(ecs_events(env, since, "task_started")) == 2
    # replacements are provisioned before they run (the model's rule, carried out on real time)
    assert all(t["running_after_s"] >= PROFILE.task_provisioning_s for t in now_running), now_running


def test_tasks_an_earlier_scheduler_left_are_stopped_at_start(env):
    mine = ORPHANS["service:gameday-service"]
    assert mine["lastStatus"] == "STOPPED" and mine["stoppedReason"] == REASON_ORPHAN
    other = ORPHANS["family:someone-else"]
    assert other["desiredStatus"] == "RUNNING" and not other.get("stoppedReason")   # not the service's: left alone


def _assert_dead(pid: int) -> None:
    assert alive({pid}) == set(), f"pid {pid} still alive"


def test_losing_an_az_stops_its_tasks_and_places_replacements_elsewhere(env):
    region = "us-west-2"
    az_a, az_b = CFG.az_names(region)
    running, _ = steady(env, region)
    in_a = [t for t in running if t["az"] == az_a]
    assert in_a
    try:
        env.ecs.set_az_available(region, "a", False)  # the letter form
        # at once: no grace period for an AZ that lost power
        assert alive({t["pid"] for t in in_a}) == set()
        for t in in_a:
            d = describe(env, region, t["task_arn"])
            assert d["lastStatus"] == "STOPPED" and az_a in d["stoppedReason"]
        now_running, _ = steady(env, region)
        assert {t["az"] for t in now_running} == {az_b}
        assert env.ecs.status()[region]["unavailable_azs"] == [az_a]
    finally:
        env.ecs.set_az_available(region, az_a, True)  # the full-name form
    assert env.ecs.status()[region]["unavailable_azs"] == []
    # where later placements go once the AZ is back (the emptiest AZ) is test_ecs_model's table


def test_unknown_az_is_refused(env):
    with pytest.raises(ValueError, match="unknown availability zone"):
        env.ecs.set_az_available("us-west-2", "z", False)
    with pytest.raises(ValueError, match="unknown availability zone"):
        env.ecs.set_az_available("us-west-2", "us-east-1a", False)
    with pytest.raises(ValueError, match="unknown region"):
        env.ecs.set_az_available("mars-1", "a", False)
    assert all(not s["unavailable_azs"] for s in env.ecs.status().values())


def test_desired_count_from_the_api_is_kept_within_min_and_max(env):
    region = "us-east-1"
    steady(env, region)
    ecs = env.ctx.customer_client("ecs", region)
    since = last_seq(env)
    ecs.update_service(cluster="gameday", service="gameday-service", desiredCount=CFG.service.max_tasks + 4)
    running, _ = steady(env, region, n=CFG.service.max_tasks)
    svc = ecs.describe_services(cluster="gameday", services=["gameday-service"])["services"][0]
    assert svc["desiredCount"] == CFG.service.max_tasks
    scaled = ecs_events(env, since, "scaled")
    assert scaled and scaled[0]["old"] == CFG.service.max_tasks + 4 and scaled[0]["new"] == CFG.service.max_tasks

    ecs.update_service(cluster="gameday", service="gameday-service", desiredCount=0)
    after, _ = steady(env, region, n=CFG.service.min_tasks)
    assert ecs.describe_services(cluster="gameday", services=["gameday-service"])["services"][0]["desiredCount"] == CFG.service.min_tasks
    removed = {t["task_arn"] for t in running} - {t["task_arn"] for t in after}
    assert len(removed) == 1
    assert describe(env, region, removed.pop())["stoppedReason"].startswith("Scaling activity initiated by")
    assert {t["az"] for t in after} == set(CFG.az_names(region))  # scale-in keeps the AZs balanced


def test_the_load_balancer_skips_a_task_that_fails_its_health_checks(env):
    region = "us-east-1"
    running, _ = steady(env, region)
    frozen = running[0]
    os.kill(frozen["pid"], signal.SIGSTOP)  # alive, port open, answers nothing
    try:
        _, took = eventually(lambda: _assert_state(env, region, frozen["task_id"], "unhealthy"),
                             deadline_s=UNHEALTHY_S, what="frozen task marked unhealthy")
        MEASURED["frozen_task_to_unhealthy_s"] = took
        s = requests.Session()
        served = []
        for i in range(30):
            r = s.put(f"{env.ctx.lb_url(region)}/items/lb-{i}", data=json.dumps({"value": i}), timeout=5)
            assert r.status_code == 200, r.text
            served.append(r.headers["X-Gameday-Task"])
        assert frozen["task_id"] not in served
        assert set(served) == {t["task_id"] for t in running} - {frozen["task_id"]}
        assert env.lbs.status()[region]["healthy"] == len(running) - 1
    finally:
        os.kill(frozen["pid"], signal.SIGCONT)
    steady(env, region)  # back in service: the same task, not a replacement
    assert frozen["task_id"] in {t["task_id"] for t in tasks(env, region)}


def _assert_state(env: Env, region: str, task_id: str, state: str) -> None:
    got = lb_states(env, region).get(task_id)
    assert got == state, got


# -- the reference service ------------------------------------------------------------------------------------

def test_service_writes_its_own_region_and_answers_reads(env):
    url = env.ctx.lb_url("us-east-1")
    r = requests.put(f"{url}/items/round trip", data=json.dumps({"value": {"n": 1.5}, "client_time": 123.25}), timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["key"] == "round trip" and body["value"] == {"n": 1.5} and body["region"] == "us-east-1"
    assert r.headers["X-Gameday-Region"] == "us-east-1" and r.headers["X-Gameday-Task"] == body["task"]
    got = requests.get(f"{url}/items/round trip", timeout=5)
    assert got.status_code == 200
    item = got.json()
    assert item["value"] == {"n": 1.5} and item["client_time"] == 123.25
    assert item["region"] == "us-east-1" and item["task"] == body["task"] and item["written_at"] >= time.time() - 60
    # it went to us-east-1's table, not another region's
    key = {"pk": {"S": "round trip"}}
    assert "Item" in env.ctx.internal_client("dynamodb", "us-east-1").get_item(TableName=CFG.dynamodb.table, Key=key)
    assert "Item" not in env.ctx.internal_client("dynamodb", "us-west-2").get_item(TableName=CFG.dynamodb.table, Key=key)
    missing = requests.get(f"{url}/items/never-written", timeout=5)
    assert missing.status_code == 404 and missing.headers["X-Gameday-Region"] == "us-east-1"


@pytest.mark.parametrize("path,body,needle", [
    ("/items/k", "not json", "not JSON"),
    ("/items/", json.dumps({"value": 1}), "empty key"),
    ("/items/k", json.dumps([1, 2]), "JSON object"),
    ("/items/k", json.dumps({"client_time": 1}), "value"),
    ("/items/k", '{"value": NaN}', "NaN"),
])
def test_bad_input_is_a_400_with_a_message(env, path, body, needle):
    task = tasks(env, "us-east-1")[0]
    r = requests.put(f"http://127.0.0.1:{task['port']}{path}", data=body, timeout=5)
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]
    assert r.headers["X-Gameday-Task"] == task["task_id"] and r.headers["X-Gameday-Region"] == "us-east-1"


def test_service_retries_throttling_and_gives_up_with_503_at_its_deadline(env):
    task = tasks(env, "us-east-1")[0]
    url = f"http://127.0.0.1:{task['port']}/items"
    # the first three PutItems are throttled: one request must still succeed, on its 4th attempt
    rule = env.router.add_fault(kind="throttle", region="us-east-1", service="dynamodb", operation="PutItem", limit=3)
    try:
        r = requests.put(f"{url}/throttled-once", data=json.dumps({"value": 1}), timeout=10)
        assert r.status_code == 200, r.text
        assert _matched(env, rule["id"]) == 3
    finally:
        env.router.remove_fault(rule["id"])

    rule = env.router.add_fault(kind="throttle", region="us-east-1", service="dynamodb", operation="PutItem")
    try:
        t0 = time.monotonic()
        r = requests.put(f"{url}/throttled-always", data=json.dumps({"value": 1}), timeout=10)
        took = time.monotonic() - t0
        MEASURED["persistent_throttle_to_503_s"] = took
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["error"] == "ThrottlingException" and body["attempts"] >= 3
        assert _matched(env, rule["id"]) == body["attempts"]
        assert 1.0 <= took <= 2.0 + 1.5, took  # the default 2 s deadline: well past the first try, not past it
        assert r.headers["X-Gameday-Task"] == task["task_id"]
    finally:
        env.router.remove_fault(rule["id"])

    # a client error is not retried: exactly one call reaches the AWS endpoint
    before = env.router.status()["calls"]
    r = requests.put(f"{url}/{'k' * 3000}", data=json.dumps({"value": 1}), timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "ValidationException"
    assert env.router.status()["calls"] - before == 1


def _matched(env: Env, rule_id: str) -> int:
    return next(r["matched"] for r in env.router.status()["api_faults"] if r["id"] == rule_id)


# -- the task's process: argv and environment ------------------------------------------------------------------

def test_a_users_own_service_command_gets_its_placeholders_filled(env):
    cfg = load_config(None, overrides={"service": {"command": [
        "my-service", "--listen=127.0.0.1:{port}", "{region}", "{table}", "{endpoint}", "{task_id}@{az}", "{unknown}"]}})
    rec = EcsReconciler(dataclasses.replace(env.ctx, config=cfg))  # never started
    argv = rec._task_argv("us-west-2", "abc123", "us-west-2b", 4321)
    assert argv == ["my-service", "--listen=127.0.0.1:4321", "us-west-2", CFG.dynamodb.table, env.ctx.router_url,
                    "abc123@us-west-2b", "{unknown}"]
    task_env = rec._task_env("us-west-2", "abc123", "us-west-2b", 4321)
    assert task_env["AWS_REGION"] == "us-west-2" and task_env["AWS_ENDPOINT_URL"] == env.ctx.router_url
    assert task_env["AWS_EC2_METADATA_DISABLED"] == "true" and task_env["GAMEDAY_PORT"] == "4321"
    assert "PYTHONPATH" not in task_env  # the user's environment, untouched
    # the reference service otherwise
    ref = env.ecs._task_argv("us-west-2", "abc123", "us-west-2b", 4321)
    assert ref[1:3] == ["-m", "gameday.sut.service"] and ref[ref.index("--task-id") + 1] == "abc123"


# -- teardown ---------------------------------------------------------------------------------------------------

def test_stop_leaves_no_task_process(env):
    pids = {t["pid"] for r in CFG.regions for t in tasks(env, r)}
    assert len(pids) == len(CFG.regions) * CFG.service.desired_tasks
    assert pids <= descendants(os.getpid())
    env.lbs.stop()
    env.ecs.stop()
    assert alive(pids) == set()
    env.ecs.stop()  # idempotent
    assert all(not s["tasks"] for s in env.ecs.status().values())
    for r in CFG.regions:
        assert running_in_moto(env, r) == []


# -- when moto's view of a region is read (fake clock, no moto) --------------------------------------------

def test_moto_is_read_again_only_after_a_change_or_every_few_ticks():
    """An idle region's tick uses the last read of moto (RUNNING tasks, the service); a change
    through the API (the router's hook), the scheduler's own call, or API_RESYNC_TICKS ticks make
    the next tick read it again, and a change made during a read is read at the tick after."""
    from types import SimpleNamespace

    from gameday.clock import FakeClock
    from gameday.environments.local.ecs import API_RESYNC_TICKS, _Region
    from gameday.environments.local.ecs_model import ServiceModel, ServicePolicy

    clock = FakeClock()
    ecs = object.__new__(EcsReconciler)
    ecs.ctx = SimpleNamespace(clock=clock, profile=CFG.profile("local"))
    st = _Region("us-east-1", ["us-east-1a"], ServiceModel(ServicePolicy.from_config(CFG.service, ecs.ctx.profile),
                                                           ["us-east-1a"]))
    ecs.regions = {"us-east-1": st}
    ecs._wake = SimpleNamespace(set=lambda: None)
    reads, during_read = [], []

    def running_arns(region):
        reads.append(clock.monotonic())
        for act in during_read:
            act()
        during_read.clear()
        return [f"arn-{len(reads)}"]

    ecs._running_arns = running_arns
    ecs._service_desired = lambda region: (2, "deployment", None)
    tick = ecs.ctx.profile.reconcile_interval_s

    assert ecs._api_view(st) == ({"arn-1"}, (2, "deployment", None)), "the first tick reads"
    for _ in range(API_RESYNC_TICKS - 1):
        clock.advance(tick)
        assert ecs._api_view(st)[0] == {"arn-1"}
    assert len(reads) == 1, f"an idle region was read at {reads}"
    clock.advance(tick)
    assert ecs._api_view(st)[0] == {"arn-2"}, f"not read again after {API_RESYNC_TICKS} ticks"
    # a StopTask through the router (its hook): the next tick reads, whatever the time
    ecs._api_changed(SimpleNamespace(region="us-east-1"))
    assert ecs._api_view(st)[0] == {"arn-3"}
    assert ecs._api_view(st)[0] == {"arn-3"}
    # a change made while a tick reads: that read may predate it, so the next tick reads again
    ecs._api_changed(SimpleNamespace(region="us-east-1"))
    during_read.append(lambda: ecs._api_changed(SimpleNamespace(region="us-east-1")))
    assert ecs._api_view(st)[0] == {"arn-4"}
    assert ecs._api_view(st)[0] == {"arn-5"}
    assert ecs._api_view(st)[0] == {"arn-5"}
