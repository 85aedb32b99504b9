"""Global-table replication over real moto servers (one per region), no mocks: writes cross
regions both ways, last writer wins by source write time, no ping-pong, lag, pause/resume,
deletes, and the drop mutation knob, end to end. The rules themselves (due times, pause order,
last writer wins, tombstones, repairs, drop draws, status numbers) are tabled on a fake clock in
test_replication_model.py; this file keeps what needs real moto streams and conditional writes."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass

import pytest

from gameday.assertions.deadlines import Deadlines
from gameday.assertions.eventually import eventually
from gameday.environments.local.replication import GlobalTableReplicator, strip_replication_attributes
from gameday.environments.local.replication_model import REP_DELETING, REP_UPDATEREGION, REP_UPDATETIME
from gameday.clock import FakeClock
from gameday.config import load_config
from tests.support import provisioned_context

EAST, WEST = "us-east-1", "us-west-2"
DIRECTIONS = ((EAST, WEST), (WEST, EAST))


@pytest.fixture(scope="module")
def ctx():
    # a 1 s period so that the timeline samples (one per period) show up quickly
    cfg = load_config(None, overrides={"profiles": {"local": {"period_s": 1}}})
    with provisioned_context(cfg) as c:
        yield c


@dataclass
class StartRace:
    keys: list[str]        # every key written while start() ran, before and after
    after_start: int       # how many had been written when start() returned


@pytest.fixture(scope="module")
def started(ctx):
    """The module's replicator, started while a writer is busy in us-east-1 (so that a test
    can check that no write around start() was missed)."""
    written: list[str] = []
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            put(ctx, EAST, f"start-race-{i}", str(i))
            written.append(f"start-race-{i}")
            i += 1

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    r = GlobalTableReplicator(ctx)
    try:
        eventually(lambda: ensure(len(written) >= 5), deadline_s=10, what="writer running")
        r.start()
        after_start = len(written)
        eventually(lambda: ensure(len(written) >= after_start + 20), deadline_s=10,
                   what="writes after start() returned")
        stop.set()
        t.join(timeout=10)
        yield r, StartRace(list(written), after_start)
    finally:
        stop.set()
        r.stop()


@pytest.fixture(scope="module")
def replicator(started):
    return started[0]


@pytest.fixture
def repl(replicator):
    yield replicator
    replicator.set_lag(0.0)
    replicator.drop_fraction = 0.0
    for s, d in DIRECTIONS:
        replicator.resume(s, d)


def deadline(ctx, lag_s: float = 0.0) -> float:
    return Deadlines.from_profile(ctx.profile, ctx.config, replication_lag_s=lag_s).convergence_s


def put(ctx, region: str, key: str, value: str) -> None:
    ctx.internal_client("dynamodb", region).put_item(
        TableName=ctx.config.dynamodb.table, Item={"pk": {"S": key}, "value": {"S": value}})


def delete(ctx, region: str, key: str) -> None:
    ctx.internal_client("dynamodb", region).delete_item(TableName=ctx.config.dynamodb.table, Key={"pk": {"S": key}})


def raw(ctx, region: str, key: str) -> dict | None:
    return ctx.internal_client("dynamodb", region).get_item(
        TableName=ctx.config.dynamodb.table, Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")


def value(ctx, region: str, key: str) -> str | None:
    item = raw(ctx, region, key)
    return None if item is None else item["value"]["S"]


def items(ctx, region: str, keys) -> dict[str, dict | None]:
    """Consistent reads of many keys in one call per 100 keys."""
    keys, table, out = list(keys), ctx.config.dynamodb.table, {}
    ddb = ctx.internal_client("dynamodb", region)
    for i in range(0, len(keys), 100):
        request = {table: {"Keys": [{"pk": {"S": k}} for k in keys[i:i + 100]], "ConsistentRead": True}}
        while request:
            resp = ddb.batch_get_item(RequestItems=request)
            for item in resp["Responses"].get(table, []):
                out[item["pk"]["S"]] = item
            request = resp.get("UnprocessedKeys") or None
    return {k: out.get(k) for k in keys}


def values(ctx, region: str, keys) -> dict[str, str | None]:
    return {k: None if item is None else item["value"]["S"] for k, item in items(ctx, region, keys).items()}


def put_many(ctx, region: str, kv: dict[str, str]) -> None:
    """Many writes in one call per 25 items (each is still its own stream record)."""
    table, pairs = ctx.config.dynamodb.table, list(kv.items())
    ddb = ctx.internal_client("dynamodb", region)
    for i in range(0, len(pairs), 25):
        request = {table: [{"PutRequest": {"Item": {"pk": {"S": k}, "value": {"S": v}}}} for k, v in pairs[i:i + 25]]}
        while request:
            request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or None


class StreamCounter:
    """The records a region's stream receives from now on (start="LATEST": an iterator taken
    now can be read again and again, it always starts from the same place), or holds from
    its beginning (start="TRIM_HORIZON")."""

    def __init__(self, ctx, region: str, start: str = "LATEST"):
        table = ctx.internal_client("dynamodb", region).describe_table(TableName=ctx.config.dynamodb.table)["Table"]
        self.streams = ctx.internal_client("dynamodbstreams", region)
        arn = table["LatestStreamArn"]
        self.iterators = [
            self.streams.get_shard_iterator(StreamArn=arn, ShardId=sh["ShardId"], ShardIteratorType=start)["ShardIterator"]
            for sh in self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]]

    def records(self, keys: set[str] | None = None) -> list[dict]:
        out_records = []
        for it in self.iterators:
            while it:
                out = self.streams.get_records(ShardIterator=it, Limit=1000)
                out_records += [r for r in out["Records"] if keys is None or r["dynamodb"]["Keys"]["pk"]["S"] in keys]
                if not out["Records"]:
                    break
                it = out.get("NextShardIterator")
        return out_records

    def application_writes(self) -> int:
        """Records of the application's own writes (the replicator's are marked: a replicated
        delete with aws:rep:deleting, a replicated put with a new aws:rep:updatetime)."""
        def stamp(image):
            return (image or {}).get(REP_UPDATETIME)
        n = 0
        for r in self.records():
            body = r["dynamodb"]
            if r["eventName"] == "REMOVE":
                n += REP_DELETING not in body.get("OldImage", {})
            else:
                n += stamp(body.get("NewImage")) is None or stamp(body.get("NewImage")) == stamp(body.get("OldImage"))
        return n

    def count(self, keys: set[str] | None = None) -> int:
        return len(self.records(keys))

    def values_written(self, keys: set[str]) -> set[tuple[str, str]]:
        """(key, value) of every item image written to these keys since the counter was made."""
        return {(r["dynamodb"]["Keys"]["pk"]["S"], r["dynamodb"]["NewImage"]["value"]["S"])
                for r in self.records(keys) if "NewImage" in r["dynamodb"] and "value" in r["dynamodb"]["NewImage"]}


def ensure(ok: bool, detail="") -> None:
    """An assertion usable in a lambda (eventually() retries on AssertionError)."""
    if not ok:
        raise AssertionError(detail)


def quiet(repl) -> None:
    st = repl.status()
    busy = {d: v["pending"] for d, v in st.items() if v["pending"]}
    assert not busy, f"replication still has pending writes: {busy}"


def consistently(check, *, duration_s: float, interval_s: float = 0.05) -> None:
    """The opposite of eventually: check() must hold at every look during duration_s.
    (A stability window is time by nature; this waits on an Event, not for a condition.)"""
    end = time.monotonic() + duration_s
    tick = threading.Event()
    while True:
        check()
        if time.monotonic() >= end:
            return
        tick.wait(interval_s)


# -------------------------------------------------------------------------------------------------

def test_a_write_in_either_region_appears_in_the_other(ctx, repl):
    put(ctx, EAST, "both-e", "written in east")
    put(ctx, WEST, "both-w", "written in west")

    def arrived():
        assert value(ctx, WEST, "both-e") == "written in east"
        assert value(ctx, EAST, "both-w") == "written in west"
    eventually(arrived, deadline_s=deadline(ctx), what="writes replicated to the other region")
    # the replica is marked the way global tables 2017.11.29 mark replicated items
    assert raw(ctx, WEST, "both-e")[REP_UPDATEREGION] == {"S": EAST}
    assert raw(ctx, EAST, "both-w")[REP_UPDATEREGION] == {"S": WEST}
    assert strip_replication_attributes(raw(ctx, WEST, "both-e")) == {"pk": {"S": "both-e"},
                                                                    "value": {"S": "written in east"}}
    st = repl.status()
    assert {f"{s}->{d}" for s, d in DIRECTIONS} == set(st)
    for v in st.values():
        assert {"lag_s", "pending", "paused", "replicated", "dropped", "last_applied_at"} <= set(v)
        assert v["replicated"] >= 1 and v["last_applied_at"]
    json.dumps(st)


def test_writes_racing_start_are_not_missed(ctx, started):
    """start() follows the streams from their trim horizon: a write made while start() runs,
    or just after it returns, is never lost (a LATEST iterator taken late would lose some)."""
    _, race = started
    assert len(race.keys) >= race.after_start + 20

    def all_arrived():
        missing = [k for k, item in items(ctx, WEST, race.keys).items() if item is None]
        assert not missing, f"{len(missing)} of {len(race.keys)} writes missing in {WEST}, e.g. {missing[:3]}"
    eventually(all_arrived, deadline_s=deadline(ctx), what="every write around start() replicated")


def test_a_restarted_replicator_replays_the_streams_without_changing_anything(ctx, repl):
    """A fresh replicator (nothing in memory) reads both streams from the trim horizon and
    carries every old write again: the conditional write alone must turn each into a no-op,
    so neither table gets a single new record."""
    put(ctx, EAST, "replay", "v1")
    eventually(lambda: ensure(value(ctx, WEST, "replay") == "v1"), deadline_s=deadline(ctx), what="v1 replicated")
    put(ctx, EAST, "replay", "v2")
    eventually(lambda: (quiet(repl), ensure(value(ctx, WEST, "replay") == "v2")), deadline_s=deadline(ctx),
               what="v2 replicated")
    streams = {EAST: StreamCounter(ctx, EAST), WEST: StreamCounter(ctx, WEST)}
    # what the second replicator will carry: every application write in each region's stream
    history = {r: StreamCounter(ctx, r, start="TRIM_HORIZON").application_writes() for r in (EAST, WEST)}
    second = GlobalTableReplicator(ctx).start()
    try:
        def replayed():
            st = second.status()
            for s, d in DIRECTIONS:
                v = st[f"{s}->{d}"]
                assert v["pending"] == 0 and v["replicated"] + v["superseded"] >= history[s], (history, st)
                assert v["dropped"] == v["failed"] == 0, st
        eventually(replayed, deadline_s=deadline(ctx), what="second replicator replayed both streams")
    finally:
        second.stop()
    st = second.status()
    assert all(v["replicated"] == 0 for v in st.values()), st
    assert streams[EAST].count() == 0 and streams[WEST].count() == 0
    assert value(ctx, EAST, "replay") == value(ctx, WEST, "replay") == "v2"


def test_conflicting_writes_converge_to_the_later_write_whatever_the_region(ctx, repl):
    """Both directions paused, so each region really has its own value: on resume each
    key must settle on the write made later, in both regions (region priority or
    arrival order would get half of the keys wrong)."""
    for s, d in DIRECTIONS:
        repl.pause(s, d)
    streams = {EAST: StreamCounter(ctx, EAST), WEST: StreamCounter(ctx, WEST)}
    east_first = [f"lww-ew-{i}" for i in range(5)]   # east writes, then west writes later
    west_first = [f"lww-we-{i}" for i in range(5)]   # west writes, then east writes later
    for k in east_first:
        put(ctx, EAST, k, "east (earlier)")
    for k in west_first:
        put(ctx, WEST, k, "west (earlier)")
    for k in east_first:
        put(ctx, WEST, k, "west (later)")
    for k in west_first:
        put(ctx, EAST, k, "east (later)")
    # the replicator has both sides' writes in hand and holds them
    eventually(lambda: ensure(all(v["pending"] >= 10 for v in repl.status().values()), repl.status()),
               deadline_s=deadline(ctx), what="both directions holding the conflicting writes")
    assert values(ctx, WEST, east_first) == dict.fromkeys(east_first, "west (later)")
    assert values(ctx, EAST, east_first) == dict.fromkeys(east_first, "east (earlier)")
    for s, d in DIRECTIONS:
        repl.resume(s, d)

    expected = {**dict.fromkeys(east_first, "west (later)"), **dict.fromkeys(west_first, "east (later)")}

    def converged():
        quiet(repl)
        for region in (EAST, WEST):
            assert values(ctx, region, expected) == expected, region
    eventually(converged, deadline_s=deadline(ctx), what="replicas converge on the later writes")
    # and they stay converged: nothing keeps flipping
    consistently(converged, duration_s=0.5)
    # The older write never replaced the newer one, not even for a moment: every write is in
    # the stream, so this sees what polling the item could miss.
    assert not {v for _, v in streams[WEST].values_written(set(east_first))} & {"east (earlier)"}
    assert not {v for _, v in streams[EAST].values_written(set(west_first))} & {"west (earlier)"}


def test_racing_writes_to_the_same_key_converge(ctx, repl):
    """No pause: a write in east, then at once a write in west, for many keys. The older
    east write often reaches west before west's own write has been read from west's
    stream; the replicas must still agree on the later (west) write."""
    keys = [f"race-{i}" for i in range(15)]
    for k in keys:
        put(ctx, EAST, k, "east (earlier)")
        put(ctx, WEST, k, "west (later)")
    expected = dict.fromkeys(keys, "west (later)")

    def converged():
        quiet(repl)
        assert values(ctx, EAST, keys) == expected
        assert values(ctx, WEST, keys) == expected
    eventually(converged, deadline_s=deadline(ctx), what="racing writes converge on the later write")
    consistently(converged, duration_s=0.5)


def test_replicated_writes_do_not_replicate_back(ctx, repl):
    keys_e = {f"pp-e-{i}" for i in range(10)}
    keys_w = {f"pp-w-{i}" for i in range(10)}
    streams = {EAST: StreamCounter(ctx, EAST), WEST: StreamCounter(ctx, WEST)}
    put_many(ctx, EAST, dict.fromkeys(keys_e, "e"))
    put_many(ctx, WEST, dict.fromkeys(keys_w, "w"))
    keys = keys_e | keys_w

    def arrived():
        quiet(repl)
        assert all(items(ctx, WEST, keys_e).values()) and all(items(ctx, EAST, keys_w).values())
    eventually(arrived, deadline_s=deadline(ctx), what="writes replicated")
    # each region's stream: its 10 own writes + the 10 replicated ones, and nothing more, ever
    assert streams[EAST].count(keys) == 20
    assert streams[WEST].count(keys) == 20
    replicated_before = {d: v["replicated"] for d, v in repl.status().items()}

    def still_bounded():
        assert streams[EAST].count(keys) == 20
        assert streams[WEST].count(keys) == 20
        assert {d: v["replicated"] for d, v in repl.status().items()} == replicated_before
    # ten poll intervals and more: an echo sent back would have shown up by now
    consistently(still_bounded, duration_s=1.0, interval_s=0.2)


def test_configured_lag_on_the_injected_clock_delays_application_exactly(ctx, repl):
    """Lag measured end to end once, on a FakeClock (the rule itself is tabled in
    test_replication_model): a second replicator whose ctx.clock is fake reads the write off moto's
    stream and writes it to the other region's moto exactly when its clock reaches seen + lag, not
    a fake millisecond before, however long the real wait. Also proves the adapter reads the time
    and waits from ctx.clock only: a leftover time.monotonic() would apply at once or never. The
    module's replicator holds east->west meanwhile, so only the second one can deliver."""
    lag, key = 30.0, "lagged-fake-clock"
    # a fake wall clock in 1970, before any real stream time, so a write's age when read is 0 and
    # the measured lag is exactly the fake time between the read and the write to the other region
    clock = FakeClock(start=1_000_000.0)
    repl.pause(EAST, WEST)
    second = GlobalTableReplicator(dataclasses.replace(ctx, clock=clock))
    second.set_lag(lag)
    second.start()
    try:
        # its first poll (no time needs to pass) reads the streams' history; the write comes after,
        # so it is read at a later fake time and falls due after every older write
        eventually(lambda: ensure(second.status()[f"{EAST}->{WEST}"]["pending"] > 0), deadline_s=deadline(ctx),
                   what="second replicator read the history")
        put(ctx, EAST, key, "slow")

        def read_off_the_stream():
            clock.advance(0.2)   # the follower polls once per fake interval
            d = second._directions[(EAST, WEST)]
            with second._lock:
                ops = [o for o in d.queue if o.keys == {"pk": {"S": key}}]
            assert ops, "not read yet"
            return ops[0]
        op, _ = eventually(read_off_the_stream, deadline_s=deadline(ctx), what="second replicator read the write")
        clock.advance(op.seen_at + lag - 0.001 - clock.monotonic())

        def only_the_not_yet_due_left():   # every write read before ours (due earlier) is done
            d = second._directions[(EAST, WEST)]
            with second._lock:
                later, in_flight, pending = sum(o.seen_at >= op.seen_at for o in d.queue), d.in_flight, d.pending
            assert later >= 1, f"{key} was taken off the queue before seen + lag"
            assert in_flight == 0 and pending == later, (in_flight, pending, later)
        eventually(only_the_not_yet_due_left, deadline_s=deadline(ctx), what="writes due earlier applied")
        consistently(lambda: ensure(raw(ctx, WEST, key) is None, "applied before seen + lag"), duration_s=0.3)
        clock.advance(0.001)
        eventually(lambda: ensure(value(ctx, WEST, key) == "slow"), deadline_s=deadline(ctx),
                   what="lagged write applied once the fake clock reaches seen + lag")

        def accounted():   # the write lands in moto first, then the direction books it: wait for both
            st = second.status()[f"{EAST}->{WEST}"]
            assert st["last_applied_at"] is not None and st["pending"] == 0, st
            assert st["lag_s"] == pytest.approx(lag, abs=0.002), st
        eventually(accounted, deadline_s=deadline(ctx), what="the applied write in the direction's status")
    finally:
        second.stop()
    events = [e for e in ctx.events.since(0, "replication") if e.get("action") == "set_lag"]
    assert events and events[-1]["extra_lag_s"] == lag


