"""The local environment's control API (environments/local/control_api.py) on a real stack
(moto per region, tasks, load balancers, Lambda runner), over real HTTP: every path its users
call answers as it did before the move to werkzeug routing, bad input is a 400 naming the
field, an unknown path a 404, and a bug in a handler a 500 with its traceback (never a 400)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest
import requests

from gameday.config import load_config
from gameday.environments.local.stack import LocalStack

CFG = load_config(None)
WEST, EAST = "us-west-2", "us-east-1"


@pytest.fixture(scope="module")
def stack():
    s = LocalStack(CFG, Path(tempfile.mkdtemp(prefix="gameday-control-api-")))
    s.start()
    try:
        yield s
    finally:
        s.stop()


def call(stack, method: str, path: str, body=None, *, data=None) -> requests.Response:
    return requests.request(method, stack.control.url + path, json=body, data=data, timeout=10)


def ok(stack, method: str, path: str, body=None):
    r = call(stack, method, path, body)
    assert r.status_code == 200, (method, path, r.status_code, r.text)
    assert r.headers["Content-Type"] == "application/json"
    return r.json()


# -- every path, with the response shape its callers read ---------------------------------------------------
def test_reads_answer_as_before(stack):
    ep = ok(stack, "GET", "/endpoints")
    assert ep["control_url"] == stack.control.url and set(ep["regions"]) == set(CFG.regions)
    assert {"aws_endpoint", "dns", "lb_port", "moto_urls", "run_dir", "profile", "pid"} <= set(ep)
    st = ok(stack, "GET", "/status")
    assert {"env", "run_dir", "router", "dns", "replication", "ecs", "load_balancers", "alarms", "lambda"} <= set(st)
    assert set(st["load_balancers"]) == set(CFG.regions)
    assert ok(stack, "GET", "/lambda/invocations") == []
    assert ok(stack, "GET", "/lambda/fault") == {"fault": None}


def test_events_round_trip(stack):
    ev = ok(stack, "POST", "/events", {"kind": "scenario", "action": "start", "name": "t"})
    assert {k: ev[k] for k in ("kind", "action", "name")} == {"kind": "scenario", "action": "start", "name": "t"}
    note = ok(stack, "POST", "/events", {"text": "no kind"})
    assert note["kind"] == "note" and note["text"] == "no kind" and note["seq"] > ev["seq"]
    listed = ok(stack, "GET", f"/events?since={ev['seq'] - 1}")   # the stack emits too, in between
    assert listed[0] == ev and note in listed
    assert [e["seq"] for e in ok(stack, "GET", f"/events?since={ev['seq'] - 1}&kind=note")] == [note["seq"]]
    assert ok(stack, "GET", "/events")[0]["seq"] == 1   # since defaults to 0


def _lb(stack, region: str) -> dict:
    return ok(stack, "GET", "/status")["load_balancers"][region]


def test_fault_primitives_act_and_answer_ok(stack):
    assert ok(stack, "POST", "/network/block", {"region": WEST, "mode": "refuse"}) == {"ok": True}
    assert _lb(stack, WEST)["blocked"] == "refuse"
    assert ok(stack, "POST", "/network/unblock", {"region": WEST}) == {"ok": True}
    assert ok(stack, "POST", "/network/block", {"region": WEST}) == {"ok": True}   # mode defaults to hang
    assert _lb(stack, WEST)["blocked"] == "hang"
    ok(stack, "POST", "/network/unblock", {"region": WEST})
    assert _lb(stack, WEST)["blocked"] is None

    assert ok(stack, "POST", "/control-plane/block", {"region": EAST}) == {"ok": True}
    assert ok(stack, "GET", "/status")["router"]["blocked_control_planes"] == [EAST]
    assert ok(stack, "POST", "/control-plane/unblock", {"region": EAST}) == {"ok": True}
    assert ok(stack, "GET", "/status")["router"]["blocked_control_planes"] == []

    rule = ok(stack, "POST", "/api-faults", {"kind": "throttle", "region": WEST, "service": "dynamodb", "limit": 1})
    assert set(rule) == {"kind", "region", "service", "operation", "rate", "status", "latency_s", "limit", "id",
                         "matched", "created_at"}
    assert (rule["operation"], rule["rate"], rule["status"]) == ("*", 1.0, 500)   # the router's defaults
    assert ok(stack, "DELETE", f"/api-faults/{rule['id']}") == {"removed": True}
    assert ok(stack, "DELETE", f"/api-faults/{rule['id']}") == {"removed": False}


def test_replication_lambda_and_ecs_primitives(stack):
    pair = {"source": EAST, "destination": WEST}
    assert ok(stack, "POST", "/replication/pause", pair) == {"ok": True}
    assert ok(stack, "GET", "/status")["replication"][f"{EAST}->{WEST}"]["paused"] is True
    assert ok(stack, "POST", "/replication/resume", pair) == {"ok": True}
    assert ok(stack, "GET", "/status")["replication"][f"{EAST}->{WEST}"]["paused"] is False
    assert ok(stack, "POST", "/replication/config", {"drop_fraction": 0.0, "lag_s": 0.0}) == {"ok": True}
    assert ok(stack, "POST", "/replication/config", {}) == {"ok": True}

    assert ok(stack, "POST", "/lambda/fault", {"mode": "delay", "delay_s": 0.5}) == {"mode": "delay", "delay_s": 0.5}
    assert ok(stack, "GET", "/lambda/fault") == {"fault": {"mode": "delay", "delay_s": 0.5}}
    assert ok(stack, "DELETE", "/lambda/fault") == {"cleared": True}
    assert ok(stack, "DELETE", "/lambda/fault") == {"cleared": False}

    assert ok(stack, "POST", "/ecs/az", {"region": WEST, "az": f"{WEST}a", "available": True}) == {"ok": True}
    assert ok(stack, "GET", "/status")["ecs"][WEST]["unavailable_azs"] == []


# -- bad input: 400, one line, naming the field ---------------------------------------------------------------
BAD_INPUT = [
    ("POST", "/network/block", {}, "region", "missing field 'region'"),
    ("POST", "/network/block", {"region": "mars-1"}, "region", "unknown region 'mars-1'"),
    ("POST", "/network/block", {"region": WEST, "mode": "x"}, "mode", "'hang' or 'refuse'"),
    ("POST", "/network/block", {"region": 3}, "region", "valid string"),
    ("POST", "/network/unblock", {"region": WEST, "extra": 1}, "extra", "unknown field 'extra'"),
    ("POST", "/control-plane/block", {"region": "mars-1"}, "region", "unknown region"),
    ("POST", "/api-faults", {}, "kind", "missing field 'kind'"),
    ("POST", "/api-faults", {"kind": "nope"}, "kind", "'throttle'"),
    ("POST", "/api-faults", {"kind": "error", "rate": 0}, "rate", "greater than 0"),
    ("POST", "/api-faults", {"kind": "error", "bogus": 1}, "bogus", "unknown field"),
    ("POST", "/api-faults", {"kind": "error", "region": "mars-1"}, "region", "unknown region"),
    ("POST", "/replication/pause", {"source": EAST}, "destination", "missing field"),
    ("POST", "/replication/resume", {"source": EAST, "destination": "mars-1"}, "destination", "unknown region"),
    ("POST", "/replication/config", {"lag_s": "x"}, "lag_s", "valid number"),
    ("POST", "/replication/config", {"drop_fraction": 2}, "drop_fraction", "less than or equal to 1"),
    ("POST", "/lambda/fault", {}, "mode", "missing field 'mode'"),
    ("POST", "/lambda/fault", {"mode": "delay", "delay_s": -1}, "delay_s", "greater than 0"),
    ("POST", "/ecs/az", {"region": WEST}, "az", "missing field 'az'"),
    ("POST", "/ecs/az", {"region": WEST, "az": "a", "available": "maybe"}, "available", "valid boolean"),
    ("POST", "/events", {"kind": 5}, "kind", "non-empty string"),
    ("GET", "/events?since=x", None, "since", "integer"),
]


@pytest.mark.parametrize("method,path,body,field,message", BAD_INPUT, ids=[f"{m} {p} {b}" for m, p, b, *_ in BAD_INPUT])
def test_bad_input_is_a_400_naming_the_field(stack, method, path, body, field, message):
    r = call(stack, method, path, body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["field"] == field and message in err["error"] and field in err["error"] and "\n" not in err["error"]


@pytest.mark.parametrize("path,body,message", [
    ("/ecs/az", {"region": WEST, "az": "z", "available": False}, "unknown availability zone 'z'"),  # the scheduler
    ("/events", {"kind": "note", "seq": 5}, "'seq'"),                     # the event log: its own field
    ("/replication/pause", {"source": WEST, "destination": WEST}, WEST),  # the replicator: no such direction
    ("/ecs/az", "not a dict", "body must be a JSON object"),
    ("/events", [1], "body must be a JSON object"),
])
def test_refused_values_and_bodies_that_are_not_objects_are_400(stack, path, body, message):
    r = call(stack, "POST", path, body)
    assert r.status_code == 400 and message in r.json()["error"], r.text
    assert "\n" not in r.json()["error"]


def test_a_body_that_is_not_json_is_a_400(stack):
    r = call(stack, "POST", "/events", data=b"{bad")
    assert (r.status_code, r.json()) == (400, {"error": "body is not JSON"})


def test_nothing_was_changed_by_refused_requests(stack):
    st = ok(stack, "GET", "/status")
    assert all(lb["blocked"] is None for lb in st["load_balancers"].values())
    assert st["router"]["api_faults"] == [] and st["router"]["blocked_control_planes"] == []


# -- routing: 404 and 405 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path", [("GET", "/nope"), ("GET", "/status/extra"), ("DELETE", "/api-faults/a/b")])
def test_an_unknown_path_is_a_404(stack, method, path):
    r = call(stack, method, path)
    assert (r.status_code, r.json()) == (404, {"error": f"no route {method} {path}"})


def test_a_known_path_with_another_method_is_a_405_naming_the_allowed_ones(stack):
    r = call(stack, "POST", "/status")
    assert r.status_code == 405 and "GET" in r.headers["Allow"] and "POST" not in r.headers["Allow"]
    assert "POST /status" in r.json()["error"]


# -- a bug in a handler is a 500 with its traceback, never a 400 -------------------------------------------------
def _raise(exc: Exception):
    def view(request):
        raise exc
    return view


@pytest.mark.parametrize("exc", [KeyError("region"), TypeError("unexpected keyword"), ValueError("bad unpack")],
                         ids=lambda e: type(e).__name__)
def test_a_handler_bug_is_a_500_with_its_traceback_and_logged(stack, caplog, exc):
    path = f"/test-bug/{type(exc).__name__}"
    stack.control.add_route(path, "GET", _raise(exc))
    with caplog.at_level(logging.ERROR, logger="gameday.control"):
        r = call(stack, "GET", path)
    assert r.status_code == 500, r.text
    body = r.json()
    assert body["error"] == f"{type(exc).__name__}: {exc}"
    assert "Traceback" in body["traceback"] and "in view" in body["traceback"]
    assert any(path in rec.getMessage() and rec.exc_info for rec in caplog.records)
    assert ok(stack, "GET", "/endpoints")["env"] == "local"   # the server keeps serving
