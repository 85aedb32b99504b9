"""The client-side history of a load run (Jepsen style): every operation is an `invoke` entry,
then exactly one completion: `ok`, `fail` (certainly not applied) or `info` (unknown: a write
may have been applied). Each Locust process appends to its own file, buffered and flushed at
least every FLUSH_S, so a killed worker's history is readable up to FLUSH_S before its death (a
last line cut by the kill is dropped by the readers); after the run `merge()` interleaves the
files by wall time into history.jsonl.

The entry fields are the run log's ClientOp (gameday/runlog.py: one schema for every reader) and the
files are described in docs/load.md, "The client history". No Locust or gevent import: pytest reads
histories with this module too.
"""

from __future__ import annotations

import heapq
import json
import json.encoder
import os
import secrets
import time
from pathlib import Path
from typing import Iterable, Iterator

from gameday.loadgen.clock_offset import wall
from gameday.runlog import read_history
from gameday.tail import JsonlTail

MERGED_NAME = "history.jsonl"
PART_GLOB = "history.*.jsonl"

# Writes are "info" on these (the request may have reached the service); reads never change state.
_NOT_SENT = (ConnectionRefusedError,)


def classify(kind: str, status: int, from_service: bool, error: BaseException | None) -> tuple[str, str | None]:
    """The Jepsen outcome of one request: (type, error text)."""
    is_write = kind == "write"
    if error is not None and not status:
        text = f"{type(error).__name__}: {error}".rstrip(": ")
        if isinstance(error, _NOT_SENT) or getattr(error, "gameday_not_sent", False):
            return "fail", text                    # never reached the service
        # timed out / connection dropped after sending: a write may have been applied; a read
        # changes nothing, so its outcome is simply a failure
        return ("info" if is_write else "fail"), text
    if 200 <= status < 300:
        return "ok", None
    if not is_write and status == 404:
        return "ok", None                          # a read that found nothing is an observation
    if status < 500:
        return "fail", f"HTTP {status}"            # the request was refused: nothing written
    if not is_write:
        return "fail", f"HTTP {status}"
    if status == 503 and not from_service:
        return "fail", "HTTP 503 from the load balancer (no healthy target: not forwarded)"
    # 502 (target failed mid-request), 500/503 from the service (DynamoDB timed out): maybe applied
    return "info", f"HTTP {status}" + ("" if from_service else " from the load balancer")


# A killed worker loses at most the entries of its last FLUSH_S (SIGKILL: nothing runs after it).
# Flushing per line cost one write(2) per entry: ~15% of a saturated worker's requests/s.
FLUSH_S = 0.2
_BUFFER_BYTES = 1 << 16


