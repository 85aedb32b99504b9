"""What every component of the local environment is handed: config, time profile, where to
log, the timeline, and two ways to reach AWS.

- `internal_client`: AWS talking to itself (the load balancer publishing metrics, the alarm
  evaluator, the ECS scheduler, global-table replication, Route 53's data plane). It goes
  straight to the region's moto and is not subject to API faults: those are customers' view.
- `customer_client`: what the service, the failover Lambda and tests use, through the router
  (one endpoint URL for every region, where API faults and control-plane blocks apply).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gameday import aws
from gameday.clock import SYSTEM_CLOCK, Clock
from gameday.config import GamedayConfig, TimeProfile
from gameday.events import EventLog


@dataclass
class Provisioned:
    """Names and ids of what provision() created; every component reads them from here."""

    hosted_zone_id: str
    topic_arns: dict[str, str]        # region -> SNS topic ARN (same name in every region)
    alarm_names: dict[str, dict[str, str]]  # region -> alarm key (config) -> AlarmName
    health_check_ids: dict[str, str] = field(default_factory=dict)  # region -> Route 53 health check (failover routing)
    cluster: str = "gameday"
    service: str = "gameday-service"
    task_family: str = "gameday-service"
    # what the stack stands in for a real account's (provision._network_calls, _lambda_calls)
    vpc_ids: dict[str, str] = field(default_factory=dict)                 # region -> VPC
    subnet_ids: dict[str, dict[str, str]] = field(default_factory=dict)   # region -> AZ name -> subnet
    network_acl_ids: dict[str, str] = field(default_factory=dict)         # region -> the VPC's default ACL
    security_group_ids: dict[str, str] = field(default_factory=dict)      # region -> the VPC's default group
    load_balancer_arns: dict[str, str] = field(default_factory=dict)      # region -> ELBv2 load balancer
    target_group_arns: dict[str, str] = field(default_factory=dict)       # region -> its "ip" target group
    lambda_arn: str = ""              # the failover function (in cfg.failover.region)
    lambda_alias_arn: str = ""        # ...:live, the alias the topics invoke


@dataclass(frozen=True)
class AwsCall:
    """One customer AWS call that AWS accepted, as the router saw it (ctx.after_aws_call)."""

    region: str           # the region whose endpoint answered (Route 53: us-east-1)
    service: str          # SigV4 signing name
    operation: str        # botocore's operation name
    method: str
    path: str             # with its query string
    body: bytes           # the request's body, as sent
    response: bytes       # AWS's (moto's) answer, as sent
    status: int

    def params(self) -> dict:
        """The request's own parameters, flat: a JSON body's object, or a query/EC2 form's
        fields (`NetworkAclId`, `Egress`, `Filter.1.Name`, ... as strings); a REST call's
        parameters are in its path (self.path) and, for REST-JSON, its JSON body."""
        import json
        from urllib.parse import parse_qsl

        text = self.body.decode("utf-8", "replace")
        if text.lstrip().startswith("{"):
            return json.loads(text)
        return dict(parse_qsl(text or self.path.partition("?")[2], keep_blank_values=True))


@dataclass
class NetworkState:
    """Data-plane reachability, flipped by faults and read by the load balancers and tasks.
    blocked_regions: region -> "refuse" | "hang", what every source of blocks (`block_sources`: the
    block_region fault, the region's network ACLs) leaves together: one source lifting its block
    leaves the others' on. unreachable_azs: region -> AZs whose tasks the load balancer cannot
    reach (network ACLs on some of the service's subnets)."""

    blocked_regions: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    block_sources: dict[str, dict[str, str]] = field(default_factory=dict)   # region -> source -> mode
    unreachable_azs: dict[str, frozenset[str]] = field(default_factory=dict)

    def set_block(self, region: str, source: str, mode: str | None) -> str | None:
        """Block (mode "hang" | "refuse") or unblock (None) `region` for one source; returns the
        region's block now. A packet dropped on the way (hang) never meets a closed socket
        (refuse), so any source's "hang" wins."""
        with self.lock:
            sources = self.block_sources.setdefault(region, {})
            if mode is None:
                sources.pop(source, None)
            else:
                sources[source] = mode
            modes = set(sources.values())
            now = "hang" if "hang" in modes else ("refuse" if modes else None)
            if now is None:
                self.blocked_regions.pop(region, None)
            else:
                self.blocked_regions[region] = now
            return now


@dataclass
class LocalContext:
    config: GamedayConfig
    profile: TimeProfile
    run_dir: Path
    events: EventLog
    moto_urls: dict[str, str]          # region -> moto server URL; "us-east-1" always present (Route 53's home)
    router_url: str = ""                # filled in once the router is up
    lb_addresses: dict[str, str] = field(default_factory=dict)  # region -> loopback IP
    lb_port: int = 0
    dns_port: int = 0
    network: NetworkState = field(default_factory=NetworkState)
    provisioned: Provisioned | None = None  # set by the supervisor after provision()
    # every component reads the time from here and waits on it; tests hand a FakeClock
    clock: Clock = field(default=SYSTEM_CLOCK)
    # called by the router for each customer ChangeResourceRecordSets that Route 53 accepted, before
    # the caller has the answer: (hosted zone id, request body, response body). The DNS server
    # applies the batch then, so a caller's next change cannot overtake it.
    on_route53_change: list[Callable[[str, bytes, bytes], None]] = field(default_factory=list)
    # held by the router around each such call (moto's change and the callbacks) and by the DNS
    # server around each read of the zone: no read falls between a change and its callbacks, and
    # concurrent callers' batches are applied one at a time, as Route 53 applies them
    route53_lock: threading.RLock = field(default_factory=threading.RLock)
    # (service, operation) -> callbacks the router calls after each customer call of that operation
    # that AWS accepted (2xx), before the caller has the answer: how a change made through the AWS
    # API (a NACL entry, UpdateService, StartExperiment, UpdateAlias) takes effect on the running
    # system. Register with after_aws_call(); the callback gets one AwsCall.
    aws_call_hooks: dict[tuple[str, str], list[Callable[["AwsCall"], None]]] = field(default_factory=dict)

    def after_aws_call(self, service: str, operation: str, callback: Callable[["AwsCall"], None]) -> None:
        """Call `callback(AwsCall)` after each accepted customer call of `service` (the SigV4
        signing name: "ec2", "ecs", "fis", "lambda", ...) `operation` (botocore's name, e.g.
        "CreateNetworkAclEntry"). It runs on the router's request thread, before the caller has
        the answer: keep it short (start a thread for long work). An exception is logged, and the
        caller still gets AWS's answer (the change is made)."""
        self.aws_call_hooks.setdefault((service, operation), []).append(callback)

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    def internal_client(self, service: str, region: str):
        home = aws.ROUTE53_HOME if service == "route53" else region
        return aws.client(service, home, self.moto_urls[home])

    def customer_client(self, service: str, region: str):
        return aws.client(service, region, self.router_url)

    def lb_url(self, region: str) -> str:
        return f"http://{self.lb_addresses[region]}:{self.lb_port}"
