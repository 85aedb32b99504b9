"""The data checkers (assertions/checkers.py) and the Elle export (assertions/elle.py).

Table-driven: every checker gets histories it must pass and histories it must fail (a lost
write, a write present in one region only, a stale read, an error burst over budget, a history
ending before recovery, concurrent writes to the same key), plus a property test: random
histories with known losses injected, where the checker must find exactly those; the checkers
as composable parts (assertions/protocol.py); and every checker against a deliberately simple
reference implementation on random histories of every shape.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gameday.assertions import elle
from gameday.assertions.checkers import (INF, UNKNOWN, CheckResult, HistoryError, convergence, divergent_keys,
                                         error_budget, lost_acked_writes, operations, read_your_writes, rto)
from gameday.assertions.protocol import (Checker, CompositeResult, Convergence, DivergentKeys, ErrorBudget,
                                         LostAckedWrites, ReadYourWrites, Rto, RunView, compose)

E, W = "us-east-1", "us-west-2"
T0 = 1_764_000_000.0


# -- history builders ----------------------------------------------------------------------------------------

class Hist:
    """Builds a history the way loadgen/history.py records one: an invoke entry, then a completion
    with the same id, latency_s and wall time; entries in time order."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, int, dict]] = []
        self.n = 0

    def op(self, kind: str, key, value, inv: float, done: float | None, typ: str = "ok", *, proc: str = "w1/1",
           region: str = E, served_by: str | None = "same", status=None, invoke: bool = True) -> "Hist":
        self.n += 1
        oid = f"run:w1:{self.n}"
        base = {"id": oid, "process": proc, "worker": proc.split("/")[0], "op": kind, "key": key, "region": region}
        if invoke:
            self.entries.append((T0 + inv, 0, {**base, "type": "invoke", "value": value if kind == "write" else None,
                                               "time": T0 + inv}))
        if done is not None:
            if status is None:
                status = 200 if typ == "ok" else (500 if typ == "info" else 503)
            sb = region if served_by == "same" else served_by
            self.entries.append((T0 + done, 1, {**base, "type": typ, "value": value, "served_by": sb,
                                                "status": status, "latency_s": round(done - inv, 6),
                                                "time": T0 + done}))
        return self

    def w(self, key, value, inv, done, typ="ok", **kw) -> "Hist":
        return self.op("write", key, value, inv, done, typ, **kw)

    def r(self, key, value, inv, done, typ="ok", **kw) -> "Hist":
        if value is None and typ == "ok":
            kw.setdefault("status", 404)
        return self.op("read", key, value, inv, done, typ, **kw)

    def build(self) -> list[dict]:
        return [e for _, _, e in sorted(self.entries, key=lambda x: (x[0], x[1]))]


def both(table: dict) -> dict:
    return {E: dict(table), W: dict(table)}


# -- lost_acked_writes -----------------------------------------------------------------------------------------

def seq2():  # two sequential acked writes of k1: v1 then v2
    return Hist().w("k1", "v1", 1.0, 1.2).w("k1", "v2", 2.0, 2.2).build()


def concurrent2():  # two overlapping acked writes of k1: either may win under last writer wins
    return Hist().w("k1", "v1", 1.0, 2.0, proc="w1/1").w("k1", "v2", 1.5, 2.5, proc="w1/2").build()


LOST_CASES = [
    # (id, history, replicas, expected valid, expected distinct lost, {region: lost})
    ("present-everywhere", Hist().w("k1", "v1", 1, 1.1).build(), both({"k1": "v1"}), True, 0, {}),
    ("missing-in-one-region", Hist().w("k1", "v1", 1, 1.1).w("k2", "v2", 1, 1.1).build(),
     {E: {"k1": "v1", "k2": "v2"}, W: {"k1": "v1"}}, False, 1, {W: 1}),
    ("missing-everywhere", Hist().w("k1", "v1", 1, 1.1).build(), both({}), False, 1, {E: 1, W: 1}),
    ("sequential-final-is-last", seq2(), both({"k1": "v2"}), True, 0, {}),
    ("sequential-rolled-back", seq2(), both({"k1": "v1"}), False, 1, {E: 1, W: 1}),
    ("present-in-one-region-only", seq2(), {E: {"k1": "v2"}, W: {"k1": "v1"}}, False, 1, {W: 1}),
    ("concurrent-first-wins", concurrent2(), both({"k1": "v1"}), True, 0, {}),
    ("concurrent-second-wins", concurrent2(), both({"k1": "v2"}), True, 0, {}),
    ("concurrent-regions-disagree", concurrent2(), {E: {"k1": "v1"}, W: {"k1": "v2"}}, True, 0, {}),
    ("concurrent-but-then-a-later-write-lost",
     Hist().w("k1", "v1", 1.0, 2.0).w("k1", "v2", 1.5, 2.5).w("k1", "v3", 3.0, 3.1).build(),
     both({"k1": "v2"}), False, 1, {E: 1, W: 1}),
    ("rolled-back-two-writes", Hist().w("k1", "v1", 1, 1.1).w("k1", "v2", 2, 2.1).w("k1", "v3", 3, 3.1).build(),
     {E: {"k1": "v3"}, W: {"k1": "v1"}}, False, 2, {W: 2}),
    ("info-write-may-be-final", Hist().w("k1", "v1", 1, 1.1).w("k1", "v2", 2, 7, "info").build(),
     both({"k1": "v2"}), True, 0, {}),
    ("info-write-may-be-absent", Hist().w("k1", "v1", 1, 1.1).w("k1", "v2", 2, 7, "info").build(),
     both({"k1": "v1"}), True, 0, {}),
    ("info-write-may-land-after-a-later-ack",
     Hist().w("k1", "v1", 1, 1.1).w("k1", "v2", 2, 2.5, "info").w("k1", "v3", 3, 3.1).build(),
     both({"k1": "v2"}), True, 0, {}),
    ("info-does-not-excuse-a-missing-key", Hist().w("k1", "v1", 1, 1.1).w("k1", "v2", 2, 7, "info").build(),
     both({}), False, 1, {E: 1, W: 1}),
    ("in-flight-at-the-end-may-be-final", Hist().w("k1", "v1", 1, 1.1).w("k1", "v2", 2, None).build(),
     both({"k1": "v2"}), True, 0, {}),
    ("failed-write-never-excuses-by-absence", Hist().w("k1", "v1", 1, 1.1).w("k1", "v2", 2, 2.1, "fail").build(),
     both({"k1": "v1"}), True, 0, {}),
    ("value-no-write-wrote", Hist().w("k1", "v1", 1, 1.1).build(), both({"k1": "zzz"}), False, 1, {E: 1, W: 1}),
    ("int-key-and-decimal-value", Hist().w(5, 7, 1, 1.1).build(), both({"5": Decimal("7")}), True, 0, {}),
    ("fail-only-history", Hist().w("k1", "v1", 1, 1.1, "fail").build(), both({}), UNKNOWN, 0, {}),
]


@pytest.mark.parametrize("history,replicas,valid,n_lost,per_region",
                         [c[1:] for c in LOST_CASES], ids=[c[0] for c in LOST_CASES])
def test_lost_acked_writes_table(history, replicas, valid, n_lost, per_region):
    res = lost_acked_writes(history, replicas)
    assert res.valid == valid, res.detail
    assert res.metrics["lost_acked_writes"] == n_lost, res.detail
    for r in (E, W):
        assert res.metrics[f"lost_in.{r}"] == per_region.get(r, 0), res.detail


def test_lost_write_detail_names_the_key_the_value_and_the_region():
    res = lost_acked_writes(seq2(), {E: {"k1": "v2"}, W: {"k1": "v1"}})
    assert "k1='v2' acked but missing from us-west-2 (us-west-2 has 'v1')" in res.detail
    assert res.detail.startswith("1 of 2 acknowledged writes lost")
    missing = lost_acked_writes(Hist().w("k9", "v", 1, 1.1).build(), {E: {"k9": "v"}, W: {}})
    assert "k9='v' acked but missing from us-west-2 (us-west-2 has no item)" in missing.detail


