"""Preflight: before anything runs, every resource of the stack exists and is wired the way the
seed architecture needs it (docs/architecture.md): alarm -> topic, topic -> failover Lambda, the record
exists with a TTL, the table is a global table in every region, the services run their
minimum task count in more than one AZ. Read-only; each problem is one line.

    problems = preflight(env)      # [] when the stack is ready
"""

from __future__ import annotations

import time
from typing import Callable

from botocore.exceptions import BotoCoreError, ClientError

from gameday import aws
from gameday.environments.aws.discovery import AZ_TAG, Problem, RegionTargets, aws_error

AWS_ERRORS = (BotoCoreError, ClientError)


def _arn_name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1] if arn.startswith("arn:") else arn


def check_ecs(env, t: RegionTargets) -> list[Problem]:
    where = t.region
    if not (t.cluster and t.service):
        return []  # discovery already said what is missing
    ecs = env.observer("ecs", t.region)
    out: list[Problem] = []
    clusters = ecs.describe_clusters(clusters=[t.cluster])["clusters"]
    if not clusters or clusters[0].get("status") != "ACTIVE":
        return [Problem(where, f"ECS cluster {_arn_name(t.cluster)} not found (or not ACTIVE)")]
    svcs = ecs.describe_services(cluster=t.cluster, services=[t.service])["services"]
    if not svcs or svcs[0].get("status") != "ACTIVE":
        return [Problem(where, f"ECS service {_arn_name(t.service)} not found in cluster {_arn_name(t.cluster)}")]
    svc = svcs[0]
    need = env.config.service.min_tasks
    if svc.get("desiredCount", 0) < need:
        out.append(Problem(where, f"ECS service {svc['serviceName']} wants {svc.get('desiredCount', 0)} tasks; "
                                  f"the seed needs at least service.min_tasks={need}"))
    arns: list[str] = []
    for page in ecs.get_paginator("list_tasks").paginate(cluster=t.cluster, serviceName=svc["serviceName"],
                                                         desiredStatus="RUNNING"):
        arns += page["taskArns"]
    azs: dict[str, int] = {}
    running = 0
    for i in range(0, len(arns), 100):
        for task in ecs.describe_tasks(cluster=t.cluster, tasks=arns[i:i + 100], include=["TAGS"])["tasks"]:
            if task.get("lastStatus") != "RUNNING":
                continue
            running += 1
            az = task.get("availabilityZone") or {x["key"]: x["value"] for x in task.get("tags") or []}.get(AZ_TAG, "?")
            azs[az] = azs.get(az, 0) + 1
    if running < need:
        out.append(Problem(where, f"ECS service {svc['serviceName']} runs {running} task(s); needs at least "
                                  f"service.min_tasks={need}"))
    if len([a for a in azs if a != "?"]) < 2:
        spread = ", ".join(f"{a}={n}" for a, n in sorted(azs.items())) or "no tasks"
        out.append(Problem(where, f"ECS service {svc['serviceName']} runs its tasks in fewer than 2 AZs ({spread})"))
    return out


def check_load_balancer(env, t: RegionTargets) -> list[Problem]:
    if not t.load_balancer_arn:
        return []
    if not t.lb_dns:
        return [Problem(t.region, f"load balancer {_arn_name(t.load_balancer_arn)} not found")]
    lb = env.observer("elbv2", t.region).describe_load_balancers(LoadBalancerArns=[t.load_balancer_arn])["LoadBalancers"][0]
    state = lb.get("State", {}).get("Code", "?")
    out = []
    if state != "active":
        out.append(Problem(t.region, f"load balancer {lb['LoadBalancerName']} is {state}, not active"))
    if len({z.get("ZoneName") for z in lb.get("AvailabilityZones", [])}) < 2:
        out.append(Problem(t.region, f"load balancer {lb['LoadBalancerName']} is in fewer than 2 AZs"))
    return out


