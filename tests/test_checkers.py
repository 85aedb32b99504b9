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


# -- the fast paths agree with the reading they replaced -------------------------------------------------------
# read_your_writes, error_budget and rto read loadgen-shaped histories in one inlined pass and fall
# back to iter_operations for anything else. The implementations they had before (over
# iter_operations only, verbatim below) are the reference: on any history both must give the same
# result, or raise the same error.

from gameday.assertions.checkers import (CLIENT_FIELDS, INF, _as_epoch, _client_name, _error_tally_plain,  # noqa: E402
                                         _examples, _fmt, _rto_buckets_plain, _ryw_scan_plain, canon_value,
                                         iter_operations)


def _old_read_your_writes(history: Sequence[dict]) -> CheckResult:
    """Within a region (the one that served both), a read invoked after the same client's `ok`
    write of the key completed must return that value or the value of a write that may follow it
    (one that completed after the client's write was invoked, or never certainly completed).
    A read answered 404 (or no value) after such a write is a violation: the workload never deletes.
    Operations are taken in history order, which is each client's own order in any history a
    recorder appends to (and in loadgen's merge, which keeps every worker file's order)."""
    last_write: dict[tuple, tuple] = {}   # (client, key, region) -> (invoked, completed, canon value, raw value)
    suspects: list[tuple] = []            # (read, the client's write): the read saw another value
    checked = unattributed = n_ops = 0
    violations: list[str] = []
    n_viol = not_found = stale = 0
    # in history order: each client's own entries are in the order it recorded them
    for o in iter_operations(history, with_client=True):
        typ, op, key, value, invoked, _done, region, served_by, status, client, _i = o
        n_ops += 1
        if client is None:
            unattributed += 1
            continue
        where = served_by or region
        if op == "write":
            if typ == "ok":
                last_write[(client, key, where)] = (
                    invoked, _done, value if type(value) is str else canon_value(value), value)
            continue
        if op != "read":
            continue
        w = last_write.get((client, key, where))
        if w is None:
            continue
        # the read must start after the write finished; unplaced reads count as sequential
        if invoked != -INF and invoked < w[1]:
            continue
        is_404 = status == 404 or status == "404" or (typ == "ok" and value is None)
        if not is_404 and typ != "ok":
            continue  # failed or unknown read: no observation
        checked += 1
        if is_404:
            n_viol += 1
            not_found += 1
            violations.append(f"{_client_name(client)} wrote {key}={_fmt(w[3])} in {where} then read 404")
        elif (value if type(value) is str else canon_value(value)) != w[2]:
            suspects.append((o, w, where))
    if n_ops and unattributed == n_ops:
        return CheckResult("read_your_writes", UNKNOWN, "the history names no client (process, worker, client, "
                           "user or user_id): reads cannot be tied to their client's writes",
                           {"reads_checked": 0, "ryw_violations": None})
    if suspects:
        # did the read see a write that may have followed the client's own? (only these keys matter)
        keys = {o.key for o, _, _ in suspects}
        later: dict[tuple, float] = {}   # (key, canon value) -> latest completion (+inf: may land any time)
        for x in operations(history, only="write"):   # with writes still in flight at the end
            if x.key in keys:
                done = x.completed if x.type == "ok" else INF
                k = (x.key, canon_value(x.value))
                if done > later.get(k, -INF):
                    later[k] = done
        for o, (w_inv, _, _, w_raw), where in suspects:
            x_done = later.get((o.key, canon_value(o.value)))
            if x_done is not None and x_done > w_inv:
                continue  # a write that may follow the client's own
            n_viol += 1
            stale += 1
            what = "an older value" if x_done is not None else "a value no recorded write wrote"
            violations.append(f"{_client_name(o.client)} wrote {o.key}={_fmt(w_raw)} in {where} then read "
                              f"{_fmt(o.value)} ({what})")
    metrics = {"reads_checked": checked, "ryw_violations": n_viol, "stale_reads": stale, "not_found_reads": not_found,
               "ops_without_client": unattributed}
    if checked == 0:
        return CheckResult("read_your_writes", UNKNOWN, "no read followed its client's acknowledged write of the "
                           "same key in the same region: nothing to check", metrics)
    detail = f"{n_viol} of {checked} reads after the client's own write missed it"
    if n_viol:
        detail += f" ({stale} stale, {not_found} not found): " + _examples(violations, n_viol)
    return CheckResult("read_your_writes", n_viol == 0, detail, metrics)


