"""gameday.toml: the architecture under test and the time profile, validated with pydantic.

Defaults are the seed architecture (docs/architecture.md): two regions, a service behind a load
balancer per region, a RequestCount alarm at 500 per period plus health alarms, one SNS
topic name, the failover Lambda, a Route 53 A record, a DynamoDB global table.

A bad config raises ConfigError whose message is one line naming the key and what is
allowed; the CLI prints it and exits 2.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REGION_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
DEFAULT_CONFIG_NAME = "gameday.toml"


class ConfigError(Exception):
    """A config problem, phrased as one line for a human."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeProfile(_Model):
    """How time is compressed. AWS's real numbers are period 60 s, TTL 60 s."""

    period_s: int = Field(5, ge=1, description="alarm period in whole seconds (CloudWatch Period)")
    evaluation_periods: int = Field(1, ge=1, description="CloudWatch EvaluationPeriods (N)")
    datapoints_to_alarm: int = Field(1, ge=1, description="CloudWatch DatapointsToAlarm (M of N)")
    dns_ttl_s: int = Field(1, ge=0, description="TTL in whole seconds of the service's A record")
    lambda_retry_delays_s: tuple[float, ...] = Field(
        (1.0, 2.0), description="async-invocation retry delays (AWS: 60 s then 120 s)"
    )
    metric_flush_s: float = Field(0.5, gt=0, description="how often load balancers publish metrics")
    health_check_interval_s: float = Field(0.5, gt=0)
    healthy_threshold: int = Field(2, ge=1)
    unhealthy_threshold: int = Field(2, ge=1)
    reconcile_interval_s: float = Field(0.5, gt=0, description="ECS service scheduler tick (each is a few moto calls per region)")
    task_provisioning_s: float = Field(2.0, ge=0, description="a replacement ECS task's provisioning (ENI, "
                                       "image pull) before it can run; Fargate: tens of seconds")
    dns_propagation_s: float = Field(0.0, ge=0, description="how long a Route 53 change may take to reach every "
                                     "name server (AWS: 'within 60 seconds'); 0 where the DNS server is the model")
    observation_delay_s: float = Field(0.0, ge=0, description="how late the harness may see a change: 0 where the "
                                       "environment emits its own events; on --env aws the signal sources' read "
                                       "interval (set by the environment, environments/aws/stack_timing.py)")

    @model_validator(mode="after")
    def _m_of_n(self) -> "TimeProfile":
        if self.datapoints_to_alarm > self.evaluation_periods:
            raise ValueError(
                f"profile.datapoints_to_alarm ({self.datapoints_to_alarm}) must be <= "
                f"evaluation_periods ({self.evaluation_periods})"
            )
        return self

    @property
    def floor_s(self) -> int:
        """The fastest a surge-driven failover can possibly be: evaluation periods x period + TTL."""
        return self.evaluation_periods * self.period_s + self.dns_ttl_s


Comparison = Literal[
    "GreaterThanThreshold",
    "GreaterThanOrEqualToThreshold",
    "LessThanThreshold",
    "LessThanOrEqualToThreshold",
]
MissingData = Literal["missing", "notBreaching", "breaching", "ignore"]


class AlarmSpec(_Model):
    metric: Literal["RequestCount", "HTTPCode_Target_5XX_Count", "HealthyHostCount", "TargetResponseTime"]
    statistic: Literal["Sum", "Average", "Minimum", "Maximum", "SampleCount"] = "Sum"
    threshold: float
    comparison: Comparison = "GreaterThanThreshold"
    treat_missing_data: MissingData = "missing"
    enabled: bool = True


def _default_alarms() -> dict[str, AlarmSpec]:
    return {
        # The seed: one region's request count above 500 per period.
        "request-count": AlarmSpec(
            metric="RequestCount", statistic="Sum", threshold=500,
            comparison="GreaterThanThreshold", treat_missing_data="notBreaching",
        ),
        # ALB publishes 5XX counts only when there are some: missing means fine.
        "target-5xx": AlarmSpec(
            metric="HTTPCode_Target_5XX_Count", statistic="Sum", threshold=50,
            comparison="GreaterThanThreshold", treat_missing_data="notBreaching",
        ),
        # HealthyHostCount is published every period; missing data is itself bad news.
        "healthy-hosts": AlarmSpec(
            metric="HealthyHostCount", statistic="Minimum", threshold=1,
            comparison="LessThanThreshold", treat_missing_data="breaching",
        ),
    }


