"""The streamed history's pure parts (loadgen/history_stream.py, loadgen/clock_offset.py): batches
and their sequence accounting, NTP-style offsets with the min-round-trip sample, the master's
merge with offset correction, and the checks' "unknown" on an incomplete history. No Locust:
the end-to-end runs are tests/test_distributed_load.py."""

from __future__ import annotations

import json

import pytest

from gameday.assertions.checkers import CheckResult, lost_acked_writes, on_incomplete_history, placement
from gameday.loadgen import clock_offset, history_stream as hs
from gameday.loadgen.history import read_entries


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def _writer(sent: list, clock=None, batch_max: int = 4) -> hs.StreamWriter:
    return hs.StreamWriter("w1", lambda t, d: sent.append((t, json.loads(json.dumps(d)))), run="r1",
                           clock=clock or FakeClock(), batch_max=batch_max)


def _op(i: int, kind: str = "write", worker: str = "w1") -> dict:
    return {"id": f"r1:{worker}:{i}", "process": f"{worker}/1", "op": kind, "kind": kind, "key": f"k{i}",
            "value": f"v{i}", "region": "us-east-1", "worker": worker}


def _run_ops(w: hs.StreamWriter, n: int, t0: float = 1000.0) -> None:
    for i in range(n):
        op = _op(i, worker=w.worker)
        # as invoke() does, with the time pinned (invoke stamps the wall clock) so the merge order is known
        w.write({**op, "type": "invoke", "time": t0 + i})
        w.invokes += 1
        w.complete({**op, "type": "ok", "time": t0 + i + 0.5, "status": 200, "served_by": "us-east-1"})


# -- the worker's batches ----------------------------------------------------------------------------------

def test_batches_are_numbered_counted_and_closed_with_the_totals():
    sent: list = []
    w = _writer(sent, batch_max=4)
    _run_ops(w, 5)              # 10 entries: two full batches of 4, 2 left in the buffer
    w.close({"capped": False})
    kinds = [d["kind"] for _, d in sent]
    assert kinds == ["open", "batch", "batch", "batch", "close"]
    batches = [d for _, d in sent if d["kind"] == "batch"]
    assert [b["seq"] for b in batches] == [1, 2, 3]
    assert [b["count"] for b in batches] == [4, 4, 2]
    assert [b["sent_total"] for b in batches] == [4, 8, 10]
    assert all(b["worker"] == "w1" and len(b["entries"]) == b["count"] for b in batches)
    close = sent[-1][1]
    assert (close["batches"], close["sent_total"], close["invokes"], close["completions"]) == (3, 10, 5, 5)
    w.close()
    assert len(sent) == 5, "a second close sends nothing"


def test_a_batch_leaves_after_the_flush_interval_without_filling():
    sent: list = []
    clock = FakeClock()
    w = _writer(sent, clock=clock, batch_max=1000)
    w.invoke(_op(1))
    w.flush_if_due()
    assert [d["kind"] for _, d in sent] == ["open"], "nothing due yet"
    clock.t += hs.hist.FLUSH_S
    w.flush_if_due()
    assert [d["kind"] for _, d in sent] == ["open", "batch"]


def test_injected_skew_moves_every_worker_timestamp(monkeypatch):
    assert clock_offset.injected_skew({"GAMEDAY_CLOCK_SKEW_S": "5"}) == 5.0
    assert clock_offset.injected_skew({}) == 0.0
    with pytest.raises(ValueError, match="GAMEDAY_CLOCK_SKEW_S"):
        clock_offset.injected_skew({"GAMEDAY_CLOCK_SKEW_S": "soon"})
    monkeypatch.setattr(clock_offset, "_SKEW", 5.0)
    monkeypatch.setattr(hs, "wall", clock_offset.wall)
    sent: list = []
    w = _writer(sent)
    import time
    before = time.time()
    op = _op(1)
    w.invoke(op)
    assert op["time"] - before == pytest.approx(5.0, abs=0.5)
    answer = hs.pong({"t0": before}, clock_offset.wall())
    assert answer["t1"] - before == pytest.approx(5.0, abs=0.5) and answer["t2"] >= answer["t1"]


# -- clock offsets -----------------------------------------------------------------------------------------

def test_offset_is_ntp_s_formula_and_the_shortest_round_trip_wins():
    est = clock_offset.OffsetEstimator()
    assert est.offset_s == 0.0 and est.uncertainty_s is None
    # worker 5 s ahead; a slow sample (0.4 s round trip, asymmetric) then a fast one (0.02 s)
    slow = est.add(t0=10.0, t1=15.3, t2=15.3, t3=10.4)
    fast = est.add(t0=20.0, t1=25.01, t2=25.01, t3=20.02)
    assert slow.offset_s == pytest.approx(5.1) and slow.uncertainty_s == pytest.approx(0.2)
    assert est.best is fast
    assert est.offset_s == pytest.approx(5.0) and est.uncertainty_s == pytest.approx(0.01)
    # a later worse sample does not replace the best one
    est.add(t0=30.0, t1=35.5, t2=35.5, t3=31.0)
    assert est.offset_s == pytest.approx(5.0)
    assert est.correct(1005.0) == pytest.approx(1000.0)
    # the worker's own processing time is not round trip
    s = clock_offset.Sample(t0=0.0, t1=5.001, t2=5.101, t3=0.102)
    assert s.round_trip_s == pytest.approx(0.002) and s.offset_s == pytest.approx(5.0)


