"""The one Environment shape that local, docker and aws all give (docs/architecture.md).

An environment is the composition root of a run: it knows the regions, hands out boto3
clients bound to the right endpoint, names the service's DNS name, and offers the fault
primitives it can implement (`capabilities`). Scenarios never branch on the kind: a
scenario that needs a capability the environment lacks is skipped with the reason.

Faults are data (gameday.faults); each environment applies them with its own driver table
{fault kind -> driver} (`fault_drivers`): `check_fault`, `apply` and `revert` go through it.
A kind without a driver is CapabilityMissing. This module imports no fault module: faults
depend on environments' interface, never the other way round.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from gameday.config import GamedayConfig, TimeProfile

if TYPE_CHECKING:
    from gameday.faults.base import Fault

# Fault primitives an environment may offer.
CAPABILITIES = frozenset({
    "stop_tasks", "lose_az", "block_data_plane", "block_control_plane",
    "pause_replication", "api_fault", "lambda_fault", "replication_drop", "fail_responses",
})


class CapabilityMissing(Exception):
    """The environment cannot do this fault; scenarios skip with this message."""


class FaultDriver:
    """How one environment does one fault: built per fault from the environment's driver table.
    `revert` is idempotent and works without `applied` (what `apply` returned), because after a
    SIGKILL between applying and journaling only the fault's params are on disk."""

    def __init__(self, env: "Environment", fault: "Fault"):
        self.env = env
        self.fault = fault

    def check(self) -> None:
        """This environment's own limits (guardrails, what its backend can do): FaultError
        before anything is journaled."""

    def apply(self) -> dict:
        raise NotImplementedError

    def revert(self, applied: dict | None = None) -> dict:
        raise NotImplementedError


DriverTable = Mapping[str, Callable[["Environment", "Fault"], FaultDriver]]


class Environment(abc.ABC):
    kind: str = "?"
    capabilities: frozenset[str] = frozenset()
    fault_drivers: ClassVar[DriverTable] = {}   # fault kind -> driver (a FaultDriver class or factory)

    def __init__(self, config: GamedayConfig):
        self.config = config
        self.endpoints: dict = {}   # how to reach it (a local environment's state file): pid, control_url, ...

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

    # faults
    def driver(self, fault: "Fault") -> FaultDriver:
        make = self.fault_drivers.get(fault.kind)
        if make is None:
            raise CapabilityMissing(f"the {self.kind} environment has no driver for fault kind {fault.kind!r}")
        return make(self, fault)

    def check_fault(self, fault: "Fault") -> None:
        """CapabilityMissing if this environment cannot do the fault; FaultError if the fault does
        not fit it (its regions, the driver's limits). Called before anything is journaled."""
        for cap in fault.required_capabilities:
            self.require(cap)
        driver = self.driver(fault)
        fault.check_regions(self.regions, self.config)
        driver.check()

    def apply(self, fault: "Fault") -> dict:
        """Put the fault in effect; what was done (task ARNs stopped, a rule id), for revert."""
        return self.driver(fault).apply()

    def revert(self, fault: "Fault", applied: dict | None = None) -> dict:
        """Undo the fault (idempotent: a fault not, or no longer, in effect changes nothing)."""
        return self.driver(fault).revert(applied)

    def post_event(self, event: dict, timeout_s: float = 2.0) -> None:
        """Put an event ({"kind": "fault", ...}) on the environment's timeline, if it keeps one."""

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
