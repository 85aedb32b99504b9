"""The run's fault journal (RUN_DIR/journal.jsonl): one JSON object per line, fsync'd, written
BEFORE a fault is applied (intent) and after each step, so that after a SIGKILL
`gameday rollback` knows what may still be in effect.

Line shape (gameday/runlog.py FaultStep; each field once):
  {"seq", "time" (epoch s), "mono" (time.monotonic()), "process": "nemesis", "action",
   "fault": {"id", "kind", "target", "params"}, "scenario", "detail"}
action: intent | injected | inject_failed | rolled_back | rollback_failed. Readers read it through
gameday.runlog (read_journal_lines; journals written before that schema through its migrate_v1), and
runlog.nemesis_ops reads the steps as the operations of a `nemesis` process.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from gameday.runlog import JOURNAL_ACTIONS, NEMESIS, RunLogError, read_journal_lines, stamp

ACTIONS = JOURNAL_ACTIONS

_locks: dict[str, threading.Lock] = {}
_seqs: dict[str, int] = {}
_registry_lock = threading.Lock()


class JournalError(Exception):
    """A journal that cannot be read back; str() is one line naming the file, line and problem."""


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


class Journal:
    """Appends fsync'd lines; seq continues across writers of the same file in this process
    (several scenarios' injectors share one run journal)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        key = str(self.path.resolve())
        with _registry_lock:
            self._lock = _locks.setdefault(key, threading.Lock())
            if key not in _seqs:
                _seqs[key] = _count_lines(self.path)
        self._key = key

    def write(self, action: str, *, id: str, kind: str, target: str, params: dict,
              scenario: str | None = None, detail: dict | None = None, ts: float | None = None) -> dict:
        """Append one step, fsync'd; `ts` is the step's wall time when it happened earlier (epoch s)."""
        if action not in ACTIONS:
            raise ValueError(f"journal action must be one of {ACTIONS}, got {action!r}")
        wall, mono = stamp(ts)
        with self._lock:
            _seqs[self._key] += 1
            line = {"seq": _seqs[self._key], "time": round(wall, 6), "mono": round(mono, 6), "process": NEMESIS,
                    "action": action, "fault": {"id": id, "kind": kind, "target": target, "params": params},
                    "scenario": scenario, "detail": detail or {}}
            data = (json.dumps(line, default=str) + "\n").encode()
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)  # one write of a whole line: O_APPEND keeps lines whole
                os.fsync(fd)
            finally:
                os.close(fd)
            if new:  # the file's directory entry must survive a crash too
                dfd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        return line


# -- reading back -----------------------------------------------------------------------------------------

@dataclass
class JournaledFault:
    """One fault as the journal tells it: its intent and what happened after."""
    id: str
    kind: str
    target: str
    params: dict
    scenario: str | None
    intent_line: int
    intent_ts: float
    actions: list[str] = field(default_factory=list)
    injected: dict | None = None      # detail of the `injected` line: what inject() returned
    env: dict | None = None           # the environment the intent was for: {kind, pid, control_url}
    last_error: str | None = None

    @property
    def rolled_back(self) -> bool:
        return "rolled_back" in self.actions

    @property
    def state(self) -> str:
        return self.actions[-1] if self.actions else "intent"


def read_journal(path: str | Path) -> tuple[list[JournaledFault], list[str]]:
    """(faults in intent order, warnings). JournalError (one line) for a corrupted journal.
    A last line cut short by a kill is dropped with a warning (the write never completed)."""
    p = Path(path)
    rel = p.name
    try:
        lines = read_journal_lines(p, rel)
    except RunLogError as e:
        raise JournalError(str(e)) from None
    warnings = [f"{rel}: last line was cut short (process killed mid-write); ignored"] if lines.truncated_tail else []
    faults: dict[str, JournaledFault] = {}
    for n, step in enumerate(lines.records, 1):
        where, action, f, detail = f"{rel}:{n}", step["action"], step["fault"], step["detail"]
        if action == "intent":
            if f["id"] in faults:
                raise JournalError(f"{where}: a second intent for fault {f['id']}")
            faults[f["id"]] = JournaledFault(f["id"], f["kind"], f["target"], f["params"], step["scenario"], n,
                                             step["time"], env=detail.get("env") if isinstance(detail.get("env"), dict) else None)
            continue
        jf = faults.get(f["id"])
        if jf is None:
            raise JournalError(f"{where}: {action} for fault {f['id']}, which has no intent line before it")
        jf.actions.append(action)
        if action == "injected":
            jf.injected = detail
        elif action in ("inject_failed", "rollback_failed"):
            jf.last_error = str(detail.get("error", ""))
    return list(faults.values()), warnings


def open_faults(faults: list[JournaledFault]) -> list[JournaledFault]:
    """Faults with an intent and no rolled_back: maybe still in effect (an intent alone means the
    injector died while applying it, or just before journaling that it had)."""
    return [f for f in faults if not f.rolled_back]
