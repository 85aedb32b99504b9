"""The rules of global-table replication on a fake clock (replication_model: no threads, no moto).
Times are plain numbers handed to the model; the whole file runs in milliseconds.

AWS semantics checked, and where they come from:
- Last writer wins, item by item, between concurrent updates; all replicas converge.
  "Global tables: How it works" (2017.11.29),
  https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/globaltables_HowItWorks.html ;
  AWS Prescriptive Guidance "Using Amazon DynamoDB global tables": each item keeps a last-write
  timestamp, enforced with a conditional write requiring the incoming timestamp to be greater,
  https://docs.aws.amazon.com/prescriptive-guidance/latest/dynamodb-global-tables/overview.html
- A replica that cannot receive writes (here: a paused direction) does not lose them: "any writes
  in Region A not yet propagated are held and propagated after Region A comes back online. The
  write operations aren't lost", and a newer write in B to the same item suppresses the held one
  under last writer wins. "Evacuating a Region with DynamoDB global tables",
  https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-global-table-design.prescriptive-guidance.evacuation.html
- ReplicationLatency is the time between the write in one replica and its appearance in another,
  per source/destination pair; PendingReplicationCount counts updates written in one replica and
  not yet in another. "Monitoring global tables",
  https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/globaltables_monitoring.html
- A stream record's ApproximateCreationDateTime is rounded down to the second (StreamRecord, API
  reference): the configured lag must not count from it (issue 17 item 7).
"""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from gameday.environments.local.replication_model import (
    FAILED,
    REP_DELETING,
    REP_UPDATEREGION,
    REP_UPDATETIME,
    REPLICATED,
    RETRY,
    SUPERSEDED,
    Direction,
    Op,
    RegionVersions,
    key_id,
    local_version,
    lww_outcome,
    newest_per_key,
    number_to_version,
    version_to_number,
)

EAST, WEST = "us-east-1", "us-west-2"   # ranks 0 and 1 (sorted names)
T0 = 1_767_225_600.0                    # 2026-01-01T00:00:00Z, the FakeClock's default start


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def keys(k: str) -> dict:
    return {"pk": {"S": k}}


def app_record(key: str, value: str | None, created: float | None, old_value: str | None = None) -> dict:
    """A stream record of an application write (no aws:rep:* attributes); value None: a delete."""
    body: dict = {"Keys": keys(key)}
    if created is not None:
        body["ApproximateCreationDateTime"] = at(created)
    if value is not None:
        body["NewImage"] = {**keys(key), "value": {"S": value}}
    if old_value is not None:
        body["OldImage"] = {**keys(key), "value": {"S": old_value}}
    event = "REMOVE" if value is None else ("MODIFY" if old_value is not None else "INSERT")
    return {"eventName": event, "dynamodb": body}


def own_record(key: str, version: int, source: str, *, remove: bool = False, old: dict | None = None) -> dict:
    """A stream record of the replicator's own write (stamped), as the destination's stream shows it."""
    stamped = {**keys(key), "value": {"S": "replicated"}, REP_UPDATETIME: {"N": version_to_number(version)},
               REP_UPDATEREGION: {"S": source}}
    if remove:
        return {"eventName": "REMOVE", "dynamodb": {"Keys": keys(key), "OldImage": {**stamped, REP_DELETING: {"BOOL": True}}}}
    body = {"Keys": keys(key), "NewImage": stamped}
    if old is not None:
        body["OldImage"] = old
    return {"eventName": "MODIFY", "dynamodb": body}


def op(key: str = "k", version: int = 1, *, seen_at: float = 100.0, written_at: float | None = None,
       image: dict | None = None) -> Op:
    return Op(EAST, key_id(keys(key)), keys(key), version, image, seen_at,
              seen_at if written_at is None else written_at)


# -- versions ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("written_us, rank, previous, expected", [
    (1_000_000, 0, None, 10_000_000),                 # microseconds x 10 + rank
    (1_000_000, 1, None, 10_000_001),                 # the later region name wins a tie
    (1_000_000, 0, 10_000_001, 10_000_010),           # same microsecond as a write it overwrote: still newer
    (1_000_000, 1, 10_000_000, 10_000_001),           # same microsecond, higher rank: newer already
    (999_999, 0, 10_000_005, 10_000_010),             # clock behind what it overwrote: bumped past it
    (2_000_000, 0, 10_000_001, 20_000_000),           # later: its own time
])
def test_a_local_write_is_newer_than_what_it_overwrote(written_us, rank, previous, expected):
    assert local_version(written_us, rank, previous) == expected


