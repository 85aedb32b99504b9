"""The regional load balancer's three parts, each on its own: target health (the ALB state
machine, pure, on a fake clock), metrics (buckets -> the MetricData CloudWatch gets), and the
proxy (real HTTP: round robin over healthy targets, 503/502, data-plane blocks). The whole load
balancer with real ECS tasks is tested in test_ecs.py."""

from __future__ import annotations

import http.server
import socket
import threading

import pytest
import requests

from gameday.assertions.eventually import eventually
from gameday.config import load_config
from gameday.environments.local import ecs
from gameday.environments.local.context import LocalContext
from gameday.environments.local.loadbalancer import LoadBalancers
from gameday.environments.local.lb_metrics import MAX_DATA_PER_CALL, LbMetrics, MetricsFlusher
from gameday.environments.local.lb_proxy import RegionProxy
from gameday.environments.local.target_health import HealthCheckSettings, Target, TargetGroup
from gameday.events import EventLog
from gameday.httpfwd import UpstreamPool
from gameday.net import free_port, free_port_on_all, region_address

CFG = load_config(None)
PROFILE = CFG.profile("local")
HEALTH_PATH = CFG.service.health_path
SETTINGS = HealthCheckSettings(interval_s=1.0, healthy_threshold=2, unhealthy_threshold=3)

# -- target health: table-driven on a fake clock ---------------------------------------------------------
# results: one health check per interval, P(ass) or F(ail); states: the state after each check
HEALTH_CASES = {
    "new target: healthy after ONE passing check": ("P", ["healthy"]),
    "new target that keeps failing: unhealthy at the unhealthy threshold": ("FFFP", ["initial", "initial", "unhealthy", "unhealthy"]),
    "healthy target: unhealthy after unhealthy_threshold failures in a row": ("PFFF", ["healthy", "healthy", "healthy", "unhealthy"]),
    "unhealthy target: back only after healthy_threshold passes in a row": ("PFFFPFPP", ["healthy", "healthy", "healthy", "unhealthy", "unhealthy", "unhealthy", "unhealthy", "healthy"]),
    "a flapping target never reaches the unhealthy threshold": ("PFFPFFPFF", ["healthy"] * 9),
    "a flapping unhealthy target never reaches the healthy threshold": ("PFFFPFPFP", ["healthy"] * 3 + ["unhealthy"] * 6),
}


@pytest.mark.parametrize("results,states", HEALTH_CASES.values(), ids=list(HEALTH_CASES))
def test_target_health_state_machine(results, states):
    group = TargetGroup(SETTINGS)
    group.sync({"t1": ("127.0.0.1", 1, "a")})
    seen, changes = [], []
    for i, r in enumerate(results):
        now = i * SETTINGS.interval_s
        assert [t.key for t in group.due(now)] == ["t1"]
        change = group.observe("t1", r == "P", now)
        seen.append(group.targets["t1"].state)
        if change:
            changes.append((i, change.was, change.healthy))
    assert seen == states
    # a transition is reported exactly when the state changes, with the state it left
    expected = [(i, (["initial"] + states)[i], s == "healthy") for i, s in enumerate(states) if s != (["initial"] + states)[i]]
    assert changes == expected
    assert group.healthy_count() == (states[-1] == "healthy")


def test_a_check_is_due_one_interval_after_the_previous_started_whatever_the_response_time():
    group = TargetGroup(SETTINGS)
    group.sync({"t1": ("h", 1, "a"), "t2": ("h", 2, "b")})
    assert {t.key for t in group.due(100.0)} == {"t1", "t2"}   # new targets: at once
    assert group.next_due(100.0) == 100.0
    group.observe("t1", True, 100.0)                            # started at 100.0, answered later
    assert [t.key for t in group.due(100.9)] == ["t2"]
    group.observe("t2", True, 100.5)
    assert group.due(100.99) == []
    assert group.next_due(100.6) == pytest.approx(101.0)
    assert [t.key for t in group.due(101.0)] == ["t1"]          # not 101.0 + the response time
    assert {t.key for t in group.due(101.5)} == {"t1", "t2"}
    assert TargetGroup(SETTINGS).next_due(5.0) == 6.0           # an empty group looks again in one interval