class ServiceSpec(_Model):
    name: str = Field("api.gameday.test", description="DNS name clients resolve")
    command: tuple[str, ...] | None = Field(
        None, description="your own service: argv; {port} {region} {table} {endpoint} are filled in"
    )
    health_path: str = "/health"
    desired_tasks: int = Field(2, ge=1)
    min_tasks: int = Field(2, ge=1)
    max_tasks: int = Field(4, ge=1)
    azs: tuple[str, ...] = Field(("a", "b"), description="AZ letters, e.g. a,b -> us-east-1a, us-east-1b")
    scale_out_requests_per_task_s: float = Field(
        0, ge=0, description="target tracking on requests/s per task; 0 disables auto scaling"
    )
    # Two tasks carry the seed's surge (1.5 x 500 per 5 s = 150/s, plus followers) at about half
    # their capacity: the seed's scenarios never queue; a region reduced to fewer tasks does.
    task_capacity_rps: float = Field(
        150, ge=0, description="requests/s one task of the built-in service serves (its finite CPU): beyond it "
                               "requests queue, then 503; 0 = unlimited. A team's own service command is not limited"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"([a-z0-9-]+\.)+[a-z0-9-]+\.?", v):
            raise ValueError("must be a DNS name like api.gameday.test")
        return v.rstrip(".")

    @field_validator("azs")
    @classmethod
    def _azs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) < 2:
            raise ValueError("needs at least 2 AZs (the seed spreads tasks over AZs)")
        if len(set(v)) != len(v) or not all(re.fullmatch(r"[a-f]", a) for a in v):
            raise ValueError("AZ letters must be distinct, each one of a-f")
        return v

    @model_validator(mode="after")
    def _counts(self) -> "ServiceSpec":
        if not (self.min_tasks <= self.desired_tasks <= self.max_tasks):
            raise ValueError(
                f"service: need min_tasks <= desired_tasks <= max_tasks "
                f"(got {self.min_tasks} <= {self.desired_tasks} <= {self.max_tasks})"
            )
        return self


# Placeholders a failover function's environment variables may use; the Lambda runner fills in
# the environment's values (docs/failover.md). name -> whether it takes a region: {lb_address:us-west-2}
FAILOVER_PLACEHOLDERS: dict[str, bool] = {
    "hosted_zone_id": False, "record_name": False, "record_type": False, "record_ttl": False,
    "routing": False, "regions": False, "initial_region": False, "region_addresses": False,
    "set_identifier": True, "lb_address": True, "topic_arn": True, "health_check_id": True,
}
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_]+)(?::([^{}\s]*))?\}")
_HANDLER_FILE_RE = re.compile(r"(?P<path>[^:]+\.py):(?P<function>[A-Za-z_]\w*)")
_HANDLER_MODULE_RE = re.compile(r"(?P<module>[A-Za-z_][\w.]*):(?P<function>[A-Za-z_]\w*)")
# Lambda's own spelling: module.function (the last dot separates the function)
_HANDLER_LAMBDA_RE = re.compile(r"(?P<module>[A-Za-z_][\w.]*)\.(?P<function>[A-Za-z_]\w*)")


