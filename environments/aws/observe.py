"""Read-only views of the deployed stack in the shapes the scenarios read from status(): the
service's tasks (ECS ListTasks + DescribeTasks) and its targets' health at the load balancer
(ELBv2 DescribeTargetHealth), per region. The same keys as the local environment's status()
(environments/local/ecs.py, loadbalancer.py), so a scenario reads one shape on every environment.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from gameday.environments.aws.discovery import AZ_TAG, RegionTargets


def service_tasks(env, t: RegionTargets, *, running_only: bool = True) -> list[dict]:
    """The service's tasks whose desired status is RUNNING, as DescribeTasks gives them
    (running_only: only those whose last status is RUNNING too)."""
    ecs = env.observer("ecs", t.region)
    arns: list[str] = []
    name = t.service.rsplit("/", 1)[-1]
    for page in ecs.get_paginator("list_tasks").paginate(cluster=t.cluster, serviceName=name, desiredStatus="RUNNING"):
        arns += page["taskArns"]
    tasks: list[dict] = []
    for i in range(0, len(arns), 100):
        tasks += ecs.describe_tasks(cluster=t.cluster, tasks=arns[i:i + 100], include=["TAGS"])["tasks"]
    return [x for x in tasks if x.get("lastStatus") == "RUNNING"] if running_only else tasks


def task_az(task: dict) -> str | None:
    # real Fargate tasks carry availabilityZone; moto's carry the AZ in a tag (discovery.AZ_TAG)
    return task.get("availabilityZone") or {x["key"]: x["value"] for x in task.get("tags") or []}.get(AZ_TAG)


def ecs_status(env, t: RegionTargets) -> dict:
    """{"desired", "running", "pending", "tasks": [{"task_arn", "task_id", "az", "state"}]}."""
    tasks = [{"task_arn": x["taskArn"], "task_id": x["taskArn"].rsplit("/", 1)[-1], "az": task_az(x),
              "state": x.get("lastStatus")} for x in service_tasks(env, t, running_only=False)]
    running = sum(1 for x in tasks if x["state"] == "RUNNING")
    return {"desired": t.desired, "running": running, "pending": len(tasks) - running, "tasks": tasks}


def target_groups(env, t: RegionTargets) -> list[str]:
    """The service's target groups (its loadBalancers), else every target group of its load balancer."""
    if t.target_groups:
        return list(t.target_groups)
    if not t.load_balancer_arn:
        return []
    elb = env.observer("elbv2", t.region)
    try:
        groups = elb.describe_target_groups(LoadBalancerArn=t.load_balancer_arn)["TargetGroups"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("TargetGroupNotFound", "TargetGroupNotFoundException"):
            return []    # a load balancer without target groups (moto says so with an error)
        raise
    return [g["TargetGroupArn"] for g in groups]


def load_balancer_status(env, t: RegionTargets) -> dict | None:
    """{"url", "healthy", "targets": [{"target", "port", "az", "state", "reason"}]} from DescribeTargetHealth;
    None when the load balancer has no target group (nothing to say about the service's health there)."""
    elb = env.observer("elbv2", t.region)
    targets = []
    groups = target_groups(env, t)
    if not groups:
        return None
    for arn in groups:
        for d in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]:
            h = d.get("TargetHealth", {})
            targets.append({"target": d["Target"]["Id"], "port": d["Target"].get("Port"),
                            "az": d["Target"].get("AvailabilityZone"), "state": h.get("State"),
                            "reason": h.get("Reason")})
    return {"url": env._lb_url(t.region), "healthy": sum(1 for x in targets if x["state"] == "healthy"),
            "targets": targets}