def test_detail_names_at_most_five_lost_writes():
    h = Hist()
    for i in range(12):
        h.w(f"k{i}", f"v{i}", 1, 1.1)
    res = lost_acked_writes(h.build(), {E: {}, W: {}})
    assert res.metrics["lost_acked_writes"] == 12
    assert res.detail.count("acked but missing") == 5 and "(7 more)" in res.detail


def test_foreign_and_failed_values_are_reported():
    h = Hist().w("k1", "v1", 1, 1.1).w("k2", "a", 1, 1.1).w("k2", "b", 2, 2.1, "fail").build()
    res = lost_acked_writes(h, both({"k1": "zzz", "k2": "b"}))
    assert res.metrics["foreign_values"] == 2 and res.metrics["failed_writes_visible"] == 2   # per region
    assert "final values that no recorded write wrote (e.g. k1='zzz'" in res.detail
    assert res.metrics["lost_acked_writes"] == 1   # k1 only: k2's failed write was applied after all


def test_rpo_allowed_losses():
    h = Hist().w("k1", "v1", 1, 1.1).w("k2", "v2", 1, 1.1).w("k3", "v3", 1, 1.1).build()
    two_lost = {E: {"k1": "v1", "k2": "v2", "k3": "v3"}, W: {"k1": "v1"}}
    assert lost_acked_writes(h, two_lost).valid is False
    ok = lost_acked_writes(h, two_lost, allowed=2)
    assert ok.valid is True and ok.metrics["lost_acked_writes"] == 2 and ok.metrics["allowed_lost_writes"] == 2
    assert "RPO: at most 2 allowed: within" in ok.detail
    over = lost_acked_writes(h, {E: {}, W: {}}, allowed=2)
    assert over.valid is False and "OVER" in over.detail


def test_clock_skew_tolerance():
    h = Hist().w("k1", "v1", 1.0, 2.0).w("k1", "v2", 2.05, 2.2).build()
    assert lost_acked_writes(h, both({"k1": "v1"})).valid is False
    assert lost_acked_writes(h, both({"k1": "v1"}), clock_skew_s=0.1).valid is True


def test_no_replicas_or_no_writes_is_unknown():
    assert lost_acked_writes(seq2(), {}).valid == UNKNOWN
    assert lost_acked_writes(Hist().r("k1", None, 1, 1.1).build(), both({})).valid == UNKNOWN


def _strip(history: list[dict], *fields: str) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in fields} for e in history]


@pytest.mark.parametrize("form", ["ids", "latency-only", "invokes-by-client", "completions-only"])
def test_same_verdict_however_the_history_places_operations(form):
    """ids + invokes, no ids (latency), no ids and no latency (paired by client), completions only."""
    h = Hist()
    h.w("k1", "v1", 1.0, 1.2).w("k1", "v2", 2.0, 2.2, proc="w1/2").w("k2", "a", 1.0, 1.5, proc="w1/3")
    h.w("k2", "b", 1.2, 1.7, proc="w1/4").w("k3", "x", 3.0, None, proc="w1/5").w("k3", "y", 1, 1.1, proc="w1/6")
    history = h.build()
    if form == "latency-only":
        history = _strip(history, "id")
    elif form == "invokes-by-client":
        history = _strip(history, "id", "latency_s")
    elif form == "completions-only":
        history = [e for e in _strip(history, "id") if e["type"] != "invoke"]
    replicas = {E: {"k1": "v2", "k2": "a", "k3": "x"}, W: {"k1": "v1", "k2": "b", "k3": "y"}}
    res = lost_acked_writes(history, replicas)
    expect_lost = 1 if form != "completions-only" else 2   # without its invoke, k3=x is an unknown value
    assert res.metrics["lost_acked_writes"] == expect_lost, res.detail
    assert "k1='v2' acked but missing from us-west-2" in res.detail


def test_invokes_without_ids_pair_with_their_clients_completions_first_in_first_out():
    """Process a's two id-less writes of k0 complete in the order they were invoked: v1 at 1.0,
    v2 at 2.0. b's x completed at 1.6, so v2 (invoked after) is lost, v1 (overlapping) is not."""
    def e(typ, value, t, proc="a", **kw):
        return {"type": typ, "op": "write", "key": "k0", "value": value, "time": T0 + t, "process": proc, **kw}
    h = [e("invoke", "v1", 1.0), e("invoke", "x", 1.5, "b", id="b1"), e("ok", "x", 1.6, "b", id="b1"),
         e("invoke", "v2", 2.0), e("ok", "v1", 2.5), e("ok", "v2", 3.0)]
    assert [(o.value, o.invoked - T0) for o in operations(h) if o.client == "a"] == [("v1", 1.0), ("v2", 2.0)]
    res = lost_acked_writes(h, both({"k0": "x"}))
    assert res.metrics["lost_acked_writes"] == 1 and "k0='v2' acked but missing" in res.detail, res.detail


def test_entries_without_a_placeable_invocation_never_invent_a_loss():
    """No id, no latency, no invoke: the write may have started at any time, so it is not lost."""
    history = [{"type": "ok", "op": "write", "key": "k1", "value": "v1", "time": T0 + 1},
               {"type": "ok", "op": "write", "key": "k1", "value": "v2", "time": T0 + 5}]
    assert lost_acked_writes(history, both({"k1": "v1"})).valid is True
    # with latencies the order is known and v2's loss is found
    for e, lat in zip(history, (0.1, 0.1)):
        e["latency_s"] = lat
    assert lost_acked_writes(history, both({"k1": "v1"})).valid is False


def test_only_the_canonical_field_names_are_read():
    """time, process, latency_s, served_by (and type, id, op, key, value, region, status): other
    spellings are migrated when a stored run is read (reports/rundata.py), not guessed here."""
    canonical = {"type": "ok", "op": "write", "key": 5, "value": "v", "time": T0 + 1, "latency_s": 0.25,
                 "region": E, "served_by": W, "status": 200, "process": "w0/1"}
    (o,) = operations([canonical])
    assert (o.type, o.op, o.key, o.value, o.region, o.served_by, o.status, o.client) == \
           ("ok", "write", "5", "v", E, W, 200, "w0/1")
    assert o.completed == T0 + 1 and o.invoked == pytest.approx(T0 + 0.75)
    aliased = {"type": "ok", "f": "write", "k": "a", "v": 1, "time": T0 + 1, "latency_ms": 250, "target": E,
               "server_region": W, "user": "u1"}
    (a,) = operations([aliased])
    assert (a.op, a.key, a.value, a.region, a.served_by, a.client, a.invoked) == (None, None, None, None, None,
                                                                                 None, -INF)
    with pytest.raises(HistoryError, match="history entry 1: no time"):
        operations([{"type": "ok", "op": "write", "ts": T0}])
    with pytest.raises(HistoryError, match="history entry 1: time must be epoch seconds"):
        operations([{"type": "ok", "op": "write", "time": "2025-11-24T16:00:00+00:00"}])
    with pytest.raises(HistoryError, match="history entry 1: latency_s must be seconds"):
        operations([{"type": "ok", "op": "write", "time": T0, "latency_s": "slow"}])
    # a history whose clients are spelled `user` names no client at all
    by_user = [{k if k != "process" else "user": v for k, v in e.items()}
               for e in Hist().w("k", "v1", 1, 1.1).r("k", None, 1.2, 1.3).build()]
    assert read_your_writes(by_user).valid == UNKNOWN
    # and a region spelled `server_region` is not the serving region
    moved = [dict(e, server_region=W) if e["type"] == "ok" else e for e in _steady(30, 0, 0.1).build()]
    for e in moved:
        e.pop("served_by", None)
    assert rto(moved, T0, region=W).valid == UNKNOWN and rto(_steady(30, 0, 0.1).build(), T0, region=E).valid is True


