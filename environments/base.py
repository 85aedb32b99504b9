"""The one Environment shape that local, docker and aws all give (docs/architecture.md).

An environment is the composition root of a run: it knows the regions, hands out boto3
clients bound to the right endpoint, names the service's DNS name, and offers the fault
primitives it can implement (`capabilities`). Scenarios never branch on the kind: a
scenario that needs a capability the environment lacks is skipped with the reason.
"""

from __future__ import annotations

import abc
from typing import Any

from gameday.config import GamedayConfig, TimeProfile

# Fault primitives an environment may offer.
CAPABILITIES = frozenset({
    "stop_tasks", "lose_az", "block_data_plane", "block_control_plane",
    "pause_replication", "api_fault", "lambda_fault", "replication_drop",
})


class CapabilityMissing(Exception):
    """The environment cannot do this fault; scenarios skip with this message."""


class Environment(abc.ABC):
    kind: str = "?"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, config: GamedayConfig):
        self.config = config

    @property
    def profile(self) -> TimeProfile:
        return self.config.profile(self.kind)

    @property
    def regions(self) -> tuple[str, ...]:
        return self.config.regions

    @property
    def service_name(self) -> str:
        return self.config.service.name

    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise CapabilityMissing(f"the {self.kind} environment cannot {capability.replace('_', ' ')}")

    # lifecycle
    @abc.abstractmethod
    def start(self) -> "Environment": ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> "Environment":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # clients and names
    @abc.abstractmethod
    def client(self, service: str, region: str):
        """boto3 client as a customer sees AWS (API faults and blocked control planes apply)."""

    @abc.abstractmethod
    def observer(self, service: str, region: str):
        """boto3 client for the harness's own observations, not subject to injected faults."""

    @abc.abstractmethod
    def lb_url(self, region: str) -> str: ...

    @abc.abstractmethod
    def region_of_address(self, address: str) -> str | None: ...

    @abc.abstractmethod
    def resolver(self, honour_ttl: bool = True):
        """A gameday.resolver.ServiceResolver on the environment's DNS."""

    @abc.abstractmethod
    def status(self) -> dict: ...

    @abc.abstractmethod
    def events(self, since: int = 0, kind: str | None = None) -> list[dict]: ...
