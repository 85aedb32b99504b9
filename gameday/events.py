"""The environment's side of the run timeline: alarm transitions, Lambda invocations, DNS
changes, task starts/stops, replication lag samples, faults.

One JSON object per line: {"seq", "time" (epoch s), "mono" (time.monotonic()), "kind", ...}; each
kind's fields are its model in gameday/runlog.py, which emit() checks (ValueError otherwise).
The in-memory ring also serves the control API's /events?since=SEQ.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gameday.runlog import stamp, validate_event

RESERVED = ("seq", "time", "mono", "kind")   # the log's own fields: an emitter cannot set them


def iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc).isoformat(timespec="milliseconds")


class EventLog:
    def __init__(self, path: Path | None = None, keep: int = 20000):
        self._lock = threading.Lock()
        self._seq = 0
        self._ring: deque[dict] = deque(maxlen=keep)
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a", buffering=1)

    def emit(self, kind: str, *, happened_at: float | None = None, **fields: Any) -> dict:
        """Record one event, as of now or of `happened_at` (a wall time in the past: a signal read
        back from AWS carries AWS's own timestamp, not the time it was read); ValueError (naming the
        kind and field) when it does not fit its model."""
        clash = [k for k in RESERVED if k in fields]
        if clash:
            raise ValueError(f"event {kind!r}: field {clash[0]!r} is the run log's own; name it otherwise")
        with self._lock:
            wall, mono = stamp(happened_at)
            ev = {"seq": self._seq + 1, "time": round(wall, 6), "mono": round(mono, 6), "kind": kind, **fields}
            validate_event(ev)
            self._seq += 1
            self._ring.append(ev)
            if self._fh:
                self._fh.write(json.dumps(ev, default=str) + "\n")
        return ev

    def since(self, seq: int = 0, kind: str | None = None) -> list[dict]:
        with self._lock:
            return [e for e in self._ring if e["seq"] > seq and (kind is None or e["kind"] == kind)]

    def close(self) -> None:
        with self._lock:
            if self._fh:
                self._fh.close()
                self._fh = None