def test_bad_entries_are_named():
    with pytest.raises(HistoryError, match="history entry 2: type must be"):
        lost_acked_writes([{"type": "ok", "op": "write", "key": "k", "value": 1, "time": T0, "latency_s": 0.1},
                           {"type": "done", "op": "write", "time": T0}], both({}))
    with pytest.raises(HistoryError, match="history entry 1: no time"):
        lost_acked_writes([{"type": "ok", "op": "write", "key": "k", "value": 1}], both({}))


# -- the property: injected losses are found exactly ------------------------------------------------------------

@st.composite
def runs_with_losses(draw):
    """Per key, a sequence of acked writes in real-time order (each invoked after the previous one
    completed), except that the last two may overlap; interleaved in time with other keys, with
    reads and failed writes as noise. Losses are injected per region by rolling a key back to an
    earlier write or deleting it; the expected lost writes follow from the construction."""
    n_keys = draw(st.integers(1, 12))
    h = Hist()
    expected: set[tuple[str, str]] = set()
    replicas = {E: {}, W: {}}
    for k in range(n_keys):
        key = f"k{k}"
        n = draw(st.integers(1, 5))
        overlap_last = n >= 2 and draw(st.booleans())
        t = draw(st.floats(0, 5))
        writes = []
        for i in range(n):
            inv = t + draw(st.floats(0.01, 1))
            done = inv + draw(st.floats(0.01, 1))
            if overlap_last and i == n - 1:          # starts before the previous write completed
                prev_inv, prev_done = writes[-1][1], writes[-1][2]
                inv = (prev_inv + prev_done) / 2
                done = max(done, prev_done + 0.01)
            writes.append((f"{key}-v{i}", inv, done))
            h.w(key, f"{key}-v{i}", inv, done, proc=f"w{k}/{i}")
            t = done
            if draw(st.booleans()):
                h.r(key, f"{key}-v{i}", done + 0.001, done + 0.002, proc=f"w{k}/{i}")
            if draw(st.integers(0, 4)) == 0:
                h.w(key, f"{key}-failed{i}", inv, done, "fail", proc=f"w{k}/f{i}")
        for region in (E, W):
            choice = draw(st.integers(0, n + 1))   # 0: intact, 1: deleted, 2..n+1: rolled back to write choice-2
            if choice == 0:
                replicas[region][key] = writes[-1][0] if not overlap_last or draw(st.booleans()) else writes[-2][0]
            elif choice == 1:
                expected |= {(region, v) for v, _, _ in writes}
            else:
                j = choice - 2
                replicas[region][key] = writes[j][0]
                _, _, done_j = writes[j]
                expected |= {(region, v) for v, inv, _ in writes[j + 1:] if inv > done_j}
    return h.build(), replicas, expected


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs_with_losses())
def test_property_finds_exactly_the_injected_losses(run):
    history, replicas, expected = run
    res = lost_acked_writes(history, replicas)
    distinct = {v for _, v in expected}
    assert res.metrics["lost_acked_writes"] == len(distinct), (res.detail, sorted(expected))
    for region in (E, W):
        assert res.metrics[f"lost_in.{region}"] == sum(1 for r, _ in expected if r == region), res.detail
    assert res.valid is (not expected)


def test_property_construction_covers_overlap_and_rollback():
    """The generator can express an overlapped final pair rolled back to its partner: no loss."""
    h = Hist().w("k", "k-v0", 1, 2).w("k", "k-v1", 1.5, 2.5).build()
    assert lost_acked_writes(h, both({"k": "k-v0"})).metrics["lost_acked_writes"] == 0


# -- divergent_keys and convergence ---------------------------------------------------------------------------

@pytest.mark.parametrize("replicas,valid,n", [
    (both({"a": 1, "b": "x"}), True, 0),
    ({E: {"a": 1}, W: {"a": 2}}, False, 1),
    ({E: {"a": 1, "b": 2}, W: {"a": 1}}, False, 1),
    ({E: {"a": 5}, W: {"a": Decimal("5")}, "eu-west-1": {"a": "5"}}, True, 0),
    ({E: {"a": {"x": [1, 2]}}, W: {"a": {"x": [1, 2]}}}, True, 0),
    ({E: {}, W: {}}, True, 0),
    ({E: {"a": 1}}, UNKNOWN, None),
], ids=["equal", "value-differs", "missing-in-one", "same-value-spelled-differently", "maps", "empty", "one-region"])
def test_divergent_keys(replicas, valid, n):
    res = divergent_keys(replicas)
    assert res.valid == valid, res.detail
    assert res.metrics["divergent_keys"] == n


def test_divergent_detail_shows_each_regions_value():
    res = divergent_keys({E: {"a": 1, "b": 2}, W: {"a": 9}})
    assert "a: us-east-1=1, us-west-2=9" in res.detail and "b: us-east-1=2, us-west-2=missing" in res.detail


@pytest.mark.parametrize("samples,deadline,valid,conv", [
    ([(0, 3), (1, 2), (2, 0), (3, 0)], 5, True, 2.0),
    ([(0, 3), (1, 2), (2, 0), (3, 0)], 1, False, 2.0),
    ([(0, 3), (1, 0), (2, 1), (3, 0), (4, 0)], 5, True, 3.0),      # agreed, diverged again: counts from the last
    ([(0, 3), (1, 2)], 5, UNKNOWN, None),                           # still apart, deadline not reached
    ([(0, 3), (6, 2)], 5, False, None),                             # still apart past the deadline
    ([], 5, UNKNOWN, None),
], ids=["converges", "too-late", "flaps", "ends-early", "never", "no-samples"])
def test_convergence(samples, deadline, valid, conv):
    res = convergence(samples, deadline)
    assert res.valid == valid, res.detail
    assert res.metrics["convergence_s"] == conv


def test_convergence_counts_from_the_given_start():
    res = convergence([(T0 + 2, 1), (T0 + 3, 0)], 5, started=T0)
    assert res.metrics["convergence_s"] == pytest.approx(3.0)


# -- read_your_writes -----------------------------------------------------------------------------------------

RYW_CASES = [
    ("reads-own-value", Hist().w("k", "v1", 1, 1.1).r("k", "v1", 1.2, 1.3), True, 0),
    ("reads-a-later-write-of-another-client",
     Hist().w("k", "v1", 1, 1.1).w("k", "v2", 1.05, 1.25, proc="w1/9").r("k", "v2", 1.3, 1.4), True, 0),
    ("stale-older-value", Hist().w("k", "v0", 0, 0.1, proc="w1/9").w("k", "v1", 1, 1.1).r("k", "v0", 1.2, 1.3),
     False, 1),
    ("404-after-write", Hist().w("k", "v1", 1, 1.1).r("k", None, 1.2, 1.3), False, 1),
    ("unknown-value", Hist().w("k", "v1", 1, 1.1).r("k", "zzz", 1.2, 1.3), False, 1),
    ("other-region-may-lag", Hist().w("k", "v1", 1, 1.1).r("k", None, 1.2, 1.3, region=W), UNKNOWN, 0),
    ("other-client-may-lag", Hist().w("k", "v1", 1, 1.1).r("k", None, 1.2, 1.3, proc="w1/2"), UNKNOWN, 0),
    ("failed-read-observes-nothing", Hist().w("k", "v1", 1, 1.1).r("k", None, 1.2, 1.3, "fail", status=503),
     UNKNOWN, 0),
    ("served-by-decides-the-region",
     Hist().w("k", "v1", 1, 1.1, region=E, served_by=W).r("k", None, 1.2, 1.3, region=E, served_by=W), False, 1),
    ("reads-own-then-an-earlier-own", Hist().w("k", "v1", 1, 1.1).w("k", "v2", 2, 2.1).r("k", "v1", 2.2, 2.3),
     False, 1),
]


