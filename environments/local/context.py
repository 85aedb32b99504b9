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


@dataclass
class NetworkState:
    """Data-plane reachability, flipped by faults and read by the load balancers and tasks.
    blocked_regions: region -> "refuse" | "hang"."""

    blocked_regions: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


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