class FailoverSpec(_Model):
    handler: str = Field("gameday.sut.failover_lambda:handler", description="module:function, Lambda's module.function, "
                         "or path/to/file.py:function (its directory is then the code directory)")
    code_dir: str | None = Field(None, description="put on sys.path before importing the handler (LAMBDA_TASK_ROOT)")
    region: str = Field("us-west-2", description="the Lambda's home region (AWS_REGION)")
    timeout_s: float = Field(5.0, gt=0)
    environment: dict[str, str] = Field(default_factory=dict, description="the function's environment variables; "
                                        "placeholders such as {hosted_zone_id} or {lb_address:us-west-2} are filled in")
    reserved_concurrency: int | None = Field(None, ge=1, description="1 = one invocation at a time; unset = "
                                             "concurrent invocations (unreserved)")
    provisioned_concurrency: int | None = Field(
        None, ge=0, description="execution environments initialised when the environment starts (Lambda's "
                                "provisioned concurrency), so no invocation pays the init; unset = all of them "
                                "(every concurrent one); 0 = none: an environment's first invocation cold-starts")
    maximum_retry_attempts: int | None = Field(
        None, ge=0, le=2, description="Lambda's MaximumRetryAttempts for asynchronous invocations (0..2); unset = "
                                      "one retry per profile.lambda_retry_delays_s entry, at most 2 (AWS: 2)")
    maximum_event_age_s: float | None = Field(
        None, gt=0, le=21600, description="Lambda's MaximumEventAgeInSeconds: an event older than this is discarded "
                                          "instead of (re)tried; unset = 6 h, AWS's default")
    enabled: bool | None = Field(None, description="run a failover function at all (default: yes, except with "
                                 "route53.routing = failover, where health checks move traffic)")
    failback: Literal["manual", "automatic"] = Field(
        "manual", description="after the failing region heals: manual (a human moves the record back; the "
                              "reference Lambda ignores OK) or automatic (the function fails back on the alarm's OK)")
    failback_hold_periods: int = Field(
        1, ge=1, description="automatic failback is correct only once the failed region has been healthy (every "
                             "alarm OK / its health check passing) for this many evaluation periods; the OK itself "
                             "certifies one, so 1 allows a failback at the OK (assertions/failback.py)")

    @field_validator("handler")
    @classmethod
    def _handler(cls, v: str) -> str:
        if not any(r.fullmatch(v) for r in (_HANDLER_FILE_RE, _HANDLER_MODULE_RE, _HANDLER_LAMBDA_RE)):
            raise ValueError("must be module:function (e.g. gameday.sut.failover_lambda:handler), Lambda's module.function, "
                             "or path/to/file.py:function")
        return v

    def entry_point(self) -> tuple[str, str, str | None]:
        """(module, function, code directory implied by a file path or None)."""
        m = _HANDLER_FILE_RE.fullmatch(self.handler)
        if m:
            path = Path(m["path"])
            return path.stem, m["function"], str(path.parent)
        m = _HANDLER_MODULE_RE.fullmatch(self.handler) or _HANDLER_LAMBDA_RE.fullmatch(self.handler)
        return m["module"], m["function"], None

    def placeholders(self) -> list[tuple[str, str, str | None]]:
        """(variable, placeholder name, its region argument or None) for every {...} in environment."""
        return [(k, m[1], m[2]) for k, v in self.environment.items() for m in PLACEHOLDER_RE.finditer(v)]


class Route53Spec(_Model):
    zone: str = Field("gameday.test", description="hosted zone name")
    record_type: Literal["A"] = "A"
    initial_region: str | None = Field(None, description="region the record points at first (default: first region)")
    routing: Literal["simple", "weighted", "failover"] = Field(
        "simple", description="simple: one A record the function rewrites; weighted: one record per region "
                              "(SetIdentifier, Weight 100 for the initial region, 0 for the others) the function "
                              "re-weights; failover: PRIMARY (initial region) / SECONDARY records with Route 53 "
                              "health checks, no function needed")
    set_identifiers: dict[str, str] = Field(default_factory=dict, description="region -> SetIdentifier "
                                            "(weighted/failover; default: the region name)")
    health_check_type: Literal["HTTP", "TCP"] = Field("HTTP", description="failover routing's health checks on "
                                                      "each region's load balancer")
    health_check_path: str | None = Field(None, description="HTTP health check path (default: service.health_path)")
    health_check_failure_threshold: int = Field(3, ge=1, le=10, description="consecutive checks to change status "
                                                "(Route 53 FailureThreshold)")

class DynamoSpec(_Model):
    table: str = "gameday-items"
    replication_lag_s: float = Field(0.0, ge=0, description="extra delay added to global-table replication")
    mutation_drop_fraction: float = Field(0.0, ge=0, le=1, description="for the harness's own mutation tests: "
                                          "replication silently drops this share of writes (never set it otherwise)")


