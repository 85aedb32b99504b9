"""The history streamed from Locust workers to the master (no shared filesystem).

A worker's StreamWriter (the HistoryWriter interface) buffers its entries and sends them in
batches through Locust's custom messages (`gameday_history`), each batch with the worker's id, a
sequence number (1, 2, ...), its entry count and the running total of entries sent; the writer's
close sends a `close` message with the worker's totals. The master's StreamCollector writes each
worker's entries into a part file of its run directory as they arrive (so the runner's live tail
reads them), and at the end rewrites them with the final clock offset (loadgen/clock_offset.py),
merges history.jsonl and writes history_completeness.json:

    {"run", "complete", "max_offset_uncertainty_s",
     "workers": {"w1": {"entries_received", "entries_sent_or_expected", "missing", "complete",
                        "closed", "missing_batches", "batches_received", "locust_requests", "completions_received",
                        "clock_offset_s", "offset_uncertainty_s", "clock_samples", "estimated"}}}

Loss accounting: a worker that closed says how many entries it sent: missing = sent - received.
One that died or disconnected first is incomplete; its missing count is the largest of what its
last batch's running total, Locust's own request count for it (one completion per request) and
its recent rate over one unsent buffer (FLUSH_S: what a kill loses) say, flagged `estimated`.

No Locust or gevent import: pytest and the checks read completeness with this module.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gameday.loadgen import history as hist
from gameday.loadgen.clock_offset import OffsetEstimator, wall

MESSAGE = "gameday_history"          # worker -> master: {"kind": "open" | "batch" | "close", ...}
PING, PONG = "gameday_clock_ping", "gameday_clock_pong"
COMPLETENESS_NAME = "history_completeness.json"
BATCH_MAX = 512                      # entries per batch at most (a saturated worker: ~100 ms of work)
RATE_BATCHES = 8                     # batches a dead worker's recent rate is measured over


class StreamWriter(hist.OperationRecorder):
    """A worker's history, sent to the master in batches: the HistoryWriter interface. A batch
    leaves when FLUSH_S has passed since the last one (checked per entry and by flush_if_due()),
    when BATCH_MAX entries wait, and on close. `send(msg_type, data)` is Locust's send_message."""

    def __init__(self, worker: str, send: Callable[[str, dict], None], run: str | None = None,
                 clock=time.monotonic, batch_max: int = BATCH_MAX):
        self.worker = worker
        self.run = run
        self._send = send
        self._clock = clock
        self._batch_max = batch_max
        self._buf: list[dict] = []
        self._flush_due = clock() + hist.FLUSH_S
        self.seq = 0
        self.sent = 0
        self.invokes = 0
        self.completions = 0
        self.open_ops: dict[str, dict] = {}
        self.closed = False
        self._send(MESSAGE, {"kind": "open", "worker": worker, "run": run, "pid": os.getpid()})

    def write(self, entry: dict) -> None:
        self._buf.append(entry)
        if len(self._buf) >= self._batch_max or self._clock() >= self._flush_due:
            self.flush()

    def flush(self) -> None:
        self._flush_due = self._clock() + hist.FLUSH_S
        if not self._buf or self.closed:
            return
        batch, self._buf = self._buf, []
        self.seq += 1
        self.sent += len(batch)
        self._send(MESSAGE, {"kind": "batch", "worker": self.worker, "seq": self.seq, "count": len(batch),
                             "sent_total": self.sent, "completions_total": self.completions, "entries": batch})

    def close(self, summary: dict | None = None) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        self._send(MESSAGE, {"kind": "close", "worker": self.worker, "batches": self.seq, "sent_total": self.sent,
                             "invokes": self.invokes, "completions": self.completions, "summary": summary or {}})


def pong(ping: dict, received_at: float) -> dict:
    """A worker's answer to a clock ping: the master's t0 back, with this worker's t1 and t2."""
    return {"t0": ping["t0"], "t1": received_at, "t2": wall(), "probe": ping.get("probe")}