def test_registration_keeps_known_targets_health_and_drops_deregistered_ones():
    group = TargetGroup(SETTINGS)
    group.sync({"t1": ("h", 1, "a"), "t2": ("h", 2, "b")})
    group.observe("t1", True, 0.0)
    group.sync({"t1": ("h", 1, "a"), "t3": ("h", 3, "a")})
    assert {k: t.state for k, t in group.targets.items()} == {"t1": "healthy", "t3": "initial"}
    assert group.observe("t2", True, 1.0) is None               # a result for a deregistered target
    assert [t.key for t in group.healthy()] == ["t1"]


# -- metrics -----------------------------------------------------------------------------------------------
def test_metric_buckets_are_aligned_and_only_closed_ones_are_published():
    m = LbMetrics(["r1"], step_s=0.5)
    m.record_request("r1", 10.1, 200, target_error=False, response_s=0.010)
    m.record_request("r1", 10.4, 503, target_error=False, response_s=None)     # no healthy target: ELB 5xx
    m.record_request("r1", 10.45, 500, target_error=True, response_s=0.030)    # the target's own 5xx
    m.record_healthy("r1", 10.2, 3)
    m.record_healthy("r1", 10.3, 1)
    m.record_request("r1", 10.5, 200, target_error=False, response_s=0.020)    # the next bucket
    assert m.take_closed("r1", 10.49) == {}                                    # [10.0, 10.5) still open
    done = m.take_closed("r1", 10.6)
    assert list(done) == [10.0]
    by_name = {d["MetricName"]: d for d in m.metric_data("lb", done, healthy_now=7, now=10.6)}
    assert {k: v["Value"] for k, v in by_name.items()} == {
        "RequestCount": 3, "HTTPCode_Target_5XX_Count": 1, "HTTPCode_ELB_5XX_Count": 1,
        "TargetResponseTime": pytest.approx(0.020), "HealthyHostCount": 1}
    assert {d["Timestamp"] for d in by_name.values()} == {10.25}              # the bucket's middle
    assert by_name["RequestCount"]["Dimensions"] == [{"Name": "LoadBalancer", "Value": "lb"}]
    assert m.total_requests == {"r1": 4}
    assert list(m.take_closed("r1", 10.6, final=True)) == [10.5]


def test_zero_counts_are_not_published_but_healthy_hosts_always_are():
    m = LbMetrics(["r1"], step_s=1.0)
    m.record_request("r1", 3.2, 200, target_error=False, response_s=0.01)
    data = m.metric_data("lb", m.take_closed("r1", 4.0), healthy_now=2, now=4.0)
    assert sorted(d["MetricName"] for d in data) == ["HealthyHostCount", "RequestCount", "TargetResponseTime"]
    assert [d["Value"] for d in data if d["MetricName"] == "HealthyHostCount"] == [2]   # no sample: now's
    idle = m.metric_data("lb", {}, healthy_now=2, now=7.3)
    assert [(d["MetricName"], d["Value"], d["Timestamp"]) for d in idle] == [("HealthyHostCount", 2, 6.5)]


def test_the_flusher_publishes_nothing_before_it_is_armed_and_batches_by_500():
    m = LbMetrics(["r1", "r2"], step_s=1.0)
    puts: list[tuple[str, int]] = []
    f = MetricsFlusher(m, lb_name=lambda r: f"lb-{r}", healthy_now=lambda r: 2,
                       put=lambda region, data: puts.append((region, len(data))))
    m.record_request("r1", 1.5, 200, target_error=False, response_s=None)
    f.flush(now=5.0)
    assert puts == []
    f.arm()                                                   # start-up counts are dropped
    f.flush(now=5.0)
    assert puts == [("r1", 1), ("r2", 1)]                     # HealthyHostCount only
    puts.clear()
    for i in range(600):                                      # 600 closed buckets with traffic
        m.record_request("r1", 10.0 + i, 200, target_error=False, response_s=None)
    f.flush(now=1000.0)
    # RequestCount + HealthyHostCount per bucket: 1200 data in calls of at most 500
    assert [n for r, n in puts if r == "r1"] == [MAX_DATA_PER_CALL, MAX_DATA_PER_CALL, 1200 - 2 * MAX_DATA_PER_CALL]