class SnsSpec(_Model):
    # CloudWatch alarm actions must target a topic in the alarm's own region, so the topic
    # name is created in every region and each region's topic triggers the failover Lambda.
    topic_name: str = "gameday-failover"


class BudgetSpec(_Model):
    """What a scenario may cost and still pass; deadlines come from the time profile instead."""

    error_rate: float = Field(0.25, ge=0, le=1, description="share of failed/unknown client operations during "
                              "a failover scenario (clients keep hitting the lost region until DNS moves and "
                              "their TTL runs out)")
    absorbed_error_rate: float = Field(0.05, ge=0, le=1, description="share of failed/unknown operations when "
                                       "losing a task or an AZ is absorbed without failover")
    rpo_s: float = Field(30.0, ge=0, description="oldest acknowledged write the new region may lack at "
                         "failover, in seconds (replication paused or lagging)")
    lost_acked_writes: int = Field(0, ge=0, description="acknowledged writes allowed to be missing after "
                                   "replication converged")
    rto_slo: float = Field(0.95, gt=0, le=1, description="client success rate that counts as recovered")
    p99_latency_s: float = Field(1.0, gt=0, description="99th percentile of client operation latency on the region "
                                 "serving the traffic (surviving_region_absorbs_load, after the failover)")


class LocalSpec(_Model):
    lb_port: int = Field(0, ge=0, le=65535, description="0 = pick a free port")
    dns_port: int = Field(0, ge=0, le=65535, description="0 = pick a free port")


class DockerSpec(_Model):
    """The docker environment (environments/docker, docs/docker.md): every ECS task is a container
    on the host's network. The image's contract: listen on the address and port given in
    host_env/port_env, answer service.health_path with 200, use region_env, table_env and
    endpoint_env for its AWS SDK."""

    image: str | None = Field(None, description="your service's image, already in the local Docker daemon "
                              "(docker build/load it first; no registry is contacted); default: the reference "
                              "service image, built from sut/")
    host_env: str = Field("GAMEDAY_HOST", description="variable holding the address to listen on (127.0.0.1)")
    port_env: str = Field("GAMEDAY_PORT", description="variable holding the port to listen on (one per task)")
    region_env: str = Field("AWS_REGION", description="variable holding the task's region")
    table_env: str = Field("GAMEDAY_TABLE", description="variable holding the DynamoDB table name")
    endpoint_env: str = Field("AWS_ENDPOINT_URL", description="variable holding the AWS endpoint URL")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables for every task")


# -- the aws environment (environments/aws, docs/aws.md) ----------------------------------------------
def _http_url(v: str | None, what: str) -> str | None:
    from urllib.parse import urlsplit

    if v is None:
        return v
    u = urlsplit(v)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"{what} must be http(s)://host[:port]")
    return v.rstrip("/")


def split_host_port(v: str) -> tuple[str, int]:
    """("127.0.0.1", 5353) from "127.0.0.1:5353" (a DNS server: an IP address and a UDP port)."""
    import ipaddress

    host, _, port = str(v).rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        if not 0 < int(port) < 65536:
            raise ValueError
    except ValueError:
        raise ValueError("a DNS server must be IP:PORT, e.g. 127.0.0.1:5353") from None
    return host.strip("[]"), int(port)


class AwsRegionSpec(_Model):
    """One region of the deployed stack. Names left out are discovered from `aws.discovery_tags`."""

    cluster: str | None = Field(None, description="ECS cluster name or ARN")
    service: str | None = Field(None, description="ECS service name or ARN")
    load_balancer: str | None = Field(None, description="ALB/NLB name or ARN")
    subnets: tuple[str, ...] = Field((), description="subnets a block_region fault denies (default: the "
                                     "service's and the load balancer's subnets)")
    alarms: tuple[str, ...] | None = Field(None, description="alarm names that must publish to the topic "
                                           "(default: the seed's alarm names for this region)")
    addresses: tuple[str, ...] = Field((), description="IP addresses the record may hold for this region "
                                       "(when it is a plain A record rather than an alias to the load balancer)")
    lb_url: str | None = Field(None, description="the URL clients reach this region's load balancer at "
                               "(default: http://<the load balancer's DNSName>)")

    @field_validator("lb_url")
    @classmethod
    def _lb_url(cls, v: str | None) -> str | None:
        return _http_url(v, "a load balancer URL")


