"""Create the seed architecture's AWS resources in the regions' moto servers, exactly as a
CloudFormation/Terraform stack would: through ordinary API calls.

The calls are data first (`plan`: per moto server, the API calls in order, with `{"$ref": name}`
where a call needs an id an earlier call returned), then carried out by one of two transports
that make the same calls: `provision(ctx)` over HTTP against running servers (component tests),
or each moto server itself before it serves (`MotoServer.start(plan=...)`, the stack's cold
start: no sockets, and both regions at once on two cores). `provisioned(ctx, results)` turns
what the calls returned into the names and ids every component reads.

The service name's Route 53 records follow `route53.routing` (docs/failover.md):
- simple: one A record at the initial region's load balancer (the seed);
- weighted: one A record per region, SetIdentifier (the region name unless configured) and
  Weight 100 for the initial region, 0 for the others (weight 0 gets traffic only when every
  record has weight 0);
- failover: a PRIMARY record (the initial region) and a SECONDARY record (the other), each
  with a Route 53 health check on its region's load balancer (HTTP on the health path, or
  TCP), RequestInterval 10 (or 30 when the profile checks less often than every 10 s) and the
  configured FailureThreshold. The local health checkers (healthchecks.py) probe them.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from gameday.aws import LOCAL_ACCOUNT_ID, ROUTE53_HOME
from gameday.environments.local.context import LocalContext, Provisioned
from gameday.environments.local.moto_main import apply_plan
from gameday.config import GamedayConfig

NAMESPACE = "AWS/ApplicationELB"
TABLE_KEY = "pk"


def topic_arn(region: str, name: str) -> str:
    return f"arn:aws:sns:{region}:{LOCAL_ACCOUNT_ID}:{name}"


def _call(service: str, region: str, op: str, params: dict, save: str | None = None,
          pick: tuple[str, ...] = ()) -> dict:
    """One API call of a plan; `save` keeps the answer's value at path `pick` under that name."""
    out = {"service": service, "region": region, "op": op, "params": params}
    if save:
        out.update(save=save, pick=list(pick))
    return out