@pytest.mark.parametrize("hist,valid,violations", [c[1:] for c in RYW_CASES], ids=[c[0] for c in RYW_CASES])
def test_read_your_writes(hist, valid, violations):
    res = read_your_writes(hist.build())
    assert res.valid == valid, res.detail
    assert res.metrics["ryw_violations"] == violations, res.detail


def test_read_your_writes_detail_and_unknown_without_clients():
    res = read_your_writes(Hist().w("k", "v1", 1, 1.1).r("k", None, 1.2, 1.3).build())
    assert "process w1/1 wrote k='v1' in us-east-1 then read 404" in res.detail
    anon = _strip(Hist().w("k", "v1", 1, 1.1).r("k", None, 1.2, 1.3).build(), "process", "worker")
    assert read_your_writes(anon).valid == UNKNOWN


# -- error budget -----------------------------------------------------------------------------------------------

def _steady(n: int, start: float, step: float, typ_at=lambda i: "ok", served_at=lambda i: E) -> Hist:
    h = Hist()
    for i in range(n):
        t = start + i * step
        typ = typ_at(i)
        h.r(f"k{i}", "v", t, t + step / 2, typ, served_by=served_at(i) if typ == "ok" else None,
            status=200 if typ == "ok" else 503)
    return h


def test_error_budget():
    h = _steady(100, 0, 0.1, typ_at=lambda i: "fail" if i in (10, 20, 30) else "ok").build()
    ok = error_budget(h, budget=0.05)
    assert ok.valid is True and ok.metrics["requests"] == 100 and ok.metrics["error_rate"] == pytest.approx(0.03)
    over = error_budget(h, budget=0.02)
    assert over.valid is False and "3.00% OVER the 2.00% budget" in over.detail
    assert error_budget([], budget=0.1).valid == UNKNOWN


def test_requests_abandoned_at_the_stop_are_no_ones_errors():
    # Catches an error budget that counts the load's own stop against the system (an `info` completion
    # marked abandoned: loadgen/history.abandon_open), and one that drops real unknowns with them.
    steady = lambda: _steady(100, 0, 0.1, typ_at=lambda i: "info" if i >= 96 else "ok").build()
    assert error_budget(steady(), budget=0.02).valid is False         # 4 unknowns: over 2%
    h = steady()
    for e in h:
        if e["type"] == "info" and e["key"] in ("k97", "k98", "k99"):
            e["abandoned"] = True
    res = error_budget(h, budget=0.02, window=(T0, T0 + 20))
    assert res.valid is True and res.metrics["requests"] == 97 and res.metrics["unknown"] == 1, res.detail
    assert res.metrics["window_requests"] == 97


def test_error_burst_inside_the_window_is_over_budget():
    burst = _steady(200, 0, 0.1, typ_at=lambda i: "info" if 100 <= i < 108 else "ok").build()
    overall = error_budget(burst, budget=0.05)
    assert overall.valid is True                                  # 4% overall
    windowed = error_budget(burst, budget=0.05, window=(T0 + 10, T0 + 11))
    assert windowed.valid is False and windowed.metrics["window_error_rate"] == pytest.approx(0.8)
    assert windowed.metrics["window_requests"] == 10
    assert error_budget(burst, budget=0.05, window=(T0 + 10, T0 + 11), window_budget=0.9).valid is True


# -- RTO --------------------------------------------------------------------------------------------------------

def test_rto_measures_until_success_is_back():
    # fault at 5 s; failures until 9 s; then success to 20 s
    h = _steady(200, 0, 0.1, typ_at=lambda i: "fail" if 50 <= i < 90 else "ok").build()
    res = rto(h, T0 + 5, slo=0.95, bucket_s=1.0)
    assert res.valid is True and res.metrics["rto_s"] == pytest.approx(4.0), res.detail
    late = rto(h, T0 + 5, deadline_s=3.0)
    assert late.valid is False and "OVER" in late.detail


def test_rto_unknown_when_the_history_ends_before_recovery():
    h = _steady(80, 0, 0.1, typ_at=lambda i: "fail" if i >= 50 else "ok").build()
    res = rto(h, T0 + 5)
    assert res.valid == UNKNOWN and res.metrics["rto_s"] is None
    assert "not back at >= 95%" in res.detail


def test_rto_hanging_clients_are_not_recovered_and_flaps_move_it():
    # no completion at all between 5 and 9 s (clients hang), then fine: recovery at 9, not at 5
    h = Hist()
    for i in list(range(50)) + list(range(90, 200)):
        h.r("k", "v", i * 0.1, i * 0.1 + 0.05)
    assert rto(h.build(), T0 + 5).metrics["rto_s"] == pytest.approx(4.0)
    flap = _steady(200, 0, 0.1, typ_at=lambda i: "fail" if 50 <= i < 90 or 110 <= i < 115 else "ok").build()
    # the flap fails the bucket [11 s, 12 s) (6 s after the fault): recovery counts from 7 s
    assert rto(flap, T0 + 5).metrics["rto_s"] == pytest.approx(7.0)


def test_rto_by_serving_region():
    h = _steady(200, 0, 0.1, typ_at=lambda i: "fail" if 50 <= i < 70 else "ok",
                served_at=lambda i: W if i >= 90 else E).build()
    assert rto(h, T0 + 5).metrics["rto_s"] == pytest.approx(2.0)
    assert rto(h, T0 + 5, region=W).metrics["rto_s"] == pytest.approx(4.0)     # clients followed at 9 s
    stuck = _steady(200, 0, 0.1, typ_at=lambda i: "fail" if 50 <= i < 70 else "ok").build()
    assert rto(stuck, T0 + 5, region=W).valid == UNKNOWN



# -- checkers as parts: RunView, compose by name, crashes are unknown -----------------------------------------

class Fixed:
    """A part that always says `valid` (and counts how often it was asked)."""

    def __init__(self, valid, name="fixed", metrics=None):
        self.name, self.valid, self.metrics, self.calls = name, valid, metrics or {}, 0

    def check(self, run):
        self.calls += 1
        return CheckResult(self.name, self.valid, f"said {self.valid}", self.metrics)


class Crashes:
    name = "crashes"

    def check(self, run):
        return {"valid": True}["missing"]


VALIDS = st.sampled_from([True, False, UNKNOWN, "crash"])


@settings(max_examples=200, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), VALIDS, max_size=5))
def test_compose_is_false_if_any_part_is_false_else_unknown_if_any_is(parts):
    composite = compose({n: Crashes() if v == "crash" else Fixed(v) for n, v in parts.items()}, name="data")
    res = composite.check(RunView())
    vals = ["unknown" if v == "crash" else v for v in parts.values()]
    expected = False if False in vals else (True if vals and all(v is True for v in vals) else UNKNOWN)
    assert res.valid == expected and res.name == "data"
    assert isinstance(res, CompositeResult) and list(res.results) == list(parts)
    for n, v in parts.items():
        sub = res.results[n]
        assert sub.name == n                                   # each part's result under the name it was given
        if v == "crash":
            assert sub.valid == UNKNOWN and "KeyError: 'missing'" in sub.detail and "Traceback" in sub.detail
            assert f"{n} unknown: checker crashed" in res.detail
        else:
            assert sub.valid == v


