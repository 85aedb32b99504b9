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

import math
import uuid
from concurrent.futures import ThreadPoolExecutor

from gameday.aws import LOCAL_ACCOUNT_ID, ROUTE53_HOME
from gameday.environments.local.context import LocalContext, Provisioned
from gameday.environments.local.moto_main import apply_plan
from gameday.config import GamedayConfig

NAMESPACE = "AWS/ApplicationELB"
TABLE_KEY = "pk"
# on every resource `--env aws` discovers by tag (aws.discovery_tags in `gameday up --aws-config`)
STACK_TAGS = {"gameday:stack": "gameday"}
LAMBDA_ALIAS = "live"          # the alias the topics invoke (aws.lambda_alias)
STOP_CONDITION_ALARM = "gameday-stop-condition"   # per region: a guardrail for --env aws, OK unless set
LAMBDA_ROLE = "gameday-failover-role"


def topic_arn(region: str, name: str) -> str:
    return f"arn:aws:sns:{region}:{LOCAL_ACCOUNT_ID}:{name}"


def _call(service: str, region: str, op: str, params: dict, save: str | None = None,
          pick: tuple[str, ...] = ()) -> dict:
    """One API call of a plan; `save` keeps the answer's value at path `pick` under that name."""
    out = {"service": service, "region": region, "op": op, "params": params}
    if save:
        out.update(save=save, pick=list(pick))
    return out


def _region_calls(cfg: GamedayConfig, prof, region: str, index: int = 0) -> list[dict]:
    """One region's network, table, topic, alarms, load balancer and ECS service."""
    topic = {"$ref": f"topic:{region}"}
    calls = [*_network_calls(cfg, prof, region, index),
        _call("dynamodb", region, "create_table", {
            "TableName": cfg.dynamodb.table,
            "KeySchema": [{"AttributeName": TABLE_KEY, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": TABLE_KEY, "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            "Tags": _tags("Key", "Value")}),
        _call("sns", region, "create_topic", {"Name": cfg.sns.topic_name}, save=f"topic:{region}", pick=("TopicArn",)),
        # the topic invokes the function's alias (a topic may invoke a function in another region);
        # the local Lambda runner takes these deliveries (moto_fix_sns)
        _call("sns", region, "subscribe", {"TopicArn": topic, "Protocol": "lambda",
                                           "Endpoint": lambda_alias_arn(cfg), "ReturnSubscriptionArn": True}),
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
    # a stop condition for --env aws runs (aws.guardrails.stop_condition_alarms): on a metric nothing
    # publishes unless a test does, so it stays OK; no actions (it notifies nobody)
    calls.append(_call("cloudwatch", region, "put_metric_alarm", {
        "AlarmName": STOP_CONDITION_ALARM, "AlarmDescription": "gameday: a run on this account stops when this fires",
        "Namespace": "gameday", "MetricName": "StopCondition", "Statistic": "Maximum", "Period": prof.period_s,
        "EvaluationPeriods": 1, "Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching", "ActionsEnabled": False}))
    subnets = [{"$ref": f"subnet:{region}:{az}"} for az in cfg.az_names(region)]
    calls += [
        _call("ecs", region, "create_cluster", {"clusterName": "gameday", "tags": _tags("key", "value")}),
        _call("ecs", region, "register_task_definition", {
            "family": "gameday-service", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "service", "image": "gameday/reference-service",
                                      "memory": 256, "cpu": 256, "essential": True,
                                      "portMappings": [{"containerPort": 8080}]}]}),
        _call("ecs", region, "create_service", {
            "cluster": "gameday", "serviceName": "gameday-service", "taskDefinition": "gameday-service",
            "desiredCount": cfg.service.desired_tasks, "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": {
                "subnets": subnets, "securityGroups": [{"$ref": f"sg:{region}"}], "assignPublicIp": "DISABLED"}},
            "tags": _tags("key", "value")}),
    ]
    return calls


