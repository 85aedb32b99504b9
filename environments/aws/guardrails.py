"""Guardrails of the aws environment (from AWS FIS and Chaos Toolkit): an account allow-list
checked with STS before anything else, caps on load and blast radius, production-tagged
resources refused, and stop-condition alarms watched every period: one in ALARM aborts the run
and rolls every fault back at once.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from botocore.exceptions import BotoCoreError, ClientError

from gameday.environments.aws.discovery import Problem, aws_error
from gameday.faults.base import FaultError

log = logging.getLogger("gameday.aws.guardrails")


class AccountRefused(Exception):
    """The credentials belong to an account not in aws.allowed_account_ids (or cannot be checked)."""


class GuardrailViolation(FaultError):
    """A fault or plan over a cap; str() is one line naming the cap."""

    def __init__(self, cap: str, text: str):
        self.cap = cap
        super().__init__(f"guardrail {cap}: {text}")


def check_account(session, allowed: tuple[str, ...]) -> tuple[str, str]:
    """(account id, partition) of the caller, if it is allowed; AccountRefused otherwise.
    The first AWS call the environment makes, and read-only."""
    if not allowed:
        raise AccountRefused("aws.allowed_account_ids is empty: list the 12-digit account ids gameday may change")
    try:
        ident = session.client("sts").get_caller_identity()
    except (BotoCoreError, ClientError) as e:
        raise AccountRefused(f"cannot tell which AWS account these credentials belong to ({aws_error(e)})") from None
    account, arn = ident["Account"], ident.get("Arn", "")
    if account not in allowed:
        raise AccountRefused(f"account {account} ({arn}) is not in aws.allowed_account_ids "
                             f"({', '.join(allowed)}): refusing to touch it")
    partition = arn.split(":")[1] if arn.startswith("arn:") else "aws"
    return account, partition


def parse_alarm_ref(ref: str) -> tuple[str, str]:
    """(region, alarm name) from an alarm ARN or "region/name"."""
    if ref.startswith("arn:"):
        parts = ref.split(":", 6)
        if len(parts) == 7 and parts[2] == "cloudwatch" and parts[5] == "alarm":
            return parts[3], parts[6]
    elif "/" in ref:
        region, name = ref.split("/", 1)
        return region, name
    raise ValueError(f"stop-condition alarm {ref!r}: give an alarm ARN or region/alarm-name")


# -- production tags ------------------------------------------------------------------------------

def production_problems(env) -> list[Problem]:
    """Resources the run would change that carry a production tag (unless allow_production_tags)."""
    g = env.config.aws.guardrails
    if g.allow_production_tags or not g.production_tags:
        return []
    out: list[Problem] = []

    def judge(region: str, what: str, tags: dict[str, str]) -> None:
        for k, values in g.production_tags.items():
            if k in tags and tags[k] in values:
                out.append(Problem(region, f"{what} is tagged {k}={tags[k]} (production): refused "
                                           f"(aws.guardrails.allow_production_tags=true to allow)"))

    for t in env.targets.values():
        try:
            if t.cluster and t.service:
                ecs = env.observer("ecs", t.region)
                for arn, label in ((t.cluster, "ECS cluster"), (t.service, "ECS service")):
                    if arn.startswith("arn:"):
                        tags = ecs.list_tags_for_resource(resourceArn=arn).get("tags", [])
                        judge(t.region, f"{label} {arn.rsplit('/', 1)[-1]}", {x["key"]: x["value"] for x in tags})
            if t.load_balancer_arn and t.lb_dns:
                for d in env.observer("elbv2", t.region).describe_tags(ResourceArns=[t.load_balancer_arn])["TagDescriptions"]:
                    judge(t.region, f"load balancer {t.load_balancer_arn.split('/')[-2]}",
                          {x["Key"]: x["Value"] for x in d.get("Tags", [])})
            ddb = env.observer("dynamodb", t.region)
            try:
                arn = ddb.describe_table(TableName=env.table)["Table"]["TableArn"]
            except ddb.exceptions.ResourceNotFoundException:
                continue  # preflight reports the missing table
            judge(t.region, f"table {env.table}", {x["Key"]: x["Value"] for x in ddb.list_tags_of_resource(ResourceArn=arn).get("Tags", [])})
        except (BotoCoreError, ClientError) as e:
            out.append(Problem(t.region, f"cannot read tags to rule out production resources: {aws_error(e)}"))
    return out


# -- caps ---------------------------------------------------------------------------------------------

def tasks_stopped_by(fault, desired: int, running: int) -> int:
    """How many tasks a stop_tasks fault would stop out of `running` (the plan's caps check)."""
    return fault.how_many(running)


def check_task_caps(env, region: str, stopping: int, desired: int, running: int, what: str) -> None:
    """The blast radius is what is down at once: tasks already missing (desired - running, e.g.
    not yet replaced after an earlier fault) plus the ones this fault stops."""
    g = env.config.aws.guardrails
    down = max(0, desired - running) + stopping
    if down > g.max_tasks_stopped_per_region:
        raise GuardrailViolation("max_tasks_stopped_per_region",
                                 f"{what} would have {down} task(s) down in {region} ({stopping} stopped now, "
                                 f"{down - stopping} not yet replaced); the cap is {g.max_tasks_stopped_per_region}")
    if desired and down / desired > g.max_fraction_of_service + 1e-9:
        raise GuardrailViolation("max_fraction_of_service",
                                 f"{what} would have {down} of {desired} tasks ({down / desired:.0%}) down in {region}; "
                                 f"the cap is {g.max_fraction_of_service:.0%}")


def check_rps(env, rps: float, what: str) -> None:
    cap = env.config.aws.guardrails.max_rps
    if rps > cap + 1e-9:
        raise GuardrailViolation("max_rps", f"{what} offers {rps:g} requests/s; the cap is {cap:g}")


# -- stop conditions ----------------------------------------------------------------------------------

# A stop condition is a safety brake: an alarm a team sets to ALARM by hand, or one whose own period is
# shorter than the service's, must stop the faults within seconds, not a 60 s period later. One
# DescribeAlarms per region every 5 s is far inside CloudWatch's API limits.
STOP_CONDITION_POLL_MAX_S = 5.0


def stop_condition_interval_s(profile) -> float:
    """How often the stop-condition alarms are read: every profile period, at most STOP_CONDITION_POLL_MAX_S."""
    return min(float(profile.period_s), STOP_CONDITION_POLL_MAX_S)


class StopConditionWatcher:
    """Polls the stop-condition alarms every `interval_s`; the first one seen in ALARM calls
    `on_alarm(reason)` once (from this thread) and the watcher stops. Component contract:
    start() / stop() / status()."""

    def __init__(self, env, on_alarm: Callable[[str], None], interval_s: float):
        self.env = env
        self.on_alarm = on_alarm
        self.interval_s = interval_s
        self.refs = [parse_alarm_ref(r) for r in env.config.aws.guardrails.stop_condition_alarms]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0
        self.tripped: str | None = None
        self.last_error: str | None = None

    def start(self) -> "StopConditionWatcher":
        if self._thread is None and self.refs:
            self._thread = threading.Thread(target=self._run, name="gameday-stop-conditions", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None

    def status(self) -> dict:
        return {"alarms": [f"{r}/{n}" for r, n in self.refs], "interval_s": self.interval_s, "polls": self.polls,
                "tripped": self.tripped, "last_error": self.last_error}

    def check_once(self) -> str | None:
        """The reason of the first stop-condition alarm in ALARM, else None."""
        by_region: dict[str, list[str]] = {}
        for region, name in self.refs:
            by_region.setdefault(region, []).append(name)
        for region, names in by_region.items():
            for a in self.env.observer("cloudwatch", region).describe_alarms(AlarmNames=names)["MetricAlarms"]:
                if a["StateValue"] == "ALARM":
                    return f"stop-condition alarm {a['AlarmName']} ({region}) is in ALARM: {a.get('StateReason', '')}"
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reason = self.check_once()
                self.polls += 1
                self.last_error = None
            except (BotoCoreError, ClientError) as e:
                # an alarm that cannot be read is not a stop; say so on every poll until it can
                self.last_error = aws_error(e)
                log.warning("stop-condition alarms unreadable: %s", self.last_error)
                reason = None
            if reason:
                self.tripped = reason
                try:
                    self.on_alarm(reason)
                finally:
                    self._stop.set()
                return
            self._stop.wait(self.interval_s)
