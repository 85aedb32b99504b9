"""DynamoDB global-table replication faults: pause one direction (as FIS's
aws:dynamodb:global-table-pause-replication), and a broken replicator that silently drops a
share of writes (a mutation for the harness's own tests: the checkers must catch it)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from gameday.faults.base import Fault, Region, Share


class PauseReplication(Fault):
    """Global-table replication from source to destination stops: writes queue up and
    replicate when it resumes (the rollback)."""

    kind: Literal["pause_replication"] = "pause_replication"
    capabilities = ("pause_replication",)

    source: Region
    destination: Region

    @model_validator(mode="after")
    def _two_regions(self) -> "PauseReplication":
        if self.source == self.destination:
            raise ValueError(f"source and destination are both {self.source}")
        return self

    @property
    def target(self) -> str:
        return f"{self.source}->{self.destination}"

    def regions_used(self) -> dict[str, str]:
        return {"source": self.source, "destination": self.destination}

    def describe(self) -> str:
        return (f"pause global-table replication {self.source} -> {self.destination} "
                f"(writes queue up and replicate on resume)")


class ReplicationDrop(Fault):
    """Mutation: replication silently drops this share of writes (the checkers must notice)."""

    kind: Literal["replication_drop"] = "replication_drop"
    capabilities = ("replication_drop",)

    fraction: Share

    @property
    def target(self) -> str:
        return "global-table"

    def describe(self) -> str:
        return (f"break global-table replication: silently drop {self.fraction:.0%} of replicated writes "
                f"(a mutation: checkers must report lost or divergent writes)")
