"""ECS faults: stop tasks (through the customer's ECS API), lose an Availability Zone."""

from __future__ import annotations

import dataclasses
import math
import random

from gameday.environments.base import Environment
from gameday.faults.base import AZ_RE, Fault, FaultError, check_fraction, check_positive, check_region, require_control

DEFAULT_CLUSTER = "gameday"   # environments/local/provision.py: Provisioned.cluster


@dataclasses.dataclass(frozen=True)
class StopTasks(Fault):
    """ECS StopTask on running tasks of the service, as a customer (or FIS's
    aws:ecs:stop-task) would: through the AWS API, so API faults and a blocked control plane
    apply. The service scheduler replaces stopped tasks; there is nothing to roll back."""

    kind = "stop_tasks"
    capabilities = ("stop_tasks",)

    region: str
    count: int | None = None
    fraction: float | None = None
    all: bool = False
    cluster: str = DEFAULT_CLUSTER
    seed: int | None = None       # which tasks are chosen, for a reproducible run

    def __post_init__(self) -> None:
        check_region(self.region, "region")
        chosen = [n for n, v in (("count", self.count), ("fraction", self.fraction), ("all", self.all or None))
                  if v is not None]
        if len(chosen) != 1:
            raise FaultError("stop_tasks: give exactly one of count=N, fraction=0..1 or all=True"
                             + (f" (got {', '.join(chosen)})" if chosen else ""))
        if self.count is not None:
            check_positive(self.count, "count", integer=True)
        if self.fraction is not None:
            check_fraction(self.fraction, "fraction")
        if not isinstance(self.all, bool):
            raise FaultError(f"all: must be true or false, got {self.all!r}")
        if not isinstance(self.cluster, str) or not self.cluster:
            raise FaultError(f"cluster: must be a cluster name, got {self.cluster!r}")

    @property
    def target(self) -> str:
        return self.region

    def regions_used(self) -> dict[str, str]:
        return {"region": self.region}

    def _how_many(self) -> str:
        if self.all:
            return "all running tasks"
        if self.count is not None:
            return f"{self.count} task{'s' if self.count != 1 else ''}"
        return f"{self.fraction:.0%} of the running tasks"

    def describe(self) -> str:
        return (f"stop {self._how_many()} of the service in {self.region} (ECS StopTask; "
                f"the service scheduler starts replacements)")

    def _choose(self, arns: list[str]) -> list[str]:
        if self.all:
            n = len(arns)
        elif self.count is not None:
            n = min(self.count, len(arns))
        else:
            n = max(1, math.ceil(self.fraction * len(arns) - 1e-9))
        return random.Random(self.seed).sample(sorted(arns), n)

    def inject(self, env: Environment) -> dict:
        ecs = env.client("ecs", self.region)
        arns: list[str] = []
        for page in ecs.get_paginator("list_tasks").paginate(cluster=self.cluster, desiredStatus="RUNNING"):
            arns.extend(page["taskArns"])
        if not arns:
            raise FaultError(f"stop_tasks: no running tasks in cluster {self.cluster!r} in {self.region}")
        victims = self._choose(arns)
        stopped = []
        for arn in victims:
            ecs.stop_task(cluster=self.cluster, task=arn, reason=f"gameday fault: {self.describe()}")
            stopped.append(arn)
        return {"stopped": stopped, "running_before": len(arns)}

    def rollback(self, env: Environment, injected: dict | None = None) -> dict:
        return {"note": "nothing to undo: the ECS service scheduler replaces stopped tasks itself"}


@dataclasses.dataclass(frozen=True)
class LoseAz(Fault):
    """An Availability Zone becomes unavailable: its tasks stop and the scheduler places
    replacements in the remaining AZs only, until the AZ comes back."""

    kind = "lose_az"
    capabilities = ("lose_az",)

    region: str
    az: str          # "us-east-1a", or just the letter "a"

    def __post_init__(self) -> None:
        check_region(self.region, "region")
        az = self.az
        if isinstance(az, str) and len(az) == 1:
            az = self.region + az
            object.__setattr__(self, "az", az)
        if not isinstance(az, str) or not AZ_RE.fullmatch(az) or not az.startswith(self.region):
            raise FaultError(f"az: {self.az!r} is not an AZ of {self.region} (like {self.region}a, or just a)")

    @property
    def target(self) -> str:
        return f"{self.region}/{self.az}"

    def regions_used(self) -> dict[str, str]:
        return {"region": self.region}

    def check(self, env: Environment) -> None:
        super().check(env)
        azs = getattr(env, "config", None) and env.config.az_names(self.region)
        if azs and self.az not in azs:
            raise FaultError(f"lose_az: {self.az} is not one of the service's AZs in {self.region}: {', '.join(azs)}")

    def describe(self) -> str:
        return (f"lose AZ {self.az}: its tasks stop and no task is placed there until it is back")

    def _set(self, env: Environment, available: bool) -> dict:
        require_control(env)("POST", "/ecs/az", {"region": self.region, "az": self.az, "available": available})
        return {"az": self.az, "available": available}

    def inject(self, env: Environment) -> dict:
        return self._set(env, False)

    def rollback(self, env: Environment, injected: dict | None = None) -> dict:
        return self._set(env, True)
