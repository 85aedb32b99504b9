"""End to end on the embedded local environment: the seed's story through real processes.

more than 500 requests in a period at us-east-1 -> alarm ALARM -> SNS -> Lambda -> Route 53
A record = us-west-2 -> a resolver that cached the old answer moves only after the TTL.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from gameday.environments.local import LocalEnvironment
from gameday.config import load_config
from tests.support import alive, descendants, drive_load

pytestmark = pytest.mark.needs_env


def eventually(deadline_s: float, interval_s: float = 0.05):
    return retry(stop=stop_after_delay(deadline_s), wait=wait_fixed(interval_s), reraise=True,
                 retry=retry_if_exception_type(AssertionError))


@pytest.fixture(scope="module")
def local_env(tmp_path_factory):
    with LocalEnvironment(load_config(None), tmp_path_factory.mktemp("e2e")) as e:
        yield e


def alarm_state(env, region: str, key: str = "request-count") -> str:
    name = env.endpoints["alarm_names"][region][key]
    return env.observer("cloudwatch", region).describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


def record_value(env) -> str:
    sets = env.observer("route53", "us-east-1").list_resource_record_sets(
        HostedZoneId=env.endpoints["hosted_zone_id"])["ResourceRecordSets"]
    rec = [s for s in sets if s["Name"] == env.endpoints["record_name"] and s["Type"] == "A"][0]
    return rec["ResourceRecords"][0]["Value"]


def test_up_reports_every_endpoint(local_env):
    ep = local_env.endpoints
    assert ep["service_name"] == "api.gameday.test"
    assert set(ep["regions"]) == {"us-east-1", "us-west-2"}
    for r, v in ep["regions"].items():
        assert v["lb_url"].startswith("http://127.0.")
    assert ep["aws_endpoint"].startswith("http://127.0.0.1:")
    st = local_env.status()
    for r in ep["regions"]:
        assert st["ecs"][r]["running"] >= 2
        assert len({t["az"] for t in st["ecs"][r]["tasks"]}) >= 2


def test_below_threshold_stays_ok(local_env):
    """us-west-2 gets 40% of the threshold for two full periods: its alarm must not fire."""
    prof = local_env.profile
    rps = 0.4 * 500 / prof.period_s
    since = local_env.events()[-1]["seq"] if local_env.events() else 0
    counts = drive_load(local_env.lb_url("us-west-2"), rps, 2 * prof.period_s + 1)
    assert counts.get(200, 0) >= 0.9 * sum(counts.values()), counts
    # one more evaluation after the load: still not ALARM, and no ALARM delivered to the Lambda
    time_after = time.time() + prof.period_s + 1

    @eventually(prof.period_s * 2 + 5, 0.25)
    def evaluated_after_load():
        assert time.time() >= time_after

    evaluated_after_load()
    assert alarm_state(local_env, "us-west-2") != "ALARM"
    alarms = [e for e in local_env.events(since, "alarm") if e.get("new") == "ALARM"]
    assert alarms == [], alarms
    assert record_value(local_env) == local_env.endpoints["regions"]["us-east-1"]["lb_address"]


def test_surge_fails_over_and_clients_follow_after_ttl(local_env):
    prof = local_env.profile
    ep = local_env.endpoints
    old = ep["regions"]["us-east-1"]["lb_address"]
    new = ep["regions"]["us-west-2"]["lb_address"]
    name = ep["service_name"]
    assert local_env.resolver().resolve(name) == [old]

    rps = 1.5 * 500 / prof.period_s  # 1.5x the threshold per period
    surge_s = 3 * prof.period_s + prof.dns_ttl_s + 2
    t_surge = time.monotonic()
    # GET /health through the load balancer: the alarm counts every request, and pings let a
    # 2-core machine cross 500 per period without the full write path's cost
    load = threading.Thread(target=drive_load, args=(ep["regions"]["us-east-1"]["lb_url"], rps, surge_s),
                            kwargs={"method": "GET", "path": lambda i: "/health", "threads": 32}, daemon=True)
    load.start()

    deadline = prof.floor_s + 2 * prof.period_s + 5

    @eventually(deadline)
    def alarm_fired():
        assert alarm_state(local_env, "us-east-1") == "ALARM"

    alarm_fired()
    detection_s = time.monotonic() - t_surge

    # Poll Route 53's data plane uncached; keep a resolver that filled its cache just before.
    cached = None
    cached_at = 0.0
    fresh = local_env.resolver(honour_ttl=False)

    @eventually(deadline)
    def dns_moved():
        nonlocal cached, cached_at
        if fresh.lookup(name).addresses == [new]:
            return
        # a client that fills its cache with the old answer now; the record may change between the
        # two queries (seen once in CI): then this client cached the new answer and is not kept
        client = local_env.resolver()
        if client.resolve(name) == [old]:
            cached, cached_at = client, time.monotonic()
        raise AssertionError("Route 53 still answers the old region")

    dns_moved()
    failover_s = time.monotonic() - t_surge
    assert record_value(local_env) == new
    # the Lambda did it, through SNS
    invs = local_env.control("GET", "/lambda/invocations")
    assert any(i.get("outcome") == "ok" for i in invs), invs

    if cached is not None:
        # a client that cached the old answer keeps using it until its TTL runs out (asked while
        # the TTL is surely still running: the surge's threads can stall this one on 2 cores) ...
        first = cached.resolve(name)
        if time.monotonic() - cached_at < prof.dns_ttl_s - 0.2:
            assert first == [old]

        @eventually(prof.dns_ttl_s + 1.5)
        def client_followed():
            assert cached.resolve(name) == [new]

        client_followed()
        # ... and moves only once it has: a resolver that ignored the TTL would move at once
        assert time.monotonic() - cached_at >= prof.dns_ttl_s - 0.3
    load.join(timeout=surge_s + 30)
    print(f"detection {detection_s:.2f}s failover {failover_s:.2f}s floor {prof.floor_s}s")
    assert failover_s <= prof.floor_s + prof.period_s + 3  # at most one extra period for alignment


def test_stop_task_with_boto3_gets_a_replacement(local_env):
    ecs = local_env.client("ecs", "us-west-2")
    arns = ecs.list_tasks(cluster="gameday", desiredStatus="RUNNING")["taskArns"]
    assert len(arns) >= 2
    ecs.stop_task(cluster="gameday", task=arns[0], reason="gameday test")

    @eventually(10, 0.1)
    def replaced():
        running = ecs.list_tasks(cluster="gameday", desiredStatus="RUNNING")["taskArns"]
        assert arns[0] not in running and len(running) >= 2

    replaced()


def _stack_pid(env) -> int:
    return env.endpoints["pid"]


def test_no_process_left_after_teardown(tmp_path):
    e = LocalEnvironment(load_config(None), tmp_path)
    e.start()
    pid = _stack_pid(e)
    family = descendants(pid) | {pid}
    assert len(family) >= 6  # moto x2, tasks x4, lambda worker ...
    e.stop()

    @eventually(10, 0.1)
    def gone():
        assert alive(family) == set()

    gone()


def test_no_process_left_after_exception_and_after_sigkill(tmp_path):
    family: set[int] = set()
    with pytest.raises(RuntimeError):
        with LocalEnvironment(load_config(None), tmp_path / "a") as e:
            family = descendants(_stack_pid(e)) | {_stack_pid(e)}
            raise RuntimeError("scenario blew up")

    @eventually(10, 0.1)
    def gone():
        assert alive(family) == set()

    gone()

    # SIGKILL: the stack cannot clean up, so its children must die with it (PR_SET_PDEATHSIG)
    e = LocalEnvironment(load_config(None), tmp_path / "b").start()
    family = descendants(_stack_pid(e)) | {_stack_pid(e)}
    os.kill(_stack_pid(e), signal.SIGKILL)
    gone()
    e.stop()
