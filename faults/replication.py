"""DynamoDB global-table replication faults: pause one direction (as FIS's
aws:dynamodb:global-table-pause-replication), and a broken replicator that silently drops a
share of writes (a mutation for the harness's own tests: the checkers must catch it)."""

from __future__ import annotations

import dataclasses

from gameday.environments.base import Environment
from gameday.faults.base import Fault, FaultError, check_fraction, check_region, require_control


@dataclasses.dataclass(frozen=True)
class PauseReplication(Fault):
    kind = "pause_replication"
    capabilities = ("pause_replication",)

    source: str
    destination: str

    def __post_init__(self) -> None:
        check_region(self.source, "source")
        check_region(self.destination, "destination")
        if self.source == self.destination:
            raise FaultError(f"pause_replication: source and destination are both {self.source}")

    @property
    def target(self) -> str:
        return f"{self.source}->{self.destination}"

    def regions_used(self) -> dict[str, str]:
        return {"source": self.source, "destination": self.destination}

    def describe(self) -> str:
        return (f"pause global-table replication {self.source} -> {self.destination} "
                f"(writes queue up and replicate on resume)")

    def _body(self) -> dict:
        return {"source": self.source, "destination": self.destination}

    def inject(self, env: Environment) -> dict:
        require_control(env)("POST", "/replication/pause", self._body())
        return {"paused": self.target}

    def rollback(self, env: Environment, injected: dict | None = None) -> dict:
        require_control(env)("POST", "/replication/resume", self._body())
        return {"resumed": self.target}


@dataclasses.dataclass(frozen=True)
class ReplicationDrop(Fault):
    kind = "replication_drop"
    capabilities = ("replication_drop",)

    fraction: float

    def __post_init__(self) -> None:
        check_fraction(self.fraction, "fraction")

    @property
    def target(self) -> str:
        return "global-table"

    def describe(self) -> str:
        return (f"break global-table replication: silently drop {self.fraction:.0%} of replicated writes "
                f"(a mutation: checkers must report lost or divergent writes)")

    def inject(self, env: Environment) -> dict:
        require_control(env)("POST", "/replication/config", {"drop_fraction": self.fraction})
        return {"drop_fraction": self.fraction}

    def rollback(self, env: Environment, injected: dict | None = None) -> dict:
        require_control(env)("POST", "/replication/config", {"drop_fraction": 0.0})
        return {"drop_fraction": 0.0}
