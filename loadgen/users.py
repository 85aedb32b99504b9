"""Locust users: each role is a pool of FastHttpUsers pacing themselves by the plan (one slot,
one operation, one request).

  FollowerUser (role "dns")       resolves the service name through the environment's DNS server
                                  with its own caching resolver (honours the TTL, like a real
                                  client) and sends to the answered address on the load
                                  balancer port: a Route 53 failover moves it once its cached
                                  answer expires, not before.
  RegionalUser (role "regional")  aims at one region's load balancer directly (the slot's
                                  stream names the region): the surge that pushes a region past
                                  its alarm threshold whatever DNS says.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from locust import FastHttpUser, task
from locust.exception import StopUser

from gameday.net import AddressRefused, allowed_networks, check_address, env_kind_of
from gameday.resolver import ServiceResolver
from gameday.loadgen.ops import Operations, Target

IDLE_S = 0.25   # the longest a user sleeps before it looks at its slot again (a stop never waits on it)
FIRST_CLAIM_LEAD_S = 0.02


class TrackingResolver(ServiceResolver):
    """A ServiceResolver that remembers when it last asked the server and the TTL it was given,
    so that every request records how old the answer it used was."""

    last_lookup: float | None = None
    last_ttl: int | None = None

    def lookup(self, name: str):
        answer = super().lookup(name)
        # resolve() starts the TTL when the answer arrived: so do we
        self.last_lookup, self.last_ttl = time.monotonic(), answer.ttl
        return answer


class _PacedUser(FastHttpUser):
    abstract = True
    role = ""
    host = "http://127.0.0.1"   # every request uses an absolute URL; Locust insists on a base host
    network_timeout = 2.0       # both set from --request-timeout when the run starts
    connection_timeout = 2.0

    def on_start(self) -> None:
        ctx = getattr(self.environment, "gameday", None)
        if ctx is None:
            raise StopUser()    # the run could not be planned on this process (logged at test start)
        self.ctx = ctx
        self.process = ctx.join(self.role)
        self.ops = Operations(self, ctx, self.role, self.process)
        self.slot = None
        self._joined = True

    def on_stop(self) -> None:
        if getattr(self, "_joined", False):
            self._joined = False
            self.ctx.leave(self.role)
            if self.slot is not None:
                self.ctx.dropped += 1   # claimed, never sent: the run stopped first

    def wait_time(self) -> float:
        now = time.monotonic()
        if self.slot is not None:
            return min(IDLE_S, max(0.0, self.slot.due - now))
        first = self.ctx.t0_mono - FIRST_CLAIM_LEAD_S
        return min(IDLE_S, first - now) if now < first else IDLE_S

    @task
    def paced(self) -> None:
        slot = self.slot
        now = time.monotonic()
        if slot is not None and now >= slot.due:
            self.slot = None
            self.ops.run(slot, self.target)
        # the first claims wait for run time 0: by then every user of the process has started,
        # so the process's share of the slots is known
        if self.slot is None and now >= self.ctx.t0_mono - FIRST_CLAIM_LEAD_S:
            self.slot = self.ctx.claim(self.role)

    def target(self, slot) -> Target:
        raise NotImplementedError


class NotLoopback(Exception):
    """A DNS answer outside the environment's networks: the request is never sent (a `fail`)."""
    gameday_not_sent = True


class FollowerUser(_PacedUser):
    role = "dns"

    def on_start(self) -> None:
        super().on_start()
        ep = self.ctx.endpoints
        # one resolver per user: its cache is this client's, as in a real client
        self.resolver = TrackingResolver(ep["dns"]["host"], int(ep["dns"]["port"]), honour_ttl=True,
                                         timeout_s=min(1.0, self.ctx.plan.request_timeout_s))
        self.service_name = ep["service_name"]
        # the load balancers' port: one for every region locally; on --env aws, each region's lb_url
        # says its own (the stand-in account's loopback port; 80 on a real ALB)
        self.lb_port = int(ep["lb_port"]) if ep.get("lb_port") else None
        self.region_port = {r: urlsplit(u).port or 80 for r, u in self.ctx.lb_url.items() if u}
        self.allowed = allowed_networks(env_kind_of(ep))

    def target(self, slot) -> Target:
        address = self.resolver.address(self.service_name)
        try:
            # the local environment lives on 127.0.0.0/8: a record pointing elsewhere is never dialled
            check_address(address, self.allowed, what=f"requests for {self.service_name}")
        except AddressRefused as e:
            raise NotLoopback(f"{e}: not sent") from None
        region = self.ctx.region_of.get(address)
        port = self.lb_port or self.region_port.get(region) or 80
        return Target(region, address, f"http://{address}:{port}",
                      self.resolver.last_lookup, self.resolver.last_ttl)


class RegionalUser(_PacedUser):
    role = "regional"

    def target(self, slot) -> Target:
        r = slot.stream.region
        return Target(r, self.ctx.lb_address[r], self.ctx.lb_url[r])
