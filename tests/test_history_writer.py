"""The load generator's history writer (loadgen/history.py HistoryWriter): buffered, flushed once
FLUSH_S has passed, so a killed worker loses at most its last FLUSH_S of entries. What is on disk
while the writer is open is what a SIGKILL leaves (Python's buffer dies with the process), so the
file is read back with the writer still open, on a fake clock."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import pytest

from gameday.loadgen import history as hist
from gameday.loadgen.history import FLUSH_S, HistoryWriter, read_entries


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _op(i: int) -> dict:
    return {"type": "ok", "id": f"r:w0:{i}", "process": "w0/1", "op": "write", "kind": "write", "key": f"k{i}",
            "value": f"w0/1#{i}", "region": "us-east-1", "served_by": "us-east-1", "status": 200,
            "latency_s": 0.001, "time": 1_764_000_000.0 + i, "mono": 5.0 + i}


def test_what_a_kill_leaves_is_everything_up_to_the_last_flush_s(tmp_path):
    clock = Clock()
    path = tmp_path / "history.r.w0-1@h.jsonl"
    w = HistoryWriter(path, "w0", clock=clock)
    for i in range(3):
        w.complete(_op(i))
        clock.now += FLUSH_S / 4
    assert read_entries(path) == ([], False)               # buffered: not one write(2) per entry
    clock.now += FLUSH_S
    w.complete(_op(3))                                     # FLUSH_S passed: this write flushes them all
    assert [e["id"] for e in read_entries(path)[0]] == [f"r:w0:{i}" for i in range(4)]
    w.complete(_op(4))
    assert len(read_entries(path)[0]) == 4                 # the unflushed tail: younger than FLUSH_S
    w.flush_if_due()
    assert len(read_entries(path)[0]) == 4                 # not due yet
    clock.now += FLUSH_S
    w.flush_if_due()                                       # the idle timer (loadgen.locustfile) flushes it
    assert len(read_entries(path)[0]) == 5
    w.complete(_op(5))
    w.close({"note": 1})
    assert read_entries(path) == ([_op(i) for i in range(6)], False)
    done = json.loads(path.with_name(path.name + ".done").read_text())
    assert done["completions"] == 6 and done["note"] == 1
    w.flush_if_due()                                       # after close: nothing to do, no error


@pytest.mark.parametrize("entry", [
    {"type": "ok", "time": 1.5, "value": "é\u2028\"\\", "key": 3},
    {"type": "ok", "time": 1.5, "value": Decimal("1.10"), 7: "int key"},
    {"type": "info", "time": 1e-7, "value": math.nan, "latency_s": math.inf, "error": None, "ok": True},
    {"type": "ok", "time": 1.5, "value": {"nested": [1, 2.5, None]}},
])
def test_a_line_is_what_json_dumps_writes(tmp_path, entry):
    """The writer's encoder is made once from json's C encoder: it must write exactly what the
    JSONEncoder it replaced wrote (unicode kept, unknown types as str, NaN/inf as JSON does)."""
    path = tmp_path / "history.r.w0-1@h.jsonl"
    w = HistoryWriter(path, "w0")
    w.write(entry)
    w.close()
    want = json.dumps(entry, separators=(",", ":"), ensure_ascii=False, default=str) + "\n"
    assert path.read_text(encoding="utf-8") == want
    assert hist._line_encoder()(entry) == want


def test_an_operation_still_open_when_the_run_ends_is_closed_as_info(tmp_path):
    # Catches a history that keeps an invoke without its completion (a request whose Locust user was
    # killed mid-flight by the stop: fresh45), and one that also closes operations already completed.
    w = HistoryWriter(tmp_path / "h.jsonl", "local")
    done = {"id": "r:local:1", "process": "local/1", "op": "write", "kind": "write", "key": "k1", "value": "v1",
            "region": "us-west-2", "role": "regional"}
    in_flight = {**done, "id": "r:local:2", "op": "read", "kind": "read_cross", "key": "k1", "value": None}
    w.invoke(done)
    w.complete({**done, "type": "ok", "status": 200, "served_by": "us-west-2", "latency_s": 0.01})
    w.invoke(in_flight)
    assert w.abandon_open() == 1 and w.abandon_open() == 0
    w.close()
    entries, _ = read_entries(tmp_path / "h.jsonl")
    assert [(e["id"], e["type"]) for e in entries] == [
        ("r:local:1", "invoke"), ("r:local:1", "ok"), ("r:local:2", "invoke"), ("r:local:2", "info")]
    closed = entries[-1]
    assert closed["abandoned"] is True and "in flight" in closed["error"] and closed["key"] == "k1"
    assert closed["time"] >= entries[-2]["time"] and w.invokes == w.completions == 2