class AwsGuardrails(_Model):
    max_rps: float = Field(50.0, gt=0, description="most requests/s the load may offer, all users together")
    max_tasks_stopped_per_region: int = Field(2, ge=0)
    max_fraction_of_service: float = Field(0.5, ge=0, le=1, description="share of a service's desired tasks "
                                           "one fault may stop (all=True needs 1.0)")
    allow_production_tags: bool = False
    production_tags: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {"environment": ("prod", "production"), "Environment": ("prod", "production")},
        description="tag key -> values that mark a resource as production")
    stop_condition_alarms: tuple[str, ...] = Field((), description="alarm ARNs or region/name: one in ALARM "
                                                   "aborts the run and rolls every fault back")
    nacl_rule_number: int = Field(1, ge=1, le=32766, description="rule number reserved for block_region's "
                                  "deny entries (must be lower than every allow entry, and unused)")


class AwsSpec(_Model):
    allowed_account_ids: tuple[str, ...] = Field((), description="required for --env aws: the accounts the "
                                                 "harness may change (checked with STS before anything)")
    profile: str | None = Field(None, description="AWS shared-config profile (default: the SDK's chain)")
    regions: dict[str, AwsRegionSpec] = Field(default_factory=dict)
    discovery_tags: dict[str, str] = Field(default_factory=dict, description="find cluster/service/load "
                                           "balancer by these tags where regions.<r> does not name them")
    table: str | None = Field(None, description="global table (default: dynamodb.table)")
    topic_name: str | None = Field(None, description="SNS topic in every region (default: sns.topic_name)")
    lambda_name: str = Field("gameday-failover", description="the failover function")
    lambda_alias: str | None = Field(None, description="alias the topic invokes; with lambda_broken_version "
                                     "a lambda_fault points it at that version")
    lambda_broken_version: str | None = None
    hosted_zone_id: str | None = None
    record_name: str | None = Field(None, description="default: service.name")
    fault_backends: dict[str, Literal["nacl", "fis", "alias"]] = Field(
        default_factory=dict, description="block_region: nacl|fis; lambda_fault: fis|alias")
    fis_role_arn: str | None = Field(None, description="role FIS experiments run with (FIS-backed faults)")
    fis_api_fault_role_arns: tuple[str, ...] = Field((), description="roles whose EC2 API calls FIS fails")
    guardrails: AwsGuardrails = AwsGuardrails()
    endpoint_url: str | None = Field(None, description="one endpoint for every AWS API call (the local environment "
                                     "as an account: `gameday up --aws-config`); absent on a real account")
    dns_server: str | None = Field(None, description="host:port of the DNS server that resolves the service name "
                                   "(default: the record is read through Route 53's API)")
    route53_calls_per_s: float = Field(2.0, description="the harness's own Route 53 API calls per second, all "
                                       "together (Route 53 allows 5/s per account, shared with the failover function)")

    @field_validator("route53_calls_per_s")
    @classmethod
    def _route53_rate(cls, v: float) -> float:
        if not 0 < v < 5:
            raise ValueError(f"must be above 0 and below Route 53's 5 requests/s per account (the failover "
                             f"function shares that limit), got {v}")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        return _http_url(v, "an endpoint URL")

    @field_validator("dns_server")
    @classmethod
    def _dns_server(cls, v: str | None) -> str | None:
        if v is not None:
            split_host_port(v)
        return v

    @field_validator("allowed_account_ids")
    @classmethod
    def _accounts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for a in v:
            if not re.fullmatch(r"\d{12}", str(a)):
                raise ValueError(f"{a!r} is not a 12-digit AWS account id")
        return v


