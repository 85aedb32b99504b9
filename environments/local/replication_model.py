"""The rules of DynamoDB global-table replication, as pure code: no threads, no sockets, no boto3,
no clock reads. `replication.py` is the adapter: it reads the streams, makes the conditional
writes in moto, runs the threads and passes the time in.

What lives here:
- versions: a write's version is its time in its source region (microseconds) x 10 + the
  region's rank, so every replica orders two writes the same way (last writer wins, ties broken
  by region name), encoded in `aws:rep:updatetime`;
- `RegionVersions.classify()`: a page of a region's stream -> the application's writes to carry
  (versioned), the replicator's own writes (bookkeeping) and the repairs a race calls for;
- `Direction`: one source -> destination queue; an op is due at `seen_at + lag` (seen_at is when
  the replicator read the write, the earliest moment it knows the write happened; never the
  stream's ApproximateCreationDateTime, which AWS rounds down to the second), held while the
  direction is paused and delivered in order on resume, dropped by a seeded draw (mutation knob);
  lag_at / oldest_unapplied / in_flight / status numbers;
- last writer wins at a destination: `lww_outcome()` says what a replicated write does to the
  item there; `put_request()` / `mark_delete_request()` / `delete_request()` are the conditional
  writes that enforce exactly that in DynamoDB.

Every time here is on one axis chosen by the caller (the adapter uses `clock.monotonic()` for
seen_at / written_at / now, and `clock.time()` for wall stamps such as last_applied_at).
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from decimal import Decimal

REP_PREFIX = "aws:rep:"
REP_UPDATETIME = "aws:rep:updatetime"
REP_UPDATEREGION = "aws:rep:updateregion"
REP_DELETING = "aws:rep:deleting"

RECENT_LOCAL_IMAGES = 50_000  # per region: images of recent local writes, for repairs

_VERSION_DIGITS = 7           # aws:rep:updatetime decimals: 6 for microseconds + 1 for the region rank
_VERSION_SCALE = 10 ** _VERSION_DIGITS
MICRO = 10                    # one microsecond in version units

# outcomes of carrying one op to its destination
REPLICATED, SUPERSEDED, RETRY, FAILED = "replicated", "superseded", "retry", "failed"


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


def stamp(image: dict | None) -> int | None:
    """The version an item image carries (None: unstamped, i.e. written by the application)."""
    if not image or REP_UPDATETIME not in image:
        return None
    try:
        return number_to_version(image[REP_UPDATETIME]["N"])
    except (KeyError, ArithmeticError, ValueError):
        return None


def key_id(keys: dict) -> tuple:
    # Keys is {"pk": {"S": "k1"}}; values are str, or bytes for B: hashable either way
    return tuple((name, *next(iter(value.items()))) for name, value in sorted(keys.items()))


def local_version(written_us: int, rank: int, previous: int | None) -> int:
    """Version of an application write made at written_us (epoch microseconds) in the region of
    this rank, over `previous` (the newest version that region had for the key, or None)."""
    version = written_us * MICRO + rank
    if previous is not None and version <= previous:
        # same microsecond, or just after a replicated write: still newer than what it overwrote
        version = (previous // MICRO) * MICRO + rank
        if version <= previous:
            version += MICRO
    return version


@dataclass(slots=True)
class Op:
    """One user write to carry from its source region to one destination."""

    source: str
    key_id: tuple
    keys: dict
    version: int
    image: dict | None          # the item without aws:rep:* attributes; None for a delete
    seen_at: float              # when the follower read the record: the write had happened by then
    written_at: float           # the write as the replicator knows it: seen_at minus the record's age
                                # when read (never after seen_at)

    def due_at(self, lag_s: float) -> float:
        """The configured lag counts from seen_at, the earliest moment the replicator knows the
        write had happened, so "applied >= lag after the write" holds by construction."""
        return self.seen_at + lag_s


@dataclass(slots=True)
class Repair:
    """Restore a local write that a replicated, older write replaced in a race."""

    key_id: tuple
    keys: dict
    wrong_version: int          # version of the write that must be undone
    wrong_was_remove: bool      # it deleted the item (so the item is absent now)
    winner_version: int
    winner_image: dict | None   # None: the winner is a delete
    wrong_source: str


@dataclass
class Direction:
    """The writes read from `source` and not yet applied in `destination`, in stream order."""

    source: str
    destination: str
    rng: random.Random          # one draw per op offered, whatever the drop fraction: same seed, same losses
    queue: deque = field(default_factory=deque)
    paused: bool = False
    # written_at of each op taken off the queue and not finished yet: the destination may already
    # show the write while its put_item is returning, and until finish() the direction is still
    # behind by that write's age (not by the last finished write's lag)
    flying: list = field(default_factory=list)
    replicated: int = 0
    dropped: int = 0
    superseded: int = 0
    repaired: int = 0
    failed: int = 0
    last_lag_s: float = 0.0
    last_applied_at: float | None = None   # wall time (the caller's), for status
    window_max_lag_s: float = 0.0
    window_applied: int = 0

    @property
    def name(self) -> str:
        return f"{self.source}->{self.destination}"

    @property
    def in_flight(self) -> int:
        return len(self.flying)

    @property
    def pending(self) -> int:
        """Read and not applied: held, delayed or in flight (PendingReplicationCount's idea)."""
        return len(self.queue) + len(self.flying)

    def oldest_unapplied(self) -> float | None:
        """written_at of the oldest write read and not yet applied (queued or in flight)."""
        unapplied = list(self.flying)
        if self.queue:
            unapplied.append(self.queue[0].written_at)
        return min(unapplied, default=None)

    def lag_at(self, now: float) -> float:
        """How far the destination is behind at `now`: the age of the oldest write not applied
        yet, else the lag of the last one applied (ReplicationLatency counts from the write)."""
        oldest = self.oldest_unapplied()
        return self.last_lag_s if oldest is None else max(now - oldest, self.last_lag_s)

    def pause(self) -> bool:
        """Hold every op from now on; True if the direction was running."""
        was, self.paused = self.paused, True
        return not was

    def resume(self) -> int | None:
        """Deliver the held ops (in order) from now on; the backlog, or None if it was not paused."""
        if not self.paused:
            return None
        self.paused = False
        return len(self.queue)

    def offer(self, ops: list[Op], drop_fraction: float) -> int:
        """Queue the ops, but silently lose each with probability drop_fraction; how many were queued."""
        queued = 0
        for op in ops:
            if self.rng.random() < drop_fraction:
                self.dropped += 1
                continue
            self.queue.append(op)
            queued += 1
        return queued

    def take_due(self, now: float, lag_s: float, limit: int) -> tuple[list[Op], float | None]:
        """Up to `limit` ops due at `now` (seen_at + lag <= now), in order, marked in flight; and
        when the next one falls due (None: nothing waiting, or paused: resume() wakes it)."""
        taken: list[Op] = []
        if self.paused:
            return taken, None
        while self.queue and len(taken) < limit:
            due = self.queue[0].due_at(lag_s)
            if due > now:
                return taken, due
            op = self.queue.popleft()
            self.flying.append(op.written_at)
            taken.append(op)
        return taken, None

    def finish(self, op: Op, outcome: str, now: float, now_wall: float) -> None:
        """An op taken by take_due() is done with `outcome`; RETRY puts it back at the head."""
        self.flying.remove(op.written_at)
        if outcome == RETRY:
            self.queue.appendleft(op)
        elif outcome == FAILED:
            self.failed += 1
        elif outcome == SUPERSEDED:
            self.superseded += 1
        elif outcome == REPLICATED:
            self.replicated += 1
            self.last_applied_at = now_wall
            self.last_lag_s = max(0.0, now - op.written_at)
            self.window_max_lag_s = max(self.window_max_lag_s, self.last_lag_s)
            self.window_applied += 1
        else:
            raise ValueError(f"unknown replication outcome {outcome!r}")

    def status(self, now: float) -> dict:
        return {"lag_s": round(self.lag_at(now), 4), "pending": self.pending, "paused": self.paused,
                "replicated": self.replicated, "dropped": self.dropped, "superseded": self.superseded,
                "repaired": self.repaired, "failed": self.failed, "last_applied_at": self.last_applied_at}

    def sample(self, now: float) -> dict:
        """One timeline sample: the worst lag since the last sample (or of what is still
        unapplied now), and what was applied; starts the next window."""
        lag = max(self.window_max_lag_s, self.lag_at(now) if self.oldest_unapplied() is not None else 0.0)
        out = {"direction": self.name, "lag_s": round(lag, 4), "pending": self.pending, "paused": self.paused,
               "applied": self.window_applied}
        self.window_max_lag_s = 0.0
        self.window_applied = 0
        return out


def newest_per_key(batch: list[tuple[Direction, Op]]) -> tuple[list[tuple[Direction, Op]], list[tuple[Direction, Op]]]:
    """Within one round only the newest write per key needs a call: the others lose anyway.
    Returns (to apply, superseded)."""
    newest: dict[tuple, tuple[Direction, Op]] = {}
    losers: list[tuple[Direction, Op]] = []
    for d, op in batch:
        cur = newest.get(op.key_id)
        if cur is None or op.version > cur[1].version:
            if cur is not None:
                losers.append(cur)
            newest[op.key_id] = (d, op)
        else:
            losers.append((d, op))
    return list(newest.values()), losers


def known_newer(known: int | None, version: int) -> bool:
    """A write (or delete: a tombstone) at least as new as `version` is known at the destination:
    the incoming write loses without a call (so an older put cannot resurrect a deleted item)."""
    return known is not None and known >= version


def lww_outcome(known: int | None, exists: bool, current: int | None, version: int,
                is_delete: bool) -> tuple[str, bool, int | None]:
    """Last writer wins at a destination: what a replicated write of `version` does to the item
    there (exists, current = its aws:rep:updatetime, None if unstamped) given the newest version
    known there. Returns (outcome, exists after, version after). The adapter carries this out
    as known_newer() then the conditional writes below; this is the rule they implement."""
    if known_newer(known, version):
        return SUPERSEDED, exists, current
    older_there = current is None or current < version   # attribute_not_exists(#ut) OR #ut < :v
    if is_delete:
        # absent already: the delete holds (recorded as a tombstone in `known` by the caller)
        return (REPLICATED, False, None) if not exists or older_there else (SUPERSEDED, exists, current)
    if exists and not older_there:
        return SUPERSEDED, exists, current
    return REPLICATED, True, version


def put_request(table: str, keys: dict, image: dict, version: int, source: str, expect: int | str | None) -> dict:
    """put_item arguments for a versioned image. expect None: last writer wins (only over an
    older or unstamped item); an int: only over exactly that version; "absent": only if the
    item does not exist (repairs)."""
    number = version_to_number(version)
    item = {**image, REP_UPDATETIME: {"N": number}, REP_UPDATEREGION: {"S": source}}
    names = {"#ut": REP_UPDATETIME}
    values: dict | None
    if expect is None:
        cond, values = "attribute_not_exists(#ut) OR #ut < :v", {":v": {"N": number}}
    elif expect == "absent":
        names = {"#k": next(iter(keys))}
        cond, values = "attribute_not_exists(#k)", None
    else:
        cond, values = "#ut = :e", {":e": {"N": version_to_number(expect)}}
    kw = dict(TableName=table, Item=item, ConditionExpression=cond, ExpressionAttributeNames=names)
    if values:
        kw["ExpressionAttributeValues"] = values
    return kw


def mark_delete_request(table: str, keys: dict, version: int, source: str, expect: int | None) -> dict:
    """update_item arguments for step 1 of a replicated delete as 2017.11.29 did it: mark the
    item (aws:rep:deleting, new version) if it exists and is older (expect None), or if it is
    exactly at version `expect` (repairs)."""
    names = {"#del": REP_DELETING, "#ut": REP_UPDATETIME, "#ur": REP_UPDATEREGION}
    values = {":t": {"BOOL": True}, ":v": {"N": version_to_number(version)}, ":r": {"S": source}}
    if expect is None:
        names["#k"] = next(iter(keys))
        cond = "attribute_exists(#k) AND (attribute_not_exists(#ut) OR #ut < :v)"
    else:
        cond = "#ut = :e"
        values[":e"] = {"N": version_to_number(expect)}
    return dict(TableName=table, Key=keys, UpdateExpression="SET #del = :t, #ut = :v, #ur = :r",
                ConditionExpression=cond, ExpressionAttributeNames=names, ExpressionAttributeValues=values)


def delete_request(table: str, keys: dict, version: int) -> dict:
    """delete_item arguments for step 2: delete only if still marked with that version."""
    return dict(TableName=table, Key=keys, ConditionExpression="#ut = :v AND attribute_exists(#del)",
                ExpressionAttributeNames={"#ut": REP_UPDATETIME, "#del": REP_DELETING},
                ExpressionAttributeValues={":v": {"N": version_to_number(version)}})


@dataclass
class RegionVersions:
    """What the replicator knows of one region's items, from its stream and its own writes."""

    name: str
    rank: int                   # position of the region's name in sorted order: breaks version ties
    # max version seen in this region's stream, in stream order (the follower's view)
    seen: dict[tuple, int] = field(default_factory=dict)
    # max version known to be in (or deleted from: a tombstone) this region: seen + what the applier wrote
    known: dict[tuple, int] = field(default_factory=dict)
    # key -> (version, image|None) of recent local writes that are the newest seen for the key
    local_winners: OrderedDict = field(default_factory=OrderedDict)
    repairs: deque = field(default_factory=deque)
    unrepaired: int = 0         # races seen too late to restore (the local image was no longer kept)

    def note_known(self, kid: tuple, version: int) -> None:
        if version > self.known.get(kid, -1):
            self.known[kid] = version

    def has_newer(self, kid: tuple, version: int) -> bool:
        return known_newer(self.known.get(kid), version)

    def classify(self, records: list[dict], seen_at: float, seen_wall: float) -> list[Op]:
        """A page of this region's stream, read at seen_at (caller's clock for lag) / seen_wall
        (epoch s, the stream time's clock): the application's writes, versioned, to carry to the
        other regions. The replicator's own writes are only bookkeeping (no ping-pong); one that
        replaced a newer local write schedules a Repair."""
        outgoing = []
        for rec in records:
            body, event = rec["dynamodb"], rec["eventName"]
            keys = body["Keys"]
            kid = key_id(keys)
            new, old = body.get("NewImage"), body.get("OldImage")
            if event == "REMOVE":
                own_version = stamp(old) if old and REP_DELETING in old else None
            else:
                own_version = stamp(new)
                if own_version is not None and own_version == stamp(old):
                    own_version = None  # an application update that kept the version: not ours
            if own_version is not None:
                self._own_write(kid, keys, own_version, event == "REMOVE",
                                (new or old or {}).get(REP_UPDATEREGION, {}).get("S", "?"))
                continue
            created = body.get("ApproximateCreationDateTime")
            # whole microseconds (moto's are whole milliseconds): no float rounding surprises
            written_us = round((created.timestamp() if created is not None else seen_wall) * 1_000_000)
            version = local_version(written_us, self.rank, self.seen.get(kid))
            self.seen[kid] = version
            self.note_known(kid, version)
            image = strip_replication_attributes(new) if event != "REMOVE" else None
            self.local_winners[kid] = (version, image)
            self.local_winners.move_to_end(kid)
            if len(self.local_winners) > RECENT_LOCAL_IMAGES:
                self.local_winners.popitem(last=False)
            age_when_seen = max(0.0, seen_wall - written_us / 1_000_000)
            outgoing.append(Op(self.name, kid, keys, version, image, seen_at, seen_at - age_when_seen))
        return outgoing

    def _own_write(self, kid: tuple, keys: dict, version: int, was_remove: bool, source: str) -> None:
        previous = self.seen.get(kid)
        if previous is not None and version < previous:
            # an older replicated write landed over a newer local one (read from this stream later)
            self._schedule_repair(kid, keys, version, was_remove, previous, source)
        else:
            self.seen[kid] = version
            self.local_winners.pop(kid, None)  # the item now carries its version
        self.note_known(kid, version)

    def _schedule_repair(self, kid: tuple, keys: dict, wrong_version: int, wrong_was_remove: bool,
                         winner_version: int, wrong_source: str) -> None:
        winner = self.local_winners.get(kid)
        if winner is None or winner[0] != winner_version:
            self.unrepaired += 1
            return
        self.repairs.append(Repair(kid, keys, wrong_version, wrong_was_remove, winner_version, winner[1],
                                   wrong_source))

    def take_repairs(self) -> list[Repair]:
        out = list(self.repairs)
        self.repairs.clear()
        return out

    def repair_plan(self, rep: Repair) -> tuple[str, int | str] | None:
        """What restoring rep needs now: ("put", expect) / ("delete", expect), or None when a newer
        write was seen since (its own record decides) or there is nothing to undo."""
        if self.seen.get(rep.key_id) != rep.winner_version:
            return None
        if rep.winner_image is not None:
            return "put", "absent" if rep.wrong_was_remove else rep.wrong_version
        if not rep.wrong_was_remove:
            return "delete", rep.wrong_version
        return None  # both deletes: the item is absent either way