def test_pause_holds_writes_and_resume_delivers_all_in_order(ctx, repl):
    repl.pause(EAST, WEST)
    keys = [f"held-{i}" for i in range(20)]
    put_many(ctx, EAST, dict.fromkeys(keys, "v1"))
    put(ctx, EAST, keys[0], "v2")  # a second write to the same key: the later one must win
    eventually(lambda: ensure(repl.status()[f"{EAST}->{WEST}"]["pending"] >= 21, repl.status()),
               deadline_s=deadline(ctx), what="paused direction holding the writes")
    assert repl.status()[f"{EAST}->{WEST}"]["paused"] is True
    # held, not applied
    assert values(ctx, WEST, keys) == dict.fromkeys(keys)
    # the other direction keeps replicating
    put(ctx, WEST, "held-other-way", "w")
    eventually(lambda: ensure(value(ctx, EAST, "held-other-way") == "w"),
               deadline_s=deadline(ctx), what="west->east still replicating while east->west is paused")
    assert values(ctx, WEST, keys) == dict.fromkeys(keys)

    repl.resume(EAST, WEST)
    expected = {**dict.fromkeys(keys, "v1"), keys[0]: "v2"}

    def delivered():
        quiet(repl)
        assert values(ctx, WEST, keys) == expected
    eventually(delivered, deadline_s=deadline(ctx), what="held writes delivered on resume")
    st = repl.status()[f"{EAST}->{WEST}"]
    assert st["paused"] is False and st["pending"] == 0
    actions = [(e["action"], e["source"], e["destination"]) for e in ctx.events.since(0, "replication")
               if e.get("action") in ("pause", "resume")]
    assert ("pause", EAST, WEST) in actions and ("resume", EAST, WEST) in actions
    assert actions.index(("pause", EAST, WEST)) < len(actions) - 1 - actions[::-1].index(("resume", EAST, WEST))


