"""The AWS API router: one endpoint URL for every region, as AWS_ENDPOINT_URL wants.

It reads the region and service from the request's SigV4 credential scope
(`Credential=AKID/20261125/us-east-1/dynamodb/aws4_request`) and forwards to that region's
moto server. Route 53 requests are signed for us-east-1 by every SDK, so they land in
us-east-1's moto: blocking us-east-1's control plane takes Route 53's API with it, as in AWS.

It is the one place where customers' API faults apply (docs/local-environment.md): per region, service and
operation, an error (throttling or 5xx), added latency, or a black hole (the endpoint stops
answering: the connection is held until the client gives up or the fault is rolled back).
Operations and error shapes come from botocore's service models (aws_protocols.py), so a fault
can name any operation of any service, and botocore parses the error as it would AWS's own.
Requests that are not SigV4-signed are no customer AWS call: they pass to the control-plane
home region's moto untouched by API faults.

Each ChangeResourceRecordSets Route 53 accepted is told to `ctx.on_route53_change` (the DNS
server) before its caller has the answer, under `ctx.route53_lock`: Route 53 applies each change
batch on its own, and the DNS server publishes each as its own state (environments/local/dns.py).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, field

from gameday.environments.local.aws_protocols import (Call, error_response, identify, operation_of, prepare,
                                                      server_error_code, throttle_error)
from gameday.environments.local.context import AwsCall, LocalContext
from gameday.faults.api import API_EFFECTS, ApiEffect
from gameday.httpfwd import LoopbackServer, QuietHandler, UpstreamPool, forward_headers

log = logging.getLogger("gameday.router")

SCOPE_RE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")
# A presigned URL carries the scope in its query string, URL-encoded.
QUERY_SCOPE_RE = re.compile(r"X-Amz-Credential=[^&%]+%2F\d{8}%2F([a-z0-9-]+)%2F([a-z0-9-]+)%2Faws4_request")
# Longest a black-holed call is held before the connection is dropped; clients time out sooner.
BLACKHOLE_HOLD_MAX_S = 60.0
# Global services live in one region whatever region the SDK signed for (with a custom
# endpoint URL, botocore signs with the client's region): Route 53's control plane is us-east-1.
GLOBAL_SERVICE_HOME = {"route53": "us-east-1", "iam": "us-east-1", "cloudfront": "us-east-1"}
# Where a request that names no region goes: the home of the global control planes.
UNSIGNED_HOME = "us-east-1"
# ChangeResourceRecordSets (Route 53's REST API: POST /2013-04-01/hostedzone/{Id}/rrset/), told
# from the path alone: aws_protocols.identify runs only when fault rules exist.
ROUTE53_CHANGE_RE = re.compile(r"^/2013-04-01/hostedzone/([^/?]+)/rrset/?(?:\?|$)")


@dataclass
class ApiFaultRule:
    kind: ApiEffect
    region: str = "*"
    service: str = "*"
    operation: str = "*"
    rate: float = 1.0                 # share of matching calls affected
    status: int = 500                 # for kind="error"
    latency_s: float = 0.0            # for kind="latency"
    limit: int = 0                    # affect only the first `limit` matching calls (0 = no limit):
    #                                   "throttle the next 3 UPSERTs" is deterministic, a rate is not
    id: str = ""
    matched: int = 0
    created_at: float = field(default_factory=time.time)

    def matches(self, region: str, service: str, operation: str | None) -> bool:
        """operation None: no model names the request, so only operation="*" rules match it."""
        return ((self.region in ("*", region)) and (self.service in ("*", service))
                and (self.operation in ("*", operation)))


class AwsRouter:
    def __init__(self, ctx: LocalContext, port: int = 0):
        self.ctx = ctx
        self._rules: list[ApiFaultRule] = []
        self._blocked: dict[str, float] = {}  # region -> since (control plane black-holed)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._unblocked = threading.Condition(self._lock)
        self.calls = 0
        self.pool = UpstreamPool(timeout_s=30)
        router = self

        class Handler(QuietHandler):
            def _any(self) -> None:
                router._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any

        self.server = LoopbackServer("127.0.0.1", port, Handler)

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def start(self) -> "AwsRouter":
        self.server.start("aws-router")
        self.ctx.router_url = self.url
        return self

    def stop(self) -> None:
        with self._lock:
            self._blocked.clear()
            self._unblocked.notify_all()
        self.server.stop()
        self.pool.close()

    # -- faults -------------------------------------------------------------------------------
    def add_fault(self, **spec) -> dict:
        rule = ApiFaultRule(**spec)
        if rule.kind not in API_EFFECTS:
            raise ValueError(f"unknown api fault kind {rule.kind!r}: one of {', '.join(API_EFFECTS)}")
        if not 0 < rule.rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {rule.rate}")
        if rule.limit < 0:
            raise ValueError(f"limit must be >= 0 (0 = no limit), got {rule.limit}")
        if rule.region != "*" and rule.region not in self.ctx.moto_urls:
            raise ValueError(f"unknown region {rule.region!r}: one of {sorted(self.ctx.moto_urls)}")
        prepare(rule.service)
        with self._lock:
            rule.id = f"api-{next(self._ids)}"
            self._rules.append(rule)
        self.ctx.events.emit("api_fault", action="add", rule=asdict(rule))
        return asdict(rule)

    def remove_fault(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            removed = len(self._rules) != before
            self._unblocked.notify_all()
        if removed:
            self.ctx.events.emit("api_fault", action="remove", id=rule_id)
        return removed

    def block_control_plane(self, region: str) -> None:
        if region not in self.ctx.moto_urls:
            raise ValueError(f"unknown region {region!r}: one of {sorted(self.ctx.moto_urls)}")
        with self._lock:
            self._blocked.setdefault(region, time.time())
        self.ctx.events.emit("control_plane", action="block", region=region,
                             includes_route53=(region == "us-east-1"))

    def unblock_control_plane(self, region: str) -> None:
        with self._lock:
            self._blocked.pop(region, None)
            self._unblocked.notify_all()
        self.ctx.events.emit("control_plane", action="unblock", region=region)

    def status(self) -> dict:
        with self._lock:
            return {"url": self.url, "calls": self.calls,
                    "blocked_control_planes": sorted(self._blocked),
                    "api_faults": [asdict(r) for r in self._rules]}

    # -- request path ---------------------------------------------------------------------------
    def _hold(self, predicate) -> None:
        """Hold a call while predicate() is true (a black hole), bounded."""
        deadline = time.monotonic() + BLACKHOLE_HOLD_MAX_S
        with self._lock:
            while predicate() and time.monotonic() < deadline:
                self._unblocked.wait(timeout=0.5)

    def _handle(self, h: QuietHandler) -> None:
        body = h.read_body()
        m = SCOPE_RE.search(h.headers.get("Authorization", "")) or QUERY_SCOPE_RE.search(h.path)
        service = m.group(2) if m else None
        region = GLOBAL_SERVICE_HOME.get(service, m.group(1)) if m else UNSIGNED_HOME
        upstream = self.ctx.moto_urls.get(region)
        if upstream is None:
            # AWS has no endpoint for a region outside the environment: the call cannot connect.
            h.send_json(503, {"message": f"gameday: region {region} is not part of this environment "
                                         f"({', '.join(sorted(self.ctx.moto_urls))})"})
            return
        self.calls += 1
        if region in self._blocked:
            self._hold(lambda: region in self._blocked)
            if region in self._blocked:
                h.close_connection = True
                return
        if service and self._rules and self._apply_faults(h, region, service, body):
            return
        host, port = upstream.removeprefix("http://").split(":")
        change = ROUTE53_CHANGE_RE.match(h.path) if service == "route53" and h.command == "POST" else None
        with self.ctx.route53_lock if change else contextlib.nullcontext():
            t0 = time.perf_counter()
            try:
                status, headers, data = self.pool.request(host, int(port), h.command, h.path, body, forward_headers(h))
            except OSError as e:
                h.send_json(503, {"message": f"gameday router: {region} endpoint unreachable: {e}"})
                return
            # moto's share of the call (Server-Timing, W3C): the service passes it on, so a benchmark
            # can split a request's time between the layers (benchmarks/bench_latency.py)
            headers.append(("Server-Timing", f"moto;dur={(time.perf_counter() - t0) * 1000:.2f}"))
            if change and 200 <= status < 300:
                self._route53_changed(change.group(1), body, data)
        if service and 200 <= status < 300 and self._hooked(service):
            self._after_call(h, region, service, body, status, data)
        h.send_raw(status, data, headers)

    def _hooked(self, service: str) -> bool:
        return any(s == service for s, _ in list(self.ctx.aws_call_hooks))

    def _after_call(self, h: QuietHandler, region: str, service: str, body: bytes, status: int, data: bytes) -> None:
        """An accepted call of a hooked service: its operation's callbacks (ctx.after_aws_call), before
        the caller has the answer, so the change has taken effect when the caller learns it is made."""
        operation = operation_of(service, h.command, h.path, h.headers, body)
        for callback in list(self.ctx.aws_call_hooks.get((service, operation or ""), ())):
            try:
                callback(AwsCall(region, service, operation, h.command, h.path, body, data, status))
            except Exception:  # noqa: BLE001 - the change is made: its caller gets AWS's answer
                log.exception("after_aws_call callback %r (%s %s) failed", callback, service, operation)

    def _route53_changed(self, zone_id: str, body: bytes, response: bytes) -> None:
        """A change batch Route 53 accepted: tell whoever follows the zone (the DNS server) before its
        caller has the answer, so each batch is applied in the order its callers made them."""
        for callback in list(self.ctx.on_route53_change):
            try:
                callback(zone_id, body, response)
            except Exception:  # noqa: BLE001 - the change is made: its caller gets Route 53's answer
                log.exception("on_route53_change callback %r failed", callback)

    def _apply_faults(self, h: QuietHandler, region: str, service: str, body: bytes) -> bool:
        """Apply the matching rules to one call; True when the call was answered (or dropped) here."""
        call = identify(service, h.command, h.path, h.headers, body)
        with self._lock:
            rules = [r for r in self._rules if r.matches(region, service, call.operation)]
        for rule in rules:
            with self._lock:
                if (rule.limit and rule.matched >= rule.limit) or random.random() >= rule.rate:
                    continue
                rule.matched += 1
            if rule.kind == "latency":
                time.sleep(rule.latency_s)  # the fault itself: an injected delay, not a wait
            elif rule.kind == "blackhole":
                rid = rule.id
                self._hold(lambda: any(r.id == rid for r in self._rules))
                h.close_connection = True
                return True
            else:
                self._send_error(h, rule, service, call)
                return True
        return False

    @staticmethod
    def _send_error(h: QuietHandler, rule: ApiFaultRule, service: str, call: Call) -> None:
        """The fault as AWS would answer it, in the call's protocol, so botocore parses it
        (and retries a throttle as one)."""
        if rule.kind == "throttle":
            code, status = throttle_error(service, call)
            message = f"Rate exceeded (gameday api fault {rule.id})"
        else:
            code, status = server_error_code(rule.status), rule.status
            message = f"gameday api fault {rule.id}"
        body, headers = error_response(call, code, message, status, f"gameday-{rule.id}", h.headers)
        h.send_raw(status, body, headers)
