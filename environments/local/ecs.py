"""The ECS service scheduler of every region: real task processes behind moto's ECS API. Each
task is a real process (or, through another TaskLauncher, a container) and a task in moto's ECS.

This is the adapter: the rules (desired count, AZ spread, a lost AZ, provisioning, launch
throttling, target tracking, which task a scale-in stops) are the pure model in ecs_model.py.
Every reconcile interval the scheduler observes each region (task processes that ended, tasks
stopped through the API, the service's desiredCount), hands that to the model with the clock's
time, and carries out what it decides: run_task and a process, SIGTERM/SIGKILL and stop_task,
update_service, timeline events. Time is `ctx.clock`'s (waits included), so a FakeClock drives it.

The reconcile loop step by step, task states, placement and what is turned off in moto's task
model: docs/local-environment.md, "ECS: the service scheduler".
"""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import requests

from gameday.environments.local.context import LocalContext
from gameday.environments.local.zygote import SERVICE_MODULE
from gameday.environments.local.ecs_model import (  # noqa: F401 - re-exported: callers import them from here
    LAUNCH_BACKOFF_BASE_S, LAUNCH_BACKOFF_MAX_S, REASON_API, REASON_AZ, REASON_EXITED, REASON_NOT_LISTENING,
    REASON_ORPHAN, REASON_SCALE_IN, REASON_SHUTDOWN, REASON_SPAWN, TASK_START_TIMEOUT_S, Decision, Launch,
    MarkRunning, ServiceModel, ServicePolicy, SetDesired, StopTask, Unplaceable,
)
from gameday import aws, procs
from gameday.net import free_port

log = logging.getLogger("gameday.ecs")

TASK_HOST = "127.0.0.1"
AZ_TAG = "gameday:availability-zone"
STOP_GRACE_S = 2.0             # SIGTERM -> SIGKILL (ECS's stopTimeout, compressed from 30 s)
# moto's view of a region (RUNNING tasks, the service's desired count) is read again at a tick when
# something changed it: an ECS call through the harness's AWS endpoint (API_CHANGES, hooked on the
# router) or the scheduler's own run_task/stop_task/update_service. Otherwise once every
# API_RESYNC_TICKS ticks, for a change made straight to moto (an observer client): an idle
# environment no longer spends 4 moto calls a region every tick (~a third of its idle CPU)
API_RESYNC_TICKS = 4
API_CHANGES = ("StopTask", "UpdateService", "RunTask", "StartTask", "CreateService", "DeleteService")
READY_POLL_S = 0.02            # how often a PENDING task's port is tried


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
    """The local environment's launcher: each task is `spec.argv` run as a host process. With a
    task zygote (environments/local/zygote.py), the built-in service's tasks (`python -m
    gameday.sut.service ARGS`) are forked from it, its imports done once; any other command is
    spawned as given."""

    def __init__(self, zygote=None):
        self.zygote = zygote   # zygote.TaskZygote | None

    def launch(self, spec: TaskSpec) -> ProcessTask:
        if self.zygote is not None and spec.argv[:3] == [procs.python(), "-m", SERVICE_MODULE]:
            if self.zygote.running:
                return ProcessTask(self.zygote.launch(spec.argv[3:], spec.env, spec.log_path))
            log.warning("the task zygote exited (see %s): task %s is spawned", self.zygote.log_path, spec.task_id)
        return ProcessTask(procs.spawn(spec.argv, spec.log_path, env=spec.env))


