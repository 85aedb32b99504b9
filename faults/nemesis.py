"""The nemesis (Jepsen's name for the fault injector): applies faults to an environment,
journals every step before and after, and makes sure everything is rolled back.

    with Nemesis(env, run_dir / "journal.jsonl", scenario="region-outage") as nemesis:
        nemesis.inject(faults.block_region("us-east-1", mode="refuse"))
        ...                                   # rolled back on pass, fail, exception,
                                              # Ctrl-C (SIGINT) and SIGTERM
    summary_faults = nemesis.records()

Order of a step (docs/architecture.md, Safety):
  1. check the fault against the environment (CapabilityMissing / FaultError): nothing is
     written for a fault that cannot run, so the scenario can skip with the reason;
  2. journal `intent` (fsync'd), then apply; journal `injected` (with what was done) or
     `inject_failed` (then roll back whatever part of it did apply);
  3. rollback: `rolled_back` or `rollback_failed`; rollback_all goes in reverse order and
     attempts every fault even when one fails.
After a SIGKILL only the journal is left: `gameday rollback RUN_DIR` restores from it.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gameday.environments.base import Environment
from gameday.faults.base import Fault
from gameday.faults.journal import Journal
from gameday.events import iso

log = logging.getLogger("gameday.faults")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EVENT_TIMEOUT_S = 2.0

PENDING, ACTIVE, INJECT_FAILED, ROLLED_BACK, ROLLBACK_FAILED = (
    "pending", "active", "inject_failed", "rolled_back", "rollback_failed")


class RollbackFailed(Exception):
    """One or more faults could not be rolled back; `records` says which (each was attempted)."""

    def __init__(self, records: list["FaultRecord"]):
        self.records = records
        super().__init__("could not roll back: " + "; ".join(
            f"{r.fault.kind} {r.fault.target} ({r.id}): {r.error}" for r in records)
            + " -- run `gameday rollback` once the environment answers")


@dataclass
class FaultRecord:
    id: str
    fault: Fault
    scenario: str | None
    state: str = PENDING
    intent_at: float = field(default_factory=time.time)
    injected_at: float | None = None
    rolled_back_at: float | None = None
    injected: dict | None = None          # what env.apply(fault) returned
    rollback_detail: dict | None = None
    error: str | None = None
    inject_s: float | None = None         # how long applying took
    rollback_s: float | None = None       # how long the (last) rollback took

    @property
    def kind(self) -> str:
        return self.fault.kind

    @property
    def target(self) -> str:
        return self.fault.target

    def summary(self) -> dict:
        """The summary.json shape of a fault."""
        return {"kind": self.kind, "target": self.target, "injected_at": iso(self.injected_at) if self.injected_at else None,
                "rolled_back_at": iso(self.rolled_back_at) if self.rolled_back_at else None}

    def as_dict(self) -> dict:
        return {**self.summary(), "id": self.id, "state": self.state, "params": self.fault.params,
                "description": self.fault.describe(), "scenario": self.scenario, "injected": self.injected,
                "rollback": self.rollback_detail, "error": self.error, "inject_s": self.inject_s,
                "rollback_s": self.rollback_s}


def _error_text(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Nemesis:
    def __init__(self, env: Environment, journal_path: str | Path, scenario: str | None = None, *,
                 handle_signals: bool = True, emit_events: bool = True):
        self.env = env
        self.journal = Journal(journal_path)
        self.scenario = scenario
        self.handle_signals = handle_signals
        self.emit_events = emit_events
        self._records: list[FaultRecord] = []
        # re-entrant: a signal handler runs on the main thread, possibly inside inject()
        self._lock = threading.RLock()
        self._previous_handlers: dict[int, object] = {}

    # -- public API -------------------------------------------------------------------------------
    def inject(self, fault: Fault) -> FaultRecord:
        if not isinstance(fault, Fault):
            raise TypeError(f"Nemesis.inject needs a Fault (from the faults package), got {type(fault).__name__}")
        fault.check(self.env)  # CapabilityMissing / FaultError: nothing journaled, nothing applied
        with self._lock:
            rec = FaultRecord(id=f"{fault.kind}-{secrets.token_hex(3)}", fault=fault, scenario=self.scenario)
            self._write("intent", rec, {"description": fault.describe(), "pid": os.getpid(),
                                        "env": self._env_identity()}, ts=rec.intent_at)
            self._records.append(rec)
            self._install_handlers()
        t0 = time.monotonic()
        try:
            done = self.env.apply(fault)
        except BaseException as e:
            with self._lock:
                rec.inject_s = round(time.monotonic() - t0, 4)
                rec.error = _error_text(e)
                already = rec.state == ROLLED_BACK  # a signal handler rolled it back meanwhile
                rec.state = INJECT_FAILED if not already else rec.state
                self._write("inject_failed", rec, {"error": rec.error})
                self._emit("inject", rec, ok=False, error=rec.error)
                if not already:
                    # part of it may have applied (a region's data plane blocked, not its control plane)
                    self._rollback(rec, after_failed_inject=True)
                self._uninstall_handlers_if_idle()
            raise
        with self._lock:
            rec.inject_s = round(time.monotonic() - t0, 4)
            rec.injected = done if isinstance(done, dict) else {"result": done}
            rolled_back_meanwhile = rec.state != PENDING  # a signal handler ran inside env.apply()
            rec.state = ACTIVE
            rec.injected_at = time.time()
            self._write("injected", rec, rec.injected, ts=rec.injected_at)
            self._emit("inject", rec, ok=True, detail=rec.injected, duration_s=rec.inject_s)
            if rolled_back_meanwhile:
                # the rest of the fault applied after that rollback: undo it again (rollback is idempotent)
                self._rollback(rec)
                self._uninstall_handlers_if_idle()
        return rec

    def rollback(self, fault_or_id: Fault | FaultRecord | str) -> FaultRecord:
        """Roll back one fault (idempotent: a fault already rolled back is left alone).
        RollbackFailed if it cannot be."""
        with self._lock:
            rec = self._find(fault_or_id)
            if rec.state in (PENDING, ACTIVE, ROLLBACK_FAILED):
                self._rollback(rec)
            self._uninstall_handlers_if_idle()
        if rec.state == ROLLBACK_FAILED:
            raise RollbackFailed([rec])
        return rec

    def rollback_all(self, *, raise_on_failure: bool = True) -> list[FaultRecord]:
        """Roll back every fault still in effect, newest first, attempting each even if one fails."""
        with self._lock:
            todo = [r for r in reversed(self._records) if r.state in (PENDING, ACTIVE, ROLLBACK_FAILED)]
            for rec in todo:
                self._rollback(rec)
            self._uninstall_handlers_if_idle()
            failed = [r for r in todo if r.state == ROLLBACK_FAILED]
        if failed and raise_on_failure:
            raise RollbackFailed(failed)
        return todo

    def active(self) -> list[FaultRecord]:
        """Faults that may be in effect: injected (or being injected) and not rolled back."""
        with self._lock:
            return [r for r in self._records if r.state in (PENDING, ACTIVE, ROLLBACK_FAILED)]

    def records(self) -> list[dict]:
        """summary.json's faults for the faults that were injected: kind, target, injected_at, rolled_back_at."""
        with self._lock:
            return [r.summary() for r in self._records if r.injected_at is not None]

    def all_records(self) -> list[FaultRecord]:
        with self._lock:
            return list(self._records)

    def close(self, *, raise_on_failure: bool = True) -> None:
        try:
            self.rollback_all(raise_on_failure=raise_on_failure)
        finally:
            self._uninstall_handlers()

    def __enter__(self) -> "Nemesis":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        # with an exception already on its way, a rollback failure is logged, not raised over it
        self.close(raise_on_failure=exc_type is None)
        if exc_type is not None:
            for r in self._records:
                if r.state == ROLLBACK_FAILED:
                    log.error("fault %s (%s %s) could not be rolled back: %s", r.id, r.kind, r.target, r.error)
        return False

    # -- internals ---------------------------------------------------------------------------------
    def _find(self, fault_or_id: Fault | FaultRecord | str) -> FaultRecord:
        if isinstance(fault_or_id, FaultRecord):
            if fault_or_id in self._records:
                return fault_or_id
            raise KeyError(f"fault {fault_or_id.id} was not injected by this nemesis")
        if isinstance(fault_or_id, str):
            for r in self._records:
                if r.id == fault_or_id:
                    return r
            raise KeyError(f"no fault with id {fault_or_id!r} (known: {', '.join(r.id for r in self._records) or 'none'})")
        # a Fault: the newest record of an equal fault that may still be in effect, else the newest
        matches = [r for r in self._records if r.fault == fault_or_id]
        if not matches:
            raise KeyError(f"this fault was not injected by this nemesis: {fault_or_id.describe()}")
        live = [r for r in matches if r.state in (PENDING, ACTIVE, ROLLBACK_FAILED)]
        return (live or matches)[-1]

    def _rollback(self, rec: FaultRecord, *, after_failed_inject: bool = False) -> None:
        t0 = time.monotonic()
        try:
            detail = self.env.revert(rec.fault, rec.injected)
        except Exception as e:  # noqa: BLE001 - recorded; rollback_all goes on with the others
            rec.rollback_s = round(time.monotonic() - t0, 4)
            rec.error = _error_text(e)
            rec.state = ROLLBACK_FAILED
            self._write("rollback_failed", rec, {"error": rec.error})
            self._emit("rollback", rec, ok=False, error=rec.error)
            log.warning("rollback of %s (%s %s) failed: %s", rec.id, rec.kind, rec.target, rec.error)
            return
        rec.rollback_s = round(time.monotonic() - t0, 4)
        rec.rollback_detail = detail if isinstance(detail, dict) else {"result": detail}
        if not after_failed_inject:
            rec.state = ROLLED_BACK
        rec.rolled_back_at = time.time()
        self._write("rolled_back", rec, rec.rollback_detail, ts=rec.rolled_back_at)
        self._emit("rollback", rec, ok=True, detail=rec.rollback_detail, duration_s=rec.rollback_s)

    def _write(self, action: str, rec: FaultRecord, detail: dict | None, ts: float | None = None) -> None:
        self.journal.write(action, id=rec.id, kind=rec.kind, target=rec.target, params=rec.fault.params,
                           scenario=rec.scenario, detail=detail, ts=ts)

    def _env_identity(self) -> dict:
        ep = self.env.endpoints or {}
        return {"kind": self.env.kind, "pid": ep.get("pid"), "control_url": ep.get("control_url")}

    def _emit(self, action: str, rec: FaultRecord, *, ok: bool, **extra) -> None:
        """The fault on the environment's timeline (best effort: the journal is the record)."""
        if not self.emit_events:
            return
        body = {"kind": "fault", "action": action, "ok": ok, "id": rec.id, "fault_kind": rec.kind,
                "target": rec.target, "description": rec.fault.describe(), "params": rec.fault.params,
                "scenario": rec.scenario, **extra}
        try:
            self.env.post_event(body, timeout_s=EVENT_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - a timeline gap must not stop a rollback
            log.warning("could not put fault %s %s on the environment timeline: %s", rec.id, action, e)

    # -- signals: roll back on Ctrl-C and SIGTERM while faults are in effect ----------------------------
    def _install_handlers(self) -> None:
        if not self.handle_signals or self._previous_handlers:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # Python only lets the main thread set handlers; the context manager still rolls back
        for sig in HANDLED_SIGNALS:
            self._previous_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def _uninstall_handlers(self) -> None:
        if not self._previous_handlers or threading.current_thread() is not threading.main_thread():
            return
        for sig, prev in self._previous_handlers.items():
            if signal.getsignal(sig) == self._on_signal:  # leave a handler someone set after ours alone
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def _uninstall_handlers_if_idle(self) -> None:
        if not any(r.state in (PENDING, ACTIVE) for r in self._records):
            self._uninstall_handlers()

    def _on_signal(self, signum: int, frame) -> None:
        prev = self._previous_handlers.get(signum)
        name = signal.Signals(signum).name
        log.warning("%s: rolling back %d fault(s) before exiting", name, len(self.active()))
        try:
            self.rollback_all(raise_on_failure=False)
        finally:
            self._uninstall_handlers()
        if callable(prev):
            prev(signum, frame)  # e.g. SIGINT's default_int_handler raises KeyboardInterrupt
            return
        if prev == signal.SIG_IGN:
            return
        # default disposition: die of the same signal, so the parent sees how we ended
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        raise SystemExit(128 + signum)