def _old_error_budget(history: Sequence[dict], *, budget: float, window: tuple[Any, Any] | None = None,
                 window_budget: float | None = None) -> CheckResult:
    """The share of completed operations that failed or ended unknown (`fail` + `info`) stays within
    `budget` (a fraction), overall and, with `window` = (start, end) epoch seconds or ISO times,
    among the operations completed inside it (limit `window_budget`, default `budget`)."""
    n = bad = n_fail = n_info = 0
    wn = wbad = 0
    w0 = w1 = None
    if window is not None:
        w0 = _as_epoch(window[0], "window start")
        w1 = _as_epoch(window[1], "window end") if window[1] is not None else INF
    wb = budget if window_budget is None else window_budget
    for typ, _op, _k, _v, _inv, done, _r, _s, _st, _c, _i in iter_operations(history):
        n += 1
        failed = typ != "ok"
        if failed:
            bad += 1
            if typ == "fail":
                n_fail += 1
            else:
                n_info += 1
        if w0 is not None and w0 <= done < w1:
            wn += 1
            wbad += failed
    rate = bad / n if n else None
    metrics = {"requests": n, "error_rate": rate, "failed": n_fail, "unknown": n_info}
    if n == 0:
        return CheckResult("error_budget", UNKNOWN, "no completed operations", metrics)
    valid = rate <= budget
    detail = (f"{bad} of {n} operations failed or unknown ({n_fail} fail, {n_info} info): {rate:.2%} "
              f"{'within' if valid else 'OVER'} the {budget:.2%} budget")
    if w0 is not None:
        wrate = wbad / wn if wn else None
        metrics.update({"window_requests": wn, "window_error_rate": wrate})
        if wn == 0:
            detail += f"; no operation completed in the window ({w1 - w0:.1f}s)"
            valid = valid if valid is False else UNKNOWN
        else:
            wvalid = wrate <= wb
            detail += (f"; in the {w1 - w0:.1f}s window {wbad} of {wn}: {wrate:.2%} "
                       f"{'within' if wvalid else 'OVER'} the {wb:.2%} budget")
            valid = valid and wvalid
    return CheckResult("error_budget", valid, detail, metrics)


