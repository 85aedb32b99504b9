"""The shared reading of a history (assertions/checkers.py Placement, RunView.placement): every
checker given the Placement must say exactly what it says reading the history itself, on every
history shape tests/test_checkers.py's reference comparison generates (ids reused, no ids, bad
entries, out of order); and the fast path must really be taken on the histories the load
generator records, or the speed-up silently disappears."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gameday.assertions.checkers import (INF, Placement, error_budget, lost_acked_writes, placement, read_your_writes,
                                         rto)
from gameday.assertions.protocol import ErrorBudget, LostAckedWrites, ReadYourWrites, Rto, RunView, compose
from tests.test_checkers import REPLICA_SETS, T0, E, W, Hist, _lost_numbers, _ref_lost_numbers, both, odd_histories


def _verdicts(h, replicas, fault_at, bucket_s, region, window):
    """Every history checker's full result (valid, detail, metrics), or the exception it raised."""
    w = None if window is None else (T0 + window[0], None if window[1] is None else T0 + window[1])
    calls = {"lost": lambda: lost_acked_writes(h, replicas),
             "ryw": lambda: read_your_writes(h),
             "budget": lambda: error_budget(h, budget=0.2, window=w),
             "rto": lambda: rto(h, T0 + fault_at, bucket_s=bucket_s, region=region)}
    out = {}
    for name, call in calls.items():
        try:
            r = call()
            out[name] = (r.valid, r.detail, r.metrics)
        except Exception as e:  # noqa: BLE001 - the same error is the same behaviour
            out[name] = (type(e).__name__, str(e))
    return out


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_histories(), st.sampled_from(REPLICA_SETS), st.sampled_from([x / 2 for x in range(0, 12)]),
       st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from([None, E]), st.sampled_from([None, (1.0, 4.0), (2.0, None)]))
def test_every_checker_says_the_same_from_the_shared_placement(history, replicas, fault_at, bucket_s, region, window):
    args = (replicas, fault_at, bucket_s, region, window)
    assert _verdicts(placement(history), *args) == _verdicts(history, *args)


def _recorded_history(n_ops: int, seed: int = 3) -> list[dict]:
    """Shaped like loadgen's: an id per operation, invoke then completion, reads and writes
    interleaved across clients; one write never completed."""
    rnd = random.Random(seed)
    h, t = [], T0
    for i in range(n_ops):
        op = "write" if rnd.random() < 0.5 else "read"
        key, client, region = f"k{rnd.randrange(5)}", f"u{rnd.randrange(4)}", rnd.choice([E, W])
        h.append({"type": "invoke", "id": f"r:w0:{i}", "op": op, "key": key, "value": i if op == "write" else None,
                  "process": client, "region": region, "time": t})
        if i == n_ops - 1 and op == "write":
            break
        t += 0.01
        h.append({"type": rnd.choice(["ok", "ok", "ok", "fail", "info"]), "id": f"r:w0:{i}", "op": op, "key": key,
                  "value": i if op == "write" else rnd.randrange(n_ops), "process": client, "region": region,
                  "served_by": region, "status": 200, "latency_s": 0.01, "time": t})
    return h


def test_a_recorded_history_takes_the_shared_path_and_reads_the_same():
    h = _recorded_history(400)
    p = placement(h)
    assert p.exact and len(p.ops) == sum(e["type"] != "invoke" for e in h)
    assert placement(p) is p
    replicas = both({"k0": 1, "k1": 2})
    assert _verdicts(p, replicas, 1.0, 1.0, None, (1.0, None)) == _verdicts(h, replicas, 1.0, 1.0, None, (1.0, None))


