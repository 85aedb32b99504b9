"""Fault injection, the "nemesis" (docs/architecture.md): each fault is data (a frozen pydantic model:
kind + params) that the environment applies and reverts with its own driver; journaled before it is
applied and rolled back on pass, fail, exception, Ctrl-C and SIGTERM; after a SIGKILL,
`gameday rollback` restores from the journal (`parse_fault({"kind": ..., **params})`).

    from gameday.faults import Nemesis, block_region, stop_tasks
    with Nemesis(env, run_dir / "journal.jsonl", scenario="outage") as nemesis:
        nemesis.inject(block_region("us-east-1", mode="refuse"))
"""

from __future__ import annotations

from gameday.faults.api import API_EFFECTS, ApiFault
from gameday.environments.base import CapabilityMissing
from gameday.faults.base import Fault, FaultError, fault_classes, fault_kinds, parse_fault
from gameday.faults.ecs import LoseAz, StopTasks
from gameday.faults.journal import Journal, JournalError, read_journal
from gameday.faults.lambda_fault import LAMBDA_MODES, LambdaFault
from gameday.faults.nemesis import FaultRecord, Nemesis, RollbackFailed
from gameday.faults.network import BLOCK_MODES, BlockRegion
from gameday.faults.replication import PauseReplication, ReplicationDrop
from gameday.faults.service import FailResponses


def stop_tasks(region: str, count: int | None = None, fraction: float | None = None, all: bool = False,
               **kw) -> StopTasks:
    """ECS StopTask on `count` tasks, a `fraction` of them, or `all` running tasks in `region`."""
    return StopTasks.create(region=region, count=count, fraction=fraction, all=all, **kw)


def lose_az(region: str, az: str) -> LoseAz:
    """The AZ (us-east-1a, or "a") becomes unavailable until rolled back."""
    return LoseAz.create(region=region, az=az)


def block_region(region: str, data_plane: bool = True, control_plane: bool = False, mode: str = "hang") -> BlockRegion:
    """The region's load balancer (data plane: hang or refuse) and/or AWS API endpoint (control plane) stop answering."""
    return BlockRegion.create(region=region, data_plane=data_plane, control_plane=control_plane, mode=mode)


def pause_replication(source: str, destination: str) -> PauseReplication:
    return PauseReplication.create(source=source, destination=destination)


def api_fault(service: str, region: str, effect: str = "error", rate: float = 1.0, latency_s: float | None = None,
              operation: str | None = None, status: int | None = None, limit: int | None = None) -> ApiFault:
    """Customers' calls to `service` in `region` ("*" = all) fail, are throttled, delayed or black-holed
    (`limit`: only the next N matching calls). `kind` is the fault type's name, never the effect."""
    return ApiFault.create(service=service, region=region, effect=effect, rate=rate,
                    latency_s=latency_s, operation=operation, status=status, limit=limit)


def lambda_fault(mode: str = "error", delay_s: float | None = None) -> LambdaFault:
    return LambdaFault.create(mode=mode, delay_s=delay_s)


def fail_responses(region: str, share: float = 0.5, status: int = 500) -> FailResponses:
    """This share of the requests to `region`'s targets are answered `status` by the target
    (HTTPCode_Target_5XX_Count), without reaching the service, until rolled back."""
    return FailResponses.create(region=region, share=share, status=status)


def replication_drop(fraction: float) -> ReplicationDrop:
    """Mutation: replication silently drops this share of writes (the checkers must notice)."""
    return ReplicationDrop.create(fraction=fraction)


__all__ = [
    "API_EFFECTS", "BLOCK_MODES", "LAMBDA_MODES", "ApiFault", "BlockRegion", "CapabilityMissing", "FailResponses",
    "Fault", "FaultError", "FaultRecord", "Journal", "JournalError", "LambdaFault", "LoseAz", "Nemesis",
    "PauseReplication", "ReplicationDrop", "RollbackFailed", "StopTasks", "api_fault", "block_region",
    "fail_responses", "fault_classes", "fault_kinds", "lambda_fault", "lose_az", "parse_fault", "pause_replication", "read_journal",
    "replication_drop", "stop_tasks",
]