def _old_rto(history: Sequence[dict], fault_time: Any, *, slo: float = 0.95, bucket_s: float = 1.0,
        region: str | None = None, deadline_s: float | None = None, hold_s: float | None = None) -> CheckResult:
    """Recovery time: from `fault_time` until the clients' success rate, per `bucket_s` bucket of
    completion time, is back at or above `slo` and stays there to the end of the history (for at
    least `hold_s`, default one bucket). With `region`, only successes served by that region count
    (clients must have followed the failover). A bucket with no completed operation counts as
    failing: clients that hang are not served. rto_s is the start of the first recovered bucket
    (resolution: bucket_s). Unknown when the history ends before a recovery is seen; with
    `deadline_s`, false when it recovered later than that."""
    t_fault = _as_epoch(fault_time, "fault_time")
    hold = bucket_s if hold_s is None else hold_s
    ok_n: dict[int, int] = {}
    all_n: dict[int, int] = {}
    last = t_fault
    for typ, _op, _k, _v, _inv, t, _region, served_by, _st, _c, _i in iter_operations(history):
        if t < t_fault:
            continue
        b = int((t - t_fault) // bucket_s)
        all_n[b] = all_n.get(b, 0) + 1
        if typ == "ok" and (region is None or served_by == region):
            ok_n[b] = ok_n.get(b, 0) + 1
        if t > last:
            last = t
    served = f" served by {region}" if region else ""
    metrics: dict[str, Any] = {"rto_s": None, "requests_after_fault": sum(all_n.values())}
    if not all_n:
        return CheckResult("rto", UNKNOWN, "no operation completed after the fault", metrics)
    n_buckets = max(all_n) + 1
    first_good = n_buckets
    for b in range(n_buckets - 1, -1, -1):
        n = all_n.get(b, 0)
        if n == 0 or ok_n.get(b, 0) / n < slo:
            break
        first_good = b
    observed = last - t_fault
    if first_good == n_buckets or observed - first_good * bucket_s < hold:
        worst = min(range(n_buckets), key=lambda b: ok_n.get(b, 0) / all_n[b] if all_n.get(b) else 0.0)
        rate_last = ok_n.get(n_buckets - 1, 0) / all_n.get(n_buckets - 1, 1)
        msg = (f"success rate{served} not back at >= {slo:.0%} for {hold:.1f}s before the history ends "
               f"{observed:.1f}s after the fault (last bucket {rate_last:.0%}, worst bucket at "
               f"{worst * bucket_s:.0f}s: {ok_n.get(worst, 0)}/{all_n.get(worst, 0)})")
        if deadline_s is not None and observed >= deadline_s + hold:
            return CheckResult("rto", False, msg + f"; deadline {deadline_s:.1f}s passed", metrics)
        return CheckResult("rto", UNKNOWN, msg, metrics)
    rto_s = first_good * bucket_s
    metrics["rto_s"] = rto_s
    valid = True if deadline_s is None else rto_s <= deadline_s
    detail = (f"success rate{served} back at >= {slo:.0%} from {rto_s:.1f}s after the fault (buckets of "
              f"{bucket_s:g}s) and held for the remaining {observed - rto_s:.1f}s")
    if deadline_s is not None:
        detail += f"; {'within' if valid else 'OVER'} the {deadline_s:.1f}s deadline"
    return CheckResult("rto", valid, detail, metrics)


@st.composite
def odd_histories(draw):
    """Histories of every shape the readers accept or reject: ids or not (some reused), invokes or
    not, latency_s / latency_ms / latency / none / garbage, float, int, ISO or missing times, client
    aliases or none, key and value aliases, statuses 404 / "404", invalid types, entries out of order.
    Times on a coarse grid, so that boundaries (a read invoked as the write completes, a completion
    at a window's or a bucket's edge) happen; a few odd entries among loadgen-shaped ones."""
    # which aspects may be odd in this history (none: all in loadgen's shape), so one odd aspect
    # at a time also meets the fast paths
    odd = draw(st.sets(st.sampled_from(["op", "type", "client", "key", "region", "id", "invoke", "invoke_time",
                                         "served", "status", "latency", "time", "order"]), max_size=2))

    def pick(normal: list, weird: list, aspect: str = ""):
        if aspect in odd and draw(st.booleans()):
            return draw(st.sampled_from(weird))
        return draw(st.sampled_from(normal))
    grid = [x / 2 for x in range(0, 17)]
    entries: list[tuple[float, int, dict]] = []
    seq = 0
    for n in range(draw(st.integers(0, 16))):
        kind = pick(["write", "write", "read", "read"], ["cas", None], "op")
        typ = pick(["ok", "ok", "ok", "fail", "info"], ["done"], "type")
        inv = draw(st.sampled_from(grid))
        done = inv + draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
        client_field = pick(["process", "user"], ["worker", "user_id", None], "client")
        base = {pick(["op"], ["f"], "op"): kind}
        if client_field:
            base[client_field] = draw(st.sampled_from(["a", "b"]))
        base[pick(["key"], ["k"], "key")] = pick(["k0", "k1"], [2, None], "key")
        value = draw(st.sampled_from(["v1", "v2", "v2", 3, 3.0, None]))
        if kind == "read" and typ != "ok":
            value = None
        region = draw(st.sampled_from([E, W]))
        base[pick(["region"], ["target", "target_region"], "region")] = region
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
        c = {**base, "type": typ, "value": value,
             pick(["served_by"], ["server_region", "served"], "served"):
                 pick([region, region, E, W], [None, ""], "served"),
             pick(["status"], ["status_code"], "status"): pick([200, 404, 503], ["404", None], "status")}
        lat = pick(["s", "s", "none"], ["ms", "plain", "absent", "garbage", "int"], "latency")
        c.update({"s": {"latency_s": done - inv}, "none": {"latency_s": None},
                  "ms": {"latency_ms": round((done - inv) * 1000)}, "plain": {"latency": done - inv},
                  "absent": {}, "garbage": {"latency_ms": "slow"}, "int": {"latency_s": 1}}[lat])
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
    except Exception as e:   # the same error is part of the same behaviour
        return (type(e), str(e))


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_histories(), st.sampled_from([x / 2 for x in range(0, 12)]), st.sampled_from([0.5, 1.0, 2.0]),
       st.sampled_from([None, E]),
       st.sampled_from([None, (1.0, 4.0), (2.0, None)]), st.booleans())