def check_alarms(env, t: RegionTargets) -> list[Problem]:
    cw = env.observer("cloudwatch", t.region)
    found = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=t.alarms)["MetricAlarms"]} if t.alarms else {}
    out = []
    for name in t.alarms:
        a = found.get(name)
        if a is None:
            out.append(Problem(t.region, f"alarm {name} not found"))
        elif t.topic_arn not in a.get("AlarmActions", []):
            out.append(Problem(t.region, f"alarm {name} does not publish to topic {t.topic_arn} "
                                         f"(AlarmActions: {', '.join(a.get('AlarmActions', [])) or 'none'})"))
        elif not a.get("ActionsEnabled", True):
            out.append(Problem(t.region, f"alarm {name} has its actions disabled"))
    return out


def lambda_arn(env) -> str:
    spec = env.config.aws
    return f"arn:{env.partition}:lambda:{env.config.failover.region}:{env.account_id}:function:{spec.lambda_name}"


def check_topic(env, t: RegionTargets) -> list[Problem]:
    sns = env.observer("sns", t.region)
    try:
        sns.get_topic_attributes(TopicArn=t.topic_arn)
    except ClientError:
        return [Problem(t.region, f"SNS topic {t.topic_arn} not found")]
    want = lambda_arn(env)
    alias = env.config.aws.lambda_alias
    ok_endpoints = {f"{want}:{alias}"} if alias else {want}
    subs = []
    for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=t.topic_arn):
        subs += page["Subscriptions"]
    if not any(s.get("Protocol") == "lambda" and s.get("Endpoint") in ok_endpoints for s in subs):
        have = ", ".join(f"{s.get('Protocol')}:{s.get('Endpoint')}" for s in subs) or "no subscriptions"
        return [Problem(t.region, f"SNS topic {t.topic_arn.rsplit(':', 1)[-1]} does not invoke the failover Lambda "
                                  f"{' or '.join(sorted(ok_endpoints))} (has {have})")]
    return []


def check_lambda(env) -> list[Problem]:
    spec = env.config.aws
    region = env.config.failover.region
    lam = env.observer("lambda", region)
    try:
        lam.get_function(FunctionName=spec.lambda_name)
    except ClientError:
        return [Problem(region, f"failover Lambda {spec.lambda_name} not found")]
    if spec.lambda_alias:
        try:
            lam.get_alias(FunctionName=spec.lambda_name, Name=spec.lambda_alias)
        except ClientError:
            return [Problem(region, f"failover Lambda alias {spec.lambda_name}:{spec.lambda_alias} not found")]
    return []


def check_record(env) -> list[Problem]:
    spec = env.config.aws
    where = "route53"
    if not spec.hosted_zone_id:
        return [Problem("config", "aws.hosted_zone_id is required (the zone of the service's record)")]
    r53 = env.observer("route53", "us-east-1")
    try:
        r53.get_hosted_zone(Id=spec.hosted_zone_id)
    except ClientError:
        return [Problem(where, f"hosted zone {spec.hosted_zone_id} not found")]
    name = env.record_name
    sets = aws.record_sets(r53, spec.hosted_zone_id, name)
    if not sets:
        return [Problem(where, f"A record {name} not found in zone {spec.hosted_zone_id}")]
    for rec in sets:   # a weighted or failover record: each of its sets
        which = f"A record {name}" + (f" (set {rec['SetIdentifier']})" if rec.get("SetIdentifier") else "")
        if "TTL" not in rec:
            return [Problem(where, f"{which} has no TTL (an alias record: clients' caches cannot be "
                                   f"measured; the seed uses a plain A record with a TTL)")]
        values = [v["Value"] for v in rec.get("ResourceRecords", [])]
        if values and not any(env.region_of_address(v) for v in values):
            return [Problem(where, f"{which} -> {', '.join(values)} points at no region's load balancer "
                                   f"(set aws.regions.<r>.addresses)")]
    return []