def _region_calls(cfg: GamedayConfig, prof, region: str) -> list[dict]:
    """One region's table, topic, alarms and ECS service."""
    topic = {"$ref": f"topic:{region}"}
    calls = [
        _call("dynamodb", region, "create_table", {
            "TableName": cfg.dynamodb.table,
            "KeySchema": [{"AttributeName": TABLE_KEY, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": TABLE_KEY, "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}}),
        _call("sns", region, "create_topic", {"Name": cfg.sns.topic_name}, save=f"topic:{region}", pick=("TopicArn",)),
    ]
    for key, name in alarm_names(cfg, region).items():
        spec = cfg.alarms[key]
        calls.append(_call("cloudwatch", region, "put_metric_alarm", {
            "AlarmName": name, "AlarmDescription": f"gameday {key} alarm for {region}",
            "Namespace": NAMESPACE, "MetricName": spec.metric,
            "Dimensions": [{"Name": "LoadBalancer", "Value": cfg.lb_name(region)}],
            "Statistic": spec.statistic, "Period": prof.period_s,
            "EvaluationPeriods": prof.evaluation_periods, "DatapointsToAlarm": prof.datapoints_to_alarm,
            "Threshold": spec.threshold, "ComparisonOperator": spec.comparison,
            "TreatMissingData": spec.treat_missing_data,
            "ActionsEnabled": True, "AlarmActions": [topic], "OKActions": [topic]}))
    calls += [
        _call("ecs", region, "create_cluster", {"clusterName": "gameday"}),
        _call("ecs", region, "register_task_definition", {
            "family": "gameday-service",
            "containerDefinitions": [{"name": "service", "image": "gameday/reference-service",
                                      "memory": 256, "cpu": 256, "essential": True,
                                      "portMappings": [{"containerPort": 8080}]}]}),
        _call("ecs", region, "create_service", {
            "cluster": "gameday", "serviceName": "gameday-service", "taskDefinition": "gameday-service",
            "desiredCount": cfg.service.desired_tasks}),
    ]
    return calls


def alarm_names(cfg: GamedayConfig, region: str) -> dict[str, str]:
    """Alarm key (config) -> AlarmName of the enabled alarms of `region`."""
    return {key: cfg.alarm_name(region, key) for key, spec in cfg.alarms.items() if spec.enabled}


def health_check_config(ctx: LocalContext, region: str) -> dict:
    """The HealthCheckConfig of `region`'s load-balancer health check (failover routing)."""
    cfg, r53 = ctx.config, ctx.config.route53
    hc = {"IPAddress": ctx.lb_addresses[region], "Port": ctx.lb_port or 80, "Type": r53.health_check_type,
          # Route 53 offers 10 s (fast) or 30 s; the local checkers probe at the profile's interval
          "RequestInterval": 10 if ctx.profile.health_check_interval_s <= 10 else 30,
          "FailureThreshold": r53.health_check_failure_threshold}
    if r53.health_check_type == "HTTP":
        hc["ResourcePath"] = r53.health_check_path or cfg.service.health_path
    return hc


def route53_record_sets(cfg: GamedayConfig, addresses: dict[str, str], ttl: int, active_region: str,
                        health_check_ids: dict[str, str] | None = None) -> list[dict]:
    """The service name's ResourceRecordSets for the configured routing, with traffic on
    `active_region` (simple: its address; weighted: its weight 100, others 0; failover: it is
    PRIMARY). Used to provision, and by the scenarios' baseline to restore."""
    name, routing = cfg.record_name, cfg.route53.routing

    def rrset(region: str, **extra) -> dict:
        return {"Name": name, "Type": "A", "TTL": ttl, "ResourceRecords": [{"Value": addresses[region]}], **extra}

    if routing == "simple":
        return [rrset(active_region)]
    if routing == "weighted":
        return [rrset(r, SetIdentifier=cfg.set_identifier(r), Weight=100 if r == active_region else 0)
                for r in cfg.regions]
    secondary = next(r for r in cfg.regions if r != active_region)
    out = []
    for region, role in ((active_region, "PRIMARY"), (secondary, "SECONDARY")):
        extra = {"SetIdentifier": cfg.set_identifier(region), "Failover": role}
        if (health_check_ids or {}).get(region):
            extra["HealthCheckId"] = health_check_ids[region]
        out.append(rrset(region, **extra))
    return out


def _route53_calls(ctx: LocalContext) -> list[dict]:
    """The hosted zone, the failover health checks (tagged with their load balancer's name) and
    the service name's records, all in Route 53's home region."""
    cfg, home = ctx.config, ROUTE53_HOME
    zone = {"Name": cfg.route53.zone, "CallerReference": str(uuid.uuid4())}
    calls = [_call("route53", home, "create_hosted_zone", zone, save="zone", pick=("HostedZone", "Id"))]
    health_check_ids: dict[str, dict] = {}
    if cfg.route53.routing == "failover":
        for region in cfg.regions:
            ref = f"health_check:{region}"
            health_check_ids[region] = {"$ref": ref}
            calls += [
                _call("route53", home, "create_health_check", {
                    "CallerReference": f"gameday-{region}-{uuid.uuid4()}",
                    "HealthCheckConfig": health_check_config(ctx, region)}, save=ref, pick=("HealthCheck", "Id")),
                _call("route53", home, "change_tags_for_resource", {
                    "ResourceType": "healthcheck", "ResourceId": {"$ref": ref},
                    "AddTags": [{"Key": "Name", "Value": f"gameday-{cfg.lb_name(region)}"}]}),
            ]
    calls.append(_call("route53", home, "change_resource_record_sets", {
        "HostedZoneId": {"$ref": "zone"},
        "ChangeBatch": {"Comment": f"gameday: {cfg.route53.routing} routing", "Changes": [
            {"Action": "UPSERT", "ResourceRecordSet": rs} for rs in route53_record_sets(
                cfg, ctx.lb_addresses, ctx.profile.dns_ttl_s, cfg.initial_region, health_check_ids)]}}))
    return calls


def plan(ctx: LocalContext) -> dict[str, list[dict]]:
    """moto server (its region) -> the calls to make there, in order. Route 53's calls go to its
    home region's server, after that region's own resources."""
    out: dict[str, list[dict]] = {r: _region_calls(ctx.config, ctx.profile, r) for r in ctx.config.regions}
    out.setdefault(ROUTE53_HOME, []).extend(_route53_calls(ctx))
    return out


def provisioned(ctx: LocalContext, results: dict[str, str]) -> Provisioned:
    """What every component reads, from the values the plan's calls saved."""
    cfg = ctx.config
    return Provisioned(
        hosted_zone_id=results["zone"].split("/")[-1],
        topic_arns={r: results[f"topic:{r}"] for r in cfg.regions},
        alarm_names={r: alarm_names(cfg, r) for r in cfg.regions},
        health_check_ids={r: results[f"health_check:{r}"] for r in cfg.regions if f"health_check:{r}" in results})


def provision(ctx: LocalContext) -> Provisioned:
    """The plan over HTTP, against moto servers that already serve (one thread per server: each
    loads its service backends on first use, most of the cost, on its own core)."""
    plans = plan(ctx)
    with ThreadPoolExecutor(len(plans)) as pool:
        parts = list(pool.map(lambda calls: apply_plan(calls, ctx.internal_client), plans.values()))
    return provisioned(ctx, {k: v for part in parts for k, v in part.items()})