# -- the proxy, over real HTTP -----------------------------------------------------------------------------
class _Target(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _target(name: str, status: int = 200, health: dict | None = None) -> tuple[_Target, Target]:
    """A target answering its name with `status`; its health path answers health[name] if given."""
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = name.encode()
            code = health[name] if health is not None and self.path == HEALTH_PATH else status
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = _Target(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv, Target(name, "127.0.0.1", srv.server_address[1], "a", state="healthy")


@pytest.fixture
def proxy():
    servers, healthy, seen, block = [], [], [], {"mode": None}
    p = RegionProxy("r1", "127.0.0.1", free_port(), healthy_targets=lambda: list(healthy),
                    blocked=lambda: block["mode"], on_request=lambda *o: seen.append(o),
                    pool=UpstreamPool(timeout_s=2))
    p.open()
    p.test = {"servers": servers, "healthy": healthy, "seen": seen, "block": block}
    yield p
    p.stop()
    for s in servers:
        s.shutdown()
        s.server_close()


def _get(p: RegionProxy, timeout: float = 3.0) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{p.port}/x", timeout=timeout)


def test_proxy_round_robin_over_healthy_targets_and_503_without_any(proxy):
    for name in ("a", "b"):
        srv, t = _target(name)
        proxy.test["servers"].append(srv)
        proxy.test["healthy"].append(t)
    assert sorted(_get(proxy).text for _ in range(4)) == ["a", "a", "b", "b"]
    proxy.test["healthy"].clear()
    r = _get(proxy)
    assert r.status_code == 503 and r.headers["X-Gameday-Region"] == "r1"
    _seen(proxy, [(200, False, False)] * 4 + [(503, False, True)])


def _seen(p: RegionProxy, expected: list) -> None:
    """What the proxy reported (status, target's 5xx, no response time), once it has reported
    every request: it reports after answering, so the client can be a little ahead, and one
    request's report can land after the next one's (each handler thread reports on its own)."""
    def check():
        seen = [(s, err, rt is None) for s, err, rt, _ in p.test["seen"]]
        assert sorted(seen) == sorted(expected), seen
    eventually(check, deadline_s=3, what="the proxy's request reports")


def test_proxy_adds_its_target_time_to_the_targets_server_timing(proxy):
    """Server-Timing (W3C): the load balancer's `target` entry (forward -> the target's last byte,
    ALB's TargetResponseTime) comes first, the target's own entries are kept, in one header."""
    class Timed(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Server-Timing", "app;dur=1.50")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = _Target(("127.0.0.1", 0), Timed)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    proxy.test["servers"].append(srv)
    plain, plain_t = _target("plain")
    proxy.test["servers"].append(plain)
    proxy.test["healthy"][:] = [Target("timed", "127.0.0.1", srv.server_address[1], "a", state="healthy")]
    target, _, app = _get(proxy).headers["Server-Timing"].partition(", ")
    assert app == "app;dur=1.50"
    name, _, dur = target.partition(";dur=")
    assert name == "target" and 0 < float(dur) < 3000
    proxy.test["healthy"][:] = [plain_t]   # a target that reports nothing: the entry alone
    assert _get(proxy).headers["Server-Timing"].startswith("target;dur=")


def test_proxy_502_when_the_target_fails_and_target_5xx_is_the_targets(proxy):
    srv, bad = _target("bad", status=500)
    proxy.test["servers"].append(srv)
    gone = Target("gone", "127.0.0.1", free_port(), "a", state="healthy")   # nothing listens there
    proxy.test["healthy"][:] = [bad]
    assert _get(proxy).status_code == 500
    proxy.test["healthy"][:] = [gone]
    r = _get(proxy)
    assert r.status_code == 502 and "gone" in r.json()["message"]
    _seen(proxy, [(500, True, False), (502, False, False)])


def test_proxy_refuse_closes_the_socket_and_hang_holds_until_unblocked(proxy):
    srv, t = _target("a")
    proxy.test["servers"].append(srv)
    proxy.test["healthy"].append(t)
    proxy.test["block"]["mode"] = "refuse"
    proxy.block_changed()
    with pytest.raises(requests.ConnectionError):
        _get(proxy)
    proxy.test["block"]["mode"] = "hang"
    proxy.block_changed()                                  # listening again, never answering
    with pytest.raises(requests.ReadTimeout):
        _get(proxy, timeout=0.5)
    outcome: dict = {}

    def held_request():
        try:
            outcome["status"] = _get(proxy, timeout=5).status_code
        except requests.RequestException as e:
            outcome["error"] = type(e).__name__

    held = threading.Thread(target=held_request)
    held.start()
    eventually(lambda: _held(proxy, 2), deadline_s=3, what="both requests held by the hang block")
    proxy.test["block"]["mode"] = None
    proxy.block_changed()
    held.join(timeout=3)
    # lifting the block frees held requests at once (not after HANG_MAX_S); they are dropped, not
    # forwarded (the client sees its connection close); new requests pass
    assert not held.is_alive() and outcome == {"error": "ConnectionError"}
    eventually(lambda: _held(proxy, 0), deadline_s=3, what="the other held request (its client gave up) freed too")
    assert _get(proxy).text == "a"


def _held(p: RegionProxy, n: int) -> None:
    assert p.held == n, p.held


def test_refused_port_is_really_closed(proxy):
    proxy.test["block"]["mode"] = "refuse"
    proxy.block_changed()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()


# -- the composition: health checks feed the proxy and the timeline -------------------------------------------
class FakeScheduler:
    """What the load balancers ask the ECS scheduler: its running targets, and where requests went."""

    def __init__(self, targets: dict[str, list]):
        self._targets = targets
        self.requests = {r: 0 for r in targets}

    def targets(self, region: str) -> list:
        return list(self._targets[region])

    def report_requests(self, region: str, n: int = 1) -> None:
        self.requests[region] += n


def test_load_balancers_route_by_health_and_put_health_changes_on_the_timeline(tmp_path):
    east, west = CFG.regions[0], CFG.regions[1]
    addresses = {r: region_address(i) for i, r in enumerate(CFG.regions)}
    ctx = LocalContext(config=CFG, profile=PROFILE, run_dir=tmp_path, events=EventLog(None), moto_urls={},
                       lb_addresses=addresses, lb_port=free_port_on_all(list(addresses.values())))
    health = {"a": 200, "b": 200}
    (sa, a), (sb, b) = _target("a", health=health), _target("b", health=health)
    sched = FakeScheduler({east: [ecs.Target("a", "az1", a.host, a.port), ecs.Target("b", "az2", b.host, b.port)],
                           west: []})
    # a check every interval, each up to the interval's timeout, plus the 2-core machine's margin
    checks = lambda n: n * 2 * PROFILE.health_check_interval_s + 3.0  # noqa: E731
    lbs = LoadBalancers(ctx, sched).start()
    try:
        def states(expected: dict):
            got = {t["task"]: t["state"] for t in lbs.status()[east]["targets"]}
            assert got == expected, got
        eventually(lambda: states({"a": "healthy", "b": "healthy"}), deadline_s=checks(1), what="first check passes")
        answers = [requests.get(ctx.lb_url(east) + "/x", timeout=3).text for _ in range(4)]
        assert sorted(answers) == ["a", "a", "b", "b"]
        assert requests.get(ctx.lb_url(west) + "/x", timeout=3).status_code == 503   # no targets at all

        health["b"] = 500
        eventually(lambda: states({"a": "healthy", "b": "unhealthy"}), deadline_s=checks(PROFILE.unhealthy_threshold),
                   what="b unhealthy after the unhealthy threshold")
        assert {requests.get(ctx.lb_url(east) + "/x", timeout=3).text for _ in range(4)} == {"a"}
        changes = [(e["target"], e["healthy"]) for e in ctx.events.since(0, "target_health")]
        assert changes == [("a", True), ("b", True), ("b", False)] or changes == [("b", True), ("a", True), ("b", False)]
        assert all(e["region"] == east and e["az"] in ("az1", "az2") for e in ctx.events.since(0, "target_health"))

        sched._targets[east] = [ecs.Target("b", "az2", b.host, b.port)]                   # a deregistered
        eventually(lambda: states({"b": "unhealthy"}), deadline_s=checks(1), what="a deregistered")
        assert requests.get(ctx.lb_url(east) + "/x", timeout=3).status_code == 503
        assert lbs.status()[east]["healthy"] == 0
        # counted once answered: the client can be a little ahead
        eventually(lambda: _equal({r: lbs.status()[r]["requests"] for r in (east, west)}, {east: 9, west: 1}),
                   deadline_s=3, what="requests counted")
        assert sched.requests == {east: 9, west: 1}
    finally:
        lbs.stop()
        for srv in (sa, sb):
            srv.shutdown()
            srv.server_close()


def _equal(got, expected) -> None:
    assert got == expected, got