def test_compose_names_parts_merges_metrics_and_nests():
    a, b = Fixed(True, metrics={"m": 1}), Fixed(False, metrics={"n": 2})
    inner = compose({"a": a, "b": b}, name="inner")
    outer = compose({"inner": inner, "c": Fixed(True)})
    res = outer.check(RunView())
    assert res.valid is False and res.results["inner"].results["b"].valid is False
    assert res.metrics == {"m": 1, "n": 2} and "b FAILED: said False" in res.detail
    assert (a.calls, b.calls) == (1, 1)
    assert compose({}).check(RunView()).valid == UNKNOWN
    with pytest.raises(TypeError, match="is not a checker"):
        compose({"x": lost_acked_writes})                     # a bare function is not a part
    with pytest.raises(TypeError, match="compose takes"):
        compose([Fixed(True)])
    with pytest.raises(ValueError):
        CheckResult("x", "maybe", "")


def test_a_part_returning_no_check_result_is_unknown():
    class Sloppy:
        name = "sloppy"

        def check(self, run):
            return {"name": "sloppy", "valid": True}
    res = compose({"sloppy": Sloppy(), "ok": Fixed(True)}).check(RunView())
    assert res.valid == UNKNOWN and "not a CheckResult" in res.results["sloppy"].detail


def test_parts_wrap_the_checkers_with_the_runs_inputs():
    h = _steady(60, 0, 0.1, typ_at=lambda i: "fail" if 10 <= i < 20 else "ok").build() + \
        Hist().w("k1", "v1", 0, 0.1).w("k2", "v2", 0, 0.1).r("k1", "v1", 0.2, 0.3).build()
    run = RunView(history=h, replicas=both({"k1": "v1"}), fault_time=T0 + 1, error_budget=0.05,
                  divergence_samples=[(T0, 2), (T0 + 1, 0)], convergence_deadline_s=5.0, lost_writes_allowed=1,
                  rto_deadline_s=0.5)
    parts = {"lost_acked_writes": LostAckedWrites(), "divergent_keys": DivergentKeys(),
             "read_your_writes": ReadYourWrites(), "error_budget": ErrorBudget(), "rto": Rto(bucket_s=0.5),
             "convergence": Convergence()}
    res = compose(parts).check(run)
    direct = {"lost_acked_writes": lost_acked_writes(h, run.replicas, allowed=1),
              "divergent_keys": divergent_keys(run.replicas), "read_your_writes": read_your_writes(h),
              "error_budget": error_budget(h, budget=0.05), "rto": rto(h, T0 + 1, bucket_s=0.5, deadline_s=0.5),
              "convergence": convergence(run.divergence_samples, 5.0)}
    assert res.results == direct
    assert res.results["lost_acked_writes"].valid is True                    # 1 lost, 1 allowed
    assert res.results["error_budget"].valid is False and res.results["rto"].valid is False
    assert res.valid is False
    for r in res.results.values():                                           # result.json's shape
        d = r.as_dict()
        assert json.loads(json.dumps(d)) == d
        assert all(v is None or isinstance(v, (int, float)) for v in r.metrics.values()), r.metrics
    with pytest.raises(AssertionError, match="lost_acked_writes: FAILED"):
        lost_acked_writes(seq2(), both({"k1": "v1"})).assert_valid()


def test_a_part_whose_input_the_run_lacks_is_unknown_and_says_which():
    res = compose({"lost": LostAckedWrites(), "rto": Rto(), "div": DivergentKeys()}).check(
        RunView(history=seq2()))
    assert res.results["lost"].valid == UNKNOWN and "no replicas" in res.results["lost"].detail
    assert res.results["rto"].valid == UNKNOWN and "no fault_time" in res.results["rto"].detail
    assert res.valid == UNKNOWN
    assert isinstance(LostAckedWrites(), Checker) and compose({}).name == "all"


def test_a_crashing_checker_on_a_bad_history_is_unknown_with_the_traceback():
    bad = [{"type": "done", "op": "write", "time": T0}]
    res = compose({"lost_acked_writes": LostAckedWrites(), "divergent_keys": DivergentKeys()}).check(
        RunView(history=bad, replicas={E: {"a": 1}, W: {"a": 2}}))
    lost = res.results["lost_acked_writes"]
    assert lost.valid == UNKNOWN and "HistoryError: history entry 1: type must be" in lost.detail
    assert "in _writes_by_key" in lost.detail                                # the traceback
    assert res.results["divergent_keys"].valid is False and res.valid is False


def test_recheck_keeps_an_rpo_budget(tmp_path):
    """reports/recheck.py re-runs lost_acked_writes with the scenario's RPO budget (allowed losses)."""
    from gameday.reports.recheck import recheck_scenario
    from gameday.reports.rundata import Scenario
    h = Hist().w("k1", "v1", 1, 1.1).w("k2", "v2", 1, 1.1).build()
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in h))
    (tmp_path / "replicas.json").write_text(json.dumps(both({"k1": "v1"})))   # k2 lost, replicas agree
    result = {"name": "rpo", "outcome": "passed", "checks": [{"name": "lost_acked_writes", "valid": True}],
              "metrics": {}, "budgets": {"lost_acked_writes": 1}}
    rc = recheck_scenario(Scenario("rpo", tmp_path, "scenarios/rpo", result, None, None))
    assert rc.outcome == "passed" and not rc.disagreements and rc.metrics["lost_acked_writes"] == 1
    strict = dict(result, budgets={})
    rc2 = recheck_scenario(Scenario("rpo", tmp_path, "scenarios/rpo", strict, None, None))
    assert rc2.outcome == "failed" and rc2.disagreements


def test_recheck_reports_a_crashing_checker_as_unknown_and_skips_what_was_not_stored(tmp_path):
    from gameday.reports.recheck import recheck_scenario
    from gameday.reports.rundata import Scenario
    (tmp_path / "replicas.json").write_text(json.dumps(both({"k1": "v1"})))
    result = {"name": "s", "outcome": "passed", "metrics": {},
              "checks": [{"name": "lost_acked_writes", "valid": True}, {"name": "crashes", "valid": True}]}
    s = Scenario("s", tmp_path, "scenarios/s", result, None, None)
    rc = recheck_scenario(s, {"lost_acked_writes": LostAckedWrites(), "divergent_keys": DivergentKeys(),
                              "crashes": Crashes()})
    by_name = {c["name"]: c for c in rc.checks}
    assert by_name["lost_acked_writes"]["source"] == "recorded"              # no history.jsonl: not re-run
    assert by_name["divergent_keys"]["source"] == "re-checked" and by_name["divergent_keys"]["valid"] is True
    assert by_name["crashes"]["valid"] == UNKNOWN and "Traceback" in by_name["crashes"]["detail"]
    assert rc.outcome == "passed" and rc.disagreements == ["check crashes: recorded valid=True, re-checked "
                                                           "valid='unknown'"]
    nothing = recheck_scenario(Scenario("s", tmp_path / "none", "scenarios/s", result, None, None))
    assert nothing.not_rechecked == "no history.jsonl; no replicas.json" and nothing.outcome == "passed"


# -- Elle export --------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(?P<open>[\[{])|(?P<close>[\]}])|(?P<kw>:[A-Za-z][\w\-?!*]*)|(?P<str>"(?:[^"\\]|\\.)*")'
                    r'|(?P<num>-?\d+(?:\.\d+)?)|(?P<sym>nil|true|false)|(?P<comma>,))')


def parse_edn(text: str):
    """Just enough EDN for a history line: maps, vectors, keywords, strings, numbers, nil/booleans.
    Raises ValueError on anything else, so malformed output fails the test."""
    pos = 0

    def value():
        nonlocal pos
        while True:
            m = _TOKEN.match(text, pos)
            if not m:
                raise ValueError(f"bad EDN at {pos}: {text[pos:pos + 20]!r}")
            pos = m.end()
            if m.group("comma"):
                continue
            break
        if m.group("open"):
            items = []
            closer = "]" if m.group("open") == "[" else "}"
            while True:
                m2 = _TOKEN.match(text, pos)
                if m2 and m2.group("close"):
                    if m2.group("close") != closer:
                        raise ValueError("mismatched bracket")
                    pos = m2.end()
                    break
                if m2 and m2.group("comma"):
                    pos = m2.end()
                    continue
                items.append(value())
            if closer == "]":
                return items
            if len(items) % 2:
                raise ValueError("odd map")
            return dict(zip(items[::2], items[1::2]))
        if m.group("close"):
            raise ValueError("unexpected close")
        if m.group("kw"):
            return ("kw", m.group("kw")[1:])
        if m.group("str"):
            return json.loads(m.group("str"))
        if m.group("num"):
            return float(m.group("num")) if "." in m.group("num") else int(m.group("num"))
        return {"nil": None, "true": True, "false": False}[m.group("sym")]

    v = value()
    if text[pos:].strip():
        raise ValueError(f"trailing text {text[pos:]!r}")
    return v


