"""Signal source `ecs:DescribeTasks`: the service's tasks starting and stopping, as the `ecs` events
the local scheduler emits (gameday/runlog.py EcsEvent: action task_running / task_stopped, region,
task, az, reason), so the report's task band and the scenarios that read them see the stack's own
tasks (environments/aws/signals.py's contract).

Each read lists the service's tasks (ListTasks, desiredStatus RUNNING and STOPPED: ECS shows a
stopped task for about an hour) and describes the ones whose state it has not reported yet:
`task_running` stamped with the task's startedAt, `task_stopped` with its stoppedAt and
stoppedReason (ECS's words: "Task stopped by user", "Scaling activity initiated by ..."). Tasks
that started or stopped before the run are remembered, not reported. Interval: a quarter of the
alarm period, at least 1 s (ListTasks/DescribeTasks are throttled at 20 per second, with bursts).
"""

from __future__ import annotations

from gameday.environments.aws.observe import task_az
from gameday.environments.aws.signals_cloudwatch import _epoch as aws_epoch, interval_for, started_at

API = "ecs:DescribeTasks"


def _epoch(t) -> float | None:
    return None if t is None else aws_epoch(t)


class EcsTaskSource:
    name = API

    def __init__(self, env, *, interval_s: float, since: float):
        self.env = env
        self.interval_s = interval_s
        self.since = since
        self.reported: dict[str, set[str]] = {"RUNNING": set(), "STOPPED": set()}   # task ARNs told
        self.calls = 0

    def _tasks(self, t) -> list[dict]:
        ecs = self.env.observer("ecs", t.region)
        name = t.service.rsplit("/", 1)[-1]
        arns: list[str] = []
        for status in ("RUNNING", "STOPPED"):
            for page in ecs.get_paginator("list_tasks").paginate(cluster=t.cluster, serviceName=name,
                                                                 desiredStatus=status):
                self.calls += 1
                arns += page["taskArns"]
        # a stopped task already told changes no more: only the rest is described
        fresh = [a for a in dict.fromkeys(arns) if a not in self.reported["STOPPED"]]
        tasks: list[dict] = []
        for i in range(0, len(fresh), 100):
            self.calls += 1
            tasks += ecs.describe_tasks(cluster=t.cluster, tasks=fresh[i:i + 100], include=["TAGS"])["tasks"]
        return tasks

    def poll(self) -> list[dict]:
        out = []
        for r, t in self.env.targets.items():
            if not (t.cluster and t.service):
                continue
            for task in self._tasks(t):
                out += self._changes(r, task)
        return sorted(out, key=lambda e: e["time"])

    def _changes(self, region: str, task: dict) -> list[dict]:
        arn, out = task["taskArn"], []
        base = {"kind": "ecs", "region": region, "task": arn.rsplit("/", 1)[-1], "az": task_az(task)}
        started = _epoch(task.get("startedAt"))
        if started is not None and arn not in self.reported["RUNNING"]:
            self.reported["RUNNING"].add(arn)
            if started >= self.since:
                out.append({**base, "action": "task_running", "time": started})
        stopped = _epoch(task.get("stoppedAt"))
        if task.get("lastStatus") == "STOPPED" and stopped is not None and arn not in self.reported["STOPPED"]:
            self.reported["STOPPED"].add(arn)
            self.reported["RUNNING"].add(arn)
            if stopped >= self.since:
                out.append({**base, "action": "task_stopped", "time": stopped, "reason": task.get("stoppedReason")})
        return out

    def status(self) -> dict:
        return {"calls": self.calls, "tasks_seen": len(self.reported["RUNNING"] | self.reported["STOPPED"])}


def make(env) -> EcsTaskSource | None:
    """None when no region has an ECS service."""
    if not any(t.cluster and t.service for t in env.targets.values()):
        return None
    return EcsTaskSource(env, interval_s=interval_for(env.profile.period_s), since=started_at(env))
