"""AWS API faults, applied where the customer's calls enter AWS (the local environment's
router): errors, throttling, added latency or a black hole, by service, region and operation."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

from gameday.environments.base import Environment
from gameday.faults.base import Fault, FaultError, check_choice, check_fraction, check_positive, check_region, require_control

API_EFFECTS = ("error", "throttle", "latency", "blackhole")


@lru_cache(maxsize=None)
def _signing_name(service: str) -> str | None:
    """The SigV4 signing name of a boto3 service (cloudwatch signs as "monitoring",
    dynamodbstreams as "dynamodb"): the router matches on what the request is signed for."""
    import botocore.session

    s = botocore.session.get_session()
    if service not in s.get_available_services():
        return None
    return s.get_service_model(service).signing_name


@dataclasses.dataclass(frozen=True)
class ApiFault(Fault):
    kind = "api_fault"
    capabilities = ("api_fault",)

    service: str                  # boto3 service name (dynamodb, route53, ecs, cloudwatch, sns...) or "*"
    region: str                   # or "*" for every region
    effect: str = "error"         # error | throttle | latency | blackhole
    rate: float = 1.0             # share of matching calls affected
    latency_s: float | None = None
    operation: str | None = None  # API operation name (PutItem, ChangeResourceRecordSets); None = all
    status: int | None = None     # HTTP status of an "error" (default 500; 503 is ServiceUnavailable)
    limit: int | None = None      # affect only the first `limit` matching calls (deterministic, unlike rate)

    def __post_init__(self) -> None:
        if self.service != "*" and (not isinstance(self.service, str) or _signing_name(self.service) is None):
            raise FaultError(f"service: unknown AWS service {self.service!r} (a boto3 service name like "
                             f"dynamodb, route53, ecs, cloudwatch, sns, or *)")
        check_region(self.region, "region", wildcard=True)
        check_choice(self.effect, "kind", API_EFFECTS)
        check_fraction(self.rate, "rate")
        if self.effect == "latency":
            check_positive(self.latency_s, "latency_s", allow_none=False)
        elif self.latency_s is not None:
            raise FaultError(f"latency_s: only for kind='latency' (this fault is {self.effect!r})")
        if self.status is not None:
            if self.effect != "error":
                raise FaultError(f"status: only for kind='error' (this fault is {self.effect!r})")
            if isinstance(self.status, bool) or not isinstance(self.status, int) or not 400 <= self.status <= 599:
                raise FaultError(f"status: must be an HTTP error status 400..599, got {self.status!r}")
        check_positive(self.limit, "limit", integer=True)
        if self.operation is not None and (not isinstance(self.operation, str) or not self.operation):
            raise FaultError(f"operation: must be an API operation name like PutItem, got {self.operation!r}")

    @property
    def target(self) -> str:
        return f"{self.region}/{self.service}" + (f"/{self.operation}" if self.operation else "")

    def control_plane_regions(self) -> dict[str, str]:
        return {"region": self.region}

    def describe(self) -> str:
        what = {"error": f"fail with HTTP {self.status or 500}", "throttle": "are throttled",
                "latency": f"are delayed by {self.latency_s or 0:g}s", "blackhole": "never get an answer"}[self.effect]
        calls = (f"{self.operation} calls" if self.operation else "calls") + \
            (f" to {self.service}" if self.service != "*" else " to every AWS service")
        where = "in every region" if self.region == "*" else f"in {self.region}"
        share = "" if self.rate >= 1 else f"{self.rate:.0%} of "
        if self.limit:
            share = f"the next {self.limit} " + share
        return f"API fault: {share}{calls} {where} {what}"

    def _rule(self) -> dict:
        rule: dict = {"kind": self.effect, "region": self.region, "rate": self.rate,
                      "service": "*" if self.service == "*" else _signing_name(self.service),
                      "operation": self.operation or "*"}
        if self.effect == "latency":
            rule["latency_s"] = self.latency_s
        if self.effect == "error":
            rule["status"] = self.status or 500
        if self.limit:
            rule["limit"] = self.limit
        return rule

    def inject(self, env: Environment) -> dict:
        made = require_control(env)("POST", "/api-faults", self._rule())
        return {"rule_id": made["id"]}

    def rollback(self, env: Environment, injected: dict | None = None) -> dict:
        control = require_control(env)
        if injected and injected.get("rule_id"):
            ids = [injected["rule_id"]]
        else:
            # the rule's id never reached the journal (killed between POST and journaling):
            # remove the router's rules that match this fault's spec
            want = self._rule()
            rules = control("GET", "/status").get("router", {}).get("api_faults", [])
            ids = [r["id"] for r in rules if all(r.get(k) == v for k, v in want.items())]
        removed = [i for i in ids if control("DELETE", f"/api-faults/{i}").get("removed")]
        return {"removed": removed}