def test_deletes_replicate_and_take_part_in_last_writer_wins(ctx, repl):
    put(ctx, EAST, "del-1", "x")
    put(ctx, EAST, "del-2", "x")
    put(ctx, EAST, "del-3", "x")
    put(ctx, EAST, "del-4", "x")
    all_keys = ["del-1", "del-2", "del-3", "del-4"]
    eventually(lambda: ensure(all(raw(ctx, WEST, k) for k in all_keys)),
               deadline_s=deadline(ctx), what="items replicated before deleting")
    delete(ctx, EAST, "del-1")   # deleted where it was written
    delete(ctx, WEST, "del-2")   # deleted in the replica
    eventually(lambda: ensure((raw(ctx, WEST, "del-1"), raw(ctx, EAST, "del-2")) == (None, None)),
               deadline_s=deadline(ctx), what="deletes replicated both ways")

    # delete vs write on the same key, both directions paused: the later one wins
    for s, d in DIRECTIONS:
        repl.pause(s, d)
    put(ctx, EAST, "del-3", "updated (earlier)")
    delete(ctx, WEST, "del-3")                     # later: del-3 must end deleted everywhere
    delete(ctx, WEST, "del-4")
    put(ctx, EAST, "del-4", "written again (later)")  # later: del-4 must come back everywhere
    for s, d in DIRECTIONS:
        repl.resume(s, d)

    def settled():
        quiet(repl)
        for region in (EAST, WEST):
            assert raw(ctx, region, "del-3") is None, region
            item = raw(ctx, region, "del-4")
            assert item is not None and item["value"]["S"] == "written again (later)", (region, item)
            assert REP_DELETING not in item
    eventually(settled, deadline_s=deadline(ctx), what="delete/write conflicts settled by last writer wins")
    consistently(settled, duration_s=0.5)
    assert raw(ctx, EAST, "del-1") is None and raw(ctx, WEST, "del-2") is None


