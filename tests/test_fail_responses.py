"""The fail_responses fault: a share of the requests a region's load balancer routes to its targets
are answered with a 5XX in the target's name, never forwarded, counted in HTTPCode_Target_5XX_Count.
The choice is pure (ResponseFailure, table-driven); the proxy, the metrics and the whole path
(Nemesis -> driver -> control API -> load balancer) run for real on loopback, without moto."""

from __future__ import annotations

import http.server
import threading
import time
from types import SimpleNamespace

import pytest
import requests

from gameday import faults
from gameday.assertions.eventually import eventually
from gameday.config import load_config
from gameday.environments.aws.faults_aws import AWS_FAULT_DRIVERS
from gameday.environments.local.context import LocalContext
from gameday.environments.local.control_api import ControlApi
from gameday.environments.local.ecs import Target as EcsTarget
from gameday.environments.local.environment import LocalEnvironment
from gameday.environments.local.lb_proxy import ResponseFailure
from gameday.environments.local.loadbalancer import LoadBalancers
from gameday.events import EventLog
from gameday.faults import FaultError, Nemesis
from gameday.net import free_port_on_all, region_address

CFG = load_config(None)
PROFILE = CFG.profile("local")
EAST, WEST = CFG.regions[0], CFG.regions[1]

# share -> which of the first requests fail (1) or are forwarded (0)
PATTERNS = {
    0.5: "01010101",
    0.25: "00010001",
    1 / 3: "001001001",
    1.0: "1111",
    0.75: "01110111",
}


@pytest.mark.parametrize("share, pattern", PATTERNS.items(), ids=[f"share={s:.2f}" for s in PATTERNS])
def test_the_failing_requests_are_spread_evenly_and_predictable(share, pattern):
    f = ResponseFailure(share)
    assert "".join("1" if f.next_fails() else "0" for _ in pattern) == pattern
    assert f.status_dict() == {"share": share, "status": 500, "requests": len(pattern), "failed": pattern.count("1")}


@pytest.mark.parametrize("n", [1, 7, 100, 1001])
@pytest.mark.parametrize("share", [0.1, 0.3, 0.5, 0.9])
def test_the_first_n_requests_get_floor_n_times_share_errors(share, n):
    f = ResponseFailure(share)
    assert sum(f.next_fails() for _ in range(n)) == int(n * share + 1e-9)


def test_a_share_or_status_out_of_range_is_refused():
    for share, status in ((0.0, 500), (1.5, 500), (0.5, 404), (0.5, 600)):
        with pytest.raises(ValueError):
            ResponseFailure(share, status)
    with pytest.raises(FaultError, match=r"fail_responses: share: must be a number within 0 < x <= 1, got 0\.0"):
        faults.fail_responses(EAST, share=0.0)
    with pytest.raises(FaultError, match="fail_responses: status: must be a whole number"):
        faults.fail_responses(EAST, status=404)


def test_aws_refuses_it_with_one_clear_line():
    driver = AWS_FAULT_DRIVERS["fail_responses"](SimpleNamespace(), faults.fail_responses(EAST))
    with pytest.raises(FaultError, match="fail_responses is not supported on --env aws"):
        driver.check()


# -- the load balancer, its metrics and the whole fault path, for real on loopback -------------------------------

class _Counting(http.server.ThreadingHTTPServer):
    daemon_threads = True
    requests_seen = 0