def check_table(env) -> list[Problem]:
    table = env.table
    regions = list(env.config.regions)
    out: list[Problem] = []
    desc = None
    for region in regions:
        try:
            d = env.observer("dynamodb", region).describe_table(TableName=table)["Table"]
        except ClientError:
            out.append(Problem(region, f"DynamoDB table {table} not found"))
            continue
        desc = desc or d
        if d.get("TableStatus") != "ACTIVE":
            out.append(Problem(region, f"DynamoDB table {table} is {d.get('TableStatus')}, not ACTIVE"))
    if desc is None:
        return out
    replicas = {r["RegionName"]: r.get("ReplicaStatus", "?") for r in desc.get("Replicas") or []}
    if not replicas:
        out.append(Problem("dynamodb", f"table {table} is not a global table (no replicas)"))
        return out
    missing = [r for r in regions if r not in replicas and r != desc.get("TableArn", "::::").split(":")[3]]
    if missing:
        out.append(Problem("dynamodb", f"global table {table} has no replica in {', '.join(missing)} "
                                       f"(replicas: {', '.join(sorted(replicas))})"))
    for r, st in sorted(replicas.items()):
        if r in regions and st != "ACTIVE":
            out.append(Problem("dynamodb", f"global table {table}: replica in {r} is {st}"))
    return out


def check_stop_conditions(env) -> list[Problem]:
    from gameday.environments.aws.guardrails import parse_alarm_ref

    out = []
    for ref in env.config.aws.guardrails.stop_condition_alarms:
        region, name = parse_alarm_ref(ref)
        if not env.observer("cloudwatch", region).describe_alarms(AlarmNames=[name])["MetricAlarms"]:
            out.append(Problem(region, f"stop-condition alarm {name} not found"))
    return out


def check_nacl_rules(env, t: RegionTargets) -> list[Problem]:
    if env.backend("block_region") != "nacl" or not t.block_subnets:
        return []
    rule = env.config.aws.guardrails.nacl_rule_number
    ec2 = env.observer("ec2", t.region)
    acls = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": t.block_subnets}])["NetworkAcls"]
    out = []
    for acl in acls:
        used = [e for e in acl["Entries"] if e["RuleNumber"] == rule and not _is_gameday_deny(e)]
        if used:
            out.append(Problem(t.region, f"network ACL {acl['NetworkAclId']} already uses rule {rule}, which "
                                         f"block_region needs for its deny entries (aws.guardrails.nacl_rule_number)"))
        lowest = min((e["RuleNumber"] for e in acl["Entries"] if e["RuleAction"] == "allow"), default=32767)
        if lowest < rule:
            out.append(Problem(t.region, f"network ACL {acl['NetworkAclId']} has an allow rule {lowest} before "
                                         f"the reserved deny rule {rule}: the deny would not apply"))
    return out


def _is_gameday_deny(entry: dict) -> bool:
    return entry["RuleAction"] == "deny" and entry.get("Protocol") == "-1" and entry.get("CidrBlock") == "0.0.0.0/0"


def preflight(env, *, timings: dict | None = None) -> list[Problem]:
    """Every problem with the stack (read-only API calls only); [] when it is ready."""
    checks: list[tuple[str, Callable[[], list[Problem]]]] = []
    for t in env.targets.values():
        checks += [(f"ecs {t.region}", lambda t=t: check_ecs(env, t)),
                   (f"load balancer {t.region}", lambda t=t: check_load_balancer(env, t)),
                   (f"alarms {t.region}", lambda t=t: check_alarms(env, t)),
                   (f"topic {t.region}", lambda t=t: check_topic(env, t)),
                   (f"network ACLs {t.region}", lambda t=t: check_nacl_rules(env, t))]
    checks += [("lambda", lambda: check_lambda(env)), ("record", lambda: check_record(env)),
               ("table", lambda: check_table(env)), ("stop conditions", lambda: check_stop_conditions(env))]
    problems: list[Problem] = []
    for name, check in checks:
        t0 = time.monotonic()
        try:
            problems += check()
        except AWS_ERRORS as e:
            problems.append(Problem(name, f"could not check: {aws_error(e)}"))
        if timings is not None:
            timings[name] = round(time.monotonic() - t0, 4)
    return problems