def record_pong(offsets: dict[str, OffsetEstimator], node: str, data: dict, received_at: float) -> None:
    """The master got a worker's answer at received_at (its own wall time): one more clock sample."""
    offsets.setdefault(node, OffsetEstimator()).add(data["t0"], data["t1"], data["t2"], received_at)


# -- the master ------------------------------------------------------------------------------------

@dataclass
class WorkerLedger:
    """What the master knows of one worker's history."""
    worker: str
    node: str
    path: Path
    received: int = 0
    completions_received: int = 0
    seqs: set[int] = field(default_factory=set)
    sent_total: int = 0              # the running total the latest batch stated
    closing: dict | None = None
    offset: OffsetEstimator = field(default_factory=OffsetEstimator)
    locust_requests: int = 0         # Locust's own count of this worker's requests (its stats reports)
    recent: list[tuple[float, int]] = field(default_factory=list)   # (arrival, count) of the last batches

    @property
    def missing_batches(self) -> int:
        top = max(self.seqs, default=0)
        if self.closing is not None:
            top = max(top, int(self.closing.get("batches", 0)))
        return top - len(self.seqs)

    def recent_rate(self) -> float:
        """Entries per second over the last batches (0 with fewer than two)."""
        if len(self.recent) < 2:
            return 0.0
        span = self.recent[-1][0] - self.recent[0][0]
        return sum(n for _, n in self.recent[1:]) / span if span > 0 else 0.0

    def account(self) -> dict:
        if self.closing is not None:
            expected, estimated = int(self.closing.get("sent_total", 0)), False
        else:
            shortfall = max(0, self.locust_requests - self.completions_received)
            unsent = math.ceil(self.recent_rate() * hist.FLUSH_S)
            expected = max(self.sent_total, self.received + shortfall, self.received + max(1, unsent))
            estimated = True
        missing = max(0, expected - self.received)
        u = self.offset.uncertainty_s
        return {"entries_received": self.received, "entries_sent_or_expected": expected, "missing": missing,
                "complete": self.closing is not None and missing == 0 and self.missing_batches == 0,
                "closed": self.closing is not None, "estimated": estimated,
                "missing_batches": self.missing_batches, "batches_received": len(self.seqs),
                "locust_requests": self.locust_requests,
                "completions_received": self.completions_received, "node": self.node,
                "clock_offset_s": round(self.offset.offset_s, 6),
                "offset_uncertainty_s": None if u is None else round(u, 6), "clock_samples": self.offset.count}


