"""What the deployed stack is made of, per region: the names the config gives, else the
resources found by `aws.discovery_tags` (Resource Groups Tagging API). Read-only.

A resource that cannot be found is a Problem (one line), not an exception, so that preflight
reports every missing piece at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

# moto's ECS has no Fargate placement: its tasks carry their AZ in this tag (as the local
# environment's tasks do); real ECS reports `availabilityZone` on every Fargate task.
AZ_TAG = "gameday:availability-zone"
# lose_az keeps the service's own subnets on the service itself, so a rollback after a SIGKILL
# (only the intent journaled) still knows what to restore.
ORIGINAL_SUBNETS_TAG = "gameday:lose-az-original-subnets"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the stack, as one line: where, what, and what was expected."""
    where: str
    text: str

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


@dataclass
class RegionTargets:
    region: str
    cluster: str | None = None            # ARN or name
    service: str | None = None
    load_balancer_arn: str | None = None
    lb_dns: str | None = None
    lb_subnets: list[str] = field(default_factory=list)
    service_subnets: list[str] = field(default_factory=list)
    block_subnets: list[str] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)
    topic_arn: str | None = None
    desired: int = 0
    target_groups: list[str] = field(default_factory=list)   # the ECS service's (its loadBalancers)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def aws_error(e: Exception) -> str:
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        return f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip().rstrip(":")
    return f"{type(e).__name__}: {e}"


def _tagged(env, region: str, resource_type: str) -> list[str]:
    tags = env.config.aws.discovery_tags
    if not tags:
        return []
    api = env.observer("resourcegroupstaggingapi", region)
    arns: list[str] = []
    for page in api.get_paginator("get_resources").paginate(
            TagFilters=[{"Key": k, "Values": [v]} for k, v in tags.items()], ResourceTypeFilters=[resource_type]):
        arns += [m["ResourceARN"] for m in page["ResourceTagMappingList"]]
    return arns


def _one(env, region: str, resource_type: str, what: str, problems: list[Problem]) -> str | None:
    try:
        arns = _tagged(env, region, resource_type)
    except (BotoCoreError, ClientError) as e:
        problems.append(Problem(region, f"cannot discover the {what} by tags: {aws_error(e)}"))
        return None
    tags = ", ".join(f"{k}={v}" for k, v in env.config.aws.discovery_tags.items())
    if not env.config.aws.discovery_tags:
        problems.append(Problem(region, f"no {what} named in aws.regions.{region} and no aws.discovery_tags to find one"))
    elif not arns:
        problems.append(Problem(region, f"no {what} tagged {tags}"))
    elif len(arns) > 1:
        problems.append(Problem(region, f"{len(arns)} {what}s tagged {tags} ({', '.join(sorted(arns))}): name one "
                                        f"in aws.regions.{region}"))
    else:
        return arns[0]
    return None


def resolve_targets(env) -> tuple[dict[str, RegionTargets], list[Problem]]:
    cfg = env.config
    spec = cfg.aws
    problems: list[Problem] = []
    out: dict[str, RegionTargets] = {}
    topic_name = spec.topic_name or cfg.sns.topic_name
    for region in cfg.regions:
        rs = spec.regions.get(region)
        t = RegionTargets(region)
        t.cluster = (rs and rs.cluster) or _one(env, region, "ecs:cluster", "ECS cluster", problems)
        t.service = (rs and rs.service) or _one(env, region, "ecs:service", "ECS service", problems)
        t.load_balancer_arn = (rs and rs.load_balancer) or _one(
            env, region, "elasticloadbalancing:loadbalancer", "load balancer", problems)
        t.alarms = list(rs.alarms) if rs and rs.alarms is not None else [
            cfg.alarm_name(region, name) for name, a in cfg.alarms.items() if a.enabled]
        if t.cluster and t.service:
            try:
                svcs = env.observer("ecs", region).describe_services(cluster=t.cluster, services=[t.service],
                                                                     include=["TAGS"])["services"]
                if svcs:
                    s = svcs[0]
                    t.service = s["serviceArn"]
                    t.desired = s.get("desiredCount", 0)
                    t.target_groups = [lb["targetGroupArn"] for lb in s.get("loadBalancers") or []
                                       if lb.get("targetGroupArn")]
                    tags = {x["key"]: x["value"] for x in s.get("tags") or []}
                    t.service_subnets = (tags[ORIGINAL_SUBNETS_TAG].split(",") if tags.get(ORIGINAL_SUBNETS_TAG)
                                         else list(s.get("networkConfiguration", {}).get("awsvpcConfiguration", {})
                                                   .get("subnets", [])))
            except (BotoCoreError, ClientError):
                pass  # preflight reports the service
        if t.load_balancer_arn:
            try:
                elb = env.observer("elbv2", region)
                key = ({"LoadBalancerArns": [t.load_balancer_arn]} if t.load_balancer_arn.startswith("arn:")
                       else {"Names": [t.load_balancer_arn]})
                lb = elb.describe_load_balancers(**key)["LoadBalancers"][0]
                t.load_balancer_arn, t.lb_dns = lb["LoadBalancerArn"], lb["DNSName"]
                t.lb_subnets = [z["SubnetId"] for z in lb.get("AvailabilityZones", []) if z.get("SubnetId")]
            except (BotoCoreError, ClientError, IndexError):
                pass
        t.block_subnets = list(rs.subnets) if rs and rs.subnets else list(dict.fromkeys(t.service_subnets + t.lb_subnets))
        t.topic_arn = f"arn:{env.partition}:sns:{region}:{env.account_id}:{topic_name}"
        out[region] = t
    for region in spec.regions:
        if region not in cfg.regions:
            problems.append(Problem("config", f"aws.regions.{region} is not one of regions {list(cfg.regions)}"))
    return out, problems