def kw(name: str):
    return ("kw", name)


def _elle_history():
    return (Hist().w("k1", 1, 0.0, 0.2, proc="w1/1").r("k1", 1, 0.3, 0.4, proc="w1/1")
            .w("k1", 2, 0.1, 0.5, "info", proc="w1/2").w("k2", 'quote"d', 0.6, 0.7, proc="w1/2")
            .r("k2", None, 0.8, 0.9, proc="w1/3").w("k3", 9, 0.95, None, proc="w1/4").build())


@pytest.mark.parametrize("form", ["rw-register", "register"])
def test_elle_export_is_well_formed(form, tmp_path):
    path = tmp_path / "history.edn"
    n = elle.export(_elle_history(), path, form=form)
    lines = path.read_text().splitlines()
    assert n == len(lines) == 12                        # 6 operations, invoke + completion each
    ops = [parse_edn(line) for line in lines]
    assert [o[kw("index")] for o in ops] == list(range(12))
    times = [o[kw("time")] for o in ops]
    assert times == sorted(times) and times[0] == 0 and all(isinstance(t, int) for t in times)
    open_by_process: dict[int, dict] = {}
    retired: set[int] = set()
    for o in ops:
        assert set(o) == {kw("type"), kw("f"), kw("value"), kw("process"), kw("time"), kw("index")}
        p = o[kw("process")]
        assert p not in retired, "a process was reused after an :info"
        if o[kw("type")] == kw("invoke"):
            assert p not in open_by_process, "two operations in flight on one process"
            open_by_process[p] = o
        else:
            inv = open_by_process.pop(p)
            assert inv[kw("f")] == o[kw("f")]
            if o[kw("type")] == kw("info"):
                retired.add(p)
    assert not open_by_process
    completions = [o for o in ops if o[kw("type")] != kw("invoke")]
    if form == "rw-register":
        assert all(o[kw("f")] == kw("txn") for o in ops)
        values = [o[kw("value")] for o in completions]
        assert [kw("w"), "k1", 1] in [v[0] for v in values]
        assert [kw("r"), "k1", 1] in [v[0] for v in values]
        assert [kw("r"), "k2", None] in [v[0] for v in values]          # 404 reads the initial nil
        assert [kw("w"), "k2", 'quote"d'] in [v[0] for v in values]
        reads_invoked = [o[kw("value")][0] for o in ops if o[kw("type")] == kw("invoke") and o[kw("value")][0][0] == kw("r")]
        assert all(v[2] is None for v in reads_invoked)
    else:
        assert {o[kw("f")] for o in ops} == {kw("write"), kw("read")}
        assert ["k1", 1] in [o[kw("value")] for o in completions if o[kw("f")] == kw("read")]
    types = [o[kw("type")] for o in completions]
    assert types.count(kw("info")) == 2                    # the timed-out write and the one never completed


def test_elle_rejects_unknown_forms():
    with pytest.raises(ValueError, match="unknown form"):
        list(elle.events([], form="list-append"))



# -- the checkers agree with a deliberately simple reference on any history --------------------------------------
# The checkers read entries in hand-inlined loops (speed: 1M operations in seconds). The reference
# below says the same rules plainly, building every operation first: an operation's interval is
# its invoke with the same id, else its client's oldest id-less invoke of the same op and key,
# else latency_s before its completion, else unplaceable (-inf); invokes never completed are
# `info` until +inf. On any history both must give the same result, or both raise HistoryError.

from gameday.assertions.checkers import _error_tally, _rto_buckets, canon_value  # noqa: E402