class StreamCollector:
    """The master's side: one part file per worker in `directory`, written as batches arrive."""

    def __init__(self, directory: Path | str, run: str, clock=time.time,
                 offsets: dict[str, OffsetEstimator] | None = None, locust_counts: dict[str, int] | None = None):
        self.directory = Path(directory)
        self.run = run
        self._clock = clock
        self.ledgers: dict[str, WorkerLedger] = {}     # by Locust node id
        # measured before the run starts too (at connect): shared with whoever pings
        self.offsets = offsets if offsets is not None else {}
        self.locust_counts = locust_counts if locust_counts is not None else {}
        self._files: dict[str, object] = {}
        self.finalized: dict | None = None

    def ledger(self, node: str, worker: str | None = None) -> WorkerLedger:
        led = self.ledgers.get(node)
        if led is None:
            label = worker or f"node-{len(self.ledgers) + 1}"
            led = self.ledgers[node] = WorkerLedger(label, node, self.directory / hist.part_name(self.run, label),
                                                    offset=self.offsets.setdefault(node, OffsetEstimator()))
            self.directory.mkdir(parents=True, exist_ok=True)
            self._files[node] = open(led.path, "a", encoding="utf-8")
        return led

    def on_message(self, node: str, data: dict) -> None:
        kind = data.get("kind")
        if self.finalized is not None:
            return        # the history is written: a straggler's message changes nothing now
        led = self.ledger(node, data.get("worker"))
        if kind == "batch":
            self._on_batch(node, led, data)
        elif kind == "close":
            led.closing = dict(data)

    def _on_batch(self, node: str, led: WorkerLedger, data: dict) -> None:
        seq = int(data["seq"])
        if seq in led.seqs:
            return        # a duplicate: counted once
        led.seqs.add(seq)
        led.sent_total = max(led.sent_total, int(data.get("sent_total", 0)))
        entries = data.get("entries") or []
        led.received += len(entries)
        led.recent = (led.recent + [(self._clock(), len(entries))])[-RATE_BATCHES:]
        f = self._files[node]
        for e in entries:
            if e.get("type") != "invoke":
                led.completions_received += 1
            e.setdefault("worker", led.worker)
            e["worker_time"] = e.get("time")
            if e["worker_time"] is not None:
                e["time"] = led.offset.correct(e["worker_time"])
            f.write(json.dumps(e, separators=(",", ":"), default=str) + "\n")
        f.flush()

    def on_pong(self, node: str, data: dict, received_at: float) -> None:
        record_pong(self.offsets, node, data, received_at)

    def on_locust_report(self, node: str, num_requests: int) -> None:
        self.locust_counts[node] = self.locust_counts.get(node, 0) + int(num_requests or 0)

    def pending(self, alive: set[str]) -> list[str]:
        """Workers still expected to close: not closed, and their node still connected."""
        return [led.worker for node, led in self.ledgers.items() if led.closing is None and node in alive]

    def completeness(self) -> dict:
        for node, led in self.ledgers.items():
            led.locust_requests = self.locust_counts.get(node, 0)
        workers = {led.worker: led.account() for led in self.ledgers.values()}
        unc = [w["offset_uncertainty_s"] for w in workers.values() if w["offset_uncertainty_s"] is not None]
        return {"run": self.run, "complete": all(w["complete"] for w in workers.values()),
                "max_offset_uncertainty_s": max(unc, default=0.0), "workers": workers}

    def finalize(self) -> dict:
        """Rewrite the parts with the final offsets, write history_completeness.json, close the
        parts (.done) and merge history.jsonl; returns the completeness. Idempotent."""
        if self.finalized is not None:
            return self.finalized
        for f in self._files.values():
            f.close()
        for led in self.ledgers.values():
            _rewrite_times(led.path, led.offset)
        report = self.completeness()
        self.finalized = report
        _write_json(self.directory / COMPLETENESS_NAME, report)
        for led in self.ledgers.values():
            acc = report["workers"][led.worker]
            done = {"worker": led.worker, "streamed": True, "entries_received": acc["entries_received"],
                    "missing": acc["missing"]}
            _write_json(led.path.with_name(led.path.name + ".done"), done)
        if self.ledgers:
            hist.merge(self.directory, run=self.run)
        return report


def _rewrite_times(path: Path, offset: OffsetEstimator) -> None:
    entries, _ = hist.read_entries(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for e in entries:
            if e.get("worker_time") is not None:
                e["time"] = offset.correct(e["worker_time"])
            f.write(json.dumps(e, separators=(",", ":"), default=str) + "\n")
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


# -- readers ---------------------------------------------------------------------------------------

def read_completeness(directory: Path | str) -> dict | None:
    """A run directory's history_completeness.json, or None (no streamed workers: nothing to say)."""
    p = Path(directory) / COMPLETENESS_NAME
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None


def history_gaps(completeness: dict | None) -> dict[str, int]:
    """worker -> entries missing, for the workers whose history is incomplete ({} when complete)."""
    if not completeness:
        return {}
    return {w: int(a.get("missing") or 0) for w, a in (completeness.get("workers") or {}).items()
            if not a.get("complete")}


def max_uncertainty(completeness: dict | None) -> float:
    """The largest clock-offset uncertainty of the run's workers: what time-dependent checks widen by."""
    return float((completeness or {}).get("max_offset_uncertainty_s") or 0.0)