@pytest.mark.parametrize("version", [0, 1, 17_672_256_001_234_561, 17_672_256_000_000_000])
def test_versions_round_trip_through_aws_rep_updatetime(version):
    number = version_to_number(version)
    assert number_to_version(number) == version
    assert float(number) == pytest.approx(version / 10_000_000)


# -- lag: an op is due at seen_at + lag ---------------------------------------------------------------

@pytest.mark.parametrize("lag, now, taken, next_due", [
    (0.0, 100.0, True, None),          # no lag: due as soon as seen
    (1.0, 100.999, False, 101.0),      # not before seen + lag ...
    (1.0, 101.0, True, None),          # ... and due exactly then
    (1.0, 105.0, True, None),          # late is fine (applied at or after)
    (2.5, 101.0, False, 102.5),
])
def test_lag_delays_an_op_until_seen_plus_lag(lag, now, taken, next_due):
    d = Direction(EAST, WEST, random.Random(0))
    d.offer([op(seen_at=100.0)], 0.0)
    ops, due = d.take_due(now, lag, 10)
    assert (len(ops) == 1) is taken
    assert due == next_due
    assert d.pending == 1, "taken or waiting, it is pending until finished"


def test_lag_counts_from_when_the_write_was_read_not_from_the_rounded_stream_time():
    """AWS rounds ApproximateCreationDateTime down to the second: a write made at .9 of a second
    carries a stream time 0.9 s early. Counting the lag from it would apply the write up to a
    second too early (the old flaky real-time test); counting from the read cannot."""
    east = RegionVersions(EAST, 0)
    written, read = T0 + 0.9, T0 + 0.95
    rec = app_record("k", "v", created=T0)          # the stream time, rounded down to T0
    [o] = east.classify([rec], seen_at=500.0, seen_wall=read)
    assert o.due_at(1.0) == 501.0                    # read + lag, on the caller's clock
    assert o.due_at(1.0) - (500.0 - (read - written)) >= 1.0, "applied at least lag after the write"
    assert o.written_at == pytest.approx(500.0 - 0.95), "latency counts from the stream's time of the write"
    assert o.written_at <= o.seen_at


def test_ops_due_later_do_not_hold_back_when_the_next_falls_due():
    d = Direction(EAST, WEST, random.Random(0))
    d.offer([op("a", 1, seen_at=100.0), op("b", 2, seen_at=100.4)], 0.0)
    first, due = d.take_due(101.0, 1.0, 10)
    assert [o.key_id for o in first] == [key_id(keys("a"))] and due == 101.4
    second, due = d.take_due(101.4, 1.0, 10)
    assert [o.key_id for o in second] == [key_id(keys("b"))] and due is None


def test_take_due_stops_at_the_batch_limit_in_order():
    d = Direction(EAST, WEST, random.Random(0))
    d.offer([op(f"k{i}", i) for i in range(5)], 0.0)
    ops, due = d.take_due(200.0, 0.0, 3)
    assert [o.version for o in ops] == [0, 1, 2] and due is None and len(d.queue) == 2


# -- pause / resume ---------------------------------------------------------------------------------

@pytest.mark.parametrize("writes_before_pause, writes_while_paused", [(0, 5), (3, 4), (2, 0)])
def test_pause_holds_every_op_and_resume_delivers_them_in_order(writes_before_pause, writes_while_paused):
    d = Direction(EAST, WEST, random.Random(0))
    versions = list(range(writes_before_pause + writes_while_paused))
    d.offer([op(f"k{v}", v, seen_at=100.0) for v in versions[:writes_before_pause]], 0.0)
    assert d.pause() is True and d.pause() is False          # idempotent: one event, not two
    d.offer([op(f"k{v}", v, seen_at=100.0) for v in versions[writes_before_pause:]], 0.0)
    held, due = d.take_due(10_000.0, 0.0, 1000)              # however long the pause lasts
    assert held == [] and due is None and d.pending == len(versions)
    assert d.resume() == len(versions)                        # the backlog, for the timeline
    assert d.resume() is None
    delivered, _ = d.take_due(10_000.0, 0.0, 1000)
    assert [o.version for o in delivered] == versions         # in the order they were written


