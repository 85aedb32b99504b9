"""The time profile of a deployed stack, read from the stack itself (read-only calls), so that
every deadline on --env aws follows the stack's real settings rather than the config's guesses:

  period_s, evaluation_periods,   DescribeAlarms of the discovered alarms: the slowest of them
  datapoints_to_alarm             (the largest Period, EvaluationPeriods, DatapointsToAlarm)
  dns_ttl_s                       ListResourceRecordSets: the service record's TTL (an alias: 60 s)
  health_check_interval_s,        DescribeTargetGroups (HealthCheckIntervalSeconds, Healthy/
  healthy/unhealthy_threshold     UnhealthyThresholdCount) and the record's Route 53 health checks
                                  (RequestInterval): the slowest
  failover.timeout_s (config)     GetFunctionConfiguration: the function's Timeout

AWS's documented delays stay in the aws profile (dns_propagation_s: Route 53 changes reach every
name server "within 60 seconds"; the async retry delays). A value that cannot be read keeps the
config's, and `read_from` says for each field where it came from (shown in the report).
"""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError

from gameday import aws
from gameday.config import GamedayConfig, TimeProfile

log = logging.getLogger("gameday.aws")
ERRORS = (BotoCoreError, ClientError, KeyError, IndexError)
ALIAS_TTL_S = 60


def _alarms(env) -> dict:
    out: dict = {}
    alarms = []
    for r, t in env.targets.items():
        if t.alarms:
            alarms += env.observer("cloudwatch", r).describe_alarms(AlarmNames=t.alarms)["MetricAlarms"]
    if alarms:
        n = max(int(a["EvaluationPeriods"]) for a in alarms)
        m = max(int(a.get("DatapointsToAlarm") or a["EvaluationPeriods"]) for a in alarms)
        out = {"period_s": max(int(a["Period"]) for a in alarms), "evaluation_periods": n,
               "datapoints_to_alarm": min(m, n)}
    return out


def _ttl(env) -> dict:
    sets = aws.record_sets(env.observer("route53", "us-east-1"), env.config.aws.hosted_zone_id, env.record_name)
    if not sets:
        return {}
    return {"dns_ttl_s": max(int(rs["TTL"]) if "TTL" in rs else ALIAS_TTL_S for rs in sets)}


def _health(env) -> dict:
    from gameday.environments.aws.observe import target_groups

    intervals, healthy, unhealthy = [], [], []
    for r, t in env.targets.items():
        arns = target_groups(env, t)
        if arns:
            for g in env.observer("elbv2", r).describe_target_groups(TargetGroupArns=arns)["TargetGroups"]:
                intervals.append(float(g["HealthCheckIntervalSeconds"]))
                healthy.append(int(g["HealthyThresholdCount"]))
                unhealthy.append(int(g["UnhealthyThresholdCount"]))
    r53 = env.observer("route53", "us-east-1")
    for hid in getattr(env, "record_health_check_ids", {}).values():
        intervals.append(float(r53.get_health_check(HealthCheckId=hid)["HealthCheck"]["HealthCheckConfig"]
                               .get("RequestInterval", 30)))
    out: dict = {}
    if intervals:
        out["health_check_interval_s"] = max(intervals)
    if healthy:
        out.update(healthy_threshold=max(healthy), unhealthy_threshold=max(unhealthy))
    return out


def _function_timeout(env) -> dict:
    cfg = env.config
    fn = env.observer("lambda", cfg.failover.region).get_function_configuration(FunctionName=cfg.aws.lambda_name)
    return {"timeout_s": float(fn["Timeout"])}


READERS = (("DescribeAlarms", _alarms), ("ListResourceRecordSets", _ttl),
           ("DescribeTargetGroups/GetHealthCheck", _health), ("GetFunctionConfiguration", _function_timeout))


def read_stack_timing(env) -> tuple[dict, dict[str, str]]:
    """(values, read_from): each field read from the stack, and the API it came from."""
    values: dict = {}
    read_from: dict[str, str] = {}
    for api, reader in READERS:
        if api == "GetFunctionConfiguration" and not env.config.failover_function:
            continue
        try:
            got = reader(env)
        except ERRORS as e:
            log.warning("reading the stack's timing with %s failed (%s): the config's values stay", api, e)
            continue
        values.update(got)
        read_from.update({k: api for k in got})
    return values, read_from


def stack_profile(base: TimeProfile, values: dict) -> TimeProfile:
    """Pure: `base` with the profile fields read from the stack."""
    fields = {k: v for k, v in values.items() if k in TimeProfile.model_fields}
    return TimeProfile.model_validate({**base.model_dump(), **fields})


def stack_config(config: GamedayConfig, values: dict) -> GamedayConfig:
    """Pure: `config` with the function's real timeout (failover.timeout_s) when it was read."""
    if "timeout_s" not in values:
        return config
    return config.model_copy(update={"failover": config.failover.model_copy(update={"timeout_s": values["timeout_s"]})})
