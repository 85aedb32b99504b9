"""Checkers: pure functions over a run's data (Jepsen style). No I/O, no environment: the same
functions judge a live run and re-judge a stored one (reports/recheck.py, through the parts of
assertions/protocol.py). Inputs are a history (invoke, then ok / fail / info entries) and
replicas ({region: {key: value}}, the final table contents of every region). Each checker returns
CheckResult(name, valid, detail, metrics): `valid` is True, False or "unknown"; `metrics` is flat
{name: number | None}, so it can go into result.json.

History entries use the canonical field names only: type, id, op, key, value, region, served_by,
status, process (the client), latency_s and time (epoch seconds). Runs stored with other
spellings are migrated when they are read (reports/rundata.py), never here: these loops run
once per entry of histories of millions. How an operation's interval is placed, and the
checkers a scenario uses: docs/scenarios.md, "Assertions and checkers to build checks from".

Every checker taking a history also takes a Placement (placement(history)): the history read once
for all of them, as RunView.placement does for a composed check; same verdicts, a third less time.
"""

from __future__ import annotations

import functools
import gc
import json
import math
import operator
from collections import Counter, deque
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import compress, repeat
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

from gameday.reports.rundata import ReportError, parse_time

Valid = Any  # True | False | "unknown"
UNKNOWN = "unknown"
INF = math.inf
MAX_EXAMPLES = 5
COMPLETIONS = ("ok", "fail", "info")


def _gc_paused(fn):
    """Run fn with the cyclic garbage collector paused. The checkers allocate hundreds of thousands
    of small tuples while a history of millions of dicts is alive, which makes the collector
    traverse the whole history again and again (measured: ~15% of the time at 1M operations);
    they create no reference cycles, so nothing is left for it to find."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()
    return wrapper


class HistoryError(ValueError):
    """A history entry the checkers cannot read; the message names the entry."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    valid: Valid                       # True | False | "unknown"
    detail: str
    metrics: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.valid is not True and self.valid is not False and self.valid != UNKNOWN:
            raise ValueError(f"check {self.name}: valid must be True, False or 'unknown', got {self.valid!r}")

    def as_dict(self) -> dict:
        """The summary/result.json check shape (plus the metrics)."""
        return {"name": self.name, "valid": self.valid, "detail": self.detail, "metrics": dict(self.metrics)}

    def assert_valid(self, *, allow_unknown: bool = False) -> "CheckResult":
        """For scenarios: raise AssertionError with the detail unless valid (or unknown, if allowed)."""
        if self.valid is True or (allow_unknown and self.valid == UNKNOWN):
            return self
        raise AssertionError(f"{self.name}: {'FAILED' if self.valid is False else 'UNKNOWN'}: {self.detail}")


# -- reading a history -------------------------------------------------------------------------------------
# An operation's interval: a completion is placed by the pending invoke with its id; else by its
# client's oldest pending invoke without an id of the same op and key (a Jepsen process does one
# thing at a time); else it started latency_s before it completed; else it cannot be placed and
# counts as concurrent with everything before it (-inf). Invokes never completed are `info`
# operations completing at +inf: they may have taken effect at any time.

class Operation(NamedTuple):
    """One completed (or never completed) client operation."""
    type: str                  # ok | fail | info ("info" too for an invoke that never completed)
    op: str | None             # write | read
    key: str | None
    value: Any
    invoked: float             # epoch s; -inf when it cannot be placed
    completed: float           # epoch s; +inf for an invoke that never completed
    region: str | None         # the region the client aimed at
    served_by: str | None      # the region that answered
    status: Any
    client: Any                # the entry's `process`
    index: int                 # position of the completion (or invoke) entry in the history


def _time(e: dict, i: int) -> float:
    """The entry's time when it is not a float (the callers' fast case): an int, or HistoryError."""
    t = e.get("time")
    if type(t) is int:
        return float(t)
    if type(t) is float:
        return t
    if t is None:
        raise HistoryError(f"history entry {i + 1}: no time (field 'time', epoch seconds)")
    raise HistoryError(f"history entry {i + 1}: time must be epoch seconds, got {t!r}")


def _bad_type(typ: Any, i: int) -> HistoryError:
    return HistoryError(f"history entry {i + 1}: type must be invoke, ok, fail or info (got {typ!r})")


def canon_key(k: Any) -> Any:
    """Keys compare as strings: replicas.json (JSON object keys) and DynamoDB's `pk` are strings."""
    return k if type(k) is str or k is None else str(k)