def test_a_paused_op_is_still_not_due_before_its_lag_after_resume():
    d = Direction(EAST, WEST, random.Random(0))
    d.pause()
    d.offer([op(seen_at=100.0)], 0.0)
    d.resume()
    assert d.take_due(100.5, 1.0, 10) == ([], 101.0)


# -- last writer wins at a destination ----------------------------------------------------------------

@pytest.mark.parametrize("known, exists, current, version, is_delete, expected", [
    (None, False, None, 5, False, (REPLICATED, True, 5)),     # new item
    (None, True, 3, 5, False, (REPLICATED, True, 5)),         # newer write replaces older
    (None, True, 7, 5, False, (SUPERSEDED, True, 7)),         # a late older write loses
    (None, True, 5, 5, False, (SUPERSEDED, True, 5)),         # a replay changes nothing
    (None, True, None, 5, False, (REPLICATED, True, 5)),      # unstamped local write not read yet: repaired later
    (7, True, 7, 5, False, (SUPERSEDED, True, 7)),            # known newer: no call at all
    (7, False, None, 5, False, (SUPERSEDED, False, None)),    # tombstone: an older put cannot resurrect
    (None, True, 3, 5, True, (REPLICATED, False, None)),      # newer delete removes
    (None, True, 7, 5, True, (SUPERSEDED, True, 7)),          # older delete loses to a newer put
    (None, False, None, 5, True, (REPLICATED, False, None)),  # already absent: the delete holds
    (7, True, 7, 5, True, (SUPERSEDED, True, 7)),
])
def test_last_writer_wins_at_the_destination(known, exists, current, version, is_delete, expected):
    assert lww_outcome(known, exists, current, version, is_delete) == expected


def test_within_a_round_only_the_newest_write_per_key_is_applied():
    d = Direction(EAST, WEST, random.Random(0))
    batch = [(d, op("a", 3)), (d, op("a", 9)), (d, op("b", 4)), (d, op("a", 5))]
    apply, losers = newest_per_key(batch)
    assert sorted(o.version for _, o in apply) == [4, 9]
    assert sorted(o.version for _, o in losers) == [3, 5]


class TwoRegions:
    """The model's whole pipeline between two in-memory replicas: application writes go in a
    region's table unstamped and in its stream; the follower classifies the stream; directions
    queue, lag and pause; the destination applies by last writer wins."""

    def __init__(self, lag_s: float = 0.0):
        self.lag_s = lag_s
        self.versions = {EAST: RegionVersions(EAST, 0), WEST: RegionVersions(WEST, 1)}
        self.dirs = {(EAST, WEST): Direction(EAST, WEST, random.Random(0)),
                     (WEST, EAST): Direction(WEST, EAST, random.Random(0))}
        self.tables: dict[str, dict[str, tuple[str, int | None]]] = {EAST: {}, WEST: {}}
        self.unread: dict[str, list[dict]] = {EAST: [], WEST: []}

    def write(self, region: str, key: str, value: str | None, t: float) -> None:
        old = self.tables[region].get(key)
        if value is None:
            self.tables[region].pop(key, None)
        else:
            self.tables[region][key] = (value, None)
        self.unread[region].append(app_record(key, value, T0 + t, None if old is None else old[0]))

    def read(self, region: str, now: float) -> None:
        ops = self.versions[region].classify(self.unread[region], now, T0 + now)
        self.unread[region] = []
        for (s, _), d in self.dirs.items():
            if s == region:
                d.offer(ops, 0.0)

    def deliver(self, now: float) -> None:
        for (_, dest), d in self.dirs.items():
            ops, _ = d.take_due(now, self.lag_s, 1000)
            apply, losers = newest_per_key([(d, o) for o in ops])
            for _, o in losers:
                d.finish(o, SUPERSEDED, now, T0 + now)
            for _, o in apply:
                d.finish(o, self._apply(dest, o), now, T0 + now)

    def _apply(self, dest: str, o: Op) -> str:
        key, table = o.key_id[0][2], self.tables[dest]
        exists, current = key in table, table[key][1] if key in table else None
        outcome, exists_after, version_after = lww_outcome(
            self.versions[dest].known.get(o.key_id), exists, current, o.version, o.image is None)
        if outcome == REPLICATED:
            if exists_after:
                table[key] = (o.image["value"]["S"], version_after)
            else:
                table.pop(key, None)
        self.versions[dest].note_known(o.key_id, o.version)
        return outcome

    def values(self, region: str) -> dict[str, str]:
        return {k: v for k, (v, _) in self.tables[region].items()}


