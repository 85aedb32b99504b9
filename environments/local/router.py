"""The AWS API router: one endpoint URL for every region, as AWS_ENDPOINT_URL wants.

It reads the region and service from the request's SigV4 credential scope
(`Credential=AKID/20261125/us-east-1/dynamodb/aws4_request`) and forwards to that region's
moto server. Route 53 requests are signed for us-east-1 by every SDK, so they land in
us-east-1's moto: blocking us-east-1's control plane takes Route 53's API with it, as in AWS.

It is the one place where customers' API faults apply (docs/local-environment.md): per region, service and
operation, an error (throttling or 5xx), added latency, or a black hole (the endpoint stops
answering: the connection is held until the client gives up or the fault is rolled back).
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Literal
from urllib.parse import parse_qs

from gameday.environments.local.context import LocalContext
from gameday.httpfwd import LoopbackServer, QuietHandler, UpstreamPool, forward_headers

SCOPE_RE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request")
# Longest a black-holed call is held before the connection is dropped; clients time out sooner.
BLACKHOLE_HOLD_MAX_S = 60.0
# Global services live in one region whatever region the SDK signed for (with a custom
# endpoint URL, botocore signs with the client's region): Route 53's control plane is us-east-1.
GLOBAL_SERVICE_HOME = {"route53": "us-east-1", "iam": "us-east-1", "cloudfront": "us-east-1"}

FaultKind = Literal["throttle", "error", "latency", "blackhole"]


@dataclass
class ApiFaultRule:
    kind: FaultKind
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

    def matches(self, region: str, service: str, operation: str) -> bool:
        return ((self.region in ("*", region)) and (self.service in ("*", service))
                and (self.operation in ("*", operation)))


def _operation(handler: QuietHandler, service: str, body: bytes) -> str:
    target = handler.headers.get("X-Amz-Target")
    if target:  # JSON protocol: DynamoDB_20120810.PutItem
        return target.rsplit(".", 1)[-1]
    if body and b"Action=" in body[:200]:  # query protocol: SNS, CloudWatch (form body)
        return parse_qs(body.decode(errors="replace")).get("Action", ["?"])[0]
    if "Action=" in handler.path:
        return parse_qs(handler.path.split("?", 1)[-1]).get("Action", ["?"])[0]
    if service == "route53":  # REST: the few operations gameday cares about
        if "/rrset" in handler.path:
            return "ChangeResourceRecordSets" if handler.command == "POST" else "ListResourceRecordSets"
        if "/change/" in handler.path:
            return "GetChange"
    return f"{handler.command} {handler.path.split('?')[0]}"


def _error_body(handler: QuietHandler, code: str, message: str) -> tuple[bytes, str]:
    """The error in the request's own protocol, so botocore parses it (and retries throttling)."""
    if handler.headers.get("X-Amz-Target"):
        target = handler.headers["X-Amz-Target"]
        prefix = "com.amazonaws.dynamodb.v20120810#" if target.startswith("DynamoDB") else ""
        import json
        return json.dumps({"__type": prefix + code, "message": message}).encode(), "application/x-amz-json-1.0"
    xml = (f'<?xml version="1.0"?><ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>'
           f"<Message>{message}</Message></Error><RequestId>gameday-fault</RequestId></ErrorResponse>")
    return xml.encode(), "text/xml"


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

    # -- faults -------------------------------------------------------------------------------
    def add_fault(self, **spec) -> dict:
        rule = ApiFaultRule(**spec)
        if rule.kind not in ("throttle", "error", "latency", "blackhole"):
            raise ValueError(f"unknown api fault kind {rule.kind!r}: throttle, error, latency or blackhole")
        if not 0 < rule.rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {rule.rate}")
        if rule.limit < 0:
            raise ValueError(f"limit must be >= 0 (0 = no limit), got {rule.limit}")
        if rule.region != "*" and rule.region not in self.ctx.moto_urls:
            raise ValueError(f"unknown region {rule.region!r}: one of {sorted(self.ctx.moto_urls)}")
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
        m = SCOPE_RE.search(h.headers.get("Authorization", ""))
        if not m:
            h.send_json(400, {"message": "gameday router: request is not SigV4-signed; cannot tell its region"})
            return
        region, service = m.group(1), m.group(2)
        region = GLOBAL_SERVICE_HOME.get(service, region)
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
        if self._rules:
            op = _operation(h, service, body)
            with self._lock:
                rules = [r for r in self._rules if r.matches(region, service, op)]
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
                    return
                else:
                    code, status = ("Throttling", 400) if rule.kind == "throttle" else ("InternalFailure", rule.status)
                    if rule.kind == "throttle" and service == "dynamodb":
                        code = "ThrottlingException"
                    if status == 503:
                        code = "ServiceUnavailable"
                    payload, ctype = _error_body(h, code, f"gameday api fault {rule.id}")
                    h.send_raw(status, payload, [("Content-Type", ctype), ("x-amzn-RequestId", "gameday-fault")])
                    return
        host, port = upstream.removeprefix("http://").split(":")
        try:
            status, headers, data = self.pool.request(host, int(port), h.command, h.path, body, forward_headers(h))
        except OSError as e:
            h.send_json(503, {"message": f"gameday router: {region} endpoint unreachable: {e}"})
            return
        h.send_raw(status, data, headers)
