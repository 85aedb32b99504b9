"""The local environment's composition root: starts every part in order, wires them
together, and tears everything down. The control API that drives the running stack is
environments/local/control_api.py.

Start order (each part needs the ones before it; parts on one line start side by side; run by
LocalEnvironment, both zygotes were launched before this process imported the CLI: prelaunch.py):
  moto per region, forked from one zygote that imported moto once, each provisioned in-process
  before it serves (moto_region.MotoFleet, moto_main.py) | the task zygote importing what the
  built-in service's tasks load (zygote.py) | router (needs only the servers' addresses) |
  component modules imported, the SDK models they read loaded
  -> ECS tasks (regions side by side) -> load balancers -> targets healthy (each checked as soon
     as it registers) -> metrics armed
    | DNS server | replication | Lambda runner (forks its provisioned workers from the task zygote,
      subscribes to SNS)
  -> Route 53 health checkers (failover routing) -> alarm evaluator -> control API.

`gameday up` runs a LocalStack in the foreground; `LocalEnvironment` (environments.local)
runs `gameday up --json` as a child process and talks to this control API.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from gameday.environments.local import prelaunch
from gameday.environments.local.moto_region import MotoFleet, MotoServer
from gameday.net import free_port_on_all, region_address

if TYPE_CHECKING:   # imported where used: the moto servers are spawned before this process loads them
    from gameday.config import GamedayConfig
    from gameday.environments.local.context import LocalContext
    from gameday.environments.local.control_api import ControlApi

log = logging.getLogger("gameday.stack")


class LocalStack:
    kind = "local"

    def __init__(self, config: GamedayConfig, run_dir: Path, *, progress=None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress or (lambda msg: None)
        self.moto: dict[str, MotoServer] = {}
        self.fleet: MotoFleet | None = None
        self.task_zygote = None   # zygote.TaskZygote: the built-in service's tasks fork from it
        self.components: list[tuple[str, object]] = []
        self.ctx: LocalContext | None = None
        self.control: ControlApi | None = None
        self.timings: dict[str, float] = {}
        self.router = self.dns = self.replication = self.ecs = self.lbs = self.alarms = self.lambdas = None
        self.healthchecks = None
        self._stopped = threading.Event()

    # -- start ------------------------------------------------------------------------------------
    def _timed(self, name: str, fn):
        t0 = time.monotonic()
        out = fn()
        self.timings[name] = round(time.monotonic() - t0, 3)
        self.progress(f"{name} ready in {self.timings[name]:.2f}s")
        return out

    def start(self) -> "LocalStack":
        t_start = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = round(time.monotonic() - t_start, 3)
        self.ctx.events.emit("environment", action="ready", timings=self.timings)
        return self

    # the stop order is the reverse of this one, whatever order the parallel starts finished in
    _ORDER = ("router", "dns", "replication", "ecs", "load_balancers", "route53_health_checks", "alarms", "lambda",
              "network_acls", "fis")

    def _start(self) -> None:
        ctx = self._start_aws()
        # Two independent lines, side by side: the service (ECS tasks -> load balancers -> targets
        # healthy: the longest, started first) and the parts that only need AWS provisioned
        # (DNS, replication, the Lambda runner spawning its provisioned workers).
        self.replication = self._component("replication", ctx)
        self.dns = self._component("dns", ctx)
        with ThreadPoolExecutor(4, thread_name_prefix="stack-start") as pool:
            started = [pool.submit(self._start_service, ctx), pool.submit(self._run, "dns", self.dns),
                       pool.submit(self._run, "replication", self.replication)]
            if self.config.failover_function:  # failover routing needs none (unless failover.enabled says so)
                started.append(pool.submit(self._run, "lambda", self.lambdas))
            errors = [f.exception() for f in started]
        self.components.sort(key=lambda c: self._ORDER.index(c[0]))
        if any(errors):
            raise next(e for e in errors if e)
        # network ACLs changed through the router cut the load balancers off (environments/local/network_acls.py)
        from gameday.environments.local.network_acls import NetworkAcls
        self.network_acls = self._run("network_acls", NetworkAcls(ctx, self.lbs))
        # FIS experiments started through the router act on the parts above (environments/local/fis.py)
        from gameday.environments.local.fis import FisRunner
        self.fis = self._run("fis", FisRunner(ctx, replication=self.replication, router=self.router,
                                              lambdas=self.lambdas if self.config.failover_function else None))
        if ctx.provisioned.health_check_ids:
            # failover routing: Route 53's health checkers, probing the load balancers now that they
            # serve, decide which record the DNS server answers with
            from gameday.environments.local.healthchecks import Route53HealthCheckers
            self.healthchecks = self._run("route53_health_checks", Route53HealthCheckers(ctx))
            self.dns.health = self.healthchecks.is_healthy
        # after the targets are healthy and the metrics armed: no alarm sees the empty start
        self.alarms = self._run("alarms", self._component("alarms", ctx))
        self.control = self._component_classes()["control_api"](self).start()

    @staticmethod
    def _component_classes() -> dict:
        """The component classes (imported here, first while the moto servers start: _start_aws)."""
        from gameday.environments.local.alarms import AlarmEvaluator
        from gameday.environments.local.control_api import ControlApi
        from gameday.environments.local.dns import Route53DnsServer
        from gameday.environments.local.ecs import EcsReconciler
        from gameday.environments.local.lambda_runner import LambdaRunner
        from gameday.environments.local.loadbalancer import LoadBalancers
        from gameday.environments.local.replication import GlobalTableReplicator

        return {"alarms": AlarmEvaluator, "control_api": ControlApi, "dns": Route53DnsServer, "ecs": EcsReconciler,
                "lambda": LambdaRunner, "load_balancers": LoadBalancers, "replication": GlobalTableReplicator}

    def _component(self, name: str, ctx: LocalContext):
        return self._component_classes()[name](ctx)

    def _start_service(self, ctx: LocalContext) -> None:
        classes = self._component_classes()
        launcher = self.task_launcher()
        if launcher is None and self.task_zygote is not None:
            from gameday.environments.local.ecs import ProcessLauncher

            launcher = ProcessLauncher(self.task_zygote)
        self.ecs = self._run("ecs", classes["ecs"](ctx, launcher))
        self.lbs = self._run("load_balancers", classes["load_balancers"](ctx, self.ecs))
        self._timed("targets_healthy", self._wait_targets_healthy)
        self.lbs.arm_metrics()

    def _start_aws(self) -> LocalContext:
        """moto per region (in parallel), each provisioned in-process before it serves with what
        the architecture needs in AWS; the context every component gets; the AWS router."""
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Route 53's control plane is in us-east-1 whatever regions the service runs in.
        regions = list(dict.fromkeys([*cfg.regions, "us-east-1"]))
        t0 = time.monotonic()
        # spawned first: the zygote imports moto (the longest part of a server's start) once for
        # every region's server while this process imports the rest and prepares what to provision
        self.fleet = (prelaunch.take_fleet(regions, self.run_dir / "logs")
                      or MotoFleet(regions, self.run_dir / "logs").launch())
        self.moto = self.fleet.servers
        # > 0: the fleet was launched before this process imported the CLI (prelaunch.py)
        self.timings["moto_head_start"] = round(max(0.0, t0 - self.fleet.launched_at), 3)
        self._start_task_zygote()
        from gameday.environments.local import provision
        from gameday.environments.local.context import LocalContext
        from gameday.environments.local.router import AwsRouter
        from gameday.events import EventLog

        lb_addresses = {r: region_address(i) for i, r in enumerate(cfg.regions)}
        self.ctx = ctx = LocalContext(
            config=cfg, profile=cfg.profile(self.kind), run_dir=self.run_dir,
            events=EventLog(self.run_dir / "events.jsonl"),
            moto_urls={r: m.url for r, m in self.moto.items()},
            lb_addresses=lb_addresses,
            lb_port=cfg.local.lb_port or free_port_on_all(list(lb_addresses.values())),
            # 0: the DNS server binds a free port itself when it starts (a number picked now could be
            # taken by then, a second later: the moto servers start first)
            dns_port=cfg.local.dns_port,
        )
        self.fleet.send_plans(provision.plan(ctx))
        with ThreadPoolExecutor(1) as pool:
            starting = pool.submit(self.fleet.wait_ready)
            # meanwhile (the servers are other processes): this process loads what it runs next
            self.router = self._run("router", AwsRouter(ctx))
            self._component_classes()
            self._load_sdk_models(ctx)
            starting.result()
        self.timings["moto_provisioned"] = round(time.monotonic() - t0, 3)
        self.progress(f"moto servers provisioned and serving in {self.timings['moto_provisioned']:.2f}s")
        ctx.provisioned = provision.provisioned(ctx, {k: v for m in self.moto.values() for k, v in m.results.items()})
        # the replicator makes the regions' tables one global table: DescribeTable says so (moto has
        # no global tables: environments/local/moto_fix_dynamodb.py)
        from gameday.aws import moto_admin
        for r in cfg.regions:
            moto_admin(ctx.moto_urls[r], "dynamodb_replicas", region=r, table=cfg.dynamodb.table, regions=list(cfg.regions))
        self.lambdas = self._component("lambda", ctx)
        self.lambdas.zygote = self.task_zygote   # provisioned environments fork from it (lambda_runner)
        return ctx

    def _start_task_zygote(self) -> None:
        """Where tasks are host processes of the built-in service: one process imports what they
        load while the moto servers start (measured: started once this process had loaded its own
        instead, the moto servers were ready sooner but the first launches waited for it)."""
        if self.task_launcher() is None and not self.config.service.command:
            from gameday.environments.local.zygote import TaskZygote

            log = self.run_dir / "logs" / "task-zygote.log"
            self.task_zygote = prelaunch.take_task_zygote(log) or TaskZygote(log).start()

    # what the components' first calls would load (botocore reads a service's model once per session:
    # gameday.aws has one), read while the moto servers start rather than after
    _SDK_SERVICES = ("ecs", "dynamodb", "dynamodbstreams", "sns", "cloudwatch", "route53")

    def _load_sdk_models(self, ctx: LocalContext) -> None:
        for service in self._SDK_SERVICES:
            ctx.internal_client(service, self.config.regions[0])   # making a client sends nothing

    def _run(self, name: str, component):
        """Start one component (timed), kept for status() and the reverse-order stop()."""
        self._timed(name, component.start)
        self.components.append((name, component))
        return component

    def task_launcher(self):
        """Where ECS tasks run: None is the scheduler's default, host processes (the docker
        environment's stack runs them as containers)."""
        return None

    def _wait_targets_healthy(self) -> None:
        from tenacity import retry, stop_after_delay, wait_fixed

        need = self.config.service.min_tasks

        @retry(stop=stop_after_delay(30), wait=wait_fixed(0.01), reraise=True)   # a status() read: cheap
        def healthy():
            st = self.lbs.status()
            missing = {r: s["healthy"] for r, s in st.items() if s["healthy"] < need}
            if missing:
                raise TimeoutError(f"load balancers still waiting for {need} healthy tasks: {missing}")
        healthy()

    # -- stop --------------------------------------------------------------------------------------
    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self.control:
            self.control.stop()
        for name, comp in reversed(self.components):
            try:
                comp.stop()
            except Exception:  # noqa: BLE001 - keep tearing the rest down
                log.exception("stopping %s failed", name)
        if self.task_zygote is not None:   # after the scheduler stopped its tasks
            self.task_zygote.stop()
        if self.fleet is not None:
            self.fleet.stop()
        prelaunch.discard()   # what a failed start never took
        if self.ctx:
            self.ctx.events.emit("environment", action="stopped")
            self.ctx.events.close()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what clients need --------------------------------------------------------------------------
    def endpoints(self) -> dict:
        ctx, cfg, prof = self.ctx, self.config, self.ctx.profile
        return {
            "env": self.kind,
            "aws_endpoint": ctx.router_url,
            "service_name": cfg.service.name,
            "dns": {"host": "127.0.0.1", "port": ctx.dns_port},
            "lb_port": ctx.lb_port,
            "regions": {r: {"lb_url": ctx.lb_url(r), "lb_address": ctx.lb_addresses[r]} for r in cfg.regions},
            "control_url": f"http://127.0.0.1:{self.control.port}" if self.control else None,
            "moto_urls": ctx.moto_urls,
            "run_dir": str(self.run_dir.resolve()),
            "hosted_zone_id": ctx.provisioned.hosted_zone_id,
            "record_name": cfg.record_name,
            "table": cfg.dynamodb.table,
            "topic_arns": ctx.provisioned.topic_arns,
            "alarm_names": ctx.provisioned.alarm_names,
            "profile": {"period_s": prof.period_s, "evaluation_periods": prof.evaluation_periods,
                        "datapoints_to_alarm": prof.datapoints_to_alarm, "dns_ttl_s": prof.dns_ttl_s,
                        "floor_s": prof.floor_s},
            "alarm_threshold": cfg.alarms["request-count"].threshold if "request-count" in cfg.alarms else None,
            "failover_handler": cfg.failover.handler if cfg.failover_function else None,
            "route53": {"routing": cfg.route53.routing,
                        "set_identifiers": {r: cfg.set_identifier(r) for r in cfg.regions},
                        "health_check_ids": dict(ctx.provisioned.health_check_ids)},
            "pid": os.getpid(),
            "timings": self.timings,
        }

    def status(self) -> dict:
        out = {"env": self.kind, "run_dir": str(self.run_dir)}
        for name, comp in self.components:
            try:
                out[name] = comp.status()
            except Exception as e:  # noqa: BLE001 - status must always answer
                out[name] = {"error": f"{type(e).__name__}: {e}"}
        return out

    # -- what the control API acts on -------------------------------------------------------------------
    def block_data_plane(self, region: str, mode: str | None) -> dict:
        """Block (mode "hang" | "refuse") or unblock (None) a region's load balancer."""
        return self._block(region, mode)

    def _block(self, region: str, mode: str | None) -> dict:
        # the docker environment extends this: it also freezes the region's containers
        self.lbs.set_blocked(region, mode)
        self.ctx.events.emit("data_plane", action="block" if mode else "unblock", region=region, mode=mode)
        return {"ok": True}
