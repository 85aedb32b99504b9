"""Create the seed architecture's AWS resources in the regions' moto servers, exactly as a
CloudFormation/Terraform stack would: through ordinary API calls."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from gameday.aws import LOCAL_ACCOUNT_ID
from environments.local.context import LocalContext, Provisioned

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
    r53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": cfg.record_name, "Type": "A", "TTL": prof.dns_ttl_s,
            "ResourceRecords": [{"Value": ctx.lb_addresses[cfg.initial_region]}]}}]},
    )
    return Provisioned(hosted_zone_id=zone_id, topic_arns=topics, alarm_names=alarm_names)