def _default_profiles() -> dict[str, TimeProfile]:
    return {
        "local": TimeProfile(),
        "docker": TimeProfile(),
        "aws": TimeProfile(period_s=60, evaluation_periods=1, datapoints_to_alarm=1, dns_ttl_s=60,
                           lambda_retry_delays_s=(60, 120), metric_flush_s=60,
                           health_check_interval_s=10, task_provisioning_s=45, dns_propagation_s=60),
    }


class LoadSpec(_Model):
    """Where the scenarios' Locust workers run (docs/scaling.md)."""

    workers: Literal["local", "remote"] = Field("local", description="local: the load fixture starts its "
                                                "workers beside the master; remote: it starts only the master and "
                                                "waits for expect_workers `gameday load --worker` processes")
    expect_workers: int = Field(1, ge=1, le=10000, description="with workers = \"remote\": how many to wait for")
    bind_host: str = Field("127.0.0.1", min_length=1, description="with workers = \"remote\": the address the "
                           "master listens on (one the workers' hosts reach)")
    master_port: int = Field(5557, ge=1, le=65535, description="with workers = \"remote\": the master's port "
                             "(the workers are told it: `--master-port`)")
    wait_s: float = Field(60.0, gt=0, description="with workers = \"remote\": how long to wait for them")


class SuiteSpec(_Model):
    """Which scenarios `gameday run` collects besides the built-in suite (docs/scenarios.md)."""

    paths: tuple[str, ...] = Field(("scenarios",), description="the team's own scenarios: folders or test "
                                   "files, relative to the current directory (missing ones are skipped)")
    default: Literal["builtin", "mine", "all"] | None = Field(
        None, description="what `gameday run` runs without --suite (default: all when one of paths exists, "
                          "else builtin)")


