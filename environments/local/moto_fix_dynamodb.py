"""DynamoDB global tables in moto corrected to AWS: DescribeTable lists the table's replicas.

moto 5.2.5 has no global tables (version 2019.11.21): UpdateTable's ReplicaUpdates are ignored and
DescribeTable never has `Replicas`, so a table that the local environment replicates between
regions (environments/local/replication.py, one moto server per region) reads as a lone table,
and the aws environment's preflight says "not a global table". In AWS, DescribeTable of a
global table's replica answers `GlobalTableVersion` "2019.11.21" and `Replicas`: a
ReplicaDescription (`RegionName`, `ReplicaStatus`) for each of the global table's other regions.

Each region's moto server holds only its own region's table, so the harness says which regions
hold a replica through the admin route `dynamodb_replicas` (body: region, table, regions = every
region of the global table), at start, once the tables exist (stack.py). The replicas are kept on
the table object itself: a table deleted (and created again) is no longer a global table, as in
AWS, where deleting a replica takes it out of the global table.

Writes are atomic and their stream records are in order, as in DynamoDB. moto's threaded server
runs concurrent requests side by side, and its writes are not atomic: a stream record's sequence
number is the stream's length, read before the record is made and appended after, so two writes
at once could get the same number. A reader's NextShardIterator (AFTER the page's highest number)
then points back into the page, and the replicator, or any stream reader, reads the same records
again, or forever (fresh54: a test's stream count looped for 300 s, under five busy workers). And a
conditional write's check and its write could interleave with another write of the item, where
DynamoDB makes them one atomic step (the replicator's last-writer-wins relies on it). So every write
operation, and the stream append, runs under one lock per server process (each region's server is
its own process): writes in moto take microseconds, and DynamoDB serializes writes to an item too.

Only moto and the standard library at import (moto_corrections).
"""

from __future__ import annotations

import functools
import threading

from moto.dynamodb import models as ddb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import StreamShard, Table

from gameday.environments.local.moto_corrections import find_in_backends

GLOBAL_TABLE_VERSION = "2019.11.21"
REPLICA_STATUSES = ("CREATING", "CREATION_FAILED", "UPDATING", "DELETING", "ACTIVE", "REGION_DISABLED",
                    "INACCESSIBLE_ENCRYPTION_CREDENTIALS")


def replica_descriptions(own_region: str, replicas: dict[str, str]) -> list[dict]:
    """DescribeTable's Replicas in `own_region`: the global table's other regions, in order."""
    return [{"RegionName": r, "ReplicaStatus": st} for r, st in replicas.items() if r != own_region]


def _patch_table() -> None:
    if getattr(Table, "gameday_patched", False):   # once per process (a zygote's servers inherit it)
        return
    Table.gameday_patched = True
    original = Table.describe

    def describe(self, base_key: str = "TableDescription"):
        out = original(self, base_key=base_key)
        replicas = getattr(self, "gameday_replicas", None)
        if replicas:
            out[base_key]["GlobalTableVersion"] = GLOBAL_TABLE_VERSION
            out[base_key]["Replicas"] = replica_descriptions(self.region_name, replicas)
        return out

    Table.describe = describe


# the operations that write items (each checks its conditions, writes and appends its stream records)
WRITE_OPERATIONS = ("put_item", "update_item", "delete_item", "transact_write_items", "execute_statement",
                    "execute_transaction", "batch_execute_statement")
WRITE_LOCK = threading.RLock()   # re-entrant: a transaction's or a statement's writes call put_item etc.


def _serialized(fn):
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with WRITE_LOCK:
            return fn(*args, **kwargs)
    locked.gameday_serialized = True
    return locked


def _serialize_writes() -> None:
    """Each write operation, and each stream append, one at a time (see the module's docstring)."""
    for name in WRITE_OPERATIONS:
        fn = getattr(DynamoDBBackend, name, None)
        if fn is not None and not getattr(fn, "gameday_serialized", False):
            setattr(DynamoDBBackend, name, _serialized(fn))
    if not getattr(StreamShard.add, "gameday_serialized", False):
        StreamShard.add = _serialized(StreamShard.add)


def _table(region: str, name: str) -> Table:
    return find_in_backends(ddb_models.dynamodb_backends, region, lambda b: b.tables.get(name),
                            f"DynamoDB table {name!r}")


def set_replicas(body: dict) -> dict:
    """The global table's regions, told by the harness (admin route dynamodb_replicas): body
    {region, table, regions: [every region holding a replica], status?: ReplicaStatus}."""
    table = _table(body["region"], body["table"])
    status = body.get("status", "ACTIVE")
    if status not in REPLICA_STATUSES:
        raise ValueError(f"replica status {status!r}: one of {', '.join(REPLICA_STATUSES)}")
    regions = list(body["regions"])
    if body["region"] not in regions:
        raise ValueError(f"table {table.name} in {body['region']}: regions {regions} must include its own region")
    table.gameday_replicas = {r: status for r in regions}
    return {"table": table.name, "replicas": replica_descriptions(body["region"], table.gameday_replicas)}


def install(admin) -> None:
    _patch_table()
    _serialize_writes()
    admin.route("dynamodb_replicas", set_replicas)