def test_an_answer_before_its_ping_is_refused():
    with pytest.raises(ValueError, match="before it was sent"):
        clock_offset.OffsetEstimator().add(t0=10.0, t1=10.0, t2=10.0, t3=9.0)


def test_only_recent_samples_compete():
    est = clock_offset.OffsetEstimator(keep=2)
    est.add(0, 5.0, 5.0, 0.001)          # a very good old sample
    est.add(10, 17.0, 17.0, 10.1)        # the clock drifted: two newer ones
    est.add(20, 27.0, 27.0, 20.1)
    assert est.offset_s == pytest.approx(6.95)


# -- the master's collector --------------------------------------------------------------------------------

def _closed_run(n_ops: int) -> list:
    """The messages of a worker that ran n_ops operations (batches of 4) and closed."""
    sent: list = []
    w = _writer(sent, batch_max=4)
    _run_ops(w, n_ops)
    w.close()
    return sent


def _feed(collector: hs.StreamCollector, node: str, sent: list, drop_seq: set[int] = frozenset()) -> None:
    for t, d in sent:
        if d.get("kind") == "batch" and d["seq"] in drop_seq:
            continue
        collector.on_message(node, d)


def test_the_master_merges_with_each_worker_s_offset_and_worker_id(tmp_path):
    c = hs.StreamCollector(tmp_path, "r1")
    a, b = [], []
    wa, wb = _writer(a), hs.StreamWriter("w2", lambda t, d: b.append((t, json.loads(json.dumps(d)))), run="r1",
                                         clock=FakeClock(), batch_max=4)
    _run_ops(wa, 3, t0=1000.0)           # w1's clock is right
    _run_ops(wb, 3, t0=1005.2)           # w2's clock is 5 s ahead: its ops happened at 1000.2, 1001.2, ...
    wa.close(), wb.close()
    c.on_pong("node-a", {"t0": 50.0, "t1": 50.001, "t2": 50.001}, 50.002)
    c.on_pong("node-b", {"t0": 50.0, "t1": 55.001, "t2": 55.001}, 50.002)
    _feed(c, "node-a", a)
    _feed(c, "node-b", b)
    report = c.finalize()
    merged, _ = read_entries(tmp_path / "history.jsonl")
    assert len(merged) == 12
    assert [e["worker"] for e in merged[:4]] == ["w1", "w2", "w1", "w2"], "interleaved on the master's clock"
    w2 = [e for e in merged if e["worker"] == "w2"]
    assert w2[0]["time"] == pytest.approx(1000.2, abs=0.01) and w2[0]["worker_time"] == pytest.approx(1005.2)
    assert report["complete"] is True
    assert report["workers"]["w2"]["clock_offset_s"] == pytest.approx(5.0, abs=0.01)
    assert report["workers"]["w2"]["offset_uncertainty_s"] == pytest.approx(0.001, abs=1e-6)
    assert json.loads((tmp_path / hs.COMPLETENESS_NAME).read_text()) == report
    assert hs.history_gaps(report) == {}


def test_a_lost_batch_is_a_gap_with_its_entries_missing(tmp_path):
    c = hs.StreamCollector(tmp_path, "r1")
    _feed(c, "n1", _closed_run(5), drop_seq={2})
    acc = c.finalize()["workers"]["w1"]
    assert acc["missing_batches"] == 1
    assert (acc["entries_received"], acc["entries_sent_or_expected"], acc["missing"]) == (6, 10, 4)
    assert acc["complete"] is False and acc["estimated"] is False
    assert hs.history_gaps(c.finalized) == {"w1": 4}


def test_a_duplicate_batch_is_counted_once(tmp_path):
    c = hs.StreamCollector(tmp_path, "r1")
    sent = _closed_run(2)
    _feed(c, "n1", sent + [s for s in sent if s[1]["kind"] == "batch"])
    acc = c.finalize()["workers"]["w1"]
    assert (acc["entries_received"], acc["missing"], acc["complete"]) == (4, 0, True)


def test_a_worker_that_never_closes_is_incomplete_with_an_estimate(tmp_path):
    clock = FakeClock(0.0)
    c = hs.StreamCollector(tmp_path, "r1", clock=clock)
    sent: list = []
    w = _writer(sent, batch_max=4)
    _run_ops(w, 6)          # 3 batches, no close: killed
    for t, d in sent:
        clock.t += 0.2     # 4 entries every 0.2 s: 20 entries/s
        c.on_message("n1", d)
    c.on_locust_report("n1", 15)      # Locust counted 15 requests; 6 completions arrived
    assert c.pending({"n1"}) == ["w1"] and c.pending(set()) == []
    acc = c.finalize()["workers"]["w1"]
    assert acc["complete"] is False and acc["closed"] is False and acc["estimated"] is True
    assert acc["entries_received"] == 12 and acc["locust_requests"] == 15
    assert acc["missing"] == 9, "Locust's count says 9 completions never arrived"


