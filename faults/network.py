"""Region outages: the data plane (the region's load balancer stops answering) and/or the
control plane (the region's AWS API endpoint stops answering)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import model_validator

from gameday.aws import ROUTE53_HOME
from gameday.faults.base import Fault, Region

BlockMode = Literal["hang", "refuse"]
BLOCK_MODES: tuple[str, ...] = get_args(BlockMode)


class BlockRegion(Fault):
    """data_plane: the region's load balancer stops answering clients, mode "hang" (connections
    are accepted and never answered: clients time out) or "refuse" (connections refused).
    control_plane: the region's AWS API endpoint black-holes every call (held until the
    client gives up). Route 53's control plane lives in us-east-1, so blocking us-east-1's
    control plane also stops every Route 53 API call (the Lambda's UPSERT included);
    Route 53's DNS answers (its data plane) keep working."""

    kind: Literal["block_region"] = "block_region"

    region: Region
    data_plane: bool = True
    control_plane: bool = False
    mode: BlockMode = "hang"

    @model_validator(mode="after")
    def _blocks_something(self) -> "BlockRegion":
        if not (self.data_plane or self.control_plane):
            raise ValueError("block at least one of data_plane or control_plane")
        return self

    @property
    def required_capabilities(self) -> tuple[str, ...]:
        return tuple(c for c, on in (("block_data_plane", self.data_plane),
                                     ("block_control_plane", self.control_plane)) if on)

    @property
    def target(self) -> str:
        return self.region

    @property
    def includes_route53(self) -> bool:
        """Blocking this control plane stops Route 53's API too (its home region)."""
        return self.control_plane and self.region == ROUTE53_HOME

    def regions_used(self) -> dict[str, str]:
        return {"region": self.region} if self.data_plane else {}

    def control_plane_regions(self) -> dict[str, str]:
        return {"region": self.region} if self.control_plane else {}

    def describe(self) -> str:
        parts = []
        if self.data_plane:
            how = "accepts connections and never answers" if self.mode == "hang" else "refuses connections"
            parts.append(f"{self.region}'s load balancer {how}")
        if self.control_plane:
            cp = f"{self.region}'s AWS API endpoint stops answering"
            if self.includes_route53:
                cp += " (Route 53's control plane lives in us-east-1: Route 53 API calls fail too)"
            parts.append(cp)
        return "block region " + self.region + ": " + "; ".join(parts)
