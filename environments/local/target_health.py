"""Target health of a load balancer's target group, as an Application Load Balancer keeps it:
a pure state machine, fed one health-check result at a time with the time it was taken. No
threads, no sockets, no clock of its own: the load balancer probes and calls `observe`; tests
drive it on a fake clock.

ALB rules followed (Elastic Load Balancing user guide, "Health checks for Application Load
Balancer target groups"):
- a newly registered target is `initial` and must pass ONE health check to become `healthy`;
- a healthy target becomes `unhealthy` after UnhealthyThresholdCount consecutive failures, and
  an unhealthy one becomes `healthy` again after HealthyThresholdCount consecutive successes
  (an `initial` target that keeps failing is `unhealthy` after UnhealthyThresholdCount too);
- every HealthCheckIntervalSeconds each target gets a check; the time a target takes to answer
  does not move the next check (it is due `interval_s` after the previous one started);
- a deregistered target leaves the group at once (no connection draining here).
"""

from __future__ import annotations

from dataclasses import dataclass

INITIAL, HEALTHY, UNHEALTHY = "initial", "healthy", "unhealthy"


@dataclass(frozen=True)
class HealthCheckSettings:
    interval_s: float
    healthy_threshold: int
    unhealthy_threshold: int

    @classmethod
    def from_profile(cls, profile) -> "HealthCheckSettings":
        return cls(profile.health_check_interval_s, profile.healthy_threshold, profile.unhealthy_threshold)


@dataclass
class Target:
    """One registered target and what its health checks have said so far."""
    key: str               # the ECS task id
    host: str
    port: int
    az: str
    state: str = INITIAL
    ok_streak: int = 0
    fail_streak: int = 0
    last_check: float | None = None   # when the latest check started (the caller's clock)

    @property
    def healthy(self) -> bool:
        return self.state == HEALTHY


@dataclass(frozen=True)
class Transition:
    """A target whose health changed: what the timeline's target_health event reports."""
    target: Target
    healthy: bool
    was: str


class TargetGroup:
    """One load balancer's targets and their health. Not thread-safe on purpose: the owner
    holds its own lock around calls (the proxy reads `healthy()` while the checker observes)."""

    def __init__(self, settings: HealthCheckSettings):
        self.settings = settings
        self.targets: dict[str, Target] = {}

    # -- registration -------------------------------------------------------------------------
    def sync(self, registered: dict[str, tuple[str, int, str]]) -> None:
        """Make the group exactly `registered` (key -> (host, port, az)): new keys start
        `initial`, missing ones are deregistered, known ones keep their health."""
        for key in [k for k in self.targets if k not in registered]:
            del self.targets[key]
        for key, (host, port, az) in registered.items():
            if key not in self.targets:
                self.targets[key] = Target(key, host, port, az)

    # -- checks ------------------------------------------------------------------------------------
    def due(self, now: float) -> list[Target]:
        """The targets whose next check is due at `now`."""
        interval = self.settings.interval_s
        return [t for t in self.targets.values() if t.last_check is None or now >= t.last_check + interval]

    def next_due(self, now: float) -> float:
        """When the next check is due (now if one already is, now + interval for an empty group)."""
        interval = self.settings.interval_s
        times = [now if t.last_check is None else t.last_check + interval for t in self.targets.values()]
        return max(now, min(times)) if times else now + interval

    def observe(self, key: str, ok: bool, now: float) -> Transition | None:
        """Record one check of target `key` (started at `now`); the transition it caused, if any.
        A result for a target deregistered meanwhile is ignored."""
        t = self.targets.get(key)
        if t is None:
            return None
        t.last_check = now
        was = t.state
        if ok:
            t.ok_streak, t.fail_streak = t.ok_streak + 1, 0
            need = 1 if was == INITIAL else self.settings.healthy_threshold
            if was != HEALTHY and t.ok_streak >= need:
                t.state = HEALTHY
        else:
            t.fail_streak, t.ok_streak = t.fail_streak + 1, 0
            if was != UNHEALTHY and t.fail_streak >= self.settings.unhealthy_threshold:
                t.state = UNHEALTHY
        return Transition(t, t.healthy, was) if t.state != was else None

    # -- what the proxy and the metrics read ----------------------------------------------------------
    def healthy(self) -> list[Target]:
        return [t for t in self.targets.values() if t.healthy]

    def healthy_count(self) -> int:
        return sum(1 for t in self.targets.values() if t.healthy)