def test_a_dead_worker_with_no_other_evidence_still_misses_its_unsent_buffer(tmp_path):
    clock = FakeClock(0.0)
    c = hs.StreamCollector(tmp_path, "r1", clock=clock)
    sent: list = []
    w = _writer(sent, batch_max=4)
    _run_ops(w, 4)
    for t, d in sent:
        clock.t += 0.1      # 40 entries/s: one unsent buffer of FLUSH_S is ~8 entries
        c.on_message("n1", d)
    acc = c.finalize()["workers"]["w1"]
    assert acc["missing"] == pytest.approx(40 * hs.hist.FLUSH_S, abs=1) and acc["complete"] is False


def test_messages_after_the_end_change_nothing(tmp_path):
    c = hs.StreamCollector(tmp_path, "r1")
    sent = _closed_run(2)
    _feed(c, "n1", sent[:2])
    first = c.finalize()
    _feed(c, "n1", sent[2:])
    assert c.finalize() is first and first["workers"]["w1"]["complete"] is False


# -- the checks' verdict --------------------------------------------------------------------------------

def test_checks_on_an_incomplete_history_say_unknown_naming_the_workers():
    history = [{"type": "invoke", "time": 1.0, "id": 1, "op": "write", "key": "k", "value": "v", "region": "r"},
               {"type": "ok", "time": 1.1, "id": 1, "op": "write", "key": "k", "value": "v", "region": "r"}]
    replicas = {"r": {"k": "v"}}
    passed = lost_acked_writes(placement(history), replicas)
    assert passed.valid is True
    judged = on_incomplete_history(passed, {"w2": 17})
    assert judged.valid == "unknown" and "w2: 17 entries missing" in judged.detail
    assert judged.metrics["history_entries_missing"] == 17
    assert on_incomplete_history(passed, {}) is passed
    failed = CheckResult("lost_acked_writes", False, "1 acknowledged write lost")
    assert on_incomplete_history(failed, {"w2": 17}) is failed, "a violation seen stays a violation"


def test_completeness_readers(tmp_path):
    assert hs.read_completeness(tmp_path) is None
    assert hs.history_gaps(None) == {} and hs.max_uncertainty(None) == 0.0
    (tmp_path / hs.COMPLETENESS_NAME).write_text(json.dumps(
        {"complete": False, "max_offset_uncertainty_s": 0.004,
         "workers": {"w1": {"complete": True, "missing": 0}, "w2": {"complete": False, "missing": 5}}}))
    c = hs.read_completeness(tmp_path)
    assert hs.history_gaps(c) == {"w2": 5} and hs.max_uncertainty(c) == 0.004


def test_the_summary_says_which_worker_lost_entries(tmp_path):
    """summary.json's scenario `history` block: what history_completeness.json says, per worker."""
    import json

    from gameday.reports.summary import streamed_history

    assert streamed_history(tmp_path) is None                      # nothing streamed: no block
    (tmp_path / "history_completeness.json").write_text(json.dumps({"complete": False, "workers": {
        "w0": {"entries_received": 240, "missing": 0, "complete": True, "clock_offset_s": 0.0001},
        "w1": {"entries_received": 80, "missing": 6, "complete": False, "estimated": True}}}))
    h = streamed_history(tmp_path)
    assert h["complete"] is False
    assert h["workers"]["w1"]["missing"] == 6 and h["workers"]["w1"]["complete"] is False
    assert h["workers"]["w0"]["clock_offset_s"] == 0.0001


def test_the_report_shows_each_workers_offset_and_missing_entries():
    """scenario.html.j2's workers table, from the summary's history block (rendered with the report's
    own templates; a scenario without streamed workers shows no table)."""
    from gameday.reports.html import _TEMPLATES

    tpl = _TEMPLATES.get_template("scenario.html.j2")
    base = {"idx": 0, "name": "s", "outcome": "passed", "recorded_outcome": "passed", "started": None,
            "finished": None, "took_s": None, "message": None, "metrics": [], "faults": [], "chart": None,
            "checks": [], "not_rechecked": None, "files": [], "m": {}}
    history = {"complete": False, "workers": {
        "w0": {"entries_received": 240, "missing": 0, "complete": True, "clock_offset_s": 5.000062,
               "offset_uncertainty_s": 0.0003},
        "w1": {"entries_received": 80, "missing": 6, "complete": False, "estimated": True,
               "clock_offset_s": None, "offset_uncertainty_s": None}}}
    html = tpl.render(c={**base, "history": history})
    assert "+5.0001 s" in html and "0.0003 s" in html and "6 (estimated)" in html
    assert "load workers" not in tpl.render(c={**base, "history": None})