@dataclass
class Task:
    """A live task as the adapter holds it: its ECS identity, port and process. Its lifecycle
    (PROVISIONING/PENDING/RUNNING) is the model's TaskRecord; `state` mirrors it for readers."""

    arn: str
    task_id: str
    region: str
    az: str
    port: int
    proc: TaskHandle | None = None
    state: str = "PENDING"            # PENDING -> RUNNING -> STOPPED
    started_at: float = 0.0           # epoch seconds (the clock's), for people
    spawned_mono: float = 0.0         # the clock's monotonic time at launch
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
    model: ServiceModel
    tasks: dict[str, Task] = field(default_factory=dict)        # live tasks by id (the model's live set)
    # moto's view as last read (_api_view): RUNNING arns, (desiredCount, deployment, AZs)
    api_running: set[str] | None = None
    api_service: tuple | None = None
    api_read_at: float = float("-inf")
    api_changed: bool = True        # something changed it since: read it at the next tick


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
        policy = ServicePolicy.from_config(self.svc, ctx.profile)
        self.regions: dict[str, _Region] = {}
        for r in self.cfg.regions:
            azs = self.cfg.az_names(r)
            self.regions[r] = _Region(r, azs, ServiceModel(policy, list(azs)))
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._procs: set[TaskHandle] = set()   # every task not yet reaped
        self._procs_lock = threading.Lock()
        self._tick_errors: dict[str, tuple[str, float]] = {}
        self._target_listeners: list = []
        self._subnet_az: dict[str, dict[str, str]] = {}   # region -> subnet -> AZ

    def on_targets_changed(self, listener) -> None:
        """Call `listener()` (no arguments, quick: it may run under the scheduler's lock) whenever
        targets() changes: a task became RUNNING or left. The load balancers check a new target at once."""
        self._target_listeners.append(listener)

    def _targets_changed(self) -> None:
        for listener in self._target_listeners:
            listener()

    def _now(self) -> float:
        return self.ctx.clock.monotonic()

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
        # the regions side by side (each is a few calls to its own moto server): moto set up, the
        # first launches made, healthy when the load balancer says so (the model gives them no
        # provisioning)
        with ThreadPoolExecutor(len(self.regions), thread_name_prefix="ecs-start") as pool:
            for started in [pool.submit(self._start_region, r) for r in self.regions]:
                started.result()
        self._thread = threading.Thread(target=self._loop, name="ecs-scheduler", daemon=True)
        self._thread.start()
        # an ECS change through the API (a task stopped, the desired count or subnets updated):
        # read the region again and reconcile now, not at the next interval
        for operation in API_CHANGES:
            self.ctx.after_aws_call("ecs", operation, self._api_changed)
        return self

    def _api_changed(self, call) -> None:
        st = self.regions.get(call.region)
        for r in [st] if st is not None else self.regions.values():
            r.api_changed = True
        self._wake.set()

    def _start_region(self, region: str) -> None:
        self._configure_moto(region)
        self._stop_orphans(region)
        self._tick(region)

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
                self._forget(t, REASON_SHUTDOWN)
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

    def _forget(self, t: Task, reason: str) -> None:
        """Shutdown: the task leaves the adapter's and the model's live sets (caller holds the lock)."""
        st = self.regions[t.region]
        st.model.stopped(t.task_id, reason, self._now())
        st.tasks.pop(t.task_id, None)
        t.state, t.stopped_reason = "STOPPED", reason

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
            self.ctx.clock.wait(self._wake, interval)
            self._wake.clear()

    def _log_tick_error(self, region: str, e: Exception) -> None:
        # a moto that is down fails every tick: the traceback once, then a line every 30 s
        msg = f"{type(e).__name__}: {e}"
        last = self._tick_errors.get(region)
        now = self._now()
        if last is None or last[0] != msg or now - last[1] > 30:
            self._tick_errors[region] = (msg, now)
            log.error("ECS scheduler tick for %s failed: %s", region, msg, exc_info=last is None)

    def _tick(self, region: str) -> None:
        """Observe the region, let the model decide, carry it out."""
        st = self.regions[region]
        with self._lock:
            live = list(st.tasks.values())
        # 1. processes that ended by themselves
        exited = {}
        for t in live:
            rc = t.proc.poll() if t.proc is not None else None
            if rc is not None:
                exited[t.task_id] = rc
        # 2. tasks stopped by anyone through the API (moto no longer lists them RUNNING)
        running, service = self._api_view(st)
        gone = [t for t in live if t.arn not in running and t.task_id not in exited]
        reasons = self._stopped_reasons(region, [t.arn for t in gone]) if gone else {}
        api_stopped = {t.task_id: reasons.get(t.arn) or REASON_API for t in gone}
        # 3. the service's desired count and subnets as the API has them
        api_desired, deployment, service_azs = service
        with self._lock:
            if self._stopped:
                return
            decisions = st.model.tick(self._now(), exited=exited, api_stopped=api_stopped,
                                      api_desired=api_desired, deployment=deployment, service_azs=service_azs)
        # 4. the model's decisions: stops, the corrected desired count, launches
        self._carry_out(st, decisions)

    def _api_view(self, st: _Region) -> tuple[set[str], tuple]:
        """moto's RUNNING tasks and the service's (desiredCount, deployment, AZs) for the region: read
        when changed since (or never read), else at most API_RESYNC_TICKS ticks old. Launches
        happen on the tick's thread after this read, and each marks the view changed: a task
        launched since is never taken for one stopped through the API."""
        now = self._now()
        if st.api_changed or now - st.api_read_at >= API_RESYNC_TICKS * self.ctx.profile.reconcile_interval_s:
            st.api_changed = False   # before the reads: a change made during them is read next tick
            st.api_running = set(self._running_arns(st.name))
            st.api_service = self._service_desired(st.name)
            st.api_read_at = now
        return st.api_running, st.api_service

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

    def _service_desired(self, region: str) -> tuple[int | None, str, set[str] | None]:
        """(desiredCount, deployment id, the AZs of its awsvpc subnets: None when it names none);
        (None, "", None) when the service was deleted."""
        found = self._ecs(region).describe_services(cluster=self.cluster, services=[self.service])["services"]
        if not found or found[0].get("status") != "ACTIVE":
            return None, "", None
        deployments = found[0].get("deployments") or []
        subnets = found[0].get("networkConfiguration", {}).get("awsvpcConfiguration", {}).get("subnets")
        return (int(found[0]["desiredCount"]), deployments[0]["id"] if deployments else f"ecs-svc/{self.service}",
                self._subnet_azs(region, subnets) if subnets else None)

    def _subnet_azs(self, region: str, subnets: list[str]) -> set[str]:
        """The AZs of `subnets`: the provisioned ones by name, any other as EC2 describes it (once)."""
        known = self._subnet_az.setdefault(region, {
            subnet: az for az, subnet in (self.ctx.provisioned.subnet_ids.get(region, {}).items()
                                          if self.ctx.provisioned else ())})
        unknown = [s for s in subnets if s not in known]
        if unknown:
            try:
                found = self.ctx.internal_client("ec2", region).describe_subnets(SubnetIds=unknown)["Subnets"]
                known.update({s["SubnetId"]: s["AvailabilityZone"] for s in found})
            except Exception:  # noqa: BLE001 - a subnet EC2 does not know places no task
                log.warning("the service in %s names subnets EC2 does not describe: %s", region, unknown)
                known.update(dict.fromkeys(unknown, ""))   # said once, not every tick
        return {known[s] for s in subnets if known.get(s)}

    # -- carrying out decisions -------------------------------------------------------------------------
    def _carry_out(self, st: _Region, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, StopTask):
                self._carry_out_stop(st, d)
            elif isinstance(d, MarkRunning):
                self._carry_out_running(st, d)
            elif isinstance(d, SetDesired):
                st.api_changed = True
                self._ecs(st.name).update_service(cluster=self.cluster, service=self.service, desiredCount=d.new)
                self.ctx.events.emit("ecs", action="scaled", region=st.name, old=d.old, new=d.new, reason=d.reason)
            elif isinstance(d, Unplaceable):
                self.ctx.events.emit("ecs", action="unable_to_place", region=st.name, reason=d.reason, missing=d.missing)
            elif isinstance(d, Launch):
                with self._lock:
                    # a launch that failed earlier in this tick throttles the rest
                    go = not self._stopped and st.model.may_launch(self._now())
                if go:
                    self._launch(st, d)

    def _carry_out_running(self, st: _Region, d: MarkRunning) -> None:
        with self._lock:
            t = st.tasks.get(d.task_id)
            if t is None:
                return
            t.state, t.running_after_s = "RUNNING", d.after_s
        self._targets_changed()
        self.ctx.events.emit("ecs", action="task_running", region=st.name, task=d.task_id, az=d.az, after_s=d.after_s)

    def _carry_out_stop(self, st: _Region, d: StopTask) -> None:
        """kill: "term" (SIGTERM, SIGKILL after the grace period, in the background), "kill"
        (SIGKILL now) or "none" (already dead: reaped). api: also stop the task in moto."""
        with self._lock:
            t = st.tasks.pop(d.task_id, None)
            if t is None:
                return
            t.state, t.stopped_reason = "STOPPED", d.reason
        self._targets_changed()
        if t.proc is not None:
            if d.kill == "kill":
                self._reap(t.proc, 0)
            else:
                threading.Thread(target=self._reap, args=(t.proc, STOP_GRACE_S if d.kill == "term" else 0),
                                 name=f"ecs-stop-{t.task_id[:8]}", daemon=True).start()
        if d.api:
            st.api_changed = True
            try:
                self._ecs(t.region).stop_task(cluster=self.cluster, task=t.arn, reason=d.reason)
            except Exception:  # noqa: BLE001 - the next tick sees it still RUNNING in moto and retries
                log.exception("stop_task %s in %s failed", t.task_id, t.region)
        self.ctx.events.emit("ecs", action="task_stopped", region=t.region, task=t.task_id, az=t.az, reason=d.reason,
                             exit_code=t.proc.returncode if t.proc else None)

    def _task_argv(self, region: str, task_id: str, az: str, port: int) -> list[str]:
        values = {"port": str(port), "region": region, "table": self.cfg.dynamodb.table,
                  "endpoint": self.ctx.router_url, "task_id": task_id, "az": az}
        if self.svc.command:
            argv = list(self.svc.command)
            for k, v in values.items():
                argv = [a.replace("{" + k + "}", v) for a in argv]
            return argv
        return [procs.python(), "-m", SERVICE_MODULE, "--port", values["port"], "--region", region,
                "--table", values["table"], "--endpoint", values["endpoint"], "--task-id", task_id, "--az", az,
                "--task-capacity-rps", f"{self.svc.task_capacity_rps:g}"]

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
        if not self.svc.command:
            # the built-in service's modelled CPU (sut/capacity.py); the docker image reads it from here
            env["GAMEDAY_TASK_CAPACITY_RPS"] = f"{self.svc.task_capacity_rps:g}"
        if self.ctx.router_url:
            env["AWS_ENDPOINT_URL"] = self.ctx.router_url
        return env

    def _network_configuration(self, region: str, az: str) -> dict:
        """An awsvpc task's ENI: in the service's subnet of its AZ (provision._network_calls)."""
        prov = self.ctx.provisioned
        subnet = prov.subnet_ids.get(region, {}).get(az) if prov else None
        if not subnet:
            return {}
        vpc = {"subnets": [subnet], "assignPublicIp": "DISABLED"}
        if prov.security_group_ids.get(region):
            vpc["securityGroups"] = [prov.security_group_ids[region]]
        return {"networkConfiguration": {"awsvpcConfiguration": vpc}}

    def _run_task(self, st: _Region, az: str) -> str:
        resp = self._ecs(st.name).run_task(
            cluster=self.cluster, taskDefinition=self.family, count=1, launchType="FARGATE",
            startedBy=st.model.deployment or f"ecs-svc/{self.service}", group=f"service:{self.service}",
            tags=[{"key": AZ_TAG, "value": az}], **self._network_configuration(st.name, az),
        )
        if not resp.get("tasks"):
            raise RuntimeError(f"run_task in {st.name} placed no task: {resp.get('failures')}")
        return resp["tasks"][0]["taskArn"]

    def _launch(self, st: _Region, d: Launch) -> Task | None:
        region, az = st.name, d.az
        st.api_changed = True
        arn = self._run_task(st, az)
        task_id = arn.rsplit("/", 1)[-1]
        port = free_port(TASK_HOST)
        task = Task(arn=arn, task_id=task_id, region=region, az=az, port=port, started_at=self.ctx.clock.time(),
                    spawned_mono=self._now(), provisioning_s=d.provisioning_s)
        log_path = self.ctx.logs_dir / f"task-{region}-{task_id}.log"
        try:
            task.proc = self.launcher.launch(TaskSpec(region, task_id, az, port, self._task_argv(region, task_id, az, port),
                                                      self._task_env(region, task_id, az, port), log_path))
        except OSError as e:
            reason = REASON_SPAWN.format(error=e)
            self._ecs(region).stop_task(cluster=self.cluster, task=arn, reason=reason)
            with self._lock:
                st.model.launch_failed(self._now())
            self.ctx.events.emit("ecs", action="task_stopped", region=region, task=task_id, az=az, reason=reason)
            return None
        with self._procs_lock:
            self._procs.add(task.proc)
        with self._lock:
            stopped = self._stopped   # stop() ran meanwhile: this one is ours to kill
            if not stopped:
                st.tasks[task_id] = task
                after = st.model.launched(task_id, az, task.spawned_mono, d.provisioning_s)
        if stopped:
            self._reap(task.proc, 0)
            return None
        self.ctx.events.emit("ecs", action="task_started", region=region, task=task_id, az=az,
                             port=port, pid=task.proc.pid, reason="service scheduler", **task.proc.info())
        threading.Thread(target=self._watch_ready, args=(st, task), name=f"ecs-ready-{task_id[:8]}",
                         daemon=True).start()
        self._carry_out(st, after)   # its AZ was lost while it launched
        return task

    def _watch_ready(self, st: _Region, task: Task) -> None:
        """Tell the model once the task's process accepts connections on its port; the model makes
        it RUNNING (not before its provisioning is over) or, past the start timeout, stops it."""
        if task.provisioning_s > 0 and self.ctx.clock.wait(self._stop, task.provisioning_s):
            return
        while not self._stop.is_set():
            with self._lock:
                if task.task_id not in st.tasks or task.state != "PENDING":
                    return   # stopped meanwhile (the model's start timeout included)
            if task.proc.poll() is not None:
                return       # died: the tick sees it
            try:
                with socket.create_connection((TASK_HOST, task.port), timeout=0.2):
                    pass
            except OSError:
                self.ctx.clock.wait(self._stop, READY_POLL_S)
                continue
            with self._lock:
                decisions = st.model.listening(task.task_id, self._now())
            self._carry_out(st, decisions)
            return

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
            changed, decisions = st.model.set_az_available(name, available, self._now())
        if changed:
            self.ctx.events.emit("ecs", action="az_available" if available else "az_unavailable",
                                 region=region, az=name, tasks_lost=len(decisions))
        self._carry_out(st, decisions)   # the lost AZ's tasks: SIGKILL, no grace
        self._wake.set()  # replacements now, not at the next tick

    def targets(self, region: str) -> list[Target]:
        st = self.regions[region]
        with self._lock:
            return [Target(t.task_id, t.az, TASK_HOST, t.port) for t in st.tasks.values()
                    if t.task_id in st.model.tasks and st.model.tasks[t.task_id].running]

    def report_requests(self, region: str, n: int = 1) -> None:
        st = self.regions.get(region)
        if st is None:
            return
        with self._lock:
            st.model.add_requests(n)

    def status(self) -> dict:
        with self._lock:
            now = self._now()
            out = {}
            for region, st in self.regions.items():
                m = st.model
                tasks = sorted(st.tasks.values(), key=lambda t: t.spawned_mono)
                infos = [{**t.info(), "state": m.phase(t.task_id, now) if t.task_id in m.tasks else t.state}
                         for t in tasks]
                out[region] = {
                    "desired": m.desired,
                    "running": sum(1 for i in infos if i["state"] == "RUNNING"),
                    "pending": sum(1 for i in infos if i["state"] != "RUNNING"),   # PROVISIONING or PENDING
                    "min": self.svc.min_tasks, "max": self.svc.max_tasks,
                    "tasks": infos,
                    "unavailable_azs": sorted(m.unavailable_azs),
                    "launch_backoff_s": round(m.backoff_s(now), 2),
                }
            return out
