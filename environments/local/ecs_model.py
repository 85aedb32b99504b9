"""The ECS service scheduler's rules as a pure model, one region's service at a time: how many
tasks the service should have, where new ones go, which ones stop, when a task counts as running,
how launches back off when tasks fail to start, and target-tracking scaling on requests per task.

No threads, sockets, boto3 or clock reads: observations come in (tasks that exited, tasks stopped
through the API, the service's desiredCount, request counts, a task that listens, an AZ lost) with
the time `now` (monotonic seconds); decisions come out (`Launch`, `StopTask`, `MarkRunning`,
`SetDesired`, `Unplaceable`) and the adapter, ecs.py, carries them out: run_task and a process,
SIGTERM/SIGKILL and stop_task, update_service, timeline events. The model has already applied
each decision to its own state when it returns it (a stopped task has left the live set), so the
adapter never has to ask twice.

AWS pages the rules follow (Amazon ECS Developer Guide unless said otherwise):
- "Amazon ECS services" (service scheduler): a task that stops or fails is replaced, until the
  service runs its desired number of tasks.
- "Update Amazon ECS service parameters" / "Example Amazon ECS task placement strategies": new
  tasks are spread over Availability Zones, the AZ with the fewest running tasks of the service
  first; when tasks are stopped, the AZ with the most tasks of the service loses one first.
  Fargate tasks go only to the subnets (AZs) that are available: a lost AZ's tasks are replaced
  in the others. When the AZ returns, running tasks stay where they are and the next placements
  fill the emptiest AZ. (Availability Zone rebalancing, the service's availabilityZoneRebalancing,
  which moves tasks back by starting new ones before stopping old ones, is not modelled.)
- "Amazon ECS task networking for the Fargate launch type" / UpdateService (networkConfiguration)
  and "Deploy Amazon ECS services by replacing tasks" (rolling update, minimumHealthyPercent 100,
  maximumPercent 200 by default): a Fargate task is placed only in the AZs of the service's
  awsvpc subnets. When subnets are taken out, the tasks in their AZs are replaced in the others
  as a deployment replaces tasks: the replacements start first, and a task outside the subnets
  stops (with the deployment's "Scaling activity" reason) once the running tasks without it still
  meet the desired count (at once if it is not running yet). Put back, the subnets' AZs take new
  placements again (no rebalancing, as above). A real deployment replaces every task of the
  service (new ENIs); here the tasks in the subnets that stay keep running.
- Task lifecycle ("Amazon ECS task lifecycle"): PROVISIONING (Fargate attaches the ENI) ->
  PENDING -> RUNNING. A task here is PROVISIONING for the profile's task_provisioning_s, PENDING
  until its process listens, then RUNNING (and a load-balancer target).
- "Amazon ECS service throttle logic": tasks that go from PENDING straight to STOPPED make the
  time between launch attempts grow (here doubling, capped); a task that reached RUNNING and then
  stopped does not; a new deployment (new task definition, forced deployment) clears it.
- Application Auto Scaling, "How target tracking scaling for Application Auto Scaling works" and
  TargetTrackingScalingPolicyConfiguration: above the target, scale out to the capacity that
  brings the metric back to the target; during the scale-out cooldown only a larger scale-out
  happens; scale in cautiously (one task at a time, longer window, below 90% of target); the
  scale-in cooldown does not delay a scale-out. Cooldowns are compressed to the profile's period.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

TASK_START_TIMEOUT_S = 30.0    # a task not listening this long after provisioning is stopped and replaced
LAUNCH_BACKOFF_BASE_S = 0.5    # delay after the first task that fails before running, doubling ...
LAUNCH_BACKOFF_MAX_S = 10.0    # ... up to this (ECS: 27 minutes, compressed)
SCALE_IN_FRACTION = 0.9        # scale in only when one task fewer would stay under 90% of the target
SCALE_IN_WINDOW_PERIODS = 3    # the scale-in decision looks at three periods (AWS: 15 datapoints)

REASON_EXITED = "Essential container in task exited"
REASON_API = "Task stopped through the ECS API"
REASON_AZ = "Availability zone {az} is unavailable: task stopped"
REASON_SCALE_IN = "Scaling activity initiated by (deployment {deployment})"
REASON_NOT_LISTENING = "Task failed to start: container did not listen on its port within {s:g}s"
REASON_SPAWN = "CannotStartContainerError: {error}"
REASON_SHUTDOWN = "Service scheduler shut down (environment stopped)"
REASON_ORPHAN = "Task has no process (left by an earlier scheduler)"

PROVISIONING, PENDING, RUNNING = "PROVISIONING", "PENDING", "RUNNING"


# -- decisions -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Launch:
    """run_task one task in `az`, start its process, then tell the model `launched(...)`."""
    az: str
    provisioning_s: float


@dataclass(frozen=True)
class StopTask:
    """kill: "term" (SIGTERM, SIGKILL after the grace period), "kill" (SIGKILL now) or "none"
    (the process already ended). api: also stop the task in ECS with `reason`."""
    task_id: str
    az: str
    reason: str
    kill: str
    api: bool


@dataclass(frozen=True)
class MarkRunning:
    task_id: str
    az: str
    after_s: float            # launch to RUNNING


@dataclass(frozen=True)
class SetDesired:
    """update_service(desiredCount=new): the clamp to min/max or target tracking changed it."""
    old: int
    new: int
    reason: str


@dataclass(frozen=True)
class Unplaceable:
    missing: int
    reason: str


Decision = Launch | StopTask | MarkRunning | SetDesired | Unplaceable


# -- state -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServicePolicy:
    """The service's scheduling parameters (config.service and the time profile)."""
    min_tasks: int
    max_tasks: int
    target_requests_per_task_s: float = 0.0   # 0: no target tracking
    period_s: float = 5.0
    provisioning_s: float = 0.0
    start_timeout_s: float = TASK_START_TIMEOUT_S
    backoff_base_s: float = LAUNCH_BACKOFF_BASE_S
    backoff_max_s: float = LAUNCH_BACKOFF_MAX_S

    @classmethod
    def from_config(cls, service, profile) -> "ServicePolicy":
        return cls(min_tasks=service.min_tasks, max_tasks=service.max_tasks,
                   target_requests_per_task_s=service.scale_out_requests_per_task_s,
                   period_s=profile.period_s, provisioning_s=profile.task_provisioning_s)