def _tags(key: str, value: str) -> list[dict]:
    """STACK_TAGS in a service's spelling of a tag list (EC2/ELB: Key/Value; ECS: key/value)."""
    return [{key: k, value: v} for k, v in STACK_TAGS.items()]


def _network_calls(cfg: GamedayConfig, prof, region: str, index: int) -> list[dict]:
    """What a region's stack stands in, as a real one does: a VPC with one subnet per AZ (all on the
    VPC's default network ACL, as subnets are unless associated with another), an application
    load balancer in those subnets with a listener and an "ip" target group the load balancer
    component registers the tasks in. The addresses are data only: nothing routes 10.x."""
    vpc = {"$ref": f"vpc:{region}"}
    calls = [_call("ec2", region, "create_vpc", {
        "CidrBlock": f"10.{index}.0.0/16",
        "TagSpecifications": [{"ResourceType": "vpc", "Tags": _tags("Key", "Value")}]},
        save=f"vpc:{region}", pick=("Vpc", "VpcId")),
        # as ECS's awsvpc tasks expect (and moto's RunTask fails without: it reads the ENI's private DNS name)
        _call("ec2", region, "modify_vpc_attribute", {"VpcId": vpc, "EnableDnsHostnames": {"Value": True}})]
    for j, az in enumerate(cfg.az_names(region)):
        calls.append(_call("ec2", region, "create_subnet", {
            "VpcId": vpc, "CidrBlock": f"10.{index}.{j}.0/24", "AvailabilityZone": az,
            "TagSpecifications": [{"ResourceType": "subnet", "Tags": _tags("Key", "Value")}]},
            save=f"subnet:{region}:{az}", pick=("Subnet", "SubnetId")))
    calls += [
        _call("ec2", region, "describe_network_acls", {"Filters": [
            {"Name": "vpc-id", "Values": [vpc]}, {"Name": "default", "Values": ["true"]}]},
            save=f"nacl:{region}", pick=("NetworkAcls", 0, "NetworkAclId")),
        # named outright: moto's CreateService requires securityGroups, where ECS takes the VPC's default
        _call("ec2", region, "describe_security_groups", {"Filters": [
            {"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}]},
            save=f"sg:{region}", pick=("SecurityGroups", 0, "GroupId")),
        _call("elbv2", region, "create_load_balancer", {
            "Name": cfg.lb_name(region), "Type": "application", "Scheme": "internet-facing",
            "Subnets": [{"$ref": f"subnet:{region}:{az}"} for az in cfg.az_names(region)],
            "Tags": _tags("Key", "Value")},
            save=f"lb:{region}", pick=("LoadBalancers", 0, "LoadBalancerArn")),
        _call("elbv2", region, "create_target_group", {
            "Name": f"gameday-tg-{region}", "Protocol": "HTTP", "Port": 8080, "VpcId": vpc, "TargetType": "ip",
            "HealthCheckPath": cfg.service.health_path, "Tags": _tags("Key", "Value"),
            # what the local load balancer's checks do (the profile), as far as the API can say it:
            # ELBv2's interval is 5-300 s, so a compressed 0.5 s reads as 5 s (--env aws's deadlines
            # read these: they are then longer than the stand-in needs, never shorter)
            "HealthCheckIntervalSeconds": max(5, math.ceil(prof.health_check_interval_s)),
            "HealthyThresholdCount": prof.healthy_threshold, "UnhealthyThresholdCount": prof.unhealthy_threshold},
            save=f"target_group:{region}", pick=("TargetGroups", 0, "TargetGroupArn")),
        _call("elbv2", region, "create_listener", {
            "LoadBalancerArn": {"$ref": f"lb:{region}"}, "Protocol": "HTTP", "Port": 80,
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": {"$ref": f"target_group:{region}"}}]}),
    ]
    return calls


def lambda_alias_arn(cfg: GamedayConfig) -> str:
    """The ARN of the alias the topics invoke (known before the function exists: every region's
    plan subscribes it, and only the failover region's creates the function)."""
    return f"arn:aws:lambda:{cfg.failover.region}:{LOCAL_ACCOUNT_ID}:function:{cfg.aws.lambda_name}:{LAMBDA_ALIAS}"


def _lambda_calls(cfg: GamedayConfig) -> list[dict]:
    """The failover function as AWS holds it, in its region: an execution role, the function
    (Handler is the harness's handler spec; the code is a placeholder: the local Lambda runner runs
    the handler, moto never does), version 1 and the alias the topics invoke."""
    import base64
    import io
    import json
    import zipfile

    region, name = cfg.failover.region, cfg.aws.lambda_name
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("README.txt", "gameday: the local Lambda runner runs this function's Handler\n")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                      "Principal": {"Service": "lambda.amazonaws.com"}}]}
    return [
        _call("iam", region, "create_role", {"RoleName": LAMBDA_ROLE, "AssumeRolePolicyDocument": json.dumps(trust)},
              save="lambda_role", pick=("Role", "Arn")),
        _call("lambda", region, "create_function", {
            "FunctionName": name, "Runtime": "python3.11", "Role": {"$ref": "lambda_role"},
            "Handler": cfg.failover.handler or "gameday.sut.failover_lambda:handler",
            "Code": {"ZipFile": {"$b64": base64.b64encode(buf.getvalue()).decode()}},
            # the runner's timeout (failover.timeout_s), in Lambda's whole seconds
            "Timeout": max(1, math.ceil(cfg.failover.timeout_s)), "Tags": STACK_TAGS}, save="lambda", pick=("FunctionArn",)),
        _call("lambda", region, "publish_version", {"FunctionName": name}),
        _call("lambda", region, "create_alias", {"FunctionName": name, "Name": LAMBDA_ALIAS, "FunctionVersion": "1"},
              save="lambda_alias", pick=("AliasArn",)),
    ]


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
    cfg = ctx.config
    out: dict[str, list[dict]] = {r: _region_calls(cfg, ctx.profile, r, i) for i, r in enumerate(cfg.regions)}
    out[cfg.failover.region].extend(_lambda_calls(cfg))
    out.setdefault(ROUTE53_HOME, []).extend(_route53_calls(ctx))
    return out


def provisioned(ctx: LocalContext, results: dict[str, str]) -> Provisioned:
    """What every component reads, from the values the plan's calls saved."""
    cfg = ctx.config
    return Provisioned(
        hosted_zone_id=results["zone"].split("/")[-1],
        topic_arns={r: results[f"topic:{r}"] for r in cfg.regions},
        alarm_names={r: alarm_names(cfg, r) for r in cfg.regions},
        health_check_ids={r: results[f"health_check:{r}"] for r in cfg.regions if f"health_check:{r}" in results},
        vpc_ids={r: results[f"vpc:{r}"] for r in cfg.regions},
        subnet_ids={r: {az: results[f"subnet:{r}:{az}"] for az in cfg.az_names(r)} for r in cfg.regions},
        network_acl_ids={r: results[f"nacl:{r}"] for r in cfg.regions},
        security_group_ids={r: results[f"sg:{r}"] for r in cfg.regions},
        load_balancer_arns={r: results[f"lb:{r}"] for r in cfg.regions},
        target_group_arns={r: results[f"target_group:{r}"] for r in cfg.regions},
        lambda_arn=results["lambda"], lambda_alias_arn=results["lambda_alias"])


def provision(ctx: LocalContext) -> Provisioned:
    """The plan over HTTP, against moto servers that already serve (one thread per server: each
    loads its service backends on first use, most of the cost, on its own core)."""
    plans = plan(ctx)
    with ThreadPoolExecutor(len(plans)) as pool:
        parts = list(pool.map(lambda calls: apply_plan(calls, ctx.internal_client), plans.values()))
    return provisioned(ctx, {k: v for part in parts for k, v in part.items()})
