"""DynamoDB global-table replication for the local environment. moto does not replicate
(`update_table(ReplicaUpdates=...)` creates no replica), so the replicator follows every
region's NEW_AND_OLD_IMAGES stream and applies each INSERT / MODIFY / REMOVE to the table of
every other region, the way AWS global tables do: last writer wins, item by item, enforced with a
conditional write on the item's version (`aws:rep:updatetime`). Per-direction pause/resume, extra
lag and a drop_fraction mutation knob are the harness's handles on it. Checkers that compare
replicas must ignore `aws:rep:*` attributes: use `strip_replication_attributes()`.

This module is the adapter: stream reading, the conditional writes in moto, threads, events. It
reads the time from `ctx.clock` and waits on it; the rules (versions, per-direction queues, lag
due times, pause/resume, drops, last writer wins, repair decisions, status numbers) are the pure
model in `replication_model.py`, tested on a fake clock (tests/test_replication_model.py).

The AWS semantics followed (with their sources), how versions are made unique and ordered, how
races are repaired, and the timeline events: docs/local-environment.md, "DynamoDB global-table
replication".
"""

from __future__ import annotations

import logging
import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone

from botocore.exceptions import BotoCoreError, ClientError

from gameday.environments.local.context import LocalContext
# the rules (versions, queues, lag, pause, last writer wins, repairs) are the pure model's
from gameday.environments.local.replication_model import (FAILED, REPLICATED, RETRY, SUPERSEDED, Direction, Op,
                                                          RegionVersions, Repair, delete_request,
                                                          mark_delete_request, newest_per_key, put_request,
                                                          strip_replication_attributes)
from gameday.events import iso

# strip_replication_attributes is re-exported: checkers comparing replicas import it from here
__all__ = ["GlobalTableReplicator", "strip_replication_attributes"]

log = logging.getLogger("gameday.replication")

POLL_INTERVAL_S = 0.05       # get_records when the last page was not full
IDLE_POLL_INTERVAL_S = 0.2   # ... and when the last poll found nothing: every poll is a moto call (~4 ms CPU)
PAGE_LIMIT = 1000            # DynamoDB Streams' maximum per get_records
SHARD_REFRESH_S = 10.0       # look for new shards even when none closed
APPLY_WORKERS = 4            # concurrent conditional writes per destination (HTTP round trips overlap)
APPLY_BATCH = 200            # operations taken from the queues per round
RETRY_BACKOFF_S = 0.2        # after a destination call failed for a reason other than the condition

# DynamoDB's global-table metric (developer guide, "Monitoring global tables" / "DynamoDB metrics and
# dimensions"): milliseconds from a write to its appearance in another replica, for every source ->
# destination pair, in the source region, dimensions TableName and ReceivingRegion
LATENCY_NAMESPACE, LATENCY_METRIC = "AWS/DynamoDB", "ReplicationLatency"


def replication_latency_data(table: str, lags_ms: dict[str, list[float]], when: datetime) -> list[dict]:
    """PutMetricData's MetricData for one source region: one statistic set per receiving region
    that had writes applied since the last flush (no datapoint where nothing was replicated)."""
    return [{"MetricName": LATENCY_METRIC, "Timestamp": when, "Unit": "Milliseconds",
             "Dimensions": [{"Name": "TableName", "Value": table}, {"Name": "ReceivingRegion", "Value": dst}],
             "StatisticValues": {"SampleCount": float(len(lags)), "Sum": float(sum(lags)),
                                 "Minimum": float(min(lags)), "Maximum": float(max(lags))}}
            for dst, lags in sorted(lags_ms.items()) if lags]


_RETRYABLE_CODES = {"ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
                    "InternalServerError", "InternalFailure", "ServiceUnavailable", "TransactionConflictException"}


def _is_conditional_failure(e: ClientError) -> bool:
    return e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _is_retryable(e: Exception) -> bool:
    if isinstance(e, BotoCoreError):
        return True  # connection refused, timeout: the region's endpoint may come back
    if isinstance(e, ClientError):
        code = e.response.get("Error", {}).get("Code")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in _RETRYABLE_CODES or status >= 500
    return False