def test_fast_paths_agree_with_the_reference_on_any_history(history, fault_at, bucket_s, region, window, as_tuple):
    h = tuple(history) if as_tuple else history
    assert _outcome(read_your_writes, h) == _outcome(_old_read_your_writes, h)
    win = None if window is None else (T0 + window[0], None if window[1] is None else T0 + window[1])
    assert _outcome(error_budget, h, budget=0.2, window=win) == _outcome(_old_error_budget, h, budget=0.2, window=win)
    assert (_outcome(rto, h, T0 + fault_at, bucket_s=bucket_s, region=region, slo=0.5)
            == _outcome(_old_rto, h, T0 + fault_at, bucket_s=bucket_s, region=region, slo=0.5))
    # a generator (read once) goes through iter_operations as before
    assert _outcome(read_your_writes, iter(history)) == _outcome(_old_read_your_writes, iter(history))


@pytest.mark.parametrize("hist,valid", [
    (Hist().w("k", "v0", 0, 0.1, "fail", proc="w1/9").w("k", "v1", 1, 1.1).r("k", "v0", 1.2, 1.3), True),
    (Hist().w("k", "v0", 0, 0.1, "info", proc="w1/9").w("k", "v1", 1, 1.1).r("k", "v0", 1.2, 1.3), True),
    (Hist().w("k", "v0", 0, None, proc="w1/9").w("k", "v1", 1, 1.1).r("k", "v0", 1.2, 1.3), True),
    (Hist().w("k", "v0", 0, 0.1, proc="w1/9").w("k", "v1", 1, 1.1).r("k", "v0", 1.2, 1.3), False),
], ids=["failed-write-may-have-landed", "unknown-write-may-land", "in-flight-write-may-land", "older-acked-write"])
def test_read_of_a_failed_unknown_or_in_flight_write_agrees(hist, valid):
    """A read that saw the value of a write that failed, ended unknown or never completed is not
    stale (that write may have landed after the client's own); an older acked one is."""
    h = hist.build()
    assert read_your_writes(h) == _old_read_your_writes(h)
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
        del comp["latency_s"]
        comp["latency_ms"] = "slow"
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


@pytest.mark.parametrize("kind", ["anonymous-in-flight-write", "garbage-latency-no-invoke", "no-latency-no-invoke",
                                  "int-latency-no-invoke", "iso-time", "int-time", "no-time", "bad-type",
                                  "reused-id", "timeless-anonymous-invoke", "none"])
def test_one_odd_entry_reads_as_before(kind):
    h = _one_odd_entry(kind)
    assert _outcome(read_your_writes, h) == _outcome(_old_read_your_writes, h)
    for win in (None, (T0 + 1, T0 + 1.3), (T0 + 1.3, None)):
        assert _outcome(error_budget, h, budget=0.2, window=win) == _outcome(_old_error_budget, h, budget=0.2,
                                                                             window=win)
    for fault, region in ((T0, None), (T0 + 1.2, E), (T0 + 1.3, W)):
        assert _outcome(rto, h, fault, slo=0.5) == _outcome(_old_rto, h, fault, slo=0.5)
        assert _outcome(rto, h, fault, region=region) == _outcome(_old_rto, h, fault, region=region)


def test_loadgen_shaped_histories_take_the_fast_paths():
    """The speed is the point: a history in loadgen's shape (ids, float times, latency_s or None)
    must not fall back to iter_operations; an ISO time or a latency in ms makes them fall back."""
    h = (Hist().w("k", "v1", 1, 1.1).w("k", "v2", 1.05, 1.25, proc="w1/9").r("k", "v2", 1.3, 1.4)
         .w("k", "v3", 2, 4, "info").build())
    h[-1]["latency_s"] = None   # loadgen's timeout: no latency, placed by its invoke's id
    assert _ryw_scan_plain(h) is not None
    assert _error_tally_plain(h, None, None) is not None
    assert _rto_buckets_plain(h, T0, 1.0, None) is not None
    odd = [dict(e) for e in h]
    odd[1]["time"] = "2025-11-24T16:00:00+00:00"
    assert _ryw_scan_plain(odd) is None and _error_tally_plain(odd, None, None) is None
    assert _rto_buckets_plain(odd, T0, 1.0, None) is None
