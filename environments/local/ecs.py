"""The ECS service scheduler of every region: real task processes behind moto's ECS API. Each
task is a real process (or, through another TaskLauncher, a container) and a task in moto's ECS.
Every reconcile interval the scheduler notices tasks that died or were stopped through the API,
keeps the service's desired count within its min/max, and starts replacements in the available
AZs, as ECS's service scheduler and Fargate do; `set_az_available` loses (and restores) an AZ.

The reconcile loop step by step, task states, placement and what is turned off in moto's task
model: docs/local-environment.md, "ECS: the service scheduler".
"""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import requests

from gameday.environments.local.context import LocalContext
from gameday import aws, procs
from gameday.net import free_port

log = logging.getLogger("gameday.ecs")

TASK_HOST = "127.0.0.1"
AZ_TAG = "gameday:availability-zone"
TASK_START_TIMEOUT_S = 30.0    # a task process not listening by then is stopped and replaced
STOP_GRACE_S = 2.0             # SIGTERM -> SIGKILL (ECS's stopTimeout, compressed from 30 s)
LAUNCH_BACKOFF_BASE_S = 0.5    # delay after the first task that fails before running, doubling ...
LAUNCH_BACKOFF_MAX_S = 10.0    # ... up to this
READY_POLL_S = 0.02

REASON_EXITED = "Essential container in task exited"
REASON_API = "Task stopped through the ECS API"
REASON_AZ = "Availability zone {az} is unavailable: task stopped"
REASON_SCALE_IN = "Scaling activity initiated by (deployment {deployment})"
REASON_NOT_LISTENING = "Task failed to start: container did not listen on its port within {s:g}s"
REASON_SPAWN = "CannotStartContainerError: {error}"
REASON_SHUTDOWN = "Service scheduler shut down (environment stopped)"
REASON_ORPHAN = "Task has no process (left by an earlier scheduler)"


@dataclass(frozen=True)
class Target:
    """What a load balancer registers: one task's address."""

    task_id: str
    az: str
    host: str
    port: int


@dataclass(frozen=True)
class TaskSpec:
    """What a launcher needs to start one task: who it is, where it listens, and how the
    service is run as a process (argv, env) for launchers that run processes."""

    region: str
    task_id: str
    az: str
    port: int
    argv: list[str]
    env: dict[str, str]
    log_path: Path


class TaskHandle(Protocol):
    """A started task as the scheduler sees it."""

    @property
    def pid(self) -> int | None: ...          # the task's main process on this host, when known

    @property
    def returncode(self) -> int | None: ...   # exit code once it ended

    def poll(self) -> int | None: ...         # None while it runs, else its exit code

    def stop(self, grace_s: float) -> None: ...   # SIGTERM, SIGKILL after grace_s (0: SIGKILL now); waits

    def info(self) -> dict: ...               # extra JSON fields for status() and the timeline


class TaskLauncher(Protocol):
    def launch(self, spec: TaskSpec) -> TaskHandle: ...   # OSError when the task cannot be started


class ProcessTask:
    """A task that is a host process (in its own process group, dying with the harness)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self, grace_s: float) -> None:
        if grace_s > 0:
            procs.terminate(self.proc, grace_s=grace_s)
        else:
            procs.kill_now(self.proc)

    def info(self) -> dict:
        return {}


class ProcessLauncher:
    """The local environment's launcher: each task is `spec.argv` run as a host process."""

    def launch(self, spec: TaskSpec) -> ProcessTask:
        return ProcessTask(procs.spawn(spec.argv, spec.log_path, env=spec.env))


@dataclass
class Task:
    arn: str
    task_id: str
    region: str
    az: str
    port: int
    proc: TaskHandle | None = None
    state: str = "PENDING"            # PENDING -> RUNNING -> STOPPED
    started_at: float = field(default_factory=time.time)   # wall clock, for people
    spawned_mono: float = field(default_factory=time.monotonic)
    running_after_s: float | None = None
    stopped_reason: str = ""
    provisioning_s: float = 0.0       # modelled Fargate provisioning before it may run (replacements)

    def info(self) -> dict:
        return {"task_arn": self.arn, "task_id": self.task_id, "az": self.az, "port": self.port,
                "pid": self.proc.pid if self.proc else None, "state": self.state,
                "started_at": self.started_at, "running_after_s": self.running_after_s,
                **(self.proc.info() if self.proc else {})}


