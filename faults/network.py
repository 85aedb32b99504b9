"""Region outages: the data plane (the region's load balancer stops answering) and/or the
control plane (the region's AWS API endpoint stops answering)."""

from __future__ import annotations

import dataclasses

from gameday.environments.base import Environment
from gameday.faults.base import ROUTE53_HOME, Fault, FaultError, check_choice, check_region, require_control

BLOCK_MODES = ("hang", "refuse")


@dataclasses.dataclass(frozen=True)
class BlockRegion(Fault):
    """data_plane: the region's load balancer stops answering clients, mode "hang" (connections
    are accepted and never answered: clients time out) or "refuse" (connections refused).
    control_plane: the region's AWS API endpoint black-holes every call (held until the
    client gives up). Route 53's control plane lives in us-east-1, so blocking us-east-1's
    control plane also stops every Route 53 API call (the Lambda's UPSERT included);
    Route 53's DNS answers (its data plane) keep working."""

    kind = "block_region"

    region: str
    data_plane: bool = True
    control_plane: bool = False
    mode: str = "hang"

    def __post_init__(self) -> None:
        check_region(self.region, "region")
        for name in ("data_plane", "control_plane"):
            if not isinstance(getattr(self, name), bool):
                raise FaultError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if not (self.data_plane or self.control_plane):
            raise FaultError("block_region: block at least one of data_plane or control_plane")
        check_choice(self.mode, "mode", BLOCK_MODES)

    @property
    def required_capabilities(self) -> tuple[str, ...]:
        return tuple(c for c, on in (("block_data_plane", self.data_plane),
                                     ("block_control_plane", self.control_plane)) if on)

    @property
    def target(self) -> str:
        return self.region

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
            if self.region == ROUTE53_HOME:
                cp += " (Route 53's control plane lives in us-east-1: Route 53 API calls fail too)"
            parts.append(cp)
        return "block region " + self.region + ": " + "; ".join(parts)

    def inject(self, env: Environment) -> dict:
        control = require_control(env)
        done: dict = {}
        if self.data_plane:
            control("POST", "/network/block", {"region": self.region, "mode": self.mode})
            done["data_plane"] = self.mode
        if self.control_plane:
            control("POST", "/control-plane/block", {"region": self.region})
            done["control_plane"] = "blocked"
            done["includes_route53"] = self.region == ROUTE53_HOME
        return done

    def rollback(self, env: Environment, injected: dict | None = None) -> dict:
        control = require_control(env)
        done: dict = {}
        # control plane first: a Lambda retrying its Route 53 call needs it before clients return
        if self.control_plane:
            control("POST", "/control-plane/unblock", {"region": self.region})
            done["control_plane"] = "unblocked"
        if self.data_plane:
            control("POST", "/network/unblock", {"region": self.region})
            done["data_plane"] = "unblocked"
        return done
