"""AwsEnvironment: the same Environment shape over a real deployed stack, with guardrails.

Credentials are the user's own (boto3's default chain: environment, shared config/SSO
profiles, instance or web-identity roles; `aws.profile` picks a profile). Nothing is called
before STS says the account is allowed: client() and observer() refuse until then. start()
then finds the stack (discovery), runs preflight and the production-tag check, and refuses to
go on with the problems listed one per line.

Faults go through the faults/ models and the Nemesis journal as everywhere; the driver table
`fault_drivers` says how each is done on AWS (environments/aws/faults_aws.py), and
check_fault adds the guardrails.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

from gameday.aws import ROUTE53_HOME
from gameday.environments.aws import guardrails
from gameday.environments.aws.api_calls import ApiCallCounter
from gameday.environments.aws.discovery import Problem, RegionTargets, resolve_targets
from gameday.environments.aws.faults_aws import AWS_FAULT_DRIVERS
from gameday.environments.aws.route53_budget import Route53Budget, poll_interval_s
from gameday.environments.base import CapabilityMissing, Environment
from gameday.config import GamedayConfig, split_host_port
from gameday.events import EventLog

log = logging.getLogger("gameday.aws")
STATUS_MAX_AGE_S = 1.0       # how stale a status() reading may be (each is a dozen API calls)
STATE_NAME = "aws.json"           # RUN_DIR/env/aws.json: what `gameday rollback` needs to come back
LOOPBACK_NAMES = ("localhost", "ip6-localhost")


# What no AWS fault can do to a real account, and what the scenarios that need it are told.
UNSUPPORTED_ON_AWS = {
    "block_control_plane": "no AWS fault blocks one service's control plane (Route 53's, in us-east-1) for a "
                           "whole account; rehearse control_plane_region_lost on --env local or docker",
    "fail_responses": "a share of the service's answers as HTTP 500 needs the local load balancer's proxy; on AWS "
                      "deploy a build of the service that fails on purpose",
}
# What a setting in [aws] would enable (docs/aws.md, "Faults on AWS").
NEEDS_SETTING = {
    "pause_replication": "set aws.fis_role_arn (FIS's aws:dynamodb:global-table-pause-replication)",
    "api_fault": "set aws.fis_role_arn and aws.fis_api_fault_role_arns (FIS's aws:fis:inject-api-*-error, "
                 "which fails EC2 calls only)",
    "lambda_fault": "set aws.lambda_alias with aws.lambda_broken_version, or aws.fis_role_arn (FIS's Lambda actions)",
    "block_data_plane": "set aws.fis_role_arn, or keep the nacl backend for block_region",
}


class AwsConfigError(Exception):
    """The config cannot drive the aws environment; str() is one line."""


class PreflightFailed(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"preflight found {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))


class RunAborted(guardrails.FaultError):
    """A stop condition fired: no further fault may be injected."""


class AwsEnvironment(Environment):
    kind = "aws"
    fault_drivers = AWS_FAULT_DRIVERS
    min_poll_interval_s = 0.5    # waits that call an AWS API per poll poll no faster (assertions/failover._poll)

    def __init__(self, config: GamedayConfig, run_dir: Path | None = None, *, session=None,
                 client_config: Config | None = None):
        super().__init__(config)
        if not config.aws.allowed_account_ids:
            raise AwsConfigError("--env aws needs aws.allowed_account_ids in the config: the 12-digit AWS account "
                                 "ids gameday may change (checked with STS before any other call)")
        self.run_dir = Path(run_dir) if run_dir else None
        self.run_id = self.run_dir.name if self.run_dir else "adhoc"
        self.session = _session(config, session)
        self.client_config = client_config or Config(retries={"mode": "standard", "max_attempts": 4},
                                                     connect_timeout=5, read_timeout=15)
        self.account_id: str | None = None
        self.partition = "aws"
        self.targets: dict[str, RegionTargets] = {}
        self.aborted: str | None = None
        self.preflight_s: float | None = None
        self.endpoints = {"kind": "aws", "pid": None, "control_url": None}
        self._clients: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()
        self._watchers: list[guardrails.StopConditionWatcher] = []
        self._signals = None   # signals.SignalPollers once follow_signals() ran
        self._stack_profile = None   # the aws profile with the stack's own settings, once started
        self._status_cache: tuple[float, dict] | None = None
        self.profile_read_from: dict[str, str] = {}
        self.record_health_check_ids: dict[str, str] = {}
        self.started_at: float | None = None
        # every Route 53 request of the harness waits for this budget (environments/aws/route53_budget.py)
        self.route53_budget = Route53Budget(config.aws.route53_calls_per_s)
        self.api_calls = ApiCallCounter()   # every request, per service: RUN_DIR/env/api_calls.json
        self._events = EventLog(self.run_dir / "env" / "events.jsonl" if self.run_dir else None)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, *, preflight: bool = True) -> "AwsEnvironment":
        """STS account check (first, always), discovery, then preflight + production tags."""
        from gameday.environments.aws.preflight import preflight as run_preflight

        self.started_at = time.time()   # the signal sources read nothing of the stack's history before it
        self.account_id, self.partition = guardrails.check_account(self.session, self.config.aws.allowed_account_ids)
        self._events.emit("guardrail", action="account_allowed", account=self.account_id)
        t0 = time.monotonic()
        self.targets, problems = resolve_targets(self)
        if preflight:
            problems += run_preflight(self)
            problems += guardrails.production_problems(self)
        self.preflight_s = round(time.monotonic() - t0, 3)
        if problems:
            raise PreflightFailed(problems)
        self.record_health_check_ids = self._record_health_checks()
        self._read_stack_timing()
        self.endpoints = self._endpoints()
        self._write_state()
        return self

    def _write_state(self) -> None:
        if self.run_dir is not None:
            d = self.run_dir / "env"
            d.mkdir(parents=True, exist_ok=True)
            (d / STATE_NAME).write_text(json.dumps({"kind": "aws", "account": self.account_id,
                                                    "config": self.config.model_dump(mode="json")}, indent=2))
            # the run directory's layout on every environment (reports/rundata.py): the config and the
            # endpoints, from which reports read the environment's kind and the time profile it ran on
            (d / "config.json").write_text(json.dumps(self.config.model_dump(mode="json"), indent=2))
            (d / "state.json").write_text(json.dumps(self.endpoints, indent=2))
        return self

    def _endpoints(self) -> dict:
        """The names the harness's scenario steps, load and reports read (the local environment's
        endpoint keys, where the stack has an equivalent; no control API, no local DNS server)."""
        cfg = self.config
        alarm_names: dict[str, dict[str, str]] = {}
        for r, t in self.targets.items():
            alarm_names[r] = {}
            for key in cfg.alarms:
                default = cfg.alarm_name(r, key)
                # configured names are matched to the seed's alarm keys by name (orders-healthy-hosts-us-east-1)
                hit = default if default in t.alarms else next((n for n in t.alarms if key in n), None)
                if hit:
                    alarm_names[r][key] = hit
        alarm = cfg.alarms.get("request-count")
        # "env" as the local environments write it (what readers look for); "kind" kept for older readers
        return {"env": "aws", "kind": "aws", "pid": None, "control_url": None, "account": self.account_id,
                "service_name": cfg.aws.record_name or cfg.service.name, "record_name": self.record_name,
                "hosted_zone_id": cfg.aws.hosted_zone_id, "run_dir": str(self.run_dir) if self.run_dir else None,
                "table": self.table,   # aws.table, else dynamodb.table: what read_replicas scans
                # what the record holds for a region: its configured addresses (a plain A record needs
                # IPs), else the load balancer's DNS name (an alias target)
                "regions": {r: {"lb_url": self._lb_url(r),
                                "addresses": list(cfg.aws.regions[r].addresses) if r in cfg.aws.regions else [],
                                "lb_address": (cfg.aws.regions[r].addresses[0] if r in cfg.aws.regions
                                               and cfg.aws.regions[r].addresses else t.lb_dns)}
                            for r, t in self.targets.items()},
                **({"dns": dict(zip(("host", "port"), split_host_port(cfg.aws.dns_server)))}
                   if cfg.aws.dns_server else {}),
                "alarm_names": alarm_names, "alarm_threshold": alarm.threshold if alarm else None,
                # the routing as deployed: the baseline puts the record sets back with these health checks
                "route53": {"routing": cfg.route53.routing,
                            "set_identifiers": {r: cfg.set_identifier(r) for r in cfg.regions},
                            "health_check_ids": dict(self.record_health_check_ids)},
                "profile": {**self.profile.model_dump(mode="json"), "floor_s": self.profile.floor_s,
                            "read_from": dict(self.profile_read_from)}}

    def _read_stack_timing(self) -> None:
        """Deadlines follow the stack's own settings (environments/aws/stack_timing.py): the alarms'
        periods, the record's TTL, the health checks' interval, the function's timeout."""
        from gameday.environments.aws.stack_timing import read_stack_timing, stack_config, stack_profile

        values, self.profile_read_from = read_stack_timing(self)
        self._stack_profile = stack_profile(self.config.profile("aws"), values)
        self.config = stack_config(self.config, values)

    @property
    def profile(self):
        """The aws profile with what was read from the stack, and how late the signal sources see a
        change (the slowest source's read interval) once they follow the stack."""
        p = self._stack_profile or self.config.profile("aws")
        if self._signals is not None and self._signals.sources:
            p = p.model_copy(update={"observation_delay_s": round(max(s.interval_s for s in self._signals.sources), 3)})
        return p

    def _record_health_checks(self) -> dict[str, str]:
        """region -> the health check of its record set, as deployed (failover routing)."""
        from gameday.environments.aws.signals_route53_health import record_health_checks

        if not self.config.aws.hosted_zone_id:
            return {}
        try:
            return {r: h for h, r in record_health_checks(self).items() if r}
        except (BotoCoreError, ClientError) as e:
            log.warning("cannot read the record's health checks: %s", e)
            return {}

    def follow_signals(self) -> "AwsEnvironment":
        """Read AWS's own signals into the timeline (environments/aws/signals.py): what scenario
        checks and reports read through events(). Started by a run, not by `gameday plan`."""
        from gameday.environments.aws.signals import SIGNAL_SOURCES, SignalPollers

        if self.account_id is None:
            raise guardrails.AccountRefused("the AWS account has not been checked yet: call start() first")
        if self._signals is None:
            sources = [s for s in (make(self) for make in SIGNAL_SOURCES) if s is not None]
            self._signals = SignalPollers(self._events, sources).start()
            self.endpoints = self._endpoints()   # the profile now says how late the sources see a change
            self._write_state()
        return self

    def stop(self) -> None:
        for w in self._watchers:
            w.stop()
        self._watchers = []
        if self._signals is not None:
            self._signals.stop()
            self._signals = None
        if self.run_dir is not None and self.account_id is not None:
            d = self.run_dir / "env"
            d.mkdir(parents=True, exist_ok=True)
            summary = {**self.api_calls.summary(), "route53_budget": self.route53_budget.status()}
            (d / "api_calls.json").write_text(json.dumps(summary, indent=2))

    # -- clients ---------------------------------------------------------------------------------------
    def client(self, service: str, region: str):
        if self.account_id is None:
            raise guardrails.AccountRefused("the AWS account has not been checked yet: call start() first")
        if service == "route53":
            region = ROUTE53_HOME
        key = (service, region)
        with self._lock:
            c = self._clients.get(key)
            if c is None:
                c = self._clients[key] = self.session.client(service, region_name=region, config=self.client_config)
                self.api_calls.attach(c)
                if service == "route53":
                    self.route53_budget.attach(c)
        return c

    # The harness's observations use the same credentials; on AWS there is no injected-fault
    # layer to step around (FIS API faults only hit the roles they target).
    observer = client

    # -- capabilities and faults -------------------------------------------------------------------------
    def backend(self, fault_kind: str) -> str:
        spec = self.config.aws
        chosen = spec.fault_backends.get(fault_kind)
        if chosen:
            return chosen
        if fault_kind == "lambda_fault":
            return "alias" if spec.lambda_alias and spec.lambda_broken_version else "fis"
        return {"block_region": "nacl"}.get(fault_kind, "fis")

    @property
    def capabilities(self) -> frozenset[str]:
        spec = self.config.aws
        fis = bool(spec.fis_role_arn)
        caps = {"stop_tasks", "lose_az"}
        if self.backend("block_region") == "nacl" or fis:
            caps.add("block_data_plane")
        if fis:
            caps.add("pause_replication")
            if spec.fis_api_fault_role_arns:
                caps.add("api_fault")
        if (self.backend("lambda_fault") == "alias" and spec.lambda_alias and spec.lambda_broken_version) or \
                (self.backend("lambda_fault") == "fis" and fis):
            caps.add("lambda_fault")
        return frozenset(caps)

    def require(self, capability: str) -> None:
        """CapabilityMissing saying why --env aws cannot do `capability`: what AWS lacks, or which
        setting would enable it (a scenario needing it is skipped with that reason)."""
        if capability not in self.capabilities:
            why = UNSUPPORTED_ON_AWS.get(capability) or NEEDS_SETTING.get(capability) or "no driver for it on aws"
            raise CapabilityMissing(f"the aws environment cannot {capability.replace('_', ' ')}: {why}")

    def check_load(self, plan) -> None:
        """guardrails.max_rps against the load's peak (every stream at its peak at once): a
        GuardrailViolation naming the cap, before any request is sent."""
        guardrails.check_rps(self, sum(s.peak for s in plan.streams), "the load")

    def check_fault(self, fault) -> None:
        """Guardrails on one fault, before it is journaled: no fault after a stop condition fired,
        then capabilities, regions and the driver's caps (environments/base.py)."""
        if self.aborted:
            raise RunAborted(f"run aborted ({self.aborted}): no more faults")
        if not self.targets:
            raise guardrails.AccountRefused("the aws environment is not started")
        super().check_fault(fault)

    # -- stop conditions ----------------------------------------------------------------------------------
    def guard(self, nemesis, on_abort=None, interval_s: float | None = None) -> guardrails.StopConditionWatcher:
        """Watch the stop-condition alarms (every profile period, at most STOP_CONDITION_POLL_MAX_S
        apart); the first ALARM rolls back every fault of `nemesis` at once, refuses further faults,
        then calls on_abort(reason)."""

        def abort(reason: str) -> None:
            self.aborted = reason
            self._events.emit("guardrail", action="stop_condition", reason=reason)
            try:
                nemesis.rollback_all(raise_on_failure=False)
            finally:
                if on_abort is not None:
                    on_abort(reason)

        w = guardrails.StopConditionWatcher(self, abort, interval_s or guardrails.stop_condition_interval_s(self.profile)).start()
        self._watchers.append(w)
        return w

    # -- names ------------------------------------------------------------------------------------------------
    @property
    def table(self) -> str:
        return self.config.aws.table or self.config.dynamodb.table

    @property
    def record_name(self) -> str:
        name = self.config.aws.record_name or self.config.service.name
        return name if name.endswith(".") else name + "."

    @property
    def dns_poll_interval_s(self) -> float:
        """How often dns_answers_region may poll within the Route 53 budget: a poll costs one API
        call when the name is read through Route 53's API (no aws.dns_server), one more for weighted records."""
        calls = (0 if self.config.aws.dns_server else 1) + (self.config.route53.routing == "weighted")
        return poll_interval_s(calls, self.route53_budget.rate_per_s)

    def lb_url(self, region: str) -> str:
        url = self._lb_url(region)
        if not url:
            raise CapabilityMissing(f"no load balancer known in {region}")
        return url

    def _lb_url(self, region: str) -> str | None:
        """Where clients reach the region's load balancer: the configured aws.regions.<r>.lb_url,
        else its DNS name (what real AWS gives through DNS)."""
        rs = self.config.aws.regions.get(region)
        if rs and rs.lb_url:
            return rs.lb_url
        dns = self.targets[region].lb_dns if region in self.targets else None
        return f"http://{dns}" if dns else None

    def region_of_address(self, address: str) -> str | None:
        a = address.rstrip(".").lower().removeprefix("dualstack.")
        for r, t in self.targets.items():
            if t.lb_dns and t.lb_dns.rstrip(".").lower() == a:
                return r
        for r, rs in self.config.aws.regions.items():
            if address in rs.addresses:
                return r
        return None

    def resolver(self, honour_ttl: bool = True):
        """The service name as clients resolve it: through aws.dns_server when the config names one
        (the DNS server that answers for the zone), else read through Route 53's API."""
        if self.config.aws.dns_server:
            from gameday.resolver import ServiceResolver

            host, port = split_host_port(self.config.aws.dns_server)
            return ServiceResolver(host, port, honour_ttl=honour_ttl)
        from gameday.environments.aws.route53_resolver import Route53Resolver
        return Route53Resolver(self, honour_ttl=honour_ttl)

    # -- observation ------------------------------------------------------------------------------------------
    def status(self) -> dict:
        """status_now(), at most STATUS_MAX_AGE_S old: scenario waits poll status() every 0.1 s, and
        on a real account each reading is a dozen API calls (ECS, ELBv2, CloudWatch per region)."""
        with self._lock:
            cached = self._status_cache
        if cached is not None and time.monotonic() - cached[0] < STATUS_MAX_AGE_S:
            return cached[1]
        out = self.status_now()
        with self._lock:
            self._status_cache = (time.monotonic(), out)
        return out

    def status_now(self) -> dict:
        """The local environment's status keys where the stack has them: alarms, ecs (tasks with
        their AZ and state), load_balancers (healthy targets), dns, signals, the Route 53 budget."""
        from gameday.environments.aws.observe import ecs_status, load_balancer_status

        out: dict = {"env": "aws", "account": self.account_id, "aborted": self.aborted, "alarms": {}, "ecs": {},
                     "load_balancers": {}, "stop_conditions": [w.status() for w in self._watchers]}
        for r, t in self.targets.items():
            cw = self.observer("cloudwatch", r)
            out["alarms"][r] = {a["AlarmName"]: {"state": a["StateValue"]}
                                for a in (cw.describe_alarms(AlarmNames=t.alarms)["MetricAlarms"] if t.alarms else [])}
            if t.cluster and t.service:
                out["ecs"][r] = ecs_status(self, t)
            lb = load_balancer_status(self, t) if t.load_balancer_arn else None
            if lb is not None:
                out["load_balancers"][r] = lb
        try:
            out["dns"] = {"answers": {self.record_name: self.resolver(honour_ttl=False).lookup(self.record_name).addresses}}
        except Exception as e:  # noqa: BLE001 - status shows what it can
            out["dns"] = {"error": str(e)}
        if self._signals is not None:
            out["signals"] = self._signals.status()
            health = next((s for s in self._signals.sources if s.name == "route53:GetHealthCheckStatus"), None)
            if health is not None:
                out["route53_health_checks"] = health.status()
        out["route53_budget"] = self.route53_budget.status()
        out["api_calls"] = self.api_calls.summary()
        return out

    def events(self, since: int = 0, kind: str | None = None) -> list[dict]:
        return self._events.since(since, kind)

    def post_event(self, event: dict, timeout_s: float = 2.0) -> None:
        self.control("POST", "/events", event)

    def control(self, method: str, path: str, body: dict | None = None, timeout_s: float = 10.0):
        """The timeline part of the local control API (POST/GET /events, GET /status), so the
        Nemesis and the scenario fixture put faults and scenarios on this environment's timeline.
        There is no fault endpoint: faults go through the driver table."""
        if path.startswith("/events"):
            if method == "POST":
                body = dict(body or {})
                return self._events.emit(body.pop("kind", "note"), **body)
            return self.events()
        if method == "GET" and path == "/status":
            return self.status()
        raise CapabilityMissing(f"the aws environment has no control endpoint {method} {path}")


