"""AWS API faults, applied where the customer's calls enter AWS (the local environment's
router): errors, throttling, added latency or a black hole, by service, region and operation."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field, model_validator

from gameday.faults.base import Count, Fault, Name, RegionOrAll, Seconds, Share

ApiEffect = Literal["error", "throttle", "latency", "blackhole"]
API_EFFECTS: tuple[str, ...] = get_args(ApiEffect)   # the router applies these (environments/local/router.py)


@lru_cache(maxsize=None)
def signing_name(service: str) -> str | None:
    """The SigV4 signing name of a boto3 service (cloudwatch signs as "monitoring",
    dynamodbstreams as "dynamodb"): the router matches on what the request is signed for."""
    import botocore.session

    s = botocore.session.get_session()
    if service not in s.get_available_services():
        return None
    return s.get_service_model(service).signing_name


def _known_service(service: str) -> str:
    if service != "*" and signing_name(service) is None:
        raise ValueError(f"unknown AWS service {service!r} (a boto3 service name like "
                         f"dynamodb, route53, ecs, cloudwatch, sns, or *)")
    return service


class ApiFault(Fault):
    """Customers' calls to `service` in `region` ("*" = all) fail (error), are throttled
    (throttle), delayed (latency) or black-holed (blackhole); `operation` narrows it to one API
    operation, `limit` to the next N matching calls."""

    kind: Literal["api_fault"] = "api_fault"
    capabilities = ("api_fault",)

    service: Annotated[str, AfterValidator(_known_service)]   # boto3 service name (dynamodb, route53...) or "*"
    region: RegionOrAll
    effect: ApiEffect = "error"
    rate: Share = 1.0                                          # share of matching calls affected
    latency_s: Seconds | None = None
    operation: Name | None = None   # API operation name (PutItem, ChangeResourceRecordSets); None = all
    status: Annotated[int, Field(ge=400, le=599)] | None = None    # HTTP status of an "error" (default 500)
    limit: Count | None = None      # affect only the first `limit` matching calls (deterministic, unlike rate)

    @model_validator(mode="after")
    def _effect_parameters(self) -> "ApiFault":
        self.given_only_for("latency_s", "effect", "latency")
        self.given_only_for("status", "effect", "error", required=False)   # default 500
        return self

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