# (region, key, value, time of the write); value None: a delete. "sync" reads both streams and delivers.
LWW_CASES = {
    "east earlier, west later: west's write everywhere":
        ([(EAST, "k", "e", 0.1), (WEST, "k", "w", 0.2)], {"k": "w"}),
    "west earlier, east later: east's write everywhere (no region priority)":
        ([(WEST, "k", "w", 0.1), (EAST, "k", "e", 0.2)], {"k": "e"}),
    "the same microsecond: the later region name wins in both":
        ([(EAST, "k", "e", 0.1), (WEST, "k", "w", 0.1)], {"k": "w"}),
    "a put, then a later delete in the other region: deleted everywhere":
        ([(EAST, "k", "x", 0.0), "sync", (EAST, "k", "e", 0.1), (WEST, "k", None, 0.2)], {}),
    "a delete, then a later put in the other region: the put everywhere":
        ([(EAST, "k", "x", 0.0), "sync", (WEST, "k", None, 0.1), (EAST, "k", "again", 0.2)], {"k": "again"}),
    "many keys, each decided on its own":
        ([(EAST, "a", "e", 0.1), (WEST, "a", "w", 0.2), (WEST, "b", "w", 0.1), (EAST, "b", "e", 0.2)],
         {"a": "w", "b": "e"}),
}


@pytest.mark.parametrize("writes, expected", LWW_CASES.values(), ids=LWW_CASES.keys())
def test_concurrent_writes_in_two_regions_converge_on_the_last_writer(writes, expected):
    sim, now = TwoRegions(), 1.0
    for w in writes:
        if w == "sync":
            sim.read(EAST, now), sim.read(WEST, now), sim.deliver(now)
            now += 1.0
        else:
            sim.write(*w)
    sim.read(EAST, now), sim.read(WEST, now), sim.deliver(now)
    assert sim.values(EAST) == sim.values(WEST) == expected


def test_a_late_older_write_is_superseded_where_a_newer_one_is_known():
    sim = TwoRegions()
    sim.write(EAST, "k", "older", 0.1)
    sim.write(WEST, "k", "newer", 0.2)
    sim.read(WEST, 1.0)
    sim.deliver(1.0)                     # the newer write reaches east first
    sim.read(EAST, 5.0)                  # east's follower was behind: its older write is read late
    sim.deliver(5.0)
    assert sim.values(EAST) == sim.values(WEST) == {"k": "newer"}
    east_west = sim.dirs[(EAST, WEST)]
    assert (east_west.superseded, east_west.replicated) == (1, 0)


def test_writes_held_by_a_pause_lose_to_newer_writes_made_meanwhile():
    """The evacuation page: a held write is delivered later, and suppressed under last writer
    wins where the item was updated since."""
    sim = TwoRegions()
    sim.dirs[(EAST, WEST)].pause()
    sim.write(EAST, "held", "from east", 0.1)
    sim.write(EAST, "kept", "from east", 0.1)
    sim.read(EAST, 1.0)
    sim.write(WEST, "held", "west, later", 2.0)
    sim.read(WEST, 3.0)
    sim.deliver(3.0)
    assert "kept" not in sim.values(WEST)
    sim.dirs[(EAST, WEST)].resume()
    sim.deliver(4.0)
    assert sim.values(EAST) == sim.values(WEST) == {"held": "west, later", "kept": "from east"}