@dataclass
class _Region:
    """A region as the adapter follows it: its stream position, and the model's view of its items
    (`versions`, guarded by `lock`)."""

    name: str
    versions: RegionVersions
    stream_arn: str = ""
    shards: dict[str, str] = field(default_factory=dict)      # open shard id -> iterator
    last_seq: dict[str, str] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    wake: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class GlobalTableReplicator:
    def __init__(self, ctx: LocalContext, *, seed: int = 0):
        self.ctx = ctx
        self.table = ctx.config.dynamodb.table
        self.regions = list(ctx.config.regions)
        ranks = {r: i for i, r in enumerate(sorted(self.regions))}
        self._regions = {r: _Region(r, RegionVersions(r, ranks[r])) for r in self.regions}
        self._directions = {
            (s, d): Direction(s, d, random.Random(f"{seed}:{s}->{d}"))
            for s in self.regions for d in self.regions if s != d
        }
        self._lock = threading.Lock()      # the directions (queues and counters)
        self._extra_lag_s = float(ctx.config.dynamodb.replication_lag_s)
        # the harness's own mutation tests start an environment whose replication is broken
        self._drop_fraction = float(ctx.config.dynamodb.mutation_drop_fraction)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._started = False
        self._error_logged_at: dict[str, float] = {}
        # (source, destination) -> lags (ms) of writes applied since the last ReplicationLatency flush
        self._latency_ms: dict[tuple[str, str], list[float]] = {}

    # -- knobs ----------------------------------------------------------------------------------
    def _direction(self, source: str, destination: str) -> Direction:
        for r in (source, destination):
            if r not in self._regions:
                raise ValueError(f"unknown region {r!r}: replication runs between {self.regions}")
        if source == destination:
            raise ValueError(f"source and destination are both {source!r}: a region does not replicate to itself")
        return self._directions[(source, destination)]

    def pause(self, source: str, destination: str) -> None:
        """Hold every write from source to destination until resume() (per direction)."""
        d = self._direction(source, destination)
        with self._lock:
            changed = d.pause()
        if changed:
            self.ctx.events.emit("replication", action="pause", source=source, destination=destination,
                                 direction=d.name)

    def resume(self, source: str, destination: str) -> None:
        """Apply the held writes, in the order they were written, then keep replicating."""
        d = self._direction(source, destination)
        with self._lock:
            backlog = d.resume()
        if backlog is not None:
            self.ctx.events.emit("replication", action="resume", source=source, destination=destination,
                                 direction=d.name, backlog=backlog)
        self._regions[destination].wake.set()

    def set_lag(self, seconds: float) -> None:
        """Extra delay before a write is applied in another region: at least that long after the
        write (counted from when the replicator read it off the stream: Op.due_at)."""
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"replication lag must be a number of seconds >= 0, got {seconds!r}")
        changed, self._extra_lag_s = seconds != self._extra_lag_s, seconds
        if changed:
            # extra_lag_s, not lag_s: a timeline reader must not take the setting for a measured lag
            self.ctx.events.emit("replication", action="set_lag", extra_lag_s=seconds)
        for r in self._regions.values():
            r.wake.set()

    @property
    def lag_s(self) -> float:
        return self._extra_lag_s

    @property
    def drop_fraction(self) -> float:
        return self._drop_fraction

    @drop_fraction.setter
    def drop_fraction(self, fraction: float) -> None:
        fraction = float(fraction)
        if not (0.0 <= fraction <= 1.0):
            raise ValueError(f"drop_fraction must be between 0 and 1, got {fraction!r}")
        changed, self._drop_fraction = fraction != self._drop_fraction, fraction
        if changed:
            self.ctx.events.emit("replication", action="set_drop_fraction", drop_fraction=fraction)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> "GlobalTableReplicator":
        if self._started:
            return self
        # Iterators are taken here, synchronously, so that start() returning means "following".
        for region in self._regions.values():
            self._open_stream(region)
        self._started = True
        for name, region in self._regions.items():
            self._pools[name] = ThreadPoolExecutor(APPLY_WORKERS, thread_name_prefix=f"replication-apply-{name}")
            self._spawn(f"replication-follow-{name}", self._follow, region)
            self._spawn(f"replication-apply-{name}", self._apply_loop, region)
        self._spawn("replication-monitor", self._monitor)
        return self

    def _spawn(self, name: str, target, *args) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        for r in self._regions.values():
            r.wake.set()
        for t in self._threads:
            t.join(timeout=10)
        for p in self._pools.values():
            p.shutdown(wait=True, cancel_futures=True)

    # -- status -------------------------------------------------------------------------------------
    def status(self) -> dict:
        """Per direction "src->dst": lag_s (how far the destination is behind: the age of the
        oldest write not applied yet, else the lag of the last one applied), pending (read, not
        applied: held, delayed or in flight), paused, replicated (applied), dropped (drop_fraction),
        superseded (a newer version was already there: nothing to write), repaired (local writes
        restored after a race), failed (rejected by DynamoDB for good), last_applied_at."""
        now = self.ctx.clock.monotonic()
        with self._lock:
            out = {d.name: d.status(now) for d in self._directions.values()}
        for v in out.values():
            v["last_applied_at"] = iso(v["last_applied_at"]) if v["last_applied_at"] else None
        return out

    def _monitor(self) -> None:
        period = float(self.ctx.profile.period_s)
        while not self.ctx.clock.wait(self._stop, period):
            now = self.ctx.clock.monotonic()
            with self._lock:
                samples = [d.sample(now) for d in self._directions.values()]
            for s in samples:
                self.ctx.events.emit("replication_lag", **s)
            self._publish_latency()

    def _publish_latency(self) -> None:
        """ReplicationLatency in each source region's CloudWatch: one PutMetricData per source
        region and period, from the writes applied since the last one."""
        with self._lock:
            taken, self._latency_ms = self._latency_ms, {}
        by_source: dict[str, dict[str, list[float]]] = {}
        for (src, dst), lags in taken.items():
            by_source.setdefault(src, {})[dst] = lags
        when = datetime.fromtimestamp(self.ctx.clock.time(), tz=timezone.utc)
        for src, lags in by_source.items():
            try:
                self.ctx.internal_client("cloudwatch", src).put_metric_data(
                    Namespace=LATENCY_NAMESPACE, MetricData=replication_latency_data(self.table, lags, when))
            except (BotoCoreError, ClientError) as e:
                self._log_error(f"ReplicationLatency in {src}", e)

    def _log_error(self, where: str, e: Exception) -> None:
        # at most one line per place and 5 s: a stopped moto must not flood the log
        now = self.ctx.clock.monotonic()
        if now - self._error_logged_at.get(where, -1e9) >= 5.0:
            self._error_logged_at[where] = now
            log.warning("replication %s: %s: %s", where, type(e).__name__, e)

    # -- following a region's stream ------------------------------------------------------------------
    def _streams(self, region: str):
        return self.ctx.internal_client("dynamodbstreams", region)

    def _open_stream(self, region: _Region) -> None:
        table = self.ctx.internal_client("dynamodb", region.name).describe_table(TableName=self.table)["Table"]
        arn = table.get("LatestStreamArn")
        spec = table.get("StreamSpecification") or {}
        if not arn or not spec.get("StreamEnabled"):
            raise RuntimeError(f"table {self.table!r} in {region.name} has no stream: global-table replication "
                               f"needs StreamViewType NEW_AND_OLD_IMAGES (provision() enables it)")
        if spec.get("StreamViewType") != "NEW_AND_OLD_IMAGES":
            raise RuntimeError(f"table {self.table!r} in {region.name} streams {spec.get('StreamViewType')}: "
                               f"global-table replication needs NEW_AND_OLD_IMAGES")
        region.stream_arn = arn
        self._refresh_shards(region)

    def _describe_shards(self, region: _Region) -> list[dict]:
        streams, shards, start = self._streams(region.name), [], None
        while True:
            kw = {"StreamArn": region.stream_arn}
            if start:
                kw["ExclusiveStartShardId"] = start
            desc = streams.describe_stream(**kw)["StreamDescription"]
            shards += desc.get("Shards", [])
            start = desc.get("LastEvaluatedShardId")
            if not start:
                return shards

    def _refresh_shards(self, region: _Region) -> None:
        """Follow shards the way the Kinesis adapter does: a child only after its parent closed."""
        listed = self._describe_shards(region)
        ids = {s["ShardId"] for s in listed}
        streams = self._streams(region.name)
        for s in listed:
            sid, parent = s["ShardId"], s.get("ParentShardId")
            if sid in region.shards or sid in region.closed:
                continue
            if parent and parent in ids and parent not in region.closed:
                continue  # read the parent to its end first: per-key order depends on it
            region.shards[sid] = streams.get_shard_iterator(
                StreamArn=region.stream_arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]

    def _reopen_shard(self, region: _Region, sid: str) -> None:
        streams = self._streams(region.name)
        if sid in region.last_seq:
            kw = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": region.last_seq[sid]}
        else:
            kw = {"ShardIteratorType": "TRIM_HORIZON"}
        region.shards[sid] = streams.get_shard_iterator(StreamArn=region.stream_arn, ShardId=sid, **kw)["ShardIterator"]

    def _follow(self, region: _Region) -> None:
        streams = self._streams(region.name)
        next_refresh = self.ctx.clock.monotonic() + SHARD_REFRESH_S
        while not self._stop.is_set():
            full_page = got_any = False
            for sid, iterator in list(region.shards.items()):
                try:
                    out = streams.get_records(ShardIterator=iterator, Limit=PAGE_LIMIT)
                except ClientError as e:
                    code = e.response.get("Error", {}).get("Code")
                    self._log_error(f"get_records {region.name}", e)
                    try:
                        if code == "TrimmedDataAccessException":
                            region.last_seq.pop(sid, None)  # records aged out: start from what is left
                        self._reopen_shard(region, sid)
                    except (ClientError, BotoCoreError) as e2:
                        self._log_error(f"get_shard_iterator {region.name}", e2)
                    self.ctx.clock.wait(self._stop, RETRY_BACKOFF_S)
                    continue
                except BotoCoreError as e:
                    self._log_error(f"get_records {region.name}", e)
                    self.ctx.clock.wait(self._stop, RETRY_BACKOFF_S)
                    continue
                records = out.get("Records", [])
                if records:
                    got_any = True
                    self._process(region, records)
                    region.last_seq[sid] = records[-1]["dynamodb"]["SequenceNumber"]
                    full_page |= len(records) >= PAGE_LIMIT
                nxt = out.get("NextShardIterator")
                if nxt:
                    region.shards[sid] = nxt
                else:  # the shard closed: its children (if any) carry on
                    del region.shards[sid]
                    region.closed.add(sid)
                    next_refresh = 0.0
            if self.ctx.clock.monotonic() >= next_refresh:
                try:
                    self._refresh_shards(region)
                except (ClientError, BotoCoreError) as e:
                    self._log_error(f"describe_stream {region.name}", e)
                next_refresh = self.ctx.clock.monotonic() + SHARD_REFRESH_S
            if not full_page:
                self.ctx.clock.wait(self._stop, POLL_INTERVAL_S if got_any else IDLE_POLL_INTERVAL_S)

    def _process(self, region: _Region, records: list[dict]) -> None:
        """Hand a page of a region's stream to the model; queue the application's writes it
        returns for every other region (each direction draws its drops)."""
        # The page was just read: every write in it had happened by now (the moment the
        # configured lag counts from, Op.due_at).
        seen_at, seen_wall = self.ctx.clock.monotonic(), self.ctx.clock.time()
        with region.lock:
            unrepaired = region.versions.unrepaired
            outgoing = region.versions.classify(records, seen_at, seen_wall)
            lost = region.versions.unrepaired - unrepaired
            repairs_waiting = bool(region.versions.repairs)
        if lost:
            log.warning("replication %s: %d key(s) overwritten by an older replicated write whose newer local "
                        "image is no longer kept: cannot restore them", region.name, lost)
        if repairs_waiting:
            region.wake.set()
        if not outgoing:
            return
        woken: set[str] = set()
        with self._lock:
            for d in self._directions.values():
                if d.source == region.name:
                    d.offer(outgoing, self._drop_fraction)
                    woken.add(d.destination)
        for name in woken:
            self._regions[name].wake.set()

    # -- applying at a destination --------------------------------------------------------------------
    def _take_due(self, incoming: list[Direction]) -> tuple[list[tuple[Direction, Op]], float | None]:
        now, lag = self.ctx.clock.monotonic(), self._extra_lag_s
        batch: list[tuple[Direction, Op]] = []
        next_due: float | None = None
        with self._lock:
            for d in incoming:
                ops, due = d.take_due(now, lag, APPLY_BATCH - len(batch))
                batch += [(d, op) for op in ops]
                if due is not None:
                    next_due = due if next_due is None else min(next_due, due)
        return batch, next_due

    def _apply_loop(self, region: _Region) -> None:
        incoming = [d for d in self._directions.values() if d.destination == region.name]
        pool = self._pools[region.name]
        clock = self.ctx.clock
        while not self._stop.is_set():
            batch, next_due = self._take_due(incoming)
            with region.lock:
                repairs = region.versions.take_repairs()
            if not batch and not repairs:
                wait_s = POLL_INTERVAL_S if next_due is None else min(POLL_INTERVAL_S, next_due - clock.monotonic())
                clock.wait(region.wake, max(0.001, wait_s))
                region.wake.clear()
                continue
            newest, losers = newest_per_key(batch)
            for d, op in losers:
                self._finish(d, op, SUPERSEDED)
            futures = [pool.submit(self._apply_one, region, d, op) for d, op in newest]
            wait(futures)
            retrying = [f for f in futures if f.exception() is not None or f.result() == RETRY]
            for f in futures:
                if f.exception() is not None:
                    self._log_error(f"apply in {region.name}", f.exception())
            for rep in repairs:
                self._repair(region, rep)
            if retrying:
                clock.wait(self._stop, RETRY_BACKOFF_S)

    def _finish(self, d: Direction, op: Op, outcome: str) -> None:
        now, now_wall = self.ctx.clock.monotonic(), self.ctx.clock.time()
        with self._lock:
            d.finish(op, outcome, now, now_wall)
            if outcome == REPLICATED:
                self._latency_ms.setdefault((d.source, d.destination), []).append(d.last_lag_s * 1000.0)

    def _apply_one(self, region: _Region, d: Direction, op: Op) -> str:
        outcome = RETRY
        try:
            with region.lock:
                newer_known = region.versions.has_newer(op.key_id, op.version)
            if newer_known:
                outcome = SUPERSEDED
            elif op.image is not None:
                outcome = self._put(region, op.keys, op.image, op.version, op.source, None)
            else:
                outcome = self._delete(region, op.keys, op.version, op.source, None)
            if outcome != RETRY:
                with region.lock:
                    region.versions.note_known(op.key_id, op.version)
            return outcome
        except (ClientError, BotoCoreError) as e:
            self._log_error(f"apply {d.name}", e)
            if not _is_retryable(e):
                outcome = FAILED  # e.g. a ValidationException: retrying cannot help
            return outcome
        finally:
            self._finish(d, op, outcome)

    def _ddb(self, region: str):
        return self.ctx.internal_client("dynamodb", region)

    def _put(self, region: _Region, keys: dict, image: dict, version: int, source: str,
             expect: int | str | None) -> str:
        """Conditional put of a versioned image (replication_model.put_request says which)."""
        try:
            self._ddb(region.name).put_item(**put_request(self.table, keys, image, version, source, expect))
            return REPLICATED
        except ClientError as e:
            if _is_conditional_failure(e):
                return SUPERSEDED
            raise

    def _delete(self, region: _Region, keys: dict, version: int, source: str, expect: int | None) -> str:
        """Replicated delete as 2017.11.29 did it: mark the item (aws:rep:deleting, new version),
        then delete it if still marked with that version."""
        ddb = self._ddb(region.name)
        try:
            ddb.update_item(**mark_delete_request(self.table, keys, version, source, expect))
        except ClientError as e:
            if not _is_conditional_failure(e):
                raise
            # absent (already deleted: the delete holds) or newer: either way nothing to write;
            # the caller records the version as a tombstone so an older put cannot resurrect it
            return REPLICATED if "Item" not in ddb.get_item(TableName=self.table, Key=keys, ConsistentRead=True) \
                else SUPERSEDED
        try:
            ddb.delete_item(**delete_request(self.table, keys, version))
        except ClientError as e:
            if not _is_conditional_failure(e):
                raise
            return SUPERSEDED  # written again in between: that write is newer
        return REPLICATED

    def _repair(self, region: _Region, rep: Repair) -> None:
        with region.lock:
            plan = region.versions.repair_plan(rep)
        if plan is None:
            return
        action, expect = plan
        try:
            if action == "put":
                outcome = self._put(region, rep.keys, rep.winner_image, rep.winner_version, region.name, expect)
            else:
                outcome = self._delete(region, rep.keys, rep.winner_version, region.name, expect)
        except (ClientError, BotoCoreError) as e:
            self._log_error(f"repair in {region.name}", e)
            with region.lock:
                if _is_retryable(e):
                    region.versions.repairs.append(rep)
                else:
                    region.versions.unrepaired += 1
            return
        if outcome == REPLICATED:
            log.info("replication %s: restored key %s (a replicated older write had replaced a newer local write)",
                     region.name, rep.key_id)
            d = self._directions.get((rep.wrong_source, region.name))
            if d is not None:
                with self._lock:
                    d.repaired += 1