def _line_encoder():
    """entry -> one JSON line. The C encoder made once (JSONEncoder.encode makes a new one per
    call, half the cost of a line), without the circular-reference check: entries are flat."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:   # a Python without the C accelerator
        enc = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
        return lambda entry: enc(entry) + "\n"
    chunks = make(None, str, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    join = "".join
    return lambda entry: join(chunks(entry, 0)) + "\n"


class OperationRecorder:
    """What every history writer does with an operation (the file here, the stream in
    history_stream.StreamWriter): stamp and count it. A subclass has write(), flush(), _clock,
    _flush_due, invokes, completions and open_ops (operations invoked and not completed yet, by id)."""

    def flush_if_due(self) -> None:
        if self._clock() >= self._flush_due:
            self.flush()

    def invoke(self, op: dict) -> None:
        op["time"] = wall()
        op["mono"] = time.monotonic()
        self.write({**op, "type": "invoke"})
        self.invokes += 1
        self.open_ops[op["id"]] = op

    def complete(self, entry: dict) -> None:
        self.open_ops.pop(entry.get("id"), None)
        self.write(entry)
        self.completions += 1

    def abandon_open(self) -> int:
        """The run ends: each operation still open gets an `info` completion (its outcome unknown,
        as Jepsen records an operation whose client went away) instead of an invoke without one.
        Locust kills a user whose stop finds it between tasks, and a user that had just woken for
        its next request is killed with that request in flight: its request event never fires, so
        Locust does not count it either (`abandoned` marks it). Returns how many."""
        open_ops = list(self.open_ops.values())
        for op in open_ops:
            self.complete({**op, "type": "info", "abandoned": True, "latency_s": None, "status": 0,
                           "served_by": None, "name": f"{op.get('role')} {op.get('kind')} {op.get('region')} abandoned",
                           "error": "the load stopped with this request in flight (outcome unknown)",
                           "time": wall(), "mono": time.monotonic()})
        return len(open_ops)


class HistoryWriter(OperationRecorder):
    """One process's history file: one JSON object per line, buffered, written out when FLUSH_S
    has passed since the last flush (checked per entry, and by flush_if_due() from a timer while
    no entry comes), when the buffer fills, and on close."""

    def __init__(self, path: Path | str, worker: str, clock=time.monotonic):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        self._f = open(self.path, "a", buffering=_BUFFER_BYTES, encoding="utf-8")
        self._line = _line_encoder()
        self._clock = clock
        self._flush_due = clock() + FLUSH_S
        self.invokes = 0
        self.completions = 0
        self.open_ops: dict[str, dict] = {}

    def write(self, entry: dict) -> None:
        self._f.write(self._line(entry))
        if self._clock() >= self._flush_due:
            self.flush()

    def flush(self) -> None:
        if not self._f.closed:
            self._f.flush()
        self._flush_due = self._clock() + FLUSH_S

    def close(self, summary: dict | None = None) -> None:
        if self._f.closed:
            return
        self._f.close()
        done = {"worker": self.worker, "invokes": self.invokes, "completions": self.completions,
                "pid": os.getpid(), **(summary or {})}
        tmp = self.path.with_name(self.path.name + ".done.tmp")
        tmp.write_text(json.dumps(done))
        os.replace(tmp, self.path.with_name(self.path.name + ".done"))


# -- reading ----------------------------------------------------------------------------------------

def read_entries(path: Path | str) -> tuple[list[dict], bool]:
    """(entries, cut): every complete line of one history file, read by gameday.runlog.read_history;
    a last line without its newline that does not parse (a write cut short by a kill) is dropped and
    reported as cut. RunLogError (a ValueError naming path:line) for a bad line before the last."""
    lines = read_history(path)
    return lines.records, lines.truncated_tail


def part_files(directory: Path | str, run: str | None = None) -> list[Path]:
    d = Path(directory)
    pattern = f"history.{run}.*.jsonl" if run else PART_GLOB
    return sorted(p for p in d.glob(pattern) if p.name != MERGED_NAME)


def merged_entries(files: Iterable[Path]) -> Iterator[dict]:
    """Entries of several per-worker files, by wall time, each file's own order kept."""
    lists = [read_entries(p)[0] for p in files]
    return heapq.merge(*lists, key=lambda e: e.get("time", 0.0))


def merge(directory: Path | str, out: Path | str | None = None, run: str | None = None) -> int:
    """Merge a directory's per-worker files (of one run, or all) into history.jsonl; returns the entry count."""
    d = Path(directory)
    return merge_files(part_files(d, run), Path(out) if out else d / MERGED_NAME)


def merge_files(files: Iterable[Path], target: Path | str) -> int:
    """Write the merged history of these per-worker files to target (atomically)."""
    target = Path(target)
    tmp = target.with_name(f"{target.name}.{os.getpid()}-{secrets.token_hex(3)}.tmp")
    n = 0
    enc = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode
    with open(tmp, "w", encoding="utf-8") as f:
        for e in merged_entries(files):
            f.write(enc(e) + "\n")
            n += 1
    os.replace(tmp, target)
    return n


def merge_when_closed(directory: Path | str, run: str, wait_s: float, sleep=time.sleep) -> int | None:
    """Wait (at most wait_s) until every writer of the run has closed its file or died, then merge."""
    deadline = time.monotonic() + wait_s
    while pending_parts(directory, run) and time.monotonic() < deadline:
        sleep(0.05)
    if not Path(directory).is_dir() or not part_files(directory, run):
        return None
    return merge(directory, run=run)


def pending_parts(directory: Path | str, run: str | None = None) -> list[Path]:
    """Per-worker files whose writer has not closed them (no .done) and whose process, when it
    ran on this host, is still alive."""
    out = []
    for p in part_files(directory, run):
        if p.with_name(p.name + ".done").exists():
            continue
        pid = _pid_of(p)
        if pid is not None and not _alive(pid):
            continue   # its writer died (SIGKILL): what it wrote is all there will be
        out.append(p)
    return out


def _pid_of(p: Path) -> int | None:
    # history.<run>.<worker>-<pid>@<host>.jsonl
    stem = p.name[: -len(".jsonl")]
    tail = stem.rsplit(".", 1)[-1]
    if "@" in tail:
        tail, host = tail.rsplit("@", 1)
        if host != os.uname().nodename:
            return None
    try:
        return int(tail.rsplit("-", 1)[-1])
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def part_name(run: str, worker: str) -> str:
    return f"history.{run}.{worker}-{os.getpid()}@{os.uname().nodename}.jsonl"


class HistoryTail(JsonlTail):
    """Follow the per-worker files of a directory as they grow: new complete entries per poll()."""

    def __init__(self, directory: Path | str, run: str | None = None):
        super().__init__(Path(directory), ())
        self.run = run

    def files(self) -> list[Path]:
        return part_files(self.root, self.run)