def test_drop_fraction_really_loses_writes_and_is_reversible(ctx, repl):
    """End to end, the knob really loses writes in moto (which share: the seeded draws, in
    test_replication_model). At 1.0 every write is lost, so the check needs no statistics."""
    before = repl.status()[f"{EAST}->{WEST}"]
    repl.drop_fraction = 1.0
    keys = [f"drop-{i}" for i in range(20)]
    put_many(ctx, EAST, dict.fromkeys(keys, "lost"))

    def accounted():
        st = repl.status()[f"{EAST}->{WEST}"]
        assert st["pending"] == 0 and st["dropped"] - before["dropped"] == len(keys), st
    eventually(accounted, deadline_s=deadline(ctx), what="every write dropped")
    assert values(ctx, WEST, keys) == dict.fromkeys(keys)
    assert repl.status()[f"{EAST}->{WEST}"]["replicated"] == before["replicated"]
    # the knob is reversible: with 0 nothing is lost again
    repl.drop_fraction = 0.0
    put(ctx, EAST, "drop-after", "kept")
    eventually(lambda: ensure(value(ctx, WEST, "drop-after") == "kept"),
               deadline_s=deadline(ctx), what="writes replicate again once drop_fraction is 0")


def test_bad_arguments_raise_clear_value_errors(repl):
    with pytest.raises(ValueError, match=r"unknown region 'eu-west-9'.*us-east-1"):
        repl.pause(EAST, "eu-west-9")
    with pytest.raises(ValueError, match=r"unknown region 'mars-1'"):
        repl.resume("mars-1", WEST)
    with pytest.raises(ValueError, match="itself"):
        repl.pause(EAST, EAST)
    with pytest.raises(ValueError, match=">= 0"):
        repl.set_lag(-1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        repl.drop_fraction = 1.5
    assert repl.drop_fraction == 0.0 and all(not v["paused"] for v in repl.status().values())


def test_lag_samples_go_on_the_timeline(ctx, repl):
    seq = max((e["seq"] for e in ctx.events.since(0)), default=0)
    period = ctx.profile.period_s

    def sampled():
        got = {e["direction"] for e in ctx.events.since(seq, "replication_lag")}
        assert got == {f"{s}->{d}" for s, d in DIRECTIONS}, got
    eventually(sampled, deadline_s=2.5 * period, what="one lag sample per direction per period")
    e = ctx.events.since(seq, "replication_lag")[0]
    assert {"direction", "lag_s", "pending", "paused"} <= set(e)


def test_keeps_up_with_a_burst(ctx, repl):
    """300 items land at once (batch writes) and are all replicated at more than 30 items/s.
    The floor sits between a replicator that writes one item per poll interval (15-20 items/s
    measured) and the slowest healthy runs on a 2-core machine shared by busy neighbours
    (57-140 items/s measured; one conditional PutItem costs ~2 ms of replicator CPU and
    ~4 ms of moto CPU)."""
    n, floor = 300, 30
    table = ctx.config.dynamodb.table
    before = repl.status()[f"{EAST}->{WEST}"]["replicated"]
    east = ctx.internal_client("dynamodb", EAST)
    t0 = time.monotonic()
    for j in range(n // 25):
        east.batch_write_item(RequestItems={table: [
            {"PutRequest": {"Item": {"pk": {"S": f"burst-{j}-{i}"}, "value": {"S": "b"}}}} for i in range(25)]})

    def all_replicated():
        done = repl.status()[f"{EAST}->{WEST}"]["replicated"] - before
        assert done >= n, f"{done}/{n}"
    _, took = eventually(all_replicated, deadline_s=n / floor, what=f"{n} items replicated at >= {floor} items/s",
                         started=t0)
    print(f"replicated {n} items in {took:.2f}s = {n / took:.0f} items/s")
