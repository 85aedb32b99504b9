"""ECS faults: stop tasks (through the customer's ECS API), lose an Availability Zone."""

from __future__ import annotations

import math
import random
import re
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationInfo, field_validator, model_validator

from gameday.faults.base import Count, Fault, FaultError, Name, Region, Share

if TYPE_CHECKING:
    from gameday.config import GamedayConfig

DEFAULT_CLUSTER = "gameday"   # environments/local/provision.py: Provisioned.cluster
AZ_RE = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d[a-z]$")


class StopTasks(Fault):
    """ECS StopTask on running tasks of the service, as a customer (or FIS's
    aws:ecs:stop-task) would: through the AWS API, so API faults and a blocked control plane
    apply. The service scheduler replaces stopped tasks; there is nothing to roll back."""

    kind: Literal["stop_tasks"] = "stop_tasks"
    capabilities = ("stop_tasks",)

    region: Region
    count: Count | None = None
    fraction: Share | None = None
    all: bool = False
    cluster: Name = DEFAULT_CLUSTER
    seed: int | None = None       # which tasks are chosen, for a reproducible run

    @model_validator(mode="after")
    def _one_way_to_choose(self) -> "StopTasks":
        chosen = [n for n, v in (("count", self.count), ("fraction", self.fraction), ("all", self.all or None))
                  if v is not None]
        if len(chosen) != 1:
            raise ValueError("give exactly one of count=N, fraction=0..1 or all=True"
                             + (f" (got {', '.join(chosen)})" if chosen else ""))
        return self

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

    def how_many(self, running: int) -> int:
        """How many of `running` tasks this fault stops."""
        if self.all:
            return running
        if self.count is not None:
            return min(self.count, running)
        return max(1, math.ceil(self.fraction * running - 1e-9))

    def choose(self, arns: list[str]) -> list[str]:
        """The tasks to stop (the same ones for the same seed and tasks)."""
        return random.Random(self.seed).sample(sorted(arns), self.how_many(len(arns)))


class LoseAz(Fault):
    """An Availability Zone becomes unavailable: its tasks stop and the scheduler places
    replacements in the remaining AZs only, until the AZ comes back."""

    kind: Literal["lose_az"] = "lose_az"
    capabilities = ("lose_az",)

    region: Region
    az: str          # "us-east-1a", or just the letter "a" (stored as the full name)

    @field_validator("az")
    @classmethod
    def _az_of_region(cls, az: str, info: ValidationInfo) -> str:
        region = info.data.get("region")
        if region is None:
            return az   # the region's own error is the one to read
        full = region + az if len(az) == 1 else az
        if not AZ_RE.fullmatch(full) or not full.startswith(region):
            raise ValueError(f"{az!r} is not an AZ of {region} (like {region}a, or just a)")
        return full

    @property
    def target(self) -> str:
        return f"{self.region}/{self.az}"

    def regions_used(self) -> dict[str, str]:
        return {"region": self.region}

    def check_regions(self, regions: tuple[str, ...], config: "GamedayConfig | None" = None) -> None:
        super().check_regions(regions, config)
        azs = config.az_names(self.region) if config is not None else None
        if azs and self.az not in azs:
            raise FaultError(f"lose_az: {self.az} is not one of the service's AZs in {self.region}: {', '.join(azs)}")

    def describe(self) -> str:
        return f"lose AZ {self.az}: its tasks stop and no task is placed there until it is back"
