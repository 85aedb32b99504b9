"""A task's capacity rule (sut/capacity.py) on a fake clock: a single server, first come first
served, 1/rate seconds per request; a request that would wait longer than max_wait_s is refused
(503). `now` is a number the test passes, so the queue's arithmetic is exact."""

from __future__ import annotations

import contextlib

import pytest

from gameday.sut.capacity import DEFAULT_MAX_WAIT_S, TaskCapacity

T0 = 100.0


@pytest.mark.parametrize("rate, max_wait, arrivals, expected", [
    # under capacity (10/s, one every 0.2 s): nobody waits
    (10, 1.0, [0.0, 0.2, 0.4, 0.6], [0.0, 0.0, 0.0, 0.0]),
    # a burst of 4 at once: each waits for the ones before it (0.1 s per request)
    (10, 1.0, [0.0, 0.0, 0.0, 0.0], [0.0, 0.1, 0.2, 0.3]),
    # the queue drains while nobody arrives: the late request finds the server idle again
    (10, 1.0, [0.0, 0.0, 0.0, 1.0], [0.0, 0.1, 0.2, 0.0]),
    # twice the capacity (20/s against 10/s): the wait grows by 0.05 s per request ...
    (10, 1.0, [i * 0.05 for i in range(5)], [0.0, 0.05, 0.1, 0.15, 0.2]),
    # ... until it would pass max_wait: then refused (None), and a refused request takes no turn
    (10, 0.25, [0.0] * 5, [0.0, 0.1, 0.2, None, None]),
    (10, 0.25, [0.0, 0.0, 0.0, 0.0, 0.1], [0.0, 0.1, 0.2, None, 0.2]),
    # a wait exactly at max_wait is still served
    (10, 0.2, [0.0, 0.0, 0.0], [0.0, 0.1, 0.2]),
    # 0 = unlimited: never a wait, never a refusal
    (0, 0.0, [0.0] * 100, [0.0] * 100),
])
def test_queue_waits_and_refusals(rate, max_wait, arrivals, expected):
    cap = TaskCapacity(rate, max_wait)
    got = [cap.admit(T0 + t) for t in arrivals]
    assert [None if w is None else round(w, 9) for w in got] == expected
    assert cap.refused == expected.count(None)
    assert cap.admitted == len(expected) - expected.count(None)


def test_sustained_overload_refuses_the_excess():
    """30 requests/s for 20 s against 10/s: once the queue is full, two of every three are refused
    and every admitted request waits about max_wait."""
    cap = TaskCapacity(10, DEFAULT_MAX_WAIT_S)
    waits = [cap.admit(T0 + i / 30) for i in range(600)]
    admitted = [w for w in waits if w is not None]
    # served: the 20 s of capacity plus the queue still held at the end
    assert len(admitted) == pytest.approx(10 * 20 + 10 * DEFAULT_MAX_WAIT_S, abs=2)
    assert min(admitted[-50:]) > DEFAULT_MAX_WAIT_S - 0.1
    assert cap.backlog_s(T0 + 20) == pytest.approx(DEFAULT_MAX_WAIT_S, abs=0.1)


def test_at_capacity_the_queue_does_not_grow():
    cap = TaskCapacity(10, 1.0)
    waits = [cap.admit(T0 + i * 0.1) for i in range(100)]
    assert max(waits) == pytest.approx(0.0, abs=1e-9)
    assert cap.backlog_s(T0 + 10.0) == 0.0


@pytest.mark.parametrize("rate, max_wait", [(-1, 1.0), (10, -0.5)])
def test_bad_parameters_are_refused(rate, max_wait):
    with pytest.raises(ValueError, match="must be >= 0"):
        TaskCapacity(rate, max_wait)


# -- the adapter: the reference service applies the rule to every request (a real server, real time) --

def _serve(capacity_rps: float, max_wait_s: float):
    import threading

    from gameday.sut import service

    # /health makes no DynamoDB call: the endpoint is never dialled
    args = service.parse_args(["--port", "0", "--region", "us-east-1", "--table", "t", "--endpoint", "http://127.0.0.1:9",
                               "--task-id", "t-cap", "--task-capacity-rps", str(capacity_rps),
                               "--max-queue-wait-s", str(max_wait_s)])
    server = service.Server(("127.0.0.1", 0), service.make_handler(service.DynamoStore(args), args))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@contextlib.contextmanager
def _served(capacity_rps: float, max_wait_s: float):
    server = _serve(capacity_rps, max_wait_s)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _burst(server, n: int, agent: str | None = "gameday-test") -> tuple[list, float]:
    """n concurrent GET /health, as clients (a User-Agent) or as the load balancer's probe; also
    the seconds between the first and the last request leaving (on 2 busy cores the threads do
    not all start at once, and the task serves more of a burst that arrives spread out)."""
    import http.client
    import time
    from concurrent.futures import ThreadPoolExecutor

    import requests

    port = server.server_address[1]
    sent: list[float] = []

    def probe(_) -> int:   # as the local load balancer probes: http.client, no User-Agent
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            sent.append(time.monotonic())
            conn.request("GET", "/health")
            return conn.getresponse().status
        finally:
            conn.close()

    def get(_) -> int:
        sent.append(time.monotonic())
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=5, headers={"User-Agent": agent})

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(probe if agent is None else get, range(n)))
    return answers, max(sent) - min(sent)


def test_the_service_queues_then_refuses_over_capacity():
    """2/s with a queue of 0.6 s: of a burst arriving at once, 2 are served (waits 0 and 0.5 s) and
    the rest refused; a burst spread over `span` seconds gets about 2 per second more. The bound
    uses the measured span, so a slow start of the client threads cannot fail the test, while a
    service that ignored the rule (16 served) still does."""
    with _served(2, 0.6) as server:
        answers, span = _burst(server, 16)
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 503}, codes
    served_at_most = 2 + int(2 * span) + 1
    assert 1 <= codes.count(200) <= served_at_most, (codes, f"burst spread over {span:.2f} s")
    assert span < 5, f"the 16 requests took {span:.2f} s to leave: no burst, nothing measured"
    assert all(r.json()["error"] == "OverCapacity" for r in answers if r.status_code == 503)
    # the ones that waited say so (Server-Timing `queue`), up to the queue's limit
    queued = [float(e.split("dur=")[1]) for r in answers if r.status_code == 200
              for e in r.headers["Server-Timing"].split(",") if "queue" in e]
    assert queued and max(queued) <= 600 + 50


def test_an_unlimited_service_serves_the_whole_burst():
    with _served(0, 0.3) as server:
        answers, _ = _burst(server, 16)
    assert [r.status_code for r in answers] == [200] * 16


@pytest.mark.parametrize("agent", [None, "ELB-HealthChecker/2.0"])
def test_the_load_balancers_health_checks_take_no_turn(agent):
    """The probe (no User-Agent locally, ELB-HealthChecker on AWS) is answered at once even when the
    task is saturated: its compressed rate is not a load the task carries on AWS."""
    with _served(2, 0.3) as server:
        answers, _ = _burst(server, 16, agent)
    assert [getattr(r, "status_code", r) for r in answers] == [200] * 16