def is_loopback_url(url: str) -> bool:
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _EndpointSession:
    """A boto3 Session whose every client goes to one endpoint (aws.endpoint_url), in the first
    configured region unless told another (STS's GetCallerIdentity has no region of its own)."""

    def __init__(self, session, endpoint_url: str, region: str):
        self._session, self.endpoint_url, self.region = session, endpoint_url, region

    def client(self, service: str, region_name: str | None = None, **kwargs):
        return self._session.client(service, region_name=region_name or self.region,
                                    endpoint_url=self.endpoint_url, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._session, name)


def _local_account_session() -> boto3.session.Session:
    """The local environment's fixed fake credentials (moto takes any), read from nowhere else: for a
    loopback endpoint the user's real credentials, profile (AWS_PROFILE) and shared config files are
    never read, so no real key is ever sent to a local process and a host profile cannot break it."""
    import os

    import botocore.session

    from gameday.aws import LOCAL_CREDENTIALS

    core = botocore.session.Session(session_vars={"profile": (None, None, None, None),
                                                  "config_file": (None, None, os.devnull, None),
                                                  "credentials_file": (None, None, os.devnull, None)})
    return boto3.session.Session(botocore_session=core, **LOCAL_CREDENTIALS)


def _session(config: GamedayConfig, given=None):
    """The session every client of the environment comes from: the caller's, else the user's
    (boto3's chain, aws.profile); bound to aws.endpoint_url when the config has one."""
    spec = config.aws
    local = bool(spec.endpoint_url) and is_loopback_url(spec.endpoint_url)
    if local and spec.profile:
        raise AwsConfigError(f"aws.profile {spec.profile!r} with the loopback aws.endpoint_url {spec.endpoint_url}: "
                             f"a local account takes no profile (its credentials are fixed); remove one of them")
    try:
        session = given or (_local_account_session() if local else boto3.session.Session(profile_name=spec.profile))
    except ProfileNotFound as e:
        named = f"aws.profile {spec.profile!r}" if spec.profile else f"the profile {e.kwargs.get('profile')!r} (AWS_PROFILE)"
        raise AwsConfigError(f"{named} is not a profile in your AWS config (aws configure list-profiles)") from None
    return _EndpointSession(session, spec.endpoint_url, config.regions[0]) if spec.endpoint_url else session


def attach_for_rollback(run_dir: Path, *, session=None) -> AwsEnvironment:
    """The environment a run's faults were applied to, from RUN_DIR/env/aws.json, to roll them back.
    The account is checked again; preflight is not (the stack is broken on purpose)."""
    p = Path(run_dir) / "env" / STATE_NAME
    if not p.exists():
        raise AwsConfigError(f"{p} not found: cannot tell which AWS stack this run changed")
    data = json.loads(p.read_text())
    env = AwsEnvironment(GamedayConfig.model_validate(data["config"]), run_dir, session=session)
    return env.start(preflight=False)
