"""The data checkers (assertions/checkers.py) and the Elle export (assertions/elle.py).

Table-driven: every checker gets histories it must pass and histories it must fail (a lost
write, a write present in one region only, a stale read, an error burst over budget, a history
ending before recovery, concurrent writes to the same key), plus a property test: random
histories with known losses injected, where the checker must find exactly those.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gameday.assertions import elle
from gameday.assertions.checkers import (UNKNOWN, CheckResult, HistoryError, compose, convergence, divergent_keys,
                                 error_budget, lost_acked_writes, operations, read_your_writes, rto, run_checks)
from gameday.reports.rundata import normalize_op

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


def test_entries_without_a_placeable_invocation_never_invent_a_loss():
    """No id, no latency, no invoke: the write may have started at any time, so it is not lost."""
    history = [{"type": "ok", "op": "write", "key": "k1", "value": "v1", "time": T0 + 1},
               {"type": "ok", "op": "write", "key": "k1", "value": "v2", "time": T0 + 5}]
    assert lost_acked_writes(history, both({"k1": "v1"})).valid is True
    # with latencies the order is known and v2's loss is found
    for e, lat in zip(history, (0.1, 0.1)):
        e["latency_s"] = lat
    assert lost_acked_writes(history, both({"k1": "v1"})).valid is False


def test_operations_read_fields_as_normalize_op_does():
    """The checkers read entries directly for speed; they must agree with reports.rundata.normalize_op
    on every alias it knows."""
    entries = [
        {"type": "ok", "f": "write", "k": "a", "v": 1, "ts": T0 + 1, "latency_ms": 250, "target": E, "server_region": W,
         "status_code": 200},
        {"type": "fail", "op": "read", "key": "b", "value": None, "wall_time": "2025-11-24T16:00:00+00:00",
         "latency": 0.5, "target_region": W, "served": E, "status": 503},
        {"type": "info", "op": "write", "key": "c", "value": "x", "at": T0 + 3, "latency_s": 0.25},
        {"type": "ok", "op": "read", "key": "d", "value": 2, "t": T0 + 4, "latency_s": 0.5, "region": E, "served_by": E},
    ]
    ops = operations(entries, unmatched=False)
    for o, e in zip(ops, entries):
        n = normalize_op(e, "test")
        assert (o.type, o.op, o.key, o.value, o.region, o.served_by, o.status) == \
               (n.type, n.op, n.key, n.value, n.region, n.served_by, n.status)
        assert o.completed == pytest.approx(n.time) and o.invoked == pytest.approx(n.time - n.latency_s)
    assert lost_acked_writes(entries, both({"a": 1, "c": "x"})).metrics["acked_writes"] == 1


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
    assert "process=w1/1/worker=w1 wrote k='v1' in us-east-1 then read 404" in res.detail
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


# -- compose / run_checks / result shape ----------------------------------------------------------------------

def test_compose():
    t, f, u = CheckResult("a", True, "x", {"m": 1}), CheckResult("b", False, "bad"), CheckResult("c", UNKNOWN, "?")
    assert compose(t, t).valid is True
    assert compose(t, f, u).valid is False and "b FAILED: bad" in compose(t, f, u).detail
    assert compose(t, u).valid == UNKNOWN
    assert compose().valid == UNKNOWN
    assert compose([t, t], name="data").name == "data" and compose(t).metrics == {"m": 1}
    with pytest.raises(ValueError):
        CheckResult("x", "maybe", "")


def test_run_checks_and_recheck_shape():
    from gameday.reports.recheck import _as_check
    h = _steady(50, 0, 0.1).build() + Hist().w("k1", "v1", 0, 0.1).build()
    results = run_checks(h, both({"k1": "v1"}), error_budget_fraction=0.01, fault_time=T0 + 1)
    assert [r.name for r in results] == ["lost_acked_writes", "divergent_keys", "read_your_writes", "error_budget",
                                         "rto"]
    for r in results:
        d = _as_check(r, r.name)                  # reports/recheck.py reads them as they are
        assert d["valid"] == r.valid and json.dumps(d)
        assert all(v is None or isinstance(v, (int, float)) for v in r.metrics.values()), r.metrics
    with pytest.raises(AssertionError, match="lost_acked_writes: FAILED"):
        lost_acked_writes(seq2(), both({"k1": "v1"})).assert_valid()


def test_recheck_keeps_an_rpo_budget(tmp_path):
    """reports/recheck.py re-runs lost_acked_writes with the scenario's RPO budget (allowed losses)."""
    from gameday.reports.recheck import recheck_scenario, resolve_checkers
    from gameday.reports.rundata import Scenario
    h = Hist().w("k1", "v1", 1, 1.1).w("k2", "v2", 1, 1.1).build()
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in h))
    (tmp_path / "replicas.json").write_text(json.dumps(both({"k1": "v1"})))   # k2 lost, replicas agree
    checkers, source = resolve_checkers()
    assert source == "gameday.assertions.checkers"
    result = {"name": "rpo", "outcome": "passed", "checks": [{"name": "lost_acked_writes", "valid": True}],
              "metrics": {}, "budgets": {"lost_acked_writes": 1}}
    rc = recheck_scenario(Scenario("rpo", tmp_path, "scenarios/rpo", result, None, None), checkers)
    assert rc.outcome == "passed" and not rc.disagreements and rc.metrics["lost_acked_writes"] == 1
    strict = dict(result, budgets={})
    rc2 = recheck_scenario(Scenario("rpo", tmp_path, "scenarios/rpo", strict, None, None), checkers)
    assert rc2.outcome == "failed" and rc2.disagreements


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
