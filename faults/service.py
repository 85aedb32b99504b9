"""Service faults: a share of the requests a region's load balancer routes to its targets are
answered with a 5XX, as a failing deployment's tasks would answer them (ALB counts them in
HTTPCode_Target_5XX_Count, so the region's target-5xx alarm sees them)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gameday.faults.base import Fault, Region, Share

TargetStatus = Annotated[int, Field(ge=500, le=599)]   # a target's own server error


class FailResponses(Fault):
    """A share of the requests the region's load balancer routes to its targets are answered
    with `status` by the target (counted in HTTPCode_Target_5XX_Count), without reaching the
    service: nothing such a request asked for is done. The choice is deterministic (every
    1/share-th request, spread evenly), so the first N requests get floor(N x share) errors."""

    kind: Literal["fail_responses"] = "fail_responses"
    capabilities = ("fail_responses",)

    region: Region
    share: Share = 0.5
    status: TargetStatus = 500

    @property
    def target(self) -> str:
        return self.region

    def regions_used(self) -> dict[str, str]:
        return {"region": self.region}

    def describe(self) -> str:
        return (f"{self.share:.0%} of the requests to {self.region}'s targets are answered HTTP {self.status} "
                f"by the target (HTTPCode_Target_5XX_Count), without reaching the service")