@dataclass
class _Region:
    name: str
    azs: list[str]
    tasks: dict[str, Task] = field(default_factory=dict)        # live tasks (PENDING or RUNNING) by id
    unavailable_azs: set[str] = field(default_factory=set)
    desired: int = 0
    deployment: str = ""
    requests: int = 0                                          # since the last tick's sample
    samples: deque = field(default_factory=deque)              # (monotonic time, requests in the tick)
    last_scaled: float = 0.0                                   # monotonic
    failures: int = 0                                          # tasks in a row that failed before running
    next_launch_at: float = 0.0                                # monotonic
    unplaceable: bool = False


class EcsReconciler:
    def __init__(self, ctx: LocalContext, launcher: TaskLauncher | None = None):
        self.ctx = ctx
        self.launcher: TaskLauncher = launcher or ProcessLauncher()
        self.cfg = ctx.config
        self.svc = ctx.config.service
        prov = ctx.provisioned
        self.cluster = prov.cluster if prov else "gameday"
        self.service = prov.service if prov else "gameday-service"
        self.family = prov.task_family if prov else "gameday-service"
        self.regions: dict[str, _Region] = {r: _Region(r, self.cfg.az_names(r)) for r in self.cfg.regions}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._procs: set[TaskHandle] = set()   # every task not yet reaped
        self._procs_lock = threading.Lock()
        self._started_mono = time.monotonic()
        self._tick_errors: dict[str, tuple[str, float]] = {}

    # -- AWS ------------------------------------------------------------------------------------------
    def _ecs(self, region: str):
        # straight to the region's moto (the scheduler is AWS itself, not a customer, so API faults
        # do not apply); short timeouts and no retries of its own: a moto hiccup costs one tick
        # (the next tick is the retry), never a stalled scheduler
        return aws.client("ecs", region, self.ctx.moto_urls[region], retries=0, timeout_s=2.0)

    def _configure_moto(self, region: str) -> None:
        r = requests.post(self.ctx.moto_urls[region] + "/moto-api/state-manager/set-transition",
                          json={"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}},
                          timeout=5)
        r.raise_for_status()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> "EcsReconciler":
        for region in self.regions:
            self._configure_moto(region)
            self._stop_orphans(region)
            # the first launches: spawned now (one region's tasks boot while the next region is
            # set up), healthy when the load balancer says so
            self._tick(region)
        self._thread = threading.Thread(target=self._loop, name="ecs-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        with self._lock:
            victims = [t for st in self.regions.values() for t in st.tasks.values()]
            for t in victims:
                self._mark_stopped(t, REASON_SHUTDOWN)
        with self._procs_lock:
            pending = list(self._procs)
        # every process at once: SIGTERM, SIGKILL after the grace period
        killers = [threading.Thread(target=self._reap, args=(p, STOP_GRACE_S), daemon=True) for p in pending]
        for k in killers:
            k.start()
        for k in killers:
            k.join(timeout=STOP_GRACE_S + 6)
        for t in victims:
            try:
                self._ecs(t.region).stop_task(cluster=self.cluster, task=t.arn, reason=REASON_SHUTDOWN)
            except Exception:  # noqa: BLE001 - moto may already be gone at teardown
                pass

    def _stop_orphans(self, region: str) -> None:
        """Tasks of this service RUNNING in moto with no process (an earlier scheduler's): stop them."""
        ecs = self._ecs(region)
        arns = self._running_arns(region)
        if not arns:
            return
        for chunk in range(0, len(arns), 100):
            for t in ecs.describe_tasks(cluster=self.cluster, tasks=arns[chunk:chunk + 100])["tasks"]:
                if t.get("group") == f"service:{self.service}":
                    ecs.stop_task(cluster=self.cluster, task=t["taskArn"], reason=REASON_ORPHAN)

    # -- the scheduler loop -------------------------------------------------------------------------------
    def _loop(self) -> None:
        interval = self.ctx.profile.reconcile_interval_s
        while not self._stop.is_set():
            for region in self.regions:
                if self._stop.is_set():
                    return
                try:
                    self._tick(region)
                    self._tick_errors.pop(region, None)
                except Exception as e:  # noqa: BLE001 - one bad tick (moto busy) must not end scheduling
                    self._log_tick_error(region, e)
            self._wake.wait(interval)
            self._wake.clear()

    def _log_tick_error(self, region: str, e: Exception) -> None:
        # a moto that is down fails every tick: the traceback once, then a line every 30 s
        msg = f"{type(e).__name__}: {e}"
        last = self._tick_errors.get(region)
        now = time.monotonic()
        if last is None or last[0] != msg or now - last[1] > 30:
            self._tick_errors[region] = (msg, now)
            log.error("ECS scheduler tick for %s failed: %s", region, msg, exc_info=last is None)

    def _tick(self, region: str) -> None:
        st = self.regions[region]
        self._sample(st, time.monotonic())
        with self._lock:
            live = list(st.tasks.values())

        # 1. processes that ended by themselves
        for t in live:
            rc = t.proc.poll() if t.proc else None
            if t.proc is not None and rc is not None:
                self._stop_task(t, f"{REASON_EXITED} (exit code {rc})", kill=None, api=True)

        # 2. tasks stopped by anyone through the API
        running = set(self._running_arns(region))
        with self._lock:
            gone = [t for t in st.tasks.values() if t.arn not in running]
        if gone:
            reasons = self._stopped_reasons(region, [t.arn for t in gone])
            for t in gone:
                self._stop_task(t, reasons.get(t.arn) or REASON_API, kill="term", api=False)

        # 3. the service's desired count, inside min/max, plus target tracking
        desired = self._desired(region)

        # 4. match it
        with self._lock:
            live = list(st.tasks.values())
        if len(live) < desired:
            self._launch_missing(st, desired - len(live))
        elif len(live) > desired:
            self._scale_in(st, len(live) - desired)

    def _sample(self, st: _Region, now: float) -> None:
        """The requests the load balancer reported since the last tick, as one sample at `now`."""
        with self._lock:
            st.samples.append((now, st.requests))
            st.requests = 0
            window = 3 * self.ctx.profile.period_s
            while st.samples and st.samples[0][0] < now - window:
                st.samples.popleft()

    def _running_arns(self, region: str) -> list[str]:
        pages = self._ecs(region).get_paginator("list_tasks").paginate(cluster=self.cluster, desiredStatus="RUNNING")
        return [a for page in pages for a in page["taskArns"]]

    def _stopped_reasons(self, region: str, arns: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            for i in range(0, len(arns), 100):
                for t in self._ecs(region).describe_tasks(cluster=self.cluster, tasks=arns[i:i + 100])["tasks"]:
                    out[t["taskArn"]] = t.get("stoppedReason") or ""
        except Exception:  # noqa: BLE001 - the reason is for the timeline; the stop happens anyway
            log.exception("describe_tasks for stopped tasks in %s failed", region)
        return out

    # -- desired count ----------------------------------------------------------------------------------
    def _desired(self, region: str) -> int:
        st = self.regions[region]
        ecs = self._ecs(region)
        found = ecs.describe_services(cluster=self.cluster, services=[self.service])["services"]
        if not found or found[0].get("status") != "ACTIVE":
            # the service was deleted: ECS drains its tasks; nothing to keep within min/max
            with self._lock:
                st.desired = 0
            return 0
        svc = found[0]
        api_desired = int(svc["desiredCount"])
        deployments = svc.get("deployments") or []
        lo, hi = self.svc.min_tasks, self.svc.max_tasks
        desired = min(max(api_desired, lo), hi)
        reason = None
        if desired != api_desired:
            reason = f"desired count {api_desired} outside min/max capacity {lo}..{hi}"
        tracked = self._target_tracking(st, desired)
        if tracked is not None:
            desired, reason = tracked
        with self._lock:
            st.deployment = deployments[0]["id"] if deployments else f"ecs-svc/{self.service}"
        if desired != api_desired:
            ecs.update_service(cluster=self.cluster, service=self.service, desiredCount=desired)
            self.ctx.events.emit("ecs", action="scaled", region=region, old=api_desired, new=desired, reason=reason)
        with self._lock:
            st.desired = desired
        return desired

    def _rate(self, st: _Region, window_s: float) -> float | None:
        """Requests/s over the last window_s, or None before the scheduler has watched that long."""
        now = time.monotonic()
        if now - max(self._started_mono, st.last_scaled) < window_s:
            return None
        with self._lock:
            n = sum(c for t, c in st.samples if t >= now - window_s)
        return n / window_s

    def _target_tracking(self, st: _Region, desired: int) -> tuple[int, str] | None:
        """Application Auto Scaling target tracking on requests per task: scale out as soon as one
        period's rate per task is above target (to the capacity that brings it back to target),
        scale in one task at a time only after three periods well below it (AWS scales in
        cautiously: 90% of target, longer window, cooldown)."""
        target = self.svc.scale_out_requests_per_task_s
        if target <= 0:
            return None
        period = self.ctx.profile.period_s
        with self._lock:
            running = sum(1 for t in st.tasks.values() if t.state == "RUNNING")
        if running == 0:
            return None
        rate = self._rate(st, period)
        if rate is not None and rate / running > target and desired < self.svc.max_tasks:
            new = min(self.svc.max_tasks, max(desired + 1, math.ceil(rate / target)))
            st.last_scaled = time.monotonic()
            return new, f"target tracking: {rate / running:.1f} requests/s per task > target {target:g}"
        rate_in = self._rate(st, 3 * period)
        if rate_in is not None and desired > self.svc.min_tasks and rate_in / (desired - 1) < 0.9 * target:
            st.last_scaled = time.monotonic()
            return desired - 1, f"target tracking: {rate_in / running:.1f} requests/s per task well below target {target:g}"
        return None

    # -- placement -----------------------------------------------------------------------------------------
    def _pick_az(self, st: _Region) -> str | None:
        available = [a for a in st.azs if a not in st.unavailable_azs]
        if not available:
            return None
        counts = {a: 0 for a in available}
        for t in st.tasks.values():
            if t.az in counts:
                counts[t.az] += 1
        return min(available, key=lambda a: (counts[a], st.azs.index(a)))

    def _launch_missing(self, st: _Region, n: int) -> None:
        if time.monotonic() < st.next_launch_at:
            return
        for _ in range(n):
            with self._lock:
                if self._stopped:
                    return
                az = self._pick_az(st)
            if az is None:
                if not st.unplaceable:
                    st.unplaceable = True
                    self.ctx.events.emit("ecs", action="unable_to_place", region=st.name,
                                         reason="no available availability zone", missing=n)
                return
            st.unplaceable = False
            self._launch(st, az)

    def _task_argv(self, region: str, task_id: str, az: str, port: int) -> list[str]:
        values = {"port": str(port), "region": region, "table": self.cfg.dynamodb.table,
                  "endpoint": self.ctx.router_url, "task_id": task_id, "az": az}
        if self.svc.command:
            argv = list(self.svc.command)
            for k, v in values.items():
                argv = [a.replace("{" + k + "}", v) for a in argv]
            return argv
        return [procs.python(), "-m", "gameday.sut.service", "--port", values["port"], "--region", region,
                "--table", values["table"], "--endpoint", values["endpoint"], "--task-id", task_id, "--az", az]

    def _task_env(self, region: str, task_id: str, az: str, port: int) -> dict[str, str]:
        # what the task's runtime gives it: region, endpoint and credentials (the task role's, here
        # the fixed local ones), never the instance metadata service (not on loopback)
        env = {
            "AWS_REGION": region, "AWS_DEFAULT_REGION": region,
            "AWS_ACCESS_KEY_ID": aws.LOCAL_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": aws.LOCAL_CREDENTIALS["aws_secret_access_key"],
            "AWS_EC2_METADATA_DISABLED": "true", "PYTHONUNBUFFERED": "1",
            "GAMEDAY_TASK_ID": task_id, "GAMEDAY_AZ": az, "GAMEDAY_PORT": str(port),
            "GAMEDAY_TABLE": self.cfg.dynamodb.table,
        }
        if self.ctx.router_url:
            env["AWS_ENDPOINT_URL"] = self.ctx.router_url
        return env

    def _launch(self, st: _Region, az: str) -> Task | None:
        region = st.name
        ecs = self._ecs(region)
        resp = ecs.run_task(
            cluster=self.cluster, taskDefinition=self.family, count=1, launchType="FARGATE",
            startedBy=st.deployment or f"ecs-svc/{self.service}", group=f"service:{self.service}",
            tags=[{"key": AZ_TAG, "value": az}],
        )
        if not resp.get("tasks"):
            raise RuntimeError(f"run_task in {region} placed no task: {resp.get('failures')}")
        arn = resp["tasks"][0]["taskArn"]
        task_id = arn.rsplit("/", 1)[-1]
        port = free_port(TASK_HOST)
        task = Task(arn=arn, task_id=task_id, region=region, az=az, port=port,
                    # the first placements, made inside start(), are the deployment the environment
                    # starts from; later ones are replacements and scale-outs
                    provisioning_s=self.ctx.profile.task_provisioning_s if self._thread is not None else 0.0)
        log_path = self.ctx.logs_dir / f"task-{region}-{task_id}.log"
        try:
            task.proc = self.launcher.launch(TaskSpec(region, task_id, az, port, self._task_argv(region, task_id, az, port),
                                                      self._task_env(region, task_id, az, port), log_path))
        except OSError as e:
            ecs.stop_task(cluster=self.cluster, task=arn, reason=REASON_SPAWN.format(error=e))
            self._failed_before_running(st)
            self.ctx.events.emit("ecs", action="task_stopped", region=region, task=task_id, az=az,
                                 reason=REASON_SPAWN.format(error=e))
            return None
        with self._procs_lock:
            self._procs.add(task.proc)
        with self._lock:
            if self._stopped:  # stop() ran meanwhile: this one is ours to kill
                stopped = True
            else:
                st.tasks[task_id] = task
                stopped = False
        if stopped:
            self._reap(task.proc, 0)
            return None
        self.ctx.events.emit("ecs", action="task_started", region=region, task=task_id, az=az,
                             port=port, pid=task.proc.pid, reason="service scheduler", **task.proc.info())
        threading.Thread(target=self._watch_ready, args=(task,), name=f"ecs-ready-{task_id[:8]}",
                         daemon=True).start()
        return task

    def _watch_ready(self, task: Task) -> None:
        """PENDING -> RUNNING once the process accepts connections on its port, and not before
        the profile's task_provisioning_s for tasks launched after start(): Fargate provisions an
        ENI and pulls the image before a replacement runs (tens of seconds in AWS), which is why
        stopping every task of a service is an outage and not a blip."""
        provisioning = task.provisioning_s
        if provisioning > 0 and self._stop.wait(provisioning):
            return
        deadline = task.spawned_mono + provisioning + TASK_START_TIMEOUT_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            if task.state != "PENDING" or task.proc.poll() is not None:
                return  # stopped meanwhile, or died: the tick handles it
            try:
                with socket.create_connection((TASK_HOST, task.port), timeout=0.2):
                    pass
            except OSError:
                self._stop.wait(READY_POLL_S)
                continue
            st = self.regions[task.region]
            with self._lock:
                if task.state != "PENDING":
                    return
                task.state = "RUNNING"
                task.running_after_s = round(time.monotonic() - task.spawned_mono, 3)
                st.failures = 0
            self.ctx.events.emit("ecs", action="task_running", region=task.region, task=task.task_id, az=task.az,
                                 after_s=task.running_after_s)
            return
        if not self._stop.is_set() and task.state == "PENDING":
            self._stop_task(task, REASON_NOT_LISTENING.format(s=TASK_START_TIMEOUT_S), kill="term", api=True)

    def _failed_before_running(self, st: _Region) -> None:
        with self._lock:
            st.failures += 1
            delay = min(LAUNCH_BACKOFF_MAX_S, LAUNCH_BACKOFF_BASE_S * 2 ** (st.failures - 1))
            st.next_launch_at = time.monotonic() + delay

    def _scale_in(self, st: _Region, n: int) -> None:
        for _ in range(n):
            with self._lock:
                if not st.tasks:
                    return
                counts: dict[str, int] = {}
                for t in st.tasks.values():
                    counts[t.az] = counts.get(t.az, 0) + 1
                # keep the AZs balanced: take from the fullest AZ, a task not yet running first, then the newest
                victim = max(st.tasks.values(),
                             key=lambda t: (counts[t.az], t.state == "PENDING", t.spawned_mono))
            self._stop_task(victim, REASON_SCALE_IN.format(deployment=st.deployment), kill="term", api=True)

    # -- stopping tasks ------------------------------------------------------------------------------------
    def _mark_stopped(self, t: Task, reason: str) -> bool:
        """The one place a task leaves the live set; False if something else stopped it first."""
        with self._lock:
            if t.state == "STOPPED":
                return False
            if t.state == "PENDING" and not reason.startswith(REASON_SHUTDOWN):
                if reason.startswith(REASON_EXITED) or reason.startswith("Task failed to start"):
                    self._failed_before_running(self.regions[t.region])
            t.state = "STOPPED"
            t.stopped_reason = reason
            self.regions[t.region].tasks.pop(t.task_id, None)
            return True

    def _stop_task(self, t: Task, reason: str, *, kill: str | None, api: bool) -> None:
        """kill: "term" (SIGTERM, SIGKILL after the grace period, in the background), "kill"
        (SIGKILL now) or None (already dead). api: also stop the task in moto."""
        if not self._mark_stopped(t, reason):
            return
        if t.proc is not None:
            if kill == "kill":
                self._reap(t.proc, 0)
            else:
                threading.Thread(target=self._reap, args=(t.proc, STOP_GRACE_S if kill == "term" else 0),
                                 name=f"ecs-stop-{t.task_id[:8]}", daemon=True).start()
        if api:
            try:
                self._ecs(t.region).stop_task(cluster=self.cluster, task=t.arn, reason=reason)
            except Exception:  # noqa: BLE001 - the next tick sees it still RUNNING in moto and retries
                log.exception("stop_task %s in %s failed", t.task_id, t.region)
        self.ctx.events.emit("ecs", action="task_stopped", region=t.region, task=t.task_id, az=t.az, reason=reason,
                             exit_code=t.proc.returncode if t.proc else None)

    def _reap(self, proc: TaskHandle, grace_s: float) -> None:
        try:
            proc.stop(grace_s)
        except Exception:  # noqa: BLE001 - never leave it in the set unreaped silently
            log.exception("stopping task %s failed", proc.pid)
        finally:
            with self._procs_lock:
                self._procs.discard(proc)

    # -- faults and the load balancer's side --------------------------------------------------------------------
    def _az_name(self, region: str, az: str) -> str:
        if region not in self.regions:
            raise ValueError(f"unknown region {region!r}: one of {list(self.regions)}")
        name = region + az if len(az) == 1 else az
        known = self.regions[region].azs
        if name not in known:
            raise ValueError(f"unknown availability zone {az!r} for {region}: one of {known} (or the letters)")
        return name

    def set_az_available(self, region: str, az: str, available: bool) -> None:
        name = self._az_name(region, az)
        st = self.regions[region]
        with self._lock:
            was = name not in st.unavailable_azs
            if available:
                st.unavailable_azs.discard(name)
            else:
                st.unavailable_azs.add(name)
            victims = [] if available else [t for t in st.tasks.values() if t.az == name]
        if was != available:
            self.ctx.events.emit("ecs", action="az_available" if available else "az_unavailable",
                                 region=region, az=name, tasks_lost=len(victims))
        for t in victims:
            self._stop_task(t, REASON_AZ.format(az=name), kill="kill", api=True)
        self._wake.set()  # replacements now, not at the next tick

    def targets(self, region: str) -> list[Target]:
        with self._lock:
            return [Target(t.task_id, t.az, TASK_HOST, t.port)
                    for t in self.regions[region].tasks.values() if t.state == "RUNNING"]

    def report_requests(self, region: str, n: int = 1) -> None:
        st = self.regions.get(region)
        if st is None:
            return
        with self._lock:
            st.requests += n

    def status(self) -> dict:
        with self._lock:
            out = {}
            for region, st in self.regions.items():
                tasks = sorted(st.tasks.values(), key=lambda t: t.spawned_mono)
                backoff = max(0.0, st.next_launch_at - time.monotonic())
                out[region] = {
                    "desired": st.desired,
                    "running": sum(1 for t in tasks if t.state == "RUNNING"),
                    "pending": sum(1 for t in tasks if t.state == "PENDING"),
                    "min": self.svc.min_tasks, "max": self.svc.max_tasks,
                    "tasks": [t.info() for t in tasks],
                    "unavailable_azs": sorted(st.unavailable_azs),
                    "launch_backoff_s": round(backoff, 2),
                }
            return out