@dataclass
class TaskRecord:
    task_id: str
    az: str
    launched_at: float
    provisioned_at: float          # launched_at + provisioning: it may not run before this
    listening: bool = False
    running: bool = False
    running_after_s: float | None = None

    def phase(self, now: float) -> str:
        if self.running:
            return RUNNING
        return PROVISIONING if now < self.provisioned_at else PENDING


@dataclass
class ServiceModel:
    """One region's service: its live tasks (not yet STOPPED) and the scheduler's memory."""
    policy: ServicePolicy
    azs: list[str]
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    unavailable_azs: set[str] = field(default_factory=set)
    service_azs: frozenset[str] | None = None   # the AZs of the service's subnets (None: every AZ)
    desired: int = 0
    deployment: str = ""
    failures: int = 0                  # tasks in a row that stopped before RUNNING
    next_launch_at: float = 0.0
    unplaceable: bool = False
    requests: int = 0                  # reported since the last tick
    samples: deque = field(default_factory=deque)   # (now, requests in that tick)
    watching_since: float | None = None             # the first tick
    last_scale_out: float = -math.inf
    last_scale_in: float = -math.inf
    ticks: int = 0

    # -- observations --------------------------------------------------------------------------
    def add_requests(self, n: int) -> None:
        self.requests += n

    def launched(self, task_id: str, az: str, now: float, provisioning_s: float) -> list[Decision]:
        """A Launch was carried out. If the AZ was lost meanwhile, the task goes with it."""
        self.tasks[task_id] = TaskRecord(task_id, az, now, now + provisioning_s)
        if az in self.unavailable_azs:
            return [self._stop(task_id, REASON_AZ.format(az=az), "kill", True, now)]
        return []

    def launch_failed(self, now: float) -> None:
        """run_task placed it but its process could not start: PENDING -> STOPPED."""
        self._failed_to_start(now)

    def may_launch(self, now: float) -> bool:
        return now >= self.next_launch_at

    def listening(self, task_id: str, now: float) -> list[Decision]:
        """The task's process accepts connections: RUNNING once provisioning is over."""
        t = self.tasks.get(task_id)
        if t is None:
            return []
        t.listening = True
        return self._promote(t, now)

    def stopped(self, task_id: str, reason: str, now: float, *, failed_to_start: bool = False) -> bool:
        """A task left for a reason the adapter saw (shutdown); False if it was not live."""
        t = self.tasks.pop(task_id, None)
        if t is None:
            return False
        if failed_to_start and not t.running:
            self._failed_to_start(now)
        return True

    def set_az_available(self, az: str, available: bool, now: float) -> tuple[bool, list[Decision]]:
        """(changed, decisions): a lost AZ's tasks stop at once (SIGKILL: the AZ lost power)."""
        was = az not in self.unavailable_azs
        if available:
            self.unavailable_azs.discard(az)
            return was != available, []
        self.unavailable_azs.add(az)
        victims = [t.task_id for t in self.tasks.values() if t.az == az]
        return was != available, [self._stop(tid, REASON_AZ.format(az=az), "kill", True, now) for tid in victims]

    # -- the reconcile step ----------------------------------------------------------------------
    def tick(self, now: float, *, exited: dict[str, int] | None = None, api_stopped: dict[str, str] | None = None,
             api_desired: int | None, deployment: str = "", service_azs=None) -> list[Decision]:
        """One reconcile: `exited` task id -> exit code (processes that ended by themselves),
        `api_stopped` task id -> stoppedReason (stopped by anyone through the API), `api_desired`
        the service's desiredCount (None: the service is gone, its tasks drain), `service_azs` the
        AZs of the service's awsvpc subnets (None: every AZ)."""
        self.sample(now)
        self.service_azs = None if service_azs is None else frozenset(service_azs)
        out: list[Decision] = []
        for tid, rc in sorted((exited or {}).items()):
            if tid in self.tasks:
                out.append(self._stop(tid, f"{REASON_EXITED} (exit code {rc})", "none", True, now, failure=True))
        for tid, reason in sorted((api_stopped or {}).items()):
            if tid in self.tasks:
                out.append(self._stop(tid, reason or REASON_API, "term", False, now))
        for t in list(self.tasks.values()):
            out += self._promote(t, now)
            if not t.running and now >= t.provisioned_at + self.policy.start_timeout_s:
                reason = REASON_NOT_LISTENING.format(s=self.policy.start_timeout_s)
                out.append(self._stop(t.task_id, reason, "term", True, now, failure=True))
        if deployment and self.deployment and deployment != self.deployment:
            self.failures, self.next_launch_at = 0, 0.0   # a new deployment is not throttled
        self.deployment = deployment or self.deployment
        out += self._desired(now, api_desired)
        out += self._match(now)
        self.ticks += 1
        return out

    # -- desired count --------------------------------------------------------------------------
    def _desired(self, now: float, api_desired: int | None) -> list[Decision]:
        if api_desired is None:
            self.desired = 0   # the service was deleted: ECS drains its tasks
            return []
        lo, hi = self.policy.min_tasks, self.policy.max_tasks
        desired = min(max(api_desired, lo), hi)
        reason = f"desired count {api_desired} outside min/max capacity {lo}..{hi}"
        tracked = self.target_tracking(now, desired)
        if tracked is not None:
            desired, reason = tracked
        self.desired = desired
        return [SetDesired(api_desired, desired, reason)] if desired != api_desired else []

    def sample(self, now: float) -> None:
        """The requests reported since the last tick, as one sample at `now`."""
        if self.watching_since is None:
            self.watching_since = now
        self.samples.append((now, self.requests))
        self.requests = 0
        window = SCALE_IN_WINDOW_PERIODS * self.policy.period_s
        while self.samples and self.samples[0][0] < now - window:
            self.samples.popleft()

    def rate(self, now: float, window_s: float) -> float | None:
        """Requests/s over the last window_s, or None before the scheduler has watched that long."""
        if self.watching_since is None or now - self.watching_since < window_s:
            return None
        return sum(c for t, c in self.samples if t > now - window_s) / window_s

    def target_tracking(self, now: float, desired: int) -> tuple[int, str] | None:
        """(new desired, reason) or None. The metric is requests/s per RUNNING task (the load
        balancer's registered targets); no running task, no metric."""
        p = self.policy
        target = p.target_requests_per_task_s
        running = sum(1 for t in self.tasks.values() if t.running)
        if target <= 0 or running == 0:
            return None
        rate = self.rate(now, p.period_s)
        if rate is not None and rate / running > target and desired < p.max_tasks:
            needed = math.ceil(rate / target)
            in_cooldown = now - self.last_scale_out < p.period_s
            new = min(p.max_tasks, needed if in_cooldown else max(desired + 1, needed))
            if new > desired:
                self.last_scale_out = now
                return new, f"target tracking: {rate / running:.1f} requests/s per task > target {target:g}"
        window_in = SCALE_IN_WINDOW_PERIODS * p.period_s
        rate_in = self.rate(now, window_in)
        # the low alarm's whole window measures the current capacity, after any scaling
        settled = now - max(self.last_scale_out, self.last_scale_in) >= window_in
        if (rate_in is not None and settled and desired > p.min_tasks
                and rate_in / (desired - 1) < SCALE_IN_FRACTION * target):
            self.last_scale_in = now
            return desired - 1, f"target tracking: {rate_in / running:.1f} requests/s per task well below target {target:g}"
        return None

    # -- placement and scale-in --------------------------------------------------------------------
    def in_subnets(self, az: str) -> bool:
        """Is `az` one of the service's subnets' AZs?"""
        return self.service_azs is None or az in self.service_azs

    def _match(self, now: float) -> list[Decision]:
        live = sum(1 for t in self.tasks.values() if self.in_subnets(t.az))   # outside: being replaced
        if live > self.desired:
            return [self._scale_in_one(now) for _ in range(live - self.desired)] + self._retire_outside(now)
        return self._place(now, self.desired - live) + self._retire_outside(now)

    def _retire_outside(self, now: float) -> list[Decision]:
        """A deployment's stop side (minimumHealthyPercent 100): a task outside the service's subnets
        stops once the running tasks without it still meet the desired count; not running, at once."""
        outside = sorted((t for t in self.tasks.values() if not self.in_subnets(t.az)),
                         key=lambda t: (t.running, t.launched_at))
        running = sum(1 for t in self.tasks.values() if t.running)
        out: list[Decision] = []
        for t in outside:
            if t.running and running - 1 < self.desired:
                break
            running -= t.running
            out.append(self._stop(t.task_id, REASON_SCALE_IN.format(deployment=self.deployment), "term", True, now))
        return out

    def _place(self, now: float, missing: int) -> list[Decision]:
        if missing <= 0 or not self.may_launch(now):
            return []
        counts = self.az_counts()
        out: list[Decision] = []
        provisioning = self.policy.provisioning_s if self.ticks else 0.0  # the first placements: the start
        for _ in range(missing):
            az = self.pick_az(counts)
            if az is None:
                if not self.unplaceable:
                    self.unplaceable = True
                    out.append(Unplaceable(missing, "no available availability zone"))
                return out
            self.unplaceable = False
            counts[az] += 1
            out.append(Launch(az, provisioning))
        return out

    def az_counts(self) -> dict[str, int]:
        counts = {a: 0 for a in self.azs}
        for t in self.tasks.values():
            counts[t.az] = counts.get(t.az, 0) + 1
        return counts

    def pick_az(self, counts: dict[str, int]) -> str | None:
        """Spread: the available AZ with the fewest tasks of the service, in AZ order on a tie."""
        available = [a for a in self.azs if a not in self.unavailable_azs and self.in_subnets(a)]
        if not available:
            return None
        return min(available, key=lambda a: (counts[a], self.azs.index(a)))

    def scale_in_victim(self) -> TaskRecord:
        """From the AZ with the most tasks; a task not yet running first, then the newest."""
        counts = self.az_counts()
        inside = [t for t in self.tasks.values() if self.in_subnets(t.az)] or list(self.tasks.values())
        return max(inside, key=lambda t: (counts[t.az], not t.running, t.launched_at))

    def _scale_in_one(self, now: float) -> Decision:
        victim = self.scale_in_victim()
        return self._stop(victim.task_id, REASON_SCALE_IN.format(deployment=self.deployment), "term", True, now)

    # -- transitions ------------------------------------------------------------------------------
    def _promote(self, t: TaskRecord, now: float) -> list[Decision]:
        if t.running or not t.listening or now < t.provisioned_at:
            return []
        t.running = True
        t.running_after_s = round(now - t.launched_at, 3)
        self.failures = 0
        return [MarkRunning(t.task_id, t.az, t.running_after_s)]

    def _stop(self, task_id: str, reason: str, kill: str, api: bool, now: float, *,
              failure: bool = False) -> StopTask:
        t = self.tasks.pop(task_id)
        if failure and not t.running:
            self._failed_to_start(now)
        return StopTask(task_id, t.az, reason, kill, api)

    def _failed_to_start(self, now: float) -> None:
        self.failures += 1
        delay = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2 ** (self.failures - 1))
        self.next_launch_at = now + delay

    def backoff_s(self, now: float) -> float:
        return max(0.0, self.next_launch_at - now)

    def phase(self, task_id: str, now: float) -> str:
        return self.tasks[task_id].phase(now)