class GamedayConfig(_Model):
    regions: tuple[str, ...] = ("us-east-1", "us-west-2")
    service: ServiceSpec = ServiceSpec()
    alarms: dict[str, AlarmSpec] = Field(default_factory=_default_alarms)
    sns: SnsSpec = SnsSpec()
    failover: FailoverSpec = FailoverSpec()
    route53: Route53Spec = Route53Spec()
    dynamodb: DynamoSpec = DynamoSpec()
    profiles: dict[str, TimeProfile] = Field(default_factory=_default_profiles)
    budgets: BudgetSpec = BudgetSpec()
    local: LocalSpec = LocalSpec()
    docker: DockerSpec = DockerSpec()
    aws: AwsSpec = AwsSpec()
    suite: SuiteSpec = SuiteSpec()
    load: LoadSpec = LoadSpec()

    @field_validator("profiles", mode="before")
    @classmethod
    def _profiles_over_defaults(cls, v):
        # a profile named in the file changes only the keys it names; unnamed profiles keep defaults
        if not isinstance(v, dict):
            return v
        out = {k: p.model_dump() for k, p in _default_profiles().items()}
        for name, prof in v.items():
            out[name] = {**out.get(name, {}), **prof} if isinstance(prof, dict) else prof
        return out

    @field_validator("regions")
    @classmethod
    def _regions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) < 2:
            raise ValueError("needs at least 2 regions (failover needs somewhere to go)")
        if len(v) > 8:
            raise ValueError("at most 8 regions")
        for r in v:
            if not REGION_RE.fullmatch(r):
                raise ValueError(f"{r!r} is not an AWS region name like us-east-1")
        if len(set(v)) != len(v):
            raise ValueError("regions must be distinct")
        return v

    @model_validator(mode="after")
    def _cross(self) -> "GamedayConfig":
        if self.failover.region not in self.regions:
            raise ValueError(f"failover.region {self.failover.region!r} must be one of regions {list(self.regions)}")
        if self.route53.initial_region and self.route53.initial_region not in self.regions:
            raise ValueError(f"route53.initial_region must be one of regions {list(self.regions)}")
        self._check_route53_and_failover()
        for name, alarm in self.alarms.items():
            if alarm.metric in ("RequestCount", "HTTPCode_Target_5XX_Count") and alarm.threshold <= 0:
                raise ValueError(f"alarms.{name}.threshold must be > 0 (got {alarm.threshold:g})")
        for k in ("local",):
            if k not in self.profiles:
                raise ValueError(f"profiles.{k} is required")
        return self

    # -- derived names, one place so every component agrees -------------------------------
    @property
    def record_name(self) -> str:
        return self.service.name + "."

    @property
    def initial_region(self) -> str:
        return self.route53.initial_region or self.regions[0]

    @property
    def failover_function(self) -> bool:
        """Whether a failover function runs (failover.enabled, by default not with failover routing)."""
        return self.failover.enabled if self.failover.enabled is not None else self.route53.routing != "failover"

    def set_identifier(self, region: str) -> str:
        return self.route53.set_identifiers.get(region, region)

    def _check_route53_and_failover(self) -> None:
        r53, fo = self.route53, self.failover
        unknown = sorted(set(r53.set_identifiers) - set(self.regions))
        if unknown:
            raise ValueError(f"route53.set_identifiers: {unknown} not among regions {list(self.regions)}")
        ids = [self.set_identifier(r) for r in self.regions]
        if len(set(ids)) != len(ids) or not all(ids):
            raise ValueError(f"route53.set_identifiers must be distinct and non-empty (got {ids})")
        if r53.routing == "failover":
            if len(self.regions) != 2:
                raise ValueError("route53.routing = failover has one PRIMARY and one SECONDARY record: it needs "
                                 f"exactly 2 regions (got {len(self.regions)})")
            if fo.failback != "automatic":
                raise ValueError("route53.routing = failover fails back by itself once the primary's health check "
                                 "is healthy again: set failover.failback = \"automatic\"")
            if fo.failback_hold_periods > 1 and not self.failover_function:
                raise ValueError("route53.routing = failover fails back as soon as the primary's health check passes: "
                                 "failover.failback_hold_periods must be 1 without a failover function (got "
                                 f"{fo.failback_hold_periods})")
        for var, name, arg in fo.placeholders():
            if name not in FAILOVER_PLACEHOLDERS:
                raise ValueError(f"failover.environment.{var}: unknown placeholder {{{name}}} (known: "
                                 f"{', '.join(sorted(FAILOVER_PLACEHOLDERS))})")
            if FAILOVER_PLACEHOLDERS[name] and arg not in self.regions:
                raise ValueError(f"failover.environment.{var}: {{{name}:REGION}} needs one of regions "
                                 f"{list(self.regions)} (got {arg!r})")
            if not FAILOVER_PLACEHOLDERS[name] and arg is not None:
                raise ValueError(f"failover.environment.{var}: {{{name}}} takes no argument (got {{{name}:{arg}}})")
            if name == "health_check_id" and r53.routing != "failover":
                raise ValueError(f"failover.environment.{var}: {{health_check_id:...}} exists only with "
                                 f"route53.routing = failover")

    def profile(self, env_kind: str = "local") -> TimeProfile:
        return self.profiles.get(env_kind) or self.profiles["local"]

    def az_names(self, region: str) -> list[str]:
        return [region + a for a in self.service.azs]

    def alarm_name(self, region: str, alarm: str) -> str:
        return f"gameday-{alarm}-{region}"

    @staticmethod
    def alarm_key(name: str, region: str) -> str:
        """The [alarms] key back from an alarm name (alarm_name's inverse), for compact displays."""
        return name.replace("gameday-", "").replace("-" + region, "")

    def lb_name(self, region: str) -> str:
        return f"gameday-lb-{region}"


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    got = first.get("input")
    extra = f" (got {got!r})" if first["type"] not in ("extra_forbidden", "missing") and not isinstance(got, dict) else ""
    more = f" [+{err.error_count() - 1} more]" if err.error_count() > 1 else ""
    return f"{source}: {loc}: {msg}{extra}{more}"


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> GamedayConfig:
    """Read gameday.toml (or defaults when path is None and ./gameday.toml is absent)."""
    data: dict = {}
    source = "defaults"
    if path is None and Path(DEFAULT_CONFIG_NAME).exists():
        path = DEFAULT_CONFIG_NAME
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.exists():
            raise ConfigError(f"{p}: config file not found")
        try:
            # .json: a config already validated and dumped (how the harness hands it to children)
            data = json.loads(p.read_text()) if p.suffix == ".json" else tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: not valid JSON: {e}") from None
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return GamedayConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