@pytest.mark.parametrize("lag", [0.5, 2.0])
def test_lag_end_to_end_through_the_pipeline(lag):
    sim = TwoRegions(lag_s=lag)
    sim.write(EAST, "k", "v", 10.0)
    sim.read(EAST, 10.05)
    sim.deliver(10.05 + lag - 0.001)
    assert sim.values(WEST) == {}
    sim.deliver(10.05 + lag)
    assert sim.values(WEST) == {"k": "v"}
    assert sim.dirs[(EAST, WEST)].last_lag_s == pytest.approx(lag + 0.05)


# -- the replicator's own writes and repairs ---------------------------------------------------------

def test_own_writes_are_bookkeeping_not_replicated_again():
    west = RegionVersions(WEST, 1)
    v = local_version(int((T0 + 1) * 1e6), 0, None)
    assert west.classify([own_record("k", v, EAST)], 10.0, T0 + 2) == []
    assert west.classify([own_record("k", v, EAST, remove=True)], 10.0, T0 + 2) == []
    assert west.known[key_id(keys("k"))] == v
    # an application update that kept the stamp is the application's, not the replicator's
    stamped = own_record("k", v, EAST)["dynamodb"]["NewImage"]
    update = {"eventName": "MODIFY", "dynamodb": {"Keys": keys("k"), "NewImage": {**stamped, "value": {"S": "app"}},
                                                  "OldImage": stamped, "ApproximateCreationDateTime": at(T0 + 3)}}
    [o] = west.classify([update], 11.0, T0 + 3)
    assert o.version > v and o.image["value"] == {"S": "app"} and REP_UPDATETIME not in o.image


@pytest.mark.parametrize("local_value, wrong_is_remove, plan", [
    ("local", False, ("put", "wrong")),      # restore the local image over exactly the wrong version
    ("local", True, ("put", "absent")),      # the wrong write deleted it: restore only if still absent
    (None, False, ("delete", "wrong")),      # the local write was a delete: delete the wrong put again
    (None, True, None),                      # both deletes: nothing to undo
])
def test_an_older_replicated_write_over_a_newer_local_one_is_repaired(local_value, wrong_is_remove, plan):
    west = RegionVersions(WEST, 1)
    wrong = local_version(int((T0 + 1) * 1e6), 0, None)           # east's write, older
    [local] = west.classify([app_record("k", local_value, T0 + 2)], 10.0, T0 + 2)
    assert west.classify([own_record("k", wrong, EAST, remove=wrong_is_remove)], 10.1, T0 + 2.1) == []
    [rep] = west.take_repairs()
    assert (rep.wrong_version, rep.winner_version, rep.wrong_source) == (wrong, local.version, EAST)
    expected = None if plan is None else (plan[0], wrong if plan[1] == "wrong" else plan[1])
    assert west.repair_plan(rep) == expected
    # once a newer write is seen, its own record decides: no repair
    west.classify([app_record("k", "newest", T0 + 3)], 10.2, T0 + 3)
    assert west.repair_plan(rep) is None


def test_a_race_seen_too_late_is_counted_unrepaired():
    west = RegionVersions(WEST, 1)
    west.classify([app_record("k", "local", T0 + 2)], 10.0, T0 + 2)
    west.local_winners.clear()                                     # the image aged out
    west.classify([own_record("k", local_version(int((T0 + 1) * 1e6), 0, None), EAST)], 10.1, T0 + 2.1)
    assert (west.unrepaired, west.take_repairs()) == (1, [])


def test_an_own_write_at_or_above_what_was_seen_is_not_a_race():
    west = RegionVersions(WEST, 1)
    [local] = west.classify([app_record("k", "local", T0 + 1)], 10.0, T0 + 1)
    west.classify([own_record("k", local.version + 10, EAST)], 10.1, T0 + 2)
    assert west.take_repairs() == [] and west.seen[key_id(keys("k"))] == local.version + 10


# -- drop fraction -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction, seed", [(0.0, 1), (1.0, 1), (0.3, 7), (0.5, 42)])
def test_drop_fraction_drops_exactly_the_seeded_draws(fraction, seed):
    d = Direction(EAST, WEST, random.Random(seed))
    ops = [op(f"k{i}", i) for i in range(200)]
    queued = d.offer(ops, fraction)
    draws = random.Random(seed)
    expected_kept = [o.version for o in ops if not draws.random() < fraction]
    assert [o.version for o in d.queue] == expected_kept
    assert (queued, d.dropped) == (len(expected_kept), len(ops) - len(expected_kept))


