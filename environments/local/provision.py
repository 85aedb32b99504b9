"""Create the seed architecture's AWS resources in the regions' moto servers, exactly as a
CloudFormation/Terraform stack would: through ordinary API calls.

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

from gameday.aws import LOCAL_ACCOUNT_ID
from gameday.environments.local.context import LocalContext, Provisioned
from gameday.config import GamedayConfig

NAMESPACE = "AWS/ApplicationELB"
TABLE_KEY = "pk"


def topic_arn(region: str, name: str) -> str:
    return f"arn:aws:sns:{region}:{LOCAL_ACCOUNT_ID}:{name}"


def _provision_region(ctx: LocalContext, region: str) -> tuple[str, dict[str, str]]:
    """One region's table, topic, alarms and ECS service; returns (topic ARN, alarm key -> name)."""
    cfg, prof = ctx.config, ctx.profile
    ddb = ctx.internal_client("dynamodb", region)
    ddb.create_table(
        TableName=cfg.dynamodb.table,
        KeySchema=[{"AttributeName": TABLE_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": TABLE_KEY, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    sns = ctx.internal_client("sns", region)
    topic = sns.create_topic(Name=cfg.sns.topic_name)["TopicArn"]

    cw = ctx.internal_client("cloudwatch", region)
    alarm_names: dict[str, str] = {}
    for key, spec in cfg.alarms.items():
        if not spec.enabled:
            continue
        name = cfg.alarm_name(region, key)
        alarm_names[key] = name
        cw.put_metric_alarm(
            AlarmName=name,
            AlarmDescription=f"gameday {key} alarm for {region}",
            Namespace=NAMESPACE, MetricName=spec.metric,
            Dimensions=[{"Name": "LoadBalancer", "Value": cfg.lb_name(region)}],
            Statistic=spec.statistic, Period=prof.period_s,
            EvaluationPeriods=prof.evaluation_periods, DatapointsToAlarm=prof.datapoints_to_alarm,
            Threshold=spec.threshold, ComparisonOperator=spec.comparison,
            TreatMissingData=spec.treat_missing_data,
            ActionsEnabled=True, AlarmActions=[topic], OKActions=[topic],
        )

    ecs = ctx.internal_client("ecs", region)
    ecs.create_cluster(clusterName="gameday")
    ecs.register_task_definition(
        family="gameday-service",
        containerDefinitions=[{"name": "service", "image": "gameday/reference-service",
                               "memory": 256, "cpu": 256, "essential": True,
                               "portMappings": [{"containerPort": 8080}]}],
    )
    ecs.create_service(cluster="gameday", serviceName="gameday-service", taskDefinition="gameday-service",
                       desiredCount=cfg.service.desired_tasks)
    return topic, alarm_names


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


def provision(ctx: LocalContext) -> Provisioned:
    cfg, prof = ctx.config, ctx.profile
    # Regions in parallel: each region's moto loads its service backends on first use (most of
    # the cost), and the two processes do that on two cores at once.
    with ThreadPoolExecutor(len(cfg.regions)) as pool:
        done = dict(zip(cfg.regions, pool.map(lambda r: _provision_region(ctx, r), cfg.regions)))
    topics = {r: t for r, (t, _) in done.items()}
    alarm_names = {r: a for r, (_, a) in done.items()}

    r53 = ctx.internal_client("route53", "us-east-1")
    zone = r53.create_hosted_zone(Name=cfg.route53.zone, CallerReference=str(uuid.uuid4()))
    zone_id = zone["HostedZone"]["Id"].split("/")[-1]
    health_check_ids: dict[str, str] = {}
    if cfg.route53.routing == "failover":
        for region in cfg.regions:
            hc = r53.create_health_check(CallerReference=f"gameday-{region}-{uuid.uuid4()}",
                                         HealthCheckConfig=health_check_config(ctx, region))
            health_check_ids[region] = hc["HealthCheck"]["Id"]
            r53.change_tags_for_resource(ResourceType="healthcheck", ResourceId=health_check_ids[region],
                                         AddTags=[{"Key": "Name", "Value": f"gameday-{cfg.lb_name(region)}"}])
    r53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={"Comment": f"gameday: {cfg.route53.routing} routing", "Changes": [
            {"Action": "UPSERT", "ResourceRecordSet": rs} for rs in route53_record_sets(
                cfg, ctx.lb_addresses, prof.dns_ttl_s, cfg.initial_region, health_check_ids)]},
    )
    return Provisioned(hosted_zone_id=zone_id, topic_arns=topics, alarm_names=alarm_names,
                       health_check_ids=health_check_ids)
