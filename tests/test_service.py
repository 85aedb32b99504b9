"""The reference service (sut/service.py) in process, against a real moto behind the AWS router:
the Server-Timing entries it answers with (where a request's time went) and its bound on
DynamoDB calls in flight (never more than its connection pool holds)."""

from __future__ import annotations

import logging
import threading

import pytest
import requests

from gameday.environments.local.router import AwsRouter
from gameday.sut import service
from tests.support import provisioned_context


@pytest.fixture(scope="module")
def served():
    with provisioned_context() as ctx, pytest.MonkeyPatch.context() as mp:
        # a task gets its credentials from the environment (ECS's task role in AWS)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        router = AwsRouter(ctx).start()
        args = service.parse_args(["--port", "0", "--region", "us-east-1", "--table", ctx.config.dynamodb.table,
                                   "--endpoint", ctx.router_url, "--task-id", "t-test", "--az", "us-east-1a"])
        store = service.DynamoStore(args)
        server = service.Server(("127.0.0.1", 0), service.make_handler(store, args))
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}", store, router
        finally:
            server.shutdown()
            server.server_close()
            router.stop()


def _timing(header: str) -> dict[str, float]:
    return {name: float(dur) for name, _, dur in (e.strip().partition(";dur=") for e in header.split(","))}


def test_answers_say_where_the_time_went(served):
    url, _store, _router = served
    r = requests.put(url + "/items/st-1", json={"value": 1}, timeout=5)
    assert r.status_code == 200
    t = _timing(r.headers["Server-Timing"])
    assert set(t) == {"app", "ddb", "moto"}
    # each layer contains the next: the handling holds the DynamoDB call, which holds moto's answer
    assert t["app"] >= t["ddb"] >= t["moto"] > 0
    health = _timing(requests.get(url + "/health", timeout=5).headers["Server-Timing"])
    assert set(health) == {"app"}   # no DynamoDB call, no entry for one


def test_calls_in_flight_never_outnumber_the_pools_connections(served, caplog):
    """More concurrent requests than pooled connections: the extra calls wait for a connection
    instead of opening one that urllib3 throws away afterwards (each a new connection at the
    endpoint: the connection storm of issue 17)."""
    url, store, router = served
    rule = router.add_fault(kind="latency", latency_s=0.3, service="dynamodb")
    n = service.POOL_CONNECTIONS + 16
    statuses: list[int] = []
    gate = threading.Barrier(n)

    def get(i: int) -> None:
        gate.wait()
        statuses.append(requests.get(f"{url}/items/st-missing-{i}", timeout=10).status_code)

    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    try:
        threads = [threading.Thread(target=get, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        router.remove_fault(rule["id"])
    assert statuses == [404] * n
    assert not [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()]