def _target(name: str) -> _Counting:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != CFG.service.health_path:
                self.server.requests_seen += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(name)))
            self.end_headers()
            self.wfile.write(name.encode())

        def log_message(self, *a):
            pass

    srv = _Counting(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


class _Scheduler:
    def __init__(self, targets: dict):
        self._targets = targets

    def targets(self, region: str):
        return list(self._targets.get(region, []))


@pytest.fixture
def stack(tmp_path):
    """A LoadBalancers with two real targets in EAST, behind a real control API, and a
    LocalEnvironment attached to it (as a scenario's process drives it)."""
    addresses = {r: region_address(i) for i, r in enumerate(CFG.regions)}
    ctx = LocalContext(config=CFG, profile=PROFILE, run_dir=tmp_path, events=EventLog(None), moto_urls={},
                       lb_addresses=addresses, lb_port=free_port_on_all(list(addresses.values())))
    servers = [_target("a"), _target("b")]
    sched = _Scheduler({EAST: [EcsTarget(n, "az1", "127.0.0.1", s.server_address[1]) for n, s in zip("ab", servers)]})
    lbs = LoadBalancers(ctx, sched).start()
    api = ControlApi(SimpleNamespace(config=CFG, ctx=ctx, lbs=lbs)).start()
    env = LocalEnvironment.attach({"control_url": api.url, "run_dir": str(tmp_path),
                                   "regions": {r: {"lb_address": a} for r, a in addresses.items()}}, CFG)
    try:
        eventually(lambda: _healthy(lbs, 2), deadline_s=2 * PROFILE.health_check_interval_s + 3.0,
                   what="both targets healthy")
        yield SimpleNamespace(ctx=ctx, lbs=lbs, env=env, servers=servers, url=ctx.lb_url(EAST))
    finally:
        api.stop()
        lbs.stop()
        for s in servers:
            s.shutdown()
            s.server_close()


def _healthy(lbs, n: int) -> None:
    assert lbs.status()[EAST]["healthy"] == n, lbs.status()[EAST]


def _target_5xx(lbs, region: str) -> dict:
    """Every bucket's counts so far, summed as CloudWatch would get them."""
    # not armed, the flusher publishes nothing and keeps every bucket (lb_metrics.MetricsFlusher)
    done = lbs.metrics.take_closed(region, time.time() + 3600, final=True)
    out: dict = {}
    for d in lbs.metrics.metric_data("lb", done, healthy_now=2, now=0.0):
        if d["MetricName"] in ("RequestCount", "HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count"):
            out[d["MetricName"]] = out.get(d["MetricName"], 0) + d["Value"]
    return out


def test_the_share_is_answered_in_the_targets_name_never_forwarded_and_counted_as_target_5xx(stack, tmp_path):
    with Nemesis(stack.env, tmp_path / "journal.jsonl", handle_signals=False) as nemesis:
        rec = nemesis.inject(faults.fail_responses(EAST, share=0.25, status=503))
        answers = [requests.get(stack.url + "/items/k", timeout=3) for _ in range(20)]
        failed = [r for r in answers if r.status_code == 503]
        assert len(failed) == 5 and [i for i, r in enumerate(answers) if r.status_code == 503] == [3, 7, 11, 15, 19]
        assert all(r.status_code == 200 for r in answers if r not in failed)
        for r in failed:   # as the target would answer: its region, task and AZ, and which fault did it
            assert r.headers["X-Gameday-Region"] == EAST and r.headers["X-Gameday-Task"] in ("a", "b")
            assert r.headers["X-Gameday-Fault"] == "fail_responses" and "injected" in r.json()["message"]
        # never forwarded: the targets saw only the 15 answered requests
        eventually(lambda: _equal(sum(s.requests_seen for s in stack.servers), 15), deadline_s=3, what="targets' count")
        eventually(lambda: _equal(stack.lbs.status()[EAST]["requests"], 20), deadline_s=3, what="requests counted")
        assert stack.lbs.status()[EAST]["failing"] == {"share": 0.25, "status": 503, "requests": 20, "failed": 5}
        assert _target_5xx(stack.lbs, EAST) == {"RequestCount": 20, "HTTPCode_Target_5XX_Count": 5}
        assert stack.lbs.status()[EAST]["healthy"] == 2   # health checks are not requests: targets stay healthy
        nemesis.rollback(rec)
    assert stack.lbs.status()[EAST]["failing"] is None
    assert rec.rollback_detail["ended"] == {"share": 0.25, "status": 503, "requests": 20, "failed": 5}
    assert all(requests.get(stack.url + "/items/k", timeout=3).status_code == 200 for _ in range(8))
    # the load balancer counts a request once it has answered it: the client can read the answer first
    eventually(lambda: _equal(stack.lbs.status()[EAST]["requests"], 28), deadline_s=3, what="requests counted")
    assert _target_5xx(stack.lbs, EAST) == {"RequestCount": 8}
    kinds = [(e["action"], e["fault_kind"]) for e in stack.ctx.events.since(0, "fault")]
    assert kinds == [("inject", "fail_responses"), ("rollback", "fail_responses")]


def test_the_control_api_refuses_bad_input_with_one_line(stack):
    for body, says in (({"region": EAST, "share": 0}, "share"), ({"region": EAST, "share": 0.5, "status": 404}, "status"),
                       ({"region": "eu-west-9", "share": 0.5}, "unknown region")):
        with pytest.raises(ValueError, match=says):
            stack.env.control("POST", "/lb/fail-responses", body)
    assert stack.lbs.status()[EAST]["failing"] is None


def _equal(got, expected) -> None:
    assert got == expected, got