def canon_value(v: Any) -> Any:
    """A hashable form under which the history's and the table's spelling of a value agree
    (5, 5.0, Decimal('5') and "5" are one value; maps and lists compare by their JSON)."""
    t = type(v)
    if t is str or v is None:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float or t is Decimal:
        return str(int(v)) if v == v and v not in (INF, -INF) and v == int(v) else str(v)
    try:
        return json.dumps(v, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(v)


def _canon(v: Any) -> Any:
    """canon_value, without a call for the strings and ints of recorded histories."""
    t = type(v)
    return v if t is str else (str(v) if t is int else canon_value(v))


def _wait(waiting: dict, e: dict, t: float, i: int) -> None:
    """Queue an invoke without an id for its client's next completion of the same op and key."""
    q = waiting.setdefault((e.get("process"), e.get("op"), canon_key(e.get("key"))), deque())
    q.append((t, i))


def _invoked(e: dict, t: float, i: int, waiting: dict) -> float:
    """When a completion that no pending invoke of its id places was invoked (see above)."""
    if waiting:
        q = waiting.get((e.get("process"), e.get("op"), canon_key(e.get("key"))))
        if q:
            return q.popleft()[0]
    lat = e.get("latency_s")
    if lat is None:
        return -INF
    if type(lat) is not float:
        if type(lat) is not int:
            raise HistoryError(f"history entry {i + 1}: latency_s must be seconds, got {lat!r}")
        lat = float(lat)
    return t - lat


def _open_invokes(history: Sequence[dict], open_ids: dict, waiting: dict, only: str | None) -> list[Operation]:
    """The invokes that never completed, as `info` operations completing at +inf, in history order.
    Those with an id are found from the end (they are near it): their times are all `open_ids` keeps."""
    found: list[Operation] = []
    left = set(open_ids)
    for j in range(len(history) - 1, -1, -1) if left else ():
        e = history[j]
        if e.get("type") == "invoke" and e.get("id") in left:
            left.discard(e["id"])
            found.append(_open_op(e, open_ids[e["id"]], j))
            if not left:
                break
    for q in waiting.values():
        found.extend(_open_op(history[j], t, j) for t, j in q)
    return sorted((o for o in found if only is None or o.op == only), key=lambda o: o.index)


def _open_op(e: dict, t: float, j: int) -> Operation:
    return Operation("info", e.get("op"), canon_key(e.get("key")), e.get("value"), t, INF, e.get("region"), None,
                     None, e.get("process"), j)


def _placed(history: Sequence[dict], pending: dict,
            only: str | None = None) -> Iterator[tuple[int, dict, str, float, float]]:
    """(index, entry, type, completed, invoked) of every completion (of op `only`, if given), in
    history order, placed as above: the one reading of a history that every checker needing
    intervals shares. Every entry's type and time are checked, whatever its op. `pending` gets
    the invokes never completed ("ids": id -> time, "waiting": the id-less ones), for _open_invokes."""
    invoked_at: dict[Any, float] = {}   # operation id -> invoke time, until its completion is seen
    waiting: dict[tuple, deque] = {}    # (process, op, key) -> invokes without an id, oldest first
    for i, e in enumerate(history):
        typ = e.get("type")
        t = e.get("time")
        if type(t) is not float:
            t = _time(e, i)
        if typ == "invoke":
            if only is None or e.get("op") == only:
                oid = e.get("id")
                if oid is not None:
                    invoked_at[oid] = t
                else:
                    _wait(waiting, e, t, i)
            continue
        if typ != "ok" and typ != "fail" and typ != "info":
            raise _bad_type(typ, i)
        if only is not None and e.get("op") != only:
            continue
        oid = e.get("id")
        inv = invoked_at.pop(oid, None) if oid is not None else None
        if inv is None:
            inv = _invoked(e, t, i, waiting)
        yield i, e, typ, t, inv
    pending.update(ids=invoked_at, waiting=waiting)


class Placement:
    """Every completion of a history placed once (as _placed places them), for checkers that share
    one reading of a run (RunView.placement), as columns, one item per completion in history order:
    `entries` (the completion entries themselves), `types`, `completed`, `invoked`, `ops`, `keys`
    (canonical), `values`, `clients` (`process`) and `wheres` (served_by, else region): lists of the
    entries' own objects, not a tuple per completion (measured at 1M operations: about half a second
    less to build, and rto and error_budget count a column in one C call). `writes` is
    _writes_by_key's answer, `acked_writes` the number of `ok` writes in it. `exact` is False when
    the shared reading could differ from a checker's own (a bad entry, an id reused while pending or
    shared by a read and a write): the checkers then read `history` themselves, as they would
    without a Placement."""

    __slots__ = ("history", "entries", "types", "completed", "invoked", "ops", "keys", "values", "clients", "wheres",
                 "writes", "acked_writes", "open_ids", "waiting", "exact")

    COLUMNS = ("entries", "types", "completed", "invoked", "ops", "keys", "values", "clients", "wheres")

    def __init__(self, history: Sequence[dict] | Iterable[dict]) -> None:
        self.history = history if isinstance(history, (list, tuple)) else list(history)
        self._reset()
        try:
            self.exact = _place_all(self.history, self)
        except Exception:  # noqa: BLE001 - each checker raises it itself, from its own reading, as before
            self.exact = False
        if not self.exact:
            self._reset()
            return
        for o in self.open_invokes("write"):
            self.writes.setdefault(o.key, []).append(("info", o.invoked, INF, o.value))

    def _reset(self) -> None:
        for name in self.COLUMNS:
            setattr(self, name, [])
        self.writes, self.acked_writes, self.open_ids, self.waiting = {}, 0, {}, {}

    def __len__(self) -> int:
        """The number of completions placed."""
        return len(self.entries)

    def columns(self) -> Iterator[tuple]:
        """(entry, type, completed, invoked, op, key, value, client, where) per completion, in order."""
        return zip(self.entries, self.types, self.completed, self.invoked, self.ops, self.keys, self.values,
                   self.clients, self.wheres)

    def open_invokes(self, only: str | None) -> list[Operation]:
        return _open_invokes(self.history, self.open_ids, self.waiting, only)


@_gc_paused
def placement(history: "Sequence[dict] | Placement") -> Placement:
    """The history placed once (a Placement is returned as it is)."""
    return history if isinstance(history, Placement) else Placement(history)


def _exact(history: Any) -> Placement | None:
    """The Placement a checker was given, when it reads the same as the checker's own pass would."""
    return history if isinstance(history, Placement) and history.exact else None


def _raw(history: Any) -> Sequence[dict]:
    return history.history if isinstance(history, Placement) else history


def _place_all(history: Sequence[dict], placed: Placement) -> bool:
    """_placed over every op at once, into `placed`'s columns, with the writes grouped by key as
    _writes_by_key does; False at the first entry where placing one op's entries alone (as
    lost_acked_writes does for writes) could place differently."""
    pending: dict[Any, tuple[float, Any]] = {}   # id -> (invoke time, op), until its completion is seen
    waiting, writes, acked = placed.waiting, placed.writes, 0
    # a bound append per column: this loop runs once per entry of histories of millions
    add_entry, add_type, add_completed, add_invoked, add_op, add_key, add_value, add_client, add_where = (
        getattr(placed, name).append for name in Placement.COLUMNS)
    for i, e in enumerate(history):
        typ = e.get("type")
        t = e.get("time")
        if type(t) is not float:
            t = _time(e, i)
        op = e.get("op")
        if typ == "invoke":
            oid = e.get("id")
            if oid is None:
                _wait(waiting, e, t, i)
            elif oid in pending:
                return False
            else:
                pending[oid] = (t, op)
            continue
        if typ != "ok" and typ != "fail" and typ != "info":
            return False
        oid = e.get("id")
        p = pending.pop(oid, None) if oid is not None else None
        if p is None:
            inv = _invoked(e, t, i, waiting)
        elif p[1] != op:
            return False
        else:
            inv = p[0]
        key = e.get("key")
        if type(key) is not str and key is not None:
            key = str(key)
        v = e.get("value")
        # the fields every checker reads, while the entry is in the cache (at 1M entries it is not later)
        add_entry(e)
        add_type(typ)
        add_completed(t)
        add_invoked(inv)
        add_op(op)
        add_key(key)
        add_value(v)
        add_client(e.get("process"))
        add_where(e.get("served_by") or e.get("region"))
        if op == "write":
            acked += typ == "ok"
            _add_write(writes, key, typ, inv, t, v)
    placed.acked_writes = acked
    placed.open_ids.update((oid, p[0]) for oid, p in pending.items())
    return True


def iter_operations(history: Sequence[dict], *, only: str | None = None,
                    unmatched: bool = False) -> Iterator[Operation]:
    """The history's operations, one per completion entry, in history order; with `unmatched`,
    the invokes that never completed follow as `info` operations (completed = +inf).
    `only` = "write" or "read" keeps that kind. One at a time: a checker that needs each
    operation once keeps none of them alive."""
    if unmatched and not isinstance(history, (list, tuple)):
        history = list(history)   # the open invokes are read back from it
    pending: dict = {}
    for i, e, typ, t, inv in _placed(history, pending, only):
        yield Operation(typ, e.get("op"), canon_key(e.get("key")), e.get("value"), inv, t, e.get("region"),
                        e.get("served_by"), e.get("status"), e.get("process"), i)
    if unmatched:
        yield from _open_invokes(history, pending["ids"], pending["waiting"], only)


@_gc_paused
def operations(history: Sequence[dict], *, only: str | None = None, unmatched: bool = True) -> list[Operation]:
    """iter_operations as a list, with the invokes that never completed (`unmatched`). Every
    operation carries its client (`process`)."""
    return list(iter_operations(history, only=only, unmatched=unmatched))


def _examples(items: list[str], total: int) -> str:
    s = "; ".join(items[:MAX_EXAMPLES])
    return s + (f"; ... ({total - MAX_EXAMPLES} more)" if total > MAX_EXAMPLES else "")


def _fmt(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


# -- lost acknowledged writes --------------------------------------------------------------------------------

@_gc_paused
def lost_acked_writes(history: Sequence[dict], replicas: dict, *, allowed: int = 0,
                      clock_skew_s: float = 0.0) -> CheckResult:
    """Every write acknowledged `ok` must survive in every replica: the replica's final value for
    its key is the write's own value or the value of a write that may have been ordered after it.

    Concurrent writes. Global tables resolve conflicts by last writer wins, so the final value X
    of a key may be any write that was not certainly overwritten. An acked write W is lost in a
    region whose final value is X when X != W's value and X *completed before W was invoked*
    (plus `clock_skew_s`, for regions whose clocks differ): then W is after X in real time, W took
    effect (it was acknowledged), so under last writer wins X cannot be final. Writes overlapping
    W may legitimately win either way. An `info` or unmatched write may have taken effect at any
    time until the end of the history, so its value is never evidence of a loss; nor is a `fail`
    write's value (it was applied after all: counted in `failed_writes_visible`). A key missing
    from a replica, or holding a value no recorded write wrote, loses every acked write to it.
    Values are assumed unique per key (the load generator's job); a repeated value counts as the
    latest write that wrote it, which can only hide a loss.

    `allowed` > 0 makes it an RPO check: valid while distinct lost writes <= allowed.
    """
    placed = _exact(history)
    writes = _writes_by_key(history)
    n_acked = (placed.acked_writes if placed is not None
               else sum(1 for ws in writes.values() for w in ws if w[0] == "ok"))
    if not replicas:
        return CheckResult("lost_acked_writes", UNKNOWN, f"no replicas to check {n_acked} acknowledged writes against",
                           {"acked_writes": n_acked, "lost_acked_writes": None})
    tables = {}
    for r, t in replicas.items():
        t = t or {}
        tables[r] = t if set(map(type, t)) <= {str} else {canon_key(k): v for k, v in t.items()}
    losses = _Losses(list(tables))
    for key, ws in writes.items():
        losses.judge_key(key, ws, tables, clock_skew_s)
    return losses.result(n_acked, allowed)


_MISSING = object()


class _Losses:
    """What lost_acked_writes finds, key by key and region by region."""

    def __init__(self, regions: list[str]) -> None:
        self.lost: dict[tuple, list[str]] = {}          # (key, canon value) -> regions missing it
        self.lost_raw: dict[tuple, Any] = {}
        self.finals: dict[tuple, Any] = {}              # (key, region) -> final value, for the detail
        self.unexplained: list[tuple[Any, str, Any]] = []  # (key, region, value) that no recorded write wrote
        self.per_region = {r: 0 for r in regions}
        self.failed_visible = 0

    def judge_key(self, key: Any, ws: list[tuple], tables: dict, skew: float) -> None:
        memo_fcv = memo = None   # regions usually hold the same final value: judge it once
        for r, table in tables.items():
            final = table.get(key, _MISSING)
            fcv = _MISSING      # no write wrote "no item" (not even a write of None)
            x_done = -INF
            if final is not _MISSING:
                tf = type(final)
                fcv = final if tf is str else (str(final) if tf is int else canon_value(final))
                if memo is None or fcv != memo_fcv:
                    memo_fcv = fcv
                    x_done, latest_ok, found, failed = _judge(ws, final, fcv)
                    # (completion of the final value's write, nothing lost?, foreign?, a `fail` write's?)
                    memo = (x_done, x_done + skew >= latest_ok, not found, failed)
                x_done, nothing_lost, foreign, failed = memo
                self.failed_visible += failed     # a `fail` write was applied after all: it may be last
                if foreign:
                    self.unexplained.append((key, r, final))
                if nothing_lost:
                    continue  # the final value may follow every acked write to this key
            horizon = x_done + skew
            for typ, inv, _done, raw in ws:
                if inv > horizon and typ == "ok" and (cv := _canon(raw)) != fcv:
                    regs = self.lost.get((key, cv))
                    if regs is None:
                        self.lost[(key, cv)] = regs = []
                        self.lost_raw[(key, cv)] = raw
                    elif regs[-1] == r:
                        continue      # a repeated value: one write (values are unique per key)
                    regs.append(r)
                    self.per_region[r] += 1
                    self.finals[(key, r)] = final

    def result(self, n_acked: int, allowed: int) -> CheckResult:
        n_lost = len(self.lost)
        metrics = {"acked_writes": n_acked, "lost_acked_writes": n_lost,
                   **{f"lost_in.{r}": n for r, n in self.per_region.items()},
                   "failed_writes_visible": self.failed_visible, "foreign_values": len(self.unexplained)}
        if allowed > 0:
            metrics["allowed_lost_writes"] = allowed
        if n_acked == 0:
            return CheckResult("lost_acked_writes", UNKNOWN, "no acknowledged writes in the history: nothing to lose",
                               metrics)
        head = f"{n_lost} of {n_acked} acknowledged writes lost"
        valid = n_lost <= allowed
        if allowed > 0:
            head += f" (RPO: at most {allowed} allowed: {'within' if valid else 'OVER'})"
        if n_lost:
            head += (" (" + ", ".join(f"{r}: {n}" for r, n in self.per_region.items() if n) + "): "
                     + _examples(self._examples(), n_lost))
        if self.unexplained:
            key, r, final = self.unexplained[0]
            head += (f"; {len(self.unexplained)} final values that no recorded write wrote "
                     f"(e.g. {key}={_fmt(final)} in {r})")
        if self.failed_visible:
            head += f"; {self.failed_visible} final values written by writes recorded as failed"
        return CheckResult("lost_acked_writes", valid, head, metrics)

    def _examples(self) -> list[str]:
        out = []
        for (key, wcv), regs in list(self.lost.items())[:MAX_EXAMPLES]:
            has = ", ".join(f"{r} has {'no item' if self.finals[(key, r)] is _MISSING else _fmt(self.finals[(key, r)])}"
                            for r in regs)
            out.append(f"{key}={_fmt(self.lost_raw[(key, wcv)])} acked but missing from {', '.join(regs)} ({has})")
        return out


def _judge(ws: list[tuple], final: Any, fcv: Any) -> tuple[float, float, bool, bool]:
    """For a key's writes and its final value (raw and canonical): (when the write of that value
    completed, +inf if it may have landed later; the latest invocation of an acked write; whether
    any recorded write wrote it; whether it was a `fail` write)."""
    x_done = -INF
    latest_ok = -INF
    found = failed = False
    ft = type(final)
    same_type_compares = ft is str or ft is int   # two strs (two ints) are one value exactly when ==
    for typ, inv, done, raw in ws:
        if typ == "ok" and inv > latest_ok:
            latest_ok = inv
        if ((raw == final) if same_type_compares and type(raw) is ft else (_canon(raw) == fcv)):
            found = True
            if typ == "fail":
                failed = True
                x_done = INF
            elif done > x_done:
                x_done = done
    return x_done, latest_ok, found, failed


def _writes_by_key(history: Sequence[dict]) -> dict[Any, list[tuple]]:
    """key -> [(type, invoked, completed, value)] of every write, with `info`
    writes, and writes invoked but never completed, completing at +inf (they may land any time).
    (What iter_operations(history, only="write", unmatched=True) gives, without building an
    Operation per write: that costs a third more at 1M operations.)"""
    placed = _exact(history)
    if placed is not None:
        return placed.writes
    history = _raw(history)
    if not isinstance(history, (list, tuple)):
        history = list(history)   # the open invokes are read back from it
    out: dict[Any, list[tuple]] = {}
    pending: dict = {}
    for _i, e, typ, t, inv in _placed(history, pending, "write"):
        key = e.get("key")
        if type(key) is not str:
            key = canon_key(key)
        _add_write(out, key, typ, inv, t, e.get("value"))
    for o in _open_invokes(history, pending["ids"], pending["waiting"], "write"):
        out.setdefault(o.key, []).append(("info", o.invoked, INF, o.value))
    return out


def _add_write(out: dict, key: Any, typ: str, inv: float, t: float, v: Any) -> None:
    """One write completion into _writes_by_key's answer: (type, invoked, completed (+inf for
    `info`), value) under its key. (The canonical value is computed where it is compared: a string
    kept per write cost about 0.1 s of placing 1M operations.)"""
    rec = (typ, inv, INF if typ == "info" else t, v)
    lst = out.get(key)
    if lst is None:
        out[key] = [rec]
    else:
        lst.append(rec)


# -- divergence and convergence ----------------------------------------------------------------------------

@_gc_paused
def divergent_keys(replicas: dict) -> CheckResult:
    """Keys whose value differs between replicas, or that some replica lacks (after convergence)."""
    regions = list(replicas)
    if len(regions) < 2:
        return CheckResult("divergent_keys", UNKNOWN, f"{len(regions)} replica(s): nothing to compare",
                           {"divergent_keys": None})
    tables = [replicas[r] or {} for r in regions]
    first = tables[0]
    all_keys = set(first)
    for t in tables[1:]:
        all_keys.update(t)
    MISSING = object()
    divergent: list = []
    for k in all_keys:
        v0 = first.get(k, MISSING)
        for t in tables[1:]:
            v = t.get(k, MISSING)
            if v is not v0 and v != v0 and (v is MISSING or v0 is MISSING or canon_value(v) != canon_value(v0)):
                divergent.append(k)
                break
    n = len(divergent)
    detail = f"{n} of {len(all_keys)} keys differ between {len(regions)} replicas ({', '.join(regions)})"
    if n:
        shown = sorted(divergent, key=str)[:MAX_EXAMPLES]
        parts = []
        for k in shown:
            vals = ", ".join(f"{r}={_fmt(t[k]) if k in t else 'missing'}" for r, t in zip(regions, tables))
            parts.append(f"{k}: {vals}")
        detail += ": " + _examples(parts, n)
    return CheckResult("divergent_keys", n == 0, detail, {"divergent_keys": n})


def convergence(samples: Iterable[tuple[float, int]], deadline_s: float, *, started: float | None = None) -> CheckResult:
    """From (time, divergent_count) observations: when the replicas first agreed and stayed agreeing.
    convergence_s counts from `started` (default: the first sample) to the first sample of the final
    run of agreeing samples (an upper bound, at the sampling resolution). Valid when that is within
    deadline_s; false when it came later, or the samples cover the deadline and still differ;
    unknown when the samples end before the deadline with the replicas still apart."""
    pts = sorted((float(t), int(n)) for t, n in samples)
    if not pts:
        return CheckResult("convergence", UNKNOWN, "no divergence samples", {"convergence_s": None})
    t0 = pts[0][0] if started is None else float(started)
    agreed_at = None
    for t, n in reversed(pts):   # the start of the final run of agreeing samples
        if n != 0:
            break
        agreed_at = t
    last_t, last_n = pts[-1]
    if agreed_at is None:
        watched = last_t - t0
        metrics = {"convergence_s": None, "divergent_keys_last_sample": last_n}
        if watched >= deadline_s:
            return CheckResult("convergence", False, f"replicas still differ on {last_n} keys {watched:.1f}s after "
                               f"the start (deadline {deadline_s:.1f}s)", metrics)
        return CheckResult("convergence", UNKNOWN, f"replicas still differ on {last_n} keys when the samples end "
                           f"{watched:.1f}s after the start, before the {deadline_s:.1f}s deadline", metrics)
    conv = max(0.0, agreed_at - t0)
    valid = conv <= deadline_s
    flips = sum(1 for (_, a), (_, b) in zip(pts, pts[1:]) if a == 0 and b != 0)
    detail = (f"replicas agree from {conv:.2f}s after the start ({'within' if valid else 'OVER'} the "
              f"{deadline_s:.1f}s deadline) and stayed agreeing for {last_t - agreed_at:.2f}s of samples")
    if flips:
        detail += f"; they had agreed and diverged again {flips} time(s) before"
    return CheckResult("convergence", valid, detail, {"convergence_s": round(conv, 4), "divergent_keys_last_sample": 0})


# -- read your writes --------------------------------------------------------------------------------------

@_gc_paused
def read_your_writes(history: Sequence[dict]) -> CheckResult:
    """Within a region (the one that served both), a read invoked after the same client's `ok`
    write of the key completed must return that value or the value of a write that may follow it
    (one that completed after the client's write was invoked, or never certainly completed).
    A read answered 404 (or no value) after such a write is a violation: the workload never deletes.
    Operations are taken in history order, which is each client's own order in any history a
    recorder appends to (and in loadgen's merge, which keeps every worker file's order)."""
    scan = _RywScan()
    scan.run(history)
    if scan.n_ops and scan.unattributed == scan.n_ops:
        return CheckResult("read_your_writes", UNKNOWN, "the history names no client (field 'process'): reads "
                           "cannot be tied to their client's writes", {"reads_checked": 0, "ryw_violations": None})
    stale = scan.judge_suspects()
    n_viol = scan.not_found + stale
    metrics = {"reads_checked": scan.checked, "ryw_violations": n_viol, "stale_reads": stale,
               "not_found_reads": scan.not_found, "ops_without_client": scan.unattributed}
    if scan.checked == 0:
        return CheckResult("read_your_writes", UNKNOWN, "no read followed its client's acknowledged write of the "
                           "same key in the same region: nothing to check", metrics)
    detail = f"{n_viol} of {scan.checked} reads after the client's own write missed it"
    if n_viol:
        detail += f" ({stale} stale, {scan.not_found} not found): " + _examples(scan.violations, n_viol)
    return CheckResult("read_your_writes", n_viol == 0, detail, metrics)


class _RywScan:
    """read_your_writes' one pass over the entries (fields read once, nothing built for a read that
    no write of its client precedes), then the judgement of the reads that saw another value."""

    def __init__(self) -> None:
        self.checked = self.unattributed = self.n_ops = self.not_found = 0
        self.violations: list[str] = []
        self.suspects: list[tuple] = []    # (key, value read, client, (invoked, raw value) of its write, region)
        self.writes: dict[Any, list[tuple]] = {}   # _writes_by_key's answer, for judging the suspects

    def run(self, history: "Sequence[dict] | Placement") -> None:
        placed = placement(history)
        if placed.exact:
            self._scan(placed.columns())
            self.n_ops = len(placed)
            self.writes = placed.writes
            return
        pending: dict = {}   # a history the shared reading refused: read it as _placed does, entry by entry
        ops = [(e, typ, t, inv, e.get("op"), canon_key(e.get("key")), e.get("value"), e.get("process"),
                e.get("served_by") or e.get("region")) for _i, e, typ, t, inv in _placed(placed.history, pending)]
        self._scan(ops)
        self.n_ops = len(ops)
        for e, typ, t, inv, op, key, v, _client, _where in ops:
            if op == "write":
                self.writes.setdefault(key, []).append((typ, inv, INF if typ == "info" else t, v))
        for o in _open_invokes(placed.history, pending["ids"], pending["waiting"], "write"):
            self.writes.setdefault(o.key, []).append(("info", o.invoked, INF, o.value))

    def _scan(self, ops: Iterable[tuple]) -> None:
        """Over Placement.columns()' records of every completion."""
        last_write: dict[tuple, tuple] = {}   # (client, key, region) -> (invoked, completed, raw value)
        unattributed = 0
        for e, typ, t, inv, op, key, value, client, where in ops:
            if client is None:
                unattributed += 1
            elif op == "write":
                if typ == "ok":
                    last_write[(client, key, where)] = (inv, t, value)
            elif op == "read":
                w = last_write.get((client, key, where))
                # the read must start after the write finished; unplaced reads count as sequential
                if w is not None and (inv == -INF or inv >= w[1]):
                    self._observe(e, typ, key, client, w, where)
        self.unattributed += unattributed

    def _observe(self, e: dict, typ: str, key: Any, client: Any, w: tuple, where: Any) -> None:
        """A read that followed its client's acked write of the key in the same region."""
        value = e.get("value")
        status = e.get("status")
        is_404 = status == 404 or status == "404" or (typ == "ok" and value is None)
        if not is_404 and typ != "ok":
            return  # failed or unknown read: no observation
        self.checked += 1
        if is_404:
            self.not_found += 1
            self.violations.append(f"process {client} wrote {key}={_fmt(w[2])} in {where} then read 404")
        elif (value if type(value) is str else canon_value(value)) != canon_value(w[2]):
            self.suspects.append((key, value, client, w, where))

    def judge_suspects(self) -> int:
        """The suspects that read no write that may have followed the client's own: stale reads."""
        if not self.suspects:
            return 0
        keys = {s[0] for s in self.suspects}
        later: dict[tuple, float] = {}   # (key, canon value) -> latest completion (+inf: may land any time)
        for key in keys:
            for typ, _inv, done, raw in self.writes.get(key, ()):
                cv = _canon(raw)
                done = done if typ == "ok" else INF    # a fail write may have been applied after all
                if done > later.get((key, cv), -INF):
                    later[(key, cv)] = done
        stale = 0
        for key, value, client, (w_inv, _w_done, w_raw), where in self.suspects:
            x_done = later.get((key, canon_value(value)))
            if x_done is not None and x_done > w_inv:
                continue  # a write that may follow the client's own
            stale += 1
            what = "an older value" if x_done is not None else "a value no recorded write wrote"
            self.violations.append(f"process {client} wrote {key}={_fmt(w_raw)} in {where} then read "
                                   f"{_fmt(value)} ({what})")
        return stale


# -- error budget and RTO ----------------------------------------------------------------------------------

def _error_tally(history: Iterable[dict], w0: float | None, w1: float | None) -> tuple[int, int, int, int, int]:
    """(ok, fail, info) completions, and completions and failed or unknown ones in [w0, w1)."""
    n_ok = n_fail = n_info = wn = wbad = 0
    windowed = w0 is not None
    for i, e in enumerate(history):
        typ = e.get("type")
        t = e.get("time")
        if type(t) is not float:
            t = _time(e, i)
        if typ == "ok":
            n_ok += 1
            failed = 0
        elif typ == "fail":
            n_fail += 1
            failed = 1
        elif typ == "info":
            if e.get("abandoned"):
                continue   # the load stopped with it in flight: the client went away, not the system
            n_info += 1
            failed = 1
        elif typ == "invoke":
            continue
        else:
            raise _bad_type(typ, i)
        if windowed and w0 <= t < w1:
            wn += 1
            wbad += failed
    return n_ok, n_fail, n_info, wn, wbad


def _error_tally_placed(placed: Placement, w0: float | None, w1: float | None) -> tuple[int, int, int, int, int]:
    """_error_tally from a shared Placement: its completions are the history's, in order."""
    types = placed.types
    if "info" in types and any(e.get("abandoned") for e in placed.entries):
        # operations the load stopped with in flight are no one's error (loadgen/history.abandon_open)
        keep = [i for i, e in enumerate(placed.entries) if not e.get("abandoned")]
        types = [types[i] for i in keep]
        completed = [placed.completed[i] for i in keep]
    else:
        completed = placed.completed
    wn = wbad = 0
    if w0 is not None:
        for typ, t in zip(types, completed):
            if w0 <= t < w1:
                wn += 1
                if typ != "ok":
                    wbad += 1
    return types.count("ok"), types.count("fail"), types.count("info"), wn, wbad


@_gc_paused
def error_budget(history: Sequence[dict], *, budget: float, window: tuple[Any, Any] | None = None,
                 window_budget: float | None = None) -> CheckResult:
    """The share of completed operations that failed or ended unknown (`fail` + `info`) stays within
    `budget` (a fraction), overall and, with `window` = (start, end) epoch seconds or ISO times,
    among the operations completed inside it (limit `window_budget`, default `budget`)."""
    w0 = w1 = None
    if window is not None:
        w0 = _as_epoch(window[0], "window start")
        w1 = _as_epoch(window[1], "window end") if window[1] is not None else INF
    wb = budget if window_budget is None else window_budget
    placed = _exact(history)
    n_ok, n_fail, n_info, wn, wbad = (_error_tally_placed(placed, w0, w1) if placed is not None
                                      else _error_tally(_raw(history), w0, w1))
    bad = n_fail + n_info
    n = n_ok + bad
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


def _as_epoch(v: Any, what: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    try:
        return parse_time(v, what)
    except ReportError as e:
        raise ValueError(str(e)) from None


def _rto_buckets(history: Sequence[dict], t_fault: float, bucket_s: float,
                 region: str | None) -> tuple[dict[int, int], dict[int, int], float]:
    """Per bucket of completion time after the fault: (operations, successes (served by `region`
    when given), the last completion time)."""
    all_n: dict[int, int] = {}
    ok_n: dict[int, int] = {}
    last = t_fault
    # operations come mostly in completion order: count a run of one bucket, then add it in
    cur = None
    run = run_ok = 0
    for i, e in enumerate(history):
        typ = e.get("type")
        t = e.get("time")
        if type(t) is not float:
            t = _time(e, i)
        if typ != "ok" and typ != "fail" and typ != "info":
            if typ == "invoke":
                continue
            raise _bad_type(typ, i)
        if t < t_fault:
            continue
        b = (t - t_fault) // bucket_s
        if b != cur:
            if run:
                all_n[int(cur)] = all_n.get(int(cur), 0) + run
                ok_n[int(cur)] = ok_n.get(int(cur), 0) + run_ok
            cur = b
            run = run_ok = 0
        run += 1
        if typ == "ok" and (region is None or e.get("served_by") == region):
            run_ok += 1
        if t > last:
            last = t
    if run:
        all_n[int(cur)] = all_n.get(int(cur), 0) + run
        ok_n[int(cur)] = ok_n.get(int(cur), 0) + run_ok
    return all_n, ok_n, last


def _rto_buckets_placed(placed: Placement, t_fault: float, bucket_s: float,
                        region: str | None) -> tuple[dict[int, int], dict[int, int], float]:
    """_rto_buckets from a shared Placement (a bucket may lack in ok_n where it counts 0 there),
    in itertools/operator passes over its columns, at C speed, each completion time read once."""
    times = placed.completed
    if not bucket_s > 0:
        return _rto_buckets(placed.history, t_fault, bucket_s, region)
    try:   # negative for a completion before the fault (t - t_fault is never 0 for t != t_fault)
        buckets = list(map(int, map(operator.floordiv, map(operator.sub, times, repeat(t_fault)), repeat(bucket_s))))
    except (ValueError, OverflowError):   # a time of +-inf or nan: as _rto_buckets says (or raises)
        return _rto_buckets(placed.history, t_fault, bucket_s, region)
    ok = map(operator.eq, placed.types, repeat("ok"))
    if region is not None:
        served_there = map(operator.eq, map(operator.methodcaller("get", "served_by"), placed.entries), repeat(region))
        ok = map(operator.and_, ok, served_there)
    all_n = {b: n for b, n in Counter(buckets).items() if b >= 0}
    ok_n = {b: n for b, n in Counter(compress(buckets, ok)).items() if b >= 0}
    return all_n, ok_n, max(t_fault, max(times, default=t_fault))


@_gc_paused
def rto(history: Sequence[dict], fault_time: Any, *, slo: float = 0.95, bucket_s: float = 1.0,
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
    placed = _exact(history)
    all_n, ok_n, last = (_rto_buckets_placed(placed, t_fault, bucket_s, region) if placed is not None
                         else _rto_buckets(_raw(history), t_fault, bucket_s, region))
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


def _latencies(history: Any, w0: float, w1: float, region: str | None) -> list[float]:
    """Completion minus invocation of the operations completed in [w0, w1) (served by `region`,
    else aimed at it, when given), placed ones only: an operation never completed has no latency."""
    placed = _exact(history)
    if placed is not None:
        rows = zip(placed.invoked, placed.completed, placed.wheres)
    else:
        rows = ((o.invoked, o.completed, o.served_by or o.region)
                for o in iter_operations(_raw(history), unmatched=False))
    return [c - i for i, c, where in rows
            if w0 <= c < w1 and i != -INF and (region is None or where == region)]


def latency_p99(history: Sequence[dict], *, budget_s: float, window: tuple[Any, Any] | None = None,
                region: str | None = None, quantile: float = 0.99) -> CheckResult:
    """The `quantile` (nearest rank; default the 99th percentile) of the operations' latency stays
    within `budget_s`: every completion, failed ones too (an overloaded task's 503 is quick, a
    timeout is as long as the client waited), completed inside `window` = (start, end) epoch
    seconds or ISO times (end None: open), and with `region` served by it (else aimed at it).
    Unknown when no operation is left to measure."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    w0 = _as_epoch(window[0], "window start") if window is not None else -INF
    w1 = (_as_epoch(window[1], "window end") if window is not None and window[1] is not None else INF)
    lat = sorted(_latencies(history, w0, w1, region))
    where = (f" served by {region}" if region else "") + (f" in the {w1 - w0:.1f}s window" if w1 < INF else
                                                           " after the window's start" if w0 > -INF else "")
    name = f"p{quantile * 100:g}"
    metrics = {f"{name}_latency_s": None, "latency_requests": len(lat)}
    if not lat:
        return CheckResult("latency_p99", UNKNOWN, f"no operation completed{where}", metrics)
    value = lat[max(0, math.ceil(quantile * len(lat)) - 1)]
    metrics[f"{name}_latency_s"] = round(value, 4)
    valid = value <= budget_s
    slow = sum(1 for x in lat if x > budget_s)
    detail = (f"{name} latency of {len(lat)} operations{where}: {value:.3f}s, {'within' if valid else 'OVER'} "
              f"the {budget_s:g}s budget ({slow} slower than it; the slowest {lat[-1]:.3f}s)")
    return CheckResult("latency_p99", valid, detail, metrics)


def on_incomplete_history(result: CheckResult, gaps: dict[str, int]) -> CheckResult:
    """A check that needs every operation, judged on a history some of whose entries never reached
    the master (`gaps`: worker -> entries missing; loadgen.history_stream.history_gaps): a pass is
    "unknown", naming the workers and their missing counts (the missing entries could hold the
    violation); a failure stays a failure (what did arrive already shows it)."""
    if not gaps or result.valid is not True:
        return result
    named = ", ".join(f"{w}: {n} entries missing" for w, n in sorted(gaps.items()))
    return CheckResult(result.name, UNKNOWN, f"judged on an incomplete history ({named}): {result.detail}",
                       {**result.metrics, "history_entries_missing": sum(gaps.values())})