def _ref_number(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise HistoryError(f"{what}: not a number: {v!r}")
    return float(v)


def _ref_completions(history):
    """[(type, time, entry)] of the completions; every entry needs a valid type and a numeric time."""
    out = []
    for e in history:
        t = _ref_number(e.get("time"), "time")
        if e.get("type") not in ("invoke", "ok", "fail", "info"):
            raise HistoryError(f"bad type {e.get('type')!r}")
        if e.get("type") != "invoke":
            out.append((e["type"], t, e))
    return out


def _ref_key(k):
    return None if k is None else str(k)


def _ref_operations(history, only=None):
    """(completed operations, invokes never completed): dicts, in history order; with `only`, the
    operations of that op only (the others are not placed, their latency never read)."""
    history = list(history)
    _ref_completions(history)
    by_id, by_client, done = {}, {}, []
    for i, e in enumerate(history):
        t = float(e["time"])
        if only is not None and e.get("op") != only:
            continue
        client_key = (e.get("process"), e.get("op"), _ref_key(e.get("key")))
        if e["type"] == "invoke":
            if e.get("id") is None:
                by_client.setdefault(client_key, []).append((t, i))
            else:
                by_id[e["id"]] = (t, i)
            continue
        if e.get("id") is not None and e["id"] in by_id:
            invoked = by_id.pop(e["id"])[0]
        elif by_client.get(client_key):
            invoked = by_client[client_key].pop(0)[0]
        elif e.get("latency_s") is not None:
            invoked = t - _ref_number(e["latency_s"], "latency_s")
        else:
            invoked = -INF
        done.append(dict(type=e["type"], op=e.get("op"), key=_ref_key(e.get("key")), value=e.get("value"),
                         invoked=invoked, completed=t, where=e.get("served_by") or e.get("region"),
                         status=e.get("status"), client=e.get("process")))
    never = [(i, t) for t, i in by_id.values()] + [(i, t) for q in by_client.values() for t, i in q]
    opened = [dict(type="info", op=history[i].get("op"), key=_ref_key(history[i].get("key")),
                   value=history[i].get("value"), invoked=t, completed=INF) for i, t in sorted(never)]
    return done, opened


def _ref_lost_acked_writes(history, replicas):
    """(lost (key, value) -> regions, acked, failed values visible, foreign values): for each region
    and key, an acked write is lost when it was invoked after the final value's write completed."""
    done, opened = _ref_operations(history, "write")
    writes = [dict(w, completed=INF if w["type"] != "ok" else w["completed"]) for w in done + opened]
    lost, failed_visible, foreign = {}, 0, 0
    for region, table in replicas.items():
        table = {str(k): v for k, v in table.items()}
        for key in {w["key"] for w in writes}:
            ws = [w for w in writes if w["key"] == key]
            final = canon_value(table[key]) if key in table else "<missing>"
            same = [w for w in ws if canon_value(w["value"]) == final] if key in table else []
            x_done = max((w["completed"] for w in same), default=-INF)
            failed_visible += any(w["type"] == "fail" for w in same)
            foreign += key in table and not same
            for w in ws:
                if w["type"] == "ok" and canon_value(w["value"]) != final and w["invoked"] > x_done:
                    lost.setdefault((key, canon_value(w["value"])), set()).add(region)
    return lost, sum(w["type"] == "ok" for w in writes), failed_visible, foreign


def _ref_read_your_writes(history):
    """(reads checked, violations, stale, not found, operations without a client)."""
    done, opened = _ref_operations(history)
    last_write, checked, stale, not_found, anonymous, suspects = {}, 0, 0, 0, 0, []
    for o in done:
        if o["client"] is None:
            anonymous += 1
            continue
        mine = (o["client"], o["key"], o["where"])
        if o["op"] == "write" and o["type"] == "ok":
            last_write[mine] = o
        elif o["op"] == "read" and mine in last_write:
            w = last_write[mine]
            if o["invoked"] != -INF and o["invoked"] < w["completed"]:
                continue
            is_404 = o["status"] in (404, "404") or (o["type"] == "ok" and o["value"] is None)
            if is_404 or o["type"] == "ok":
                checked += 1
                not_found += is_404
                if not is_404 and canon_value(o["value"]) != canon_value(w["value"]):
                    suspects.append((o, w))
    for o, w in suspects:
        later = [x["completed"] if x["type"] == "ok" else INF for x in done + opened
                 if x["op"] == "write" and x["key"] == o["key"] and canon_value(x["value"]) == canon_value(o["value"])]
        if not later or max(later) <= w["invoked"]:
            stale += 1
    return checked, stale + not_found, stale, not_found, anonymous


def _ref_error_tally(history, w0, w1):
    c = _ref_completions(history)
    inside = [typ for typ, t, _ in c if w0 is not None and w0 <= t < w1]
    return (sum(typ == "ok" for typ, _, _ in c), sum(typ == "fail" for typ, _, _ in c),
            sum(typ == "info" for typ, _, _ in c), len(inside), sum(typ != "ok" for typ in inside))


def _ref_rto_buckets(history, t_fault, bucket_s, region):
    all_n, ok_n, last = {}, {}, t_fault
    for typ, t, e in _ref_completions(history):
        if t >= t_fault:
            b = int((t - t_fault) // bucket_s)
            all_n[b] = all_n.get(b, 0) + 1
            ok_n[b] = ok_n.get(b, 0) + (typ == "ok" and (region is None or e.get("served_by") == region))
            last = max(last, t)
    return all_n, ok_n, last


@st.composite
def odd_histories(draw):
    """Histories of every shape the readers accept or reject, in the canonical field names: ids or
    not (some reused), invokes or not, latency_s a float / an int / None / absent / garbage, float,
    int, ISO or missing times, no client, keys that are ints or None, statuses 404 / "404", invalid
    types, entries out of order. Times on a coarse grid, so that boundaries (a read invoked as the
    write completes, a completion at a window's or a bucket's edge) happen."""
    odd = draw(st.sets(st.sampled_from(["type", "client", "key", "id", "invoke", "invoke_time", "served", "status",
                                         "latency", "time", "order"]), max_size=2))

    def pick(normal: list, weird: list, aspect: str = ""):
        if aspect in odd and draw(st.booleans()):
            return draw(st.sampled_from(weird))
        return draw(st.sampled_from(normal))
    grid = [x / 2 for x in range(0, 17)]
    entries: list[tuple[float, int, dict]] = []
    seq = 0
    for n in range(draw(st.integers(0, 16))):
        kind = draw(st.sampled_from(["write", "write", "read", "read", "ping"]))
        typ = pick(["ok", "ok", "ok", "fail", "info"], ["done"], "type")
        inv = draw(st.sampled_from(grid))
        done = inv + draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
        base = {"op": kind, "process": pick(["a", "b"], [None], "client"), "key": pick(["k0", "k1"], [2, None], "key"),
                "region": draw(st.sampled_from([E, W]))}
        value = draw(st.sampled_from(["v1", "v2", "v2", 3, 3.0, None]))
        if kind == "read" and typ != "ok":
            value = None
        oid = pick([f"op{n}"], [None, 0, 1], "id")
        if oid is not None:
            base["id"] = oid
        if pick([True, True, True, False], [False], "invoke"):
            t_inv = pick([T0 + inv], [int(T0 + inv), "2025-11-24T16:00:00+00:00", None], "invoke_time")
            entries.append((inv, seq, {**base, "type": "invoke", "value": value if kind == "write" else None,
                                       **({} if t_inv is None else {"time": t_inv})}))
            seq += 1
        if draw(st.integers(0, 6)) == 0:
            continue                        # never completed
        c = {**base, "type": typ, "value": value, "served_by": pick([base["region"], E, W], [None, ""], "served"),
             "status": pick([200, 404, 503], ["404", None], "status")}
        lat = pick(["s", "s", "none"], ["absent", "garbage", "int"], "latency")
        c.update({"s": {"latency_s": done - inv}, "none": {"latency_s": None}, "absent": {},
                  "garbage": {"latency_s": "slow"}, "int": {"latency_s": 1}}[lat])
        t_done = pick([T0 + done], [int(T0 + done), None], "time")
        if t_done is not None:
            c["time"] = t_done
        entries.append((done, seq, c))
        seq += 1
    entries.sort(key=lambda x: (x[0], x[1]))
    history = [e for _, _, e in entries]
    if "order" in odd and history:
        i, j = draw(st.integers(0, len(history) - 1)), draw(st.integers(0, len(history) - 1))
        history[i], history[j] = history[j], history[i]
    return history


def _outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except HistoryError:   # the same error is part of the same behaviour (its wording is the checkers' own)
        return HistoryError


def _ryw_numbers(history):
    res = read_your_writes(history)
    m = res.metrics
    if m["ryw_violations"] is None:
        return "no client", res.valid
    return m["reads_checked"], m["ryw_violations"], m["stale_reads"], m["not_found_reads"], m["ops_without_client"]


def _ref_ryw_numbers(history):
    checked, viol, stale, not_found, anonymous = _ref_read_your_writes(history)
    n_ops = len([e for e in history if e["type"] != "invoke"])
    if n_ops and anonymous == n_ops:
        return "no client", UNKNOWN
    return checked, viol, stale, not_found, anonymous


def _lost_numbers(history, replicas):
    m = lost_acked_writes(history, replicas).metrics
    return ({r: m[f"lost_in.{r}"] for r in replicas}, m["lost_acked_writes"], m["acked_writes"],
            m["failed_writes_visible"], m["foreign_values"])


def _ref_lost_numbers(history, replicas):
    lost, acked, failed_visible, foreign = _ref_lost_acked_writes(history, replicas)
    return ({r: sum(r in regs for regs in lost.values()) for r in replicas}, len(lost), acked, failed_visible,
            foreign)


REPLICA_SETS = [both({"k0": "v1", "k1": "v2"}), {E: {"k0": "v2", "2": 3}, W: {"k1": 3.0}}, both({})]


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_histories(), st.sampled_from([x / 2 for x in range(0, 12)]), st.sampled_from([0.5, 1.0, 2.0]),
       st.sampled_from([None, E]), st.sampled_from([None, (1.0, 4.0), (2.0, None)]), st.sampled_from(REPLICA_SETS),
       st.booleans())
def test_checkers_agree_with_the_reference_on_any_history(history, fault_at, bucket_s, region, window, replicas,
                                                          as_tuple):
    h = tuple(history) if as_tuple else history
    assert _outcome(_lost_numbers, h, replicas) == _outcome(_ref_lost_numbers, h, replicas)
    assert _outcome(_ryw_numbers, h) == _outcome(_ref_ryw_numbers, h)
    w0, w1 = (None, None) if window is None else (T0 + window[0], INF if window[1] is None else T0 + window[1])
    assert _outcome(_error_tally, h, w0, w1) == _outcome(_ref_error_tally, h, w0, w1)
    assert (_outcome(_rto_buckets, h, T0 + fault_at, bucket_s, region)
            == _outcome(_ref_rto_buckets, h, T0 + fault_at, bucket_s, region))
    # a generator (read once) gives the same
    assert _outcome(_ryw_numbers, iter(history)) == _outcome(_ref_ryw_numbers, history)
    assert _outcome(_lost_numbers, iter(history), replicas) == _outcome(_ref_lost_numbers, history, replicas)


def test_the_reference_comparison_can_fail():
    """The reference is not a copy that agrees with anything: a lost write, a stale read, a failure
    inside the window and a bucket after the fault are each seen, and the same by both."""
    h = (Hist().w("k0", "v0", 0, 0.1, proc="b").w("k0", "v1", 1, 1.1, proc="a").r("k0", "v0", 1.2, 1.3, proc="a")
         .r("k1", None, 2, 2.1, "fail", proc="a").build())
    lost = _lost_numbers(h, both({"k0": "v0"}))
    assert lost == _ref_lost_numbers(h, both({"k0": "v0"})) and lost[1] == 1
    assert _ryw_numbers(h) == _ref_ryw_numbers(h) and _ryw_numbers(h)[2] == 1
    assert _error_tally(h, T0 + 2, T0 + 3) == _ref_error_tally(h, T0 + 2, T0 + 3) == (3, 1, 0, 1, 1)
    assert _rto_buckets(h, T0 + 1, 1.0, E) == _ref_rto_buckets(h, T0 + 1, 1.0, E)
    assert _rto_buckets(h, T0 + 1, 1.0, E)[0] == {0: 2, 1: 1}


@pytest.mark.parametrize("hist,valid", [
    (Hist().w("k", "v0", 0, 0.1, "fail", proc="w1/9").w("k", "v1", 1, 1.1).r("k", "v0", 1.2, 1.3), True),
    (Hist().w("k", "v0", 0, 0.1, "info", proc="w1/9").w("k", "v1", 1, 1.1).r("k", "v0", 1.2, 1.3), True),
    (Hist().w("k", "v0", 0, None, proc="w1/9").w("k", "v1", 1, 1.1).r("k", "v0", 1.2, 1.3), True),
    (Hist().w("k", "v0", 0, 0.1, proc="w1/9").w("k", "v1", 1, 1.1).r("k", "v0", 1.2, 1.3), False),
], ids=["failed-write-may-have-landed", "unknown-write-may-land", "in-flight-write-may-land", "older-acked-write"])
def test_read_of_a_failed_unknown_or_in_flight_write(hist, valid):
    """A read that saw the value of a write that failed, ended unknown or never completed is not
    stale (that write may have landed after the client's own); an older acked one is."""
    h = hist.build()
    assert _ryw_numbers(h) == _ref_ryw_numbers(h)
    assert read_your_writes(h).valid is valid


def _one_odd_entry(kind: str) -> list[dict]:
    """A loadgen-shaped history with one entry changed the way `kind` says."""
    h = (Hist().w("k", "v0", 0, None, proc="w1/9").w("k", "v1", 1, 1.1).r("k", "v0", 1.2, 1.3)
         .r("k", "v1", 2, 2.5).w("k2", "x", 2.1, 3.3, "fail", proc="w1/8").build())
    comp = next(e for e in h if e["type"] == "ok" and e["op"] == "read")
    if kind == "anonymous-in-flight-write":
        del h[0]["id"]
    elif kind == "garbage-latency-no-invoke":
        h.remove(next(e for e in h if e["type"] == "invoke" and e["id"] == comp["id"]))
        comp["latency_s"] = "slow"
    elif kind == "no-latency-no-invoke":
        h.remove(next(e for e in h if e["type"] == "invoke" and e["id"] == comp["id"]))
        comp["latency_s"] = None
    elif kind == "int-latency-no-invoke":
        h.remove(next(e for e in h if e["type"] == "invoke" and e["id"] == comp["id"]))
        comp["latency_s"] = 1
    elif kind == "iso-time":
        comp["time"] = "2025-11-24T16:00:00+00:00"
    elif kind == "int-time":
        comp["time"] = int(comp["time"])
    elif kind == "no-time":
        del comp["time"]
    elif kind == "bad-type":
        comp["type"] = "done"
    elif kind == "reused-id":
        comp["id"] = h[-1]["id"]
    elif kind == "timeless-anonymous-invoke":
        del h[0]["id"]
        del h[0]["time"]
    return h


ODD_KINDS = ["anonymous-in-flight-write", "garbage-latency-no-invoke", "no-latency-no-invoke", "int-latency-no-invoke",
             "iso-time", "int-time", "no-time", "bad-type", "reused-id", "timeless-anonymous-invoke", "none"]


@pytest.mark.parametrize("kind", ODD_KINDS)
def test_one_odd_entry_reads_as_the_reference(kind):
    h = _one_odd_entry(kind)
    assert _outcome(_ryw_numbers, h) == _outcome(_ref_ryw_numbers, h)
    assert _outcome(_lost_numbers, h, both({"k": "v1"})) == _outcome(_ref_lost_numbers, h, both({"k": "v1"}))
    for w0, w1 in ((None, None), (T0 + 1, T0 + 1.3), (T0 + 1.3, INF)):
        assert _outcome(_error_tally, h, w0, w1) == _outcome(_ref_error_tally, h, w0, w1)
    for fault, region in ((T0, None), (T0 + 1.2, E), (T0 + 1.3, W)):
        assert _outcome(_rto_buckets, h, fault, 1.0, region) == _outcome(_ref_rto_buckets, h, fault, 1.0, region)
    bad = {"iso-time", "no-time", "bad-type", "timeless-anonymous-invoke", "garbage-latency-no-invoke"}
    assert (_outcome(read_your_writes, h) is HistoryError) == (kind in bad)


# -- p99 latency ------------------------------------------------------------------------------------------------

def _latency_history(slow: int, *, slow_s: float = 1.6, region: str = W) -> list[dict]:
    """100 operations served by `region`, 0.1 s apart, 20 ms each but `slow` of them taking slow_s
    (one queued behind an overloaded task's backlog), then 50 fast ones served by E (another region)."""
    from gameday.assertions.checkers import placement  # noqa: F401 - the shared reading, checked below

    h = Hist()
    for i in range(100):
        t = i * 0.1
        h.r(f"k{i}", "v", t, t + (slow_s if i % 10 == 0 and i // 10 < slow else 0.02), region=region)
    for i in range(50):
        t = 10 + i * 0.1
        h.r(f"e{i}", "v", t, t + 5.0 if i == 0 else t + 0.01, region=E)
    return h.build()


@pytest.mark.parametrize("slow, budget, valid", [
    (0, 1.0, True),     # every operation 20 ms
    (1, 1.0, True),     # one slow in 100: the p99 (nearest rank: the 99th) is still fast
    (2, 1.0, False),    # two slow: the 99th of 100 is slow -> over a 1 s budget
    (2, 2.0, True),     # ... within a 2 s one
])
def test_latency_p99_table(slow, budget, valid):
    from gameday.assertions.checkers import latency_p99, placement

    h = _latency_history(slow)
    for form in (h, placement(h)):   # the same verdict from the raw history and the shared reading
        got = latency_p99(form, budget_s=budget, region=W)
        assert got.valid is valid, got.detail
        assert got.metrics["latency_requests"] == 100
    if not valid:
        assert "OVER the 1s budget" in got.detail and "served by " + W in got.detail


def test_latency_p99_window_and_region_select_the_operations():
    from gameday.assertions.checkers import latency_p99

    h = _latency_history(5)
    # the slow ones start at 0, 1, ..., 4 s and end by 5.6 s: a window from 6 s sees only fast operations of W
    late = latency_p99(h, budget_s=1.0, region=W, window=(T0 + 6.0, None))
    assert late.valid is True and late.metrics["latency_requests"] == 40
    # E's single 5 s operation among 50: p99 is that one
    e = latency_p99(h, budget_s=1.0, region=E)
    assert e.valid is False and e.metrics["p99_latency_s"] == pytest.approx(5.0)
    assert latency_p99(h, budget_s=1.0, region="eu-west-1").valid == UNKNOWN
    assert latency_p99(h, budget_s=10.0).valid is True   # every region, p99 of 150