def test_one_draw_per_op_whatever_the_fraction_so_a_change_keeps_the_sequence():
    d = Direction(EAST, WEST, random.Random(3))
    d.offer([op("a", 1), op("b", 2)], 0.0)       # two draws spent, nothing dropped
    d.offer([op(f"k{i}", i) for i in range(3, 50)], 0.5)
    draws = random.Random(3)
    draws.random(), draws.random()
    assert d.dropped == sum(draws.random() < 0.5 for _ in range(3, 50))


# -- status numbers ----------------------------------------------------------------------------------

def test_a_write_in_flight_still_counts_as_lag_until_it_is_finished():
    # The destination can show a replicated write while its put_item is still returning; until the
    # replicator finishes it, the direction is behind by that write's age, not by the lag of the
    # last write it finished.
    d = Direction(EAST, WEST, random.Random(0))
    d.last_lag_s = 0.2
    assert d.lag_at(100.0) == 0.2 and d.oldest_unapplied() is None
    d.flying.append(98.5)                       # written 1.5 s ago, taken off the queue, not finished
    assert d.lag_at(100.0) == pytest.approx(1.5)
    d.queue.append(op(seen_at=99.5, written_at=99.4))
    assert d.lag_at(100.0) == pytest.approx(1.5), "the oldest unapplied write"
    assert d.oldest_unapplied() == 98.5
    d.flying.clear()
    assert d.lag_at(100.0) == pytest.approx(0.6)
    assert d.in_flight == 0


@pytest.mark.parametrize("outcome, counter", [(REPLICATED, "replicated"), (SUPERSEDED, "superseded"),
                                              (FAILED, "failed")])
def test_finishing_an_op_counts_its_outcome(outcome, counter):
    d = Direction(EAST, WEST, random.Random(0))
    d.offer([op(seen_at=100.0, written_at=99.9)], 0.0)
    [o], _ = d.take_due(100.0, 0.0, 10)
    assert (d.in_flight, d.status(100.2)["lag_s"]) == (1, pytest.approx(0.3))
    d.finish(o, outcome, 100.25, T0 + 100.25)
    st = d.status(100.3)
    assert st[counter] == 1 and st["pending"] == 0
    assert sum(st[c] for c in ("replicated", "superseded", "failed")) == 1
    applied = outcome == REPLICATED
    assert st["last_applied_at"] == (T0 + 100.25 if applied else None)
    assert st["lag_s"] == (pytest.approx(0.35) if applied else 0.0)


def test_a_retried_op_goes_back_to_the_head_of_the_queue():
    d = Direction(EAST, WEST, random.Random(0))
    d.offer([op("a", 1), op("b", 2)], 0.0)
    [a], _ = d.take_due(200.0, 0.0, 1)
    d.finish(a, RETRY, 200.0, T0)
    assert [o.version for o in d.queue] == [1, 2] and d.in_flight == 0 and d.replicated == 0
    [again], _ = d.take_due(200.0, 0.0, 1)
    assert again is a
    with pytest.raises(ValueError, match="unknown replication outcome"):
        d.finish(again, "bogus", 200.0, T0)


def test_a_timeline_sample_reports_the_worst_lag_of_its_window_then_starts_a_new_one():
    d = Direction(EAST, WEST, random.Random(0))
    d.offer([op("a", 1, seen_at=100.0, written_at=99.0), op("b", 2, seen_at=100.0, written_at=99.8)], 0.0)
    for o in d.take_due(100.0, 0.0, 10)[0]:
        d.finish(o, REPLICATED, 100.0, T0 + 100)
    assert d.sample(100.5) == {"direction": f"{EAST}->{WEST}", "lag_s": 1.0, "pending": 0, "paused": False,
                               "applied": 2}
    assert d.sample(101.5) == {"direction": f"{EAST}->{WEST}", "lag_s": 0.0, "pending": 0, "paused": False,
                               "applied": 0}
    d.pause()
    d.offer([op("c", 3, seen_at=102.0, written_at=101.5)], 0.0)
    assert d.sample(104.0)["lag_s"] == 2.5 and d.sample(104.0)["paused"] is True
