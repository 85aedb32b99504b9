"""DynamoDB global-table replication for the local environment. moto does not replicate
(`update_table(ReplicaUpdates=...)` creates no replica), so the replicator follows every
region's NEW_AND_OLD_IMAGES stream and applies each INSERT / MODIFY / REMOVE to the table of
every other region, the way AWS global tables do: last writer wins, item by item, enforced with a
conditional write on the item's version (`aws:rep:updatetime`). Per-direction pause/resume, extra
lag and a drop_fraction mutation knob are the harness's handles on it. Checkers that compare
replicas must ignore `aws:rep:*` attributes: use `strip_replication_attributes()`.

The AWS semantics followed (with their sources), how versions are made unique and ordered, how
races are repaired, and the timeline events: docs/local-environment.md, "DynamoDB global-table
replication".
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from decimal import Decimal

from botocore.exceptions import BotoCoreError, ClientError

from gameday.environments.local.context import LocalContext
from gameday.events import iso

log = logging.getLogger("gameday.replication")

REP_PREFIX = "aws:rep:"
REP_UPDATETIME = "aws:rep:updatetime"
REP_UPDATEREGION = "aws:rep:updateregion"
REP_DELETING = "aws:rep:deleting"

POLL_INTERVAL_S = 0.05       # get_records when the last page was not full
IDLE_POLL_INTERVAL_S = 0.2   # ... and when the last poll found nothing: every poll is a moto call (~4 ms CPU)
PAGE_LIMIT = 1000            # DynamoDB Streams' maximum per get_records
SHARD_REFRESH_S = 10.0       # look for new shards even when none closed
APPLY_WORKERS = 4            # concurrent conditional writes per destination (HTTP round trips overlap)
APPLY_BATCH = 200            # operations taken from the queues per round
RETRY_BACKOFF_S = 0.2        # after a destination call failed for a reason other than the condition
RECENT_LOCAL_IMAGES = 50_000 # per region: images of recent local writes, for repairs

_VERSION_DIGITS = 7          # aws:rep:updatetime decimals: 6 for microseconds + 1 for the region rank
_VERSION_SCALE = 10 ** _VERSION_DIGITS
_MICRO = 10                  # one microsecond in version units


def strip_replication_attributes(item: dict | None) -> dict | None:
    """An item without the replication system attributes (what the application wrote)."""
    if item is None:
        return None
    return {k: v for k, v in item.items() if not k.startswith(REP_PREFIX)}


def version_to_number(version: int) -> str:
    """Version (microseconds x 10 + region rank) -> aws:rep:updatetime, a Number in seconds."""
    return f"{version // _VERSION_SCALE}.{version % _VERSION_SCALE:0{_VERSION_DIGITS}d}"


def number_to_version(number: str) -> int:
    return int(Decimal(number).scaleb(_VERSION_DIGITS))


def _stamp(image: dict | None) -> int | None:
    if not image or REP_UPDATETIME not in image:
        return None
    try:
        return number_to_version(image[REP_UPDATETIME]["N"])
    except (KeyError, ArithmeticError, ValueError):
        return None


def _key_id(keys: dict) -> tuple:
    # Keys is {"pk": {"S": "k1"}}; values are str, or bytes for B: hashable either way
    return tuple((name, *next(iter(value.items()))) for name, value in sorted(keys.items()))


def _is_conditional_failure(e: ClientError) -> bool:
    return e.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


_RETRYABLE_CODES = {"ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded",
                    "InternalServerError", "InternalFailure", "ServiceUnavailable", "TransactionConflictException"}


def _is_retryable(e: Exception) -> bool:
    if isinstance(e, BotoCoreError):
        return True  # connection refused, timeout: the region's endpoint may come back
    if isinstance(e, ClientError):
        code = e.response.get("Error", {}).get("Code")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in _RETRYABLE_CODES or status >= 500
    return False


@dataclass(slots=True)
class _Op:
    """One user write to carry from its source region to one destination."""

    source: str
    key_id: tuple
    keys: dict
    version: int
    image: dict | None          # the item without aws:rep:* attributes; None for a delete
    # Both on the monotonic clock, so that a step of the wall clock cannot shift them:
    seen_at: float              # when the follower read the record: the write had happened by then
    written_at: float           # the write as the replicator knows it: seen_at minus the record's age
                                # when read (stream time -> wall clock at the read, never negative)


@dataclass(slots=True)
class _Repair:
    """Restore a local write that a replicated, older write replaced in a race."""

    key_id: tuple
    keys: dict
    wrong_version: int          # version of the write that must be undone
    wrong_was_remove: bool      # it deleted the item (so the item is absent now)
    winner_version: int
    winner_image: dict | None   # None: the winner is a delete
    wrong_source: str


@dataclass
class _Direction:
    source: str
    destination: str
    rng: random.Random
    queue: deque = field(default_factory=deque)
    paused: bool = False
    # written_at of each op taken off the queue and not finished yet: the destination may already
    # show the write while its put_item is returning, and until _finish runs the direction is
    # still behind by that write's age (not by the last finished write's lag)
    flying: list = field(default_factory=list)
    replicated: int = 0
    dropped: int = 0
    superseded: int = 0
    repaired: int = 0
    failed: int = 0
    last_lag_s: float = 0.0
    last_applied_at: float | None = None
    window_max_lag_s: float = 0.0
    window_applied: int = 0

    @property
    def name(self) -> str:
        return f"{self.source}->{self.destination}"

    @property
    def in_flight(self) -> int:
        return len(self.flying)

    def oldest_unapplied(self) -> float | None:
        """written_at of the oldest write read and not yet applied (queued or in flight)."""
        unapplied = list(self.flying)
        if self.queue:
            unapplied.append(self.queue[0].written_at)
        return min(unapplied, default=None)

    def lag_at(self, now: float) -> float:
        """How far the destination is behind at `now` (time.monotonic(), the clock of written_at):
        the age of the oldest write not applied yet, else the lag of the last one applied."""
        oldest = self.oldest_unapplied()
        return self.last_lag_s if oldest is None else max(now - oldest, self.last_lag_s)


@dataclass
class _Region:
    name: str
    rank: int
    stream_arn: str = ""
    shards: dict[str, str] = field(default_factory=dict)      # open shard id -> iterator
    last_seq: dict[str, str] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    # max version seen in this region's stream, in stream order (the follower's view)
    seen: dict[tuple, int] = field(default_factory=dict)
    # max version known to be in (or deleted from) this region: seen + what the applier wrote
    known: dict[tuple, int] = field(default_factory=dict)
    # key -> (version, image|None) of recent local writes that are the newest seen for the key
    local_winners: OrderedDict = field(default_factory=OrderedDict)
    repairs: deque = field(default_factory=deque)
    unrepaired: int = 0
    wake: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class GlobalTableReplicator:
    def __init__(self, ctx: LocalContext, *, seed: int = 0):
        self.ctx = ctx
        self.table = ctx.config.dynamodb.table
        self.regions = list(ctx.config.regions)
        ranks = {r: i for i, r in enumerate(sorted(self.regions))}
        self._regions = {r: _Region(r, ranks[r]) for r in self.regions}
        self._directions = {
            (s, d): _Direction(s, d, random.Random(f"{seed}:{s}->{d}"))
            for s in self.regions for d in self.regions if s != d
        }
        self._lock = threading.Lock()      # queues and direction counters
        self._extra_lag_s = float(ctx.config.dynamodb.replication_lag_s)
        # the harness's own mutation tests start an environment whose replication is broken
        self._drop_fraction = float(ctx.config.dynamodb.mutation_drop_fraction)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._started = False
        self._error_logged_at: dict[str, float] = {}

    # -- knobs ----------------------------------------------------------------------------------
    def _direction(self, source: str, destination: str) -> _Direction:
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
            was = d.paused
            d.paused = True
        if not was:
            self.ctx.events.emit("replication", action="pause", source=source, destination=destination,
                                 direction=d.name)

    def resume(self, source: str, destination: str) -> None:
        """Apply the held writes, in the order they were written, then keep replicating."""
        d = self._direction(source, destination)
        with self._lock:
            was = d.paused
            d.paused = False
            backlog = len(d.queue)
        if was:
            self.ctx.events.emit("replication", action="resume", source=source, destination=destination,
                                 direction=d.name, backlog=backlog)
        self._regions[destination].wake.set()

    def set_lag(self, seconds: float) -> None:
        """Extra delay before a write is applied in another region: at least that long after the
        write (counted from when the replicator read it off the stream, see _apply_loop)."""
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
        now = time.monotonic()
        with self._lock:
            return {
                d.name: {
                    "lag_s": round(d.lag_at(now), 4),
                    "pending": len(d.queue) + d.in_flight,
                    "paused": d.paused,
                    "replicated": d.replicated,
                    "dropped": d.dropped,
                    "superseded": d.superseded,
                    "repaired": d.repaired,
                    "failed": d.failed,
                    "last_applied_at": iso(d.last_applied_at) if d.last_applied_at else None,
                }
                for d in self._directions.values()
            }

    def _monitor(self) -> None:
        period = float(self.ctx.profile.period_s)
        while not self._stop.wait(period):
            now = time.monotonic()
            with self._lock:
                samples = []
                for d in self._directions.values():
                    lag = max(d.window_max_lag_s, d.lag_at(now) if d.oldest_unapplied() is not None else 0.0)
                    samples.append(dict(direction=d.name, lag_s=round(lag, 4), pending=len(d.queue) + d.in_flight,
                                        paused=d.paused, applied=d.window_applied))
                    d.window_max_lag_s = 0.0
                    d.window_applied = 0
            for s in samples:
                self.ctx.events.emit("replication_lag", **s)

    def _log_error(self, where: str, e: Exception) -> None:
        # at most one line per place and 5 s: a stopped moto must not flood the log
        now = time.monotonic()
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
        next_refresh = time.monotonic() + SHARD_REFRESH_S
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
                    self._stop.wait(RETRY_BACKOFF_S)
                    continue
                except BotoCoreError as e:
                    self._log_error(f"get_records {region.name}", e)
                    self._stop.wait(RETRY_BACKOFF_S)
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
            if time.monotonic() >= next_refresh:
                try:
                    self._refresh_shards(region)
                except (ClientError, BotoCoreError) as e:
                    self._log_error(f"describe_stream {region.name}", e)
                next_refresh = time.monotonic() + SHARD_REFRESH_S
            if not full_page:
                self._stop.wait(POLL_INTERVAL_S if got_any else IDLE_POLL_INTERVAL_S)

    def _local_version(self, region: _Region, written_us: int, previous: int | None) -> int:
        version = written_us * _MICRO + region.rank
        if previous is not None and version <= previous:
            # same millisecond, or just after a replicated write: still newer than what it overwrote
            version = (previous // _MICRO) * _MICRO + region.rank
            if version <= previous:
                version += _MICRO
        return version

    def _process(self, region: _Region, records: list[dict]) -> None:
        """Classify each record of a region's stream: the replicator's own writes are only
        bookkeeping; the application's writes are versioned and queued for the other regions."""
        outgoing: list[_Op] = []
        # The page was just read: every write in it had happened by now (the moment the
        # configured lag counts from, see _apply_loop).
        seen_at, seen_wall = time.monotonic(), time.time()
        with region.lock:
            for rec in records:
                body = rec["dynamodb"]
                event = rec["eventName"]
                keys = body["Keys"]
                kid = _key_id(keys)
                new, old = body.get("NewImage"), body.get("OldImage")
                previous = region.seen.get(kid)
                if event == "REMOVE":
                    own_version = _stamp(old) if old and REP_DELETING in old else None
                else:
                    own_version = _stamp(new)
                    if own_version is not None and own_version == _stamp(old):
                        own_version = None  # an application update that kept the version: not ours
                if own_version is not None:
                    if previous is not None and own_version < previous:
                        self._schedule_repair(region, kid, keys, own_version, event == "REMOVE", previous,
                                              (new or old or {}).get(REP_UPDATEREGION, {}).get("S", "?"))
                    else:
                        region.seen[kid] = own_version
                        region.local_winners.pop(kid, None)  # the item now carries its version
                    if own_version > region.known.get(kid, -1):
                        region.known[kid] = own_version
                    continue
                created = body.get("ApproximateCreationDateTime")
                # whole microseconds (moto's are whole milliseconds): no float rounding surprises
                written_us = round((created.timestamp() if created is not None else seen_wall) * 1_000_000)
                version = self._local_version(region, written_us, previous)
                region.seen[kid] = version
                if version > region.known.get(kid, -1):
                    region.known[kid] = version
                image = strip_replication_attributes(new) if event != "REMOVE" else None
                region.local_winners[kid] = (version, image)
                region.local_winners.move_to_end(kid)
                if len(region.local_winners) > RECENT_LOCAL_IMAGES:
                    region.local_winners.popitem(last=False)
                age_when_seen = max(0.0, seen_wall - written_us / 1_000_000)
                outgoing.append(_Op(region.name, kid, keys, version, image, seen_at, seen_at - age_when_seen))
        if not outgoing:
            return
        woken: set[str] = set()
        with self._lock:
            fraction = self._drop_fraction
            for d in self._directions.values():
                if d.source != region.name:
                    continue
                for op in outgoing:
                    # one draw per write and direction, whatever the fraction: same seed, same losses
                    if d.rng.random() < fraction:
                        d.dropped += 1
                        continue
                    d.queue.append(op)
                woken.add(d.destination)
        for name in woken:
            self._regions[name].wake.set()

    def _schedule_repair(self, region: _Region, kid: tuple, keys: dict, wrong_version: int, wrong_was_remove: bool,
                         winner_version: int, wrong_source: str) -> None:
        winner = region.local_winners.get(kid)
        if winner is None or winner[0] != winner_version:
            region.unrepaired += 1
            log.warning("replication %s: key %s was overwritten by an older replicated write and the newer "
                        "local image is no longer kept: cannot restore it", region.name, kid)
            return
        region.repairs.append(_Repair(kid, keys, wrong_version, wrong_was_remove, winner_version, winner[1],
                                      wrong_source))
        region.wake.set()

    # -- applying at a destination --------------------------------------------------------------------
    def _apply_loop(self, region: _Region) -> None:
        incoming = [d for d in self._directions.values() if d.destination == region.name]
        pool = self._pools[region.name]
        while not self._stop.is_set():
            now = time.monotonic()
            lag = self._extra_lag_s
            batch: list[tuple[_Direction, _Op]] = []
            next_due: float | None = None
            with self._lock:
                for d in incoming:
                    if d.paused:
                        continue
                    while d.queue and len(batch) < APPLY_BATCH:
                        op = d.queue[0]
                        # The configured lag counts from the moment the follower read the record
                        # (monotonic), not from the stream's ApproximateCreationDateTime: AWS
                        # documents that time as rounded down to the second, and on the wall clock
                        # it moves when the clock is stepped, so lag counted from it could apply a
                        # write up to a second too early. The read is the earliest moment the
                        # replicator knows the write had happened, so "applied >= lag after the
                        # write" holds by construction; the lag is then extra delay on top of the
                        # time it took to read the record (<= one poll), as replication's own
                        # latency comes on top of it on AWS. Measured lag (lag_s) still counts from
                        # the write, as CloudWatch's ReplicationLatency does.
                        due = op.seen_at + lag
                        if due > now:
                            next_due = due if next_due is None else min(next_due, due)
                            break
                        d.queue.popleft()
                        d.flying.append(op.written_at)
                        batch.append((d, op))
            with region.lock:
                repairs = list(region.repairs)
                region.repairs.clear()
            if not batch and not repairs:
                timeout = POLL_INTERVAL_S if next_due is None else max(0.001, min(POLL_INTERVAL_S, next_due - now))
                region.wake.wait(timeout)
                region.wake.clear()
                continue
            # Within a round only the newest write per key matters: the others lose anyway.
            newest: dict[tuple, tuple[_Direction, _Op]] = {}
            for d, op in batch:
                cur = newest.get(op.key_id)
                if cur is None or op.version > cur[1].version:
                    if cur is not None:
                        self._finish(cur[0], cur[1], "superseded")
                    newest[op.key_id] = (d, op)
                else:
                    self._finish(d, op, "superseded")
            futures = [pool.submit(self._apply_one, region, d, op) for d, op in newest.values()]
            wait(futures)
            retrying = [f for f in futures if f.exception() is not None or f.result() == "retry"]
            for f in futures:
                if f.exception() is not None:
                    self._log_error(f"apply in {region.name}", f.exception())
            for rep in repairs:
                self._repair(region, rep)
            if retrying:
                self._stop.wait(RETRY_BACKOFF_S)

    def _finish(self, d: _Direction, op: _Op, outcome: str) -> None:
        now, now_wall = time.monotonic(), time.time()
        with self._lock:
            d.flying.remove(op.written_at)
            if outcome == "retry":
                d.queue.appendleft(op)
                return
            if outcome == "failed":
                d.failed += 1
            elif outcome == "replicated":
                d.replicated += 1
                d.last_applied_at = now_wall
                d.last_lag_s = max(0.0, now - op.written_at)
                d.window_max_lag_s = max(d.window_max_lag_s, d.last_lag_s)
                d.window_applied += 1
            elif outcome == "superseded":
                d.superseded += 1

    def _note_known(self, region: _Region, kid: tuple, version: int) -> None:
        with region.lock:
            if version > region.known.get(kid, -1):
                region.known[kid] = version

    def _apply_one(self, region: _Region, d: _Direction, op: _Op) -> str:
        outcome = "retry"
        try:
            with region.lock:
                newer_known = region.known.get(op.key_id, -1) >= op.version
            if newer_known:
                outcome = "superseded"
            elif op.image is not None:
                outcome = self._put(region, op.keys, op.image, op.version, op.source, None)
            else:
                outcome = self._delete(region, op.keys, op.version, op.source, None)
            if outcome != "retry":
                self._note_known(region, op.key_id, op.version)
            return outcome
        except (ClientError, BotoCoreError) as e:
            self._log_error(f"apply {d.name}", e)
            if not _is_retryable(e):
                outcome = "failed"  # e.g. a ValidationException: retrying cannot help
            return outcome
        finally:
            self._finish(d, op, outcome)

    def _ddb(self, region: str):
        return self.ctx.internal_client("dynamodb", region)

    def _put(self, region: _Region, keys: dict, image: dict, version: int, source: str,
             expect: int | str | None) -> str:
        """Conditional put of a versioned image. expect None: LWW (only over an older version);
        an int: only over exactly that version; "absent": only if the item does not exist."""
        number = version_to_number(version)
        item = {**image, REP_UPDATETIME: {"N": number}, REP_UPDATEREGION: {"S": source}}
        names = {"#ut": REP_UPDATETIME}
        if expect is None:
            cond, values = "attribute_not_exists(#ut) OR #ut < :v", {":v": {"N": number}}
        elif expect == "absent":
            names = {"#k": next(iter(keys))}
            cond, values = "attribute_not_exists(#k)", None
        else:
            cond, values = "#ut = :e", {":e": {"N": version_to_number(expect)}}
        kw = dict(TableName=self.table, Item=item, ConditionExpression=cond, ExpressionAttributeNames=names)
        if values:
            kw["ExpressionAttributeValues"] = values
        try:
            self._ddb(region.name).put_item(**kw)
            return "replicated"
        except ClientError as e:
            if _is_conditional_failure(e):
                return "superseded"
            raise

    def _delete(self, region: _Region, keys: dict, version: int, source: str, expect: int | None) -> str:
        """Replicated delete as 2017.11.29 did it: mark the item (aws:rep:deleting, new version),
        then delete it if still marked with that version."""
        number = version_to_number(version)
        names = {"#del": REP_DELETING, "#ut": REP_UPDATETIME, "#ur": REP_UPDATEREGION}
        values = {":t": {"BOOL": True}, ":v": {"N": number}, ":r": {"S": source}}
        if expect is None:
            names["#k"] = next(iter(keys))
            cond = "attribute_exists(#k) AND (attribute_not_exists(#ut) OR #ut < :v)"
        else:
            cond = "#ut = :e"
            values[":e"] = {"N": version_to_number(expect)}
        ddb = self._ddb(region.name)
        try:
            ddb.update_item(TableName=self.table, Key=keys, UpdateExpression="SET #del = :t, #ut = :v, #ur = :r",
                            ConditionExpression=cond, ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except ClientError as e:
            if not _is_conditional_failure(e):
                raise
            # absent (already deleted: the delete holds) or newer: either way nothing to write;
            # the caller records the version as a tombstone so an older put cannot resurrect it
            return "replicated" if "Item" not in ddb.get_item(TableName=self.table, Key=keys, ConsistentRead=True) \
                else "superseded"
        try:
            ddb.delete_item(TableName=self.table, Key=keys, ConditionExpression="#ut = :v AND attribute_exists(#del)",
                            ExpressionAttributeNames={"#ut": REP_UPDATETIME, "#del": REP_DELETING},
                            ExpressionAttributeValues={":v": {"N": number}})
        except ClientError as e:
            if not _is_conditional_failure(e):
                raise
            return "superseded"  # written again in between: that write is newer
        return "replicated"

    def _repair(self, region: _Region, rep: _Repair) -> None:
        with region.lock:
            if region.seen.get(rep.key_id) != rep.winner_version:
                return  # something newer was written since; its own record decides
        try:
            if rep.winner_image is not None:
                outcome = self._put(region, rep.keys, rep.winner_image, rep.winner_version, region.name,
                                    "absent" if rep.wrong_was_remove else rep.wrong_version)
            elif not rep.wrong_was_remove:
                outcome = self._delete(region, rep.keys, rep.winner_version, region.name, rep.wrong_version)
            else:
                return
        except (ClientError, BotoCoreError) as e:
            self._log_error(f"repair in {region.name}", e)
            if _is_retryable(e):
                with region.lock:
                    region.repairs.append(rep)
            else:
                with region.lock:
                    region.unrepaired += 1
            return
        if outcome == "replicated":
            log.info("replication %s: restored key %s (a replicated older write had replaced a newer local write)",
                     region.name, rep.key_id)
            d = self._directions.get((rep.wrong_source, region.name))
            if d is not None:
                with self._lock:
                    d.repaired += 1