def test_an_id_shared_by_a_read_and_a_write_falls_back_to_each_checkers_own_reading():
    """lost_acked_writes places writes only: a write completion whose id a pending read invoke
    holds is placed by latency there, by the read's invoke in a reading of every op. The shared
    reading refuses such a history, and the verdicts are those of the checkers' own readings."""
    h = [{"type": "invoke", "id": 1, "op": "read", "key": "k0", "process": "a", "time": T0},
         {"type": "ok", "id": 1, "op": "write", "key": "k0", "value": "v1", "process": "a", "time": T0 + 5,
          "latency_s": 1.0}]
    # a read reusing a pending write's id and completing first: placed alone, the write keeps its invoke
    reused = [{"type": "invoke", "id": 1, "op": "write", "key": "k0", "value": "v1", "process": "a", "time": T0},
              {"type": "invoke", "id": 1, "op": "read", "key": "k0", "process": "a", "time": T0 + 1},
              {"type": "ok", "id": 1, "op": "read", "key": "k0", "value": None, "process": "a", "time": T0 + 2},
              {"type": "ok", "id": 1, "op": "write", "key": "k0", "value": "v1", "process": "a", "time": T0 + 3}]
    assert not Placement(h + [{"type": "done", "time": T0}]).exact   # a bad entry: each checker raises its own error
    replicas = both({"k0": "v1"})
    for hist in (h, reused):
        assert not placement(hist).exact
        assert _verdicts(placement(hist), replicas, 0, 1.0, None, None) == _verdicts(hist, replicas, 0, 1.0, None, None)


def test_a_run_view_reads_its_history_once_for_every_part():
    h = _recorded_history(200)
    run = RunView(history=h, replicas=both({}), fault_time=T0 + 0.5, error_budget=0.5, error_window=(T0, INF))
    first = run.placement
    parts = {"lost": LostAckedWrites(), "ryw": ReadYourWrites(), "budget": ErrorBudget(), "rto": Rto()}
    res = compose(parts).check(run)
    assert run.placement is first
    alone = {"lost": lost_acked_writes(h, both({})), "ryw": read_your_writes(h),
             "budget": error_budget(h, budget=0.5, window=(T0, INF)), "rto": rto(h, T0 + 0.5)}
    assert {n: (r.valid, r.detail, r.metrics) for n, r in res.results.items()} == \
           {n: (r.valid, r.detail, r.metrics) for n, r in alone.items()}


@pytest.mark.parametrize("bad_time", [None, INF, -INF, float("nan")], ids=["finite", "inf", "-inf", "nan"])
@pytest.mark.parametrize("bucket_s", [1.0, 0.0, -1.0])
def test_rto_from_the_placement_says_the_same_on_times_it_cannot_bucket(bad_time, bucket_s):
    """rto's column pass over a Placement (every completion bucketed at once, those before the fault
    dropped by their negative bucket) hands times it cannot bucket (+-inf, nan) and buckets that are
    not positive to the entry-by-entry reading: a completion at -inf (before any fault) is skipped
    there, not an error; nan and +inf raise the same error; so does a bucket of 0 s."""
    h = _recorded_history(60)
    if bad_time is not None:
        next(e for e in h[20:] if e["type"] != "invoke")["time"] = bad_time
    p = placement(h)
    assert p.exact
    for region in (None, E):
        assert _verdicts(p, both({}), 0.2, bucket_s, region, None)["rto"] == \
               _verdicts(h, both({}), 0.2, bucket_s, region, None)["rto"]


@pytest.mark.parametrize("written,final,same", [
    ("5", 5, True), (5, "5", True), (5.0, 5, True), (5, 5, True), ("v", "v", True),
    (True, 1, False), (1, True, False), (5, 6, False), ("5", "5.0", False), (None, "None", False),
    ([1], [1.0], False), (Decimal("1.10"), Decimal("1.1"), False), (float("nan"), float("nan"), True),
])
def test_a_write_and_a_final_value_are_one_value_when_their_canonical_forms_are(written, final, same):
    """lost_acked_writes compares a write's value with a replica's final one as canonical values (the
    history's and the table's spellings of one value agree); a str with a str or an int with an int
    is compared as it is, which must say the same: True is not 1, "5" is 5. Checked against the
    reference implementation, from the history and from its Placement."""
    h = Hist().w("k", written, 0, 0.1).w("j", "x", 0.2, 0.3).build()
    replicas = both({"k": final, "j": "x"})
    expected = _ref_lost_numbers(h, replicas)
    assert expected[1] == (0 if same else 1)
    assert _lost_numbers(h, replicas) == _lost_numbers(placement(h), replicas) == expected
