"""Checkers: pure functions over a run's data (Jepsen style). No I/O, no environment: the same
functions judge a live run and re-judge a stored one (reports/recheck.py). Inputs are a history
(invoke, then ok / fail / info entries) and replicas ({region: {key: value}}, the final table
contents of every region). Entries are read with the field aliases of
reports.rundata.normalize_op directly rather than through it, because normalize_op costs ~2 us
an entry and these checkers must do 1M operations in seconds; tests/test_checkers.py proves both
readings agree. Each checker returns CheckResult(name, valid, detail, metrics): `valid` is True,
False or "unknown"; `metrics` is flat {name: number | None}, so it can go into result.json.

The field aliases, how an operation's interval is placed, and the checkers a scenario uses:
docs/scenarios.md, "Assertions and checkers to build checks from".
"""

from __future__ import annotations

import functools
import gc
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

from gameday.reports.rundata import ReportError, parse_time

Valid = Any  # True | False | "unknown"
UNKNOWN = "unknown"
INF = math.inf
MAX_EXAMPLES = 5

# Aliases, in normalize_op's order of preference (reports/rundata.py is the reference).
TIME_FIELDS = ("time", "ts", "wall_time", "at", "t")
CLIENT_FIELDS = ("process", "worker", "client", "user", "user_id")


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
    client: tuple | None
    index: int                 # position of the completion (or invoke) entry in the history


def _get(e: dict, a: str, b: str) -> Any:
    v = e.get(a)
    return e.get(b) if v is None else v


def _time(e: dict, i: int) -> float:
    for f in TIME_FIELDS:
        t = e.get(f)
        if t is not None:
            break
    else:
        raise HistoryError(f"history entry {i + 1}: no time (one of {', '.join(TIME_FIELDS)})")
    tt = type(t)
    if tt is float or tt is int:
        return t
    try:
        return parse_time(t, f"history entry {i + 1}")
    except ReportError as err:
        raise HistoryError(str(err)) from None


def _latency(e: dict) -> float | None:
    lat = e.get("latency_s")
    if lat is None:
        ms = e.get("latency_ms")
        if ms is not None:
            return float(ms) / 1000.0
        lat = e.get("latency")
        if lat is None:
            return None
    return lat if type(lat) is float else float(lat)


def _client(e: dict) -> tuple | None:
    # CLIENT_FIELDS, spelled out: this runs once per operation
    p, w, c, u, ui = e.get("process"), e.get("worker"), e.get("client"), e.get("user"), e.get("user_id")
    if p is None and w is None and c is None and u is None and ui is None:
        return None
    return (p, w, c, u, ui)


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


@_gc_paused
def operations(history: Sequence[dict], *, only: str | None = None, unmatched: bool = True,
               with_client: bool = False) -> list[Operation]:
    """The history's operations, one per completion entry, in history order; with `unmatched`,
    invokes that never completed follow as `info` operations (completed = +inf).
    `only` = "write" or "read" keeps that kind (cheaper on big histories); `with_client` fills
    Operation.client (always filled when completions had to be paired by client)."""
    if not isinstance(history, (list, tuple)):
        history = list(history)
    state: dict = {}
    out = list(iter_operations(history, only=only, with_client=with_client, _state=state))
    if unmatched:
        if state.get("paired"):
            out.extend(o for o in _paired_operations(history, only=only, unmatched=True) if o.completed == INF)
        elif state["anonymous_invokes"]:
            out.extend(_unmatched_invokes(history, out, only))
        elif state["open_ids"]:
            out.extend(_open_by_id(history, state["open_ids"]))
    return out


def iter_operations(history: Sequence[dict], *, only: str | None = None, with_client: bool = False,
                    _state: dict | None = None) -> Iterator[Operation]:
    """operations() without the invokes that never completed, one at a time: a checker that
    needs each operation once keeps none of them alive (a list of 1M operations costs memory
    and cache, measured ~2x slower per operation)."""
    invoked_at: dict[Any, float] = {}   # operation id -> invoke time, until its completion is seen
    anonymous_invokes = 0               # invokes without an id: matched by count afterwards
    for i, e in enumerate(history):
        typ = e.get("type")
        if typ == "invoke":
            oid = e.get("id")
            if oid is None:
                anonymous_invokes += 1
            elif only is None or _get(e, "op", "f") == only:
                t = e.get("time")
                invoked_at[oid] = t if type(t) is float else _time(e, i)
            continue
        if typ != "ok" and typ != "fail" and typ != "info":
            raise HistoryError(f"history entry {i + 1}: type must be invoke, ok, fail or info (got {typ!r})")
        # the aliases of normalize_op, inlined (this loop runs once per entry)
        op = e.get("op")
        if op is None:
            op = e.get("f")
        if only is not None and op != only:
            continue
        t = e.get("time")
        if type(t) is not float:
            t = _time(e, i)
        oid = e.get("id")
        inv = invoked_at.pop(oid, None) if oid is not None else None
        if inv is None:
            lat = _latency(e)
            if lat is None:
                # neither an invoke with its id nor a latency: pair every completion with its invoke
                # by client instead, and go on from this entry with those (the ones already given
                # are placed the same way in both readings)
                if _state is not None:
                    _state["paired"] = True
                yield from (o for o in _paired_operations(history, only=only, unmatched=False) if o.index >= i)
                return
            inv = t - lat
        key = e.get("key")
        if key is None:
            key = e.get("k")
        if type(key) is not str and key is not None:
            key = str(key)
        value = e.get("value")
        if value is None:
            value = e.get("v")
        status = e.get("status")
        if status is None:
            status = e.get("status_code")
        yield Operation(typ, op, key, value, inv, t,
                        e.get("region") or e.get("target") or e.get("target_region"),
                        e.get("served_by") or e.get("server_region") or e.get("served"),
                        status, _client(e) if with_client else None, i)
    if _state is not None:
        _state.update(anonymous_invokes=anonymous_invokes, open_ids=invoked_at)


def _open_by_id(history: Sequence[dict], open_ids: dict) -> list[Operation]:
    """The invokes whose ids never completed, as `info` operations; they are near the end."""
    left = set(open_ids)
    found: list[Operation] = []
    for j in range(len(history) - 1, -1, -1):
        e = history[j]
        if e.get("type") == "invoke" and e.get("id") in left:
            left.discard(e["id"])
            found.append(Operation("info", _get(e, "op", "f"), canon_key(_get(e, "key", "k")), _get(e, "value", "v"),
                                   open_ids[e["id"]], INF,
                                   e.get("region") or e.get("target") or e.get("target_region"), None, None,
                                   _client(e), j))
            if not left:
                break
    found.reverse()
    return found


def _unmatched_invokes(history: Sequence[dict], done: list[Operation], only: str | None) -> list[Operation]:
    """Invokes with no completion (in flight when the run ended, or their client died). Matched by
    operation id when entries carry one; else a write by (key, value), values being unique per
    key, and a read by count per (client, key)."""
    done_ids: set = set()
    counts: dict[tuple, int] = {}
    for o in done:
        c = history[o.index]
        oid = c.get("id")
        if oid is not None:
            done_ids.add(oid)
            continue
        k = (o.op, o.key, canon_value(o.value)) if o.op == "write" else (o.op, o.key, _client(c))
        counts[k] = counts.get(k, 0) + 1
    opens: list[Operation] = []
    for i, e in enumerate(history):
        if e.get("type") != "invoke":
            continue
        op = _get(e, "op", "f")
        if only is not None and op != only:
            continue
        oid = e.get("id")
        key = canon_key(_get(e, "key", "k"))
        value = _get(e, "value", "v")
        if oid is not None:
            if oid in done_ids:
                continue
        else:
            k = (op, key, canon_value(value)) if op == "write" else (op, key, _client(e))
            n = counts.get(k, 0)
            if n:
                counts[k] = n - 1
                continue
        opens.append(Operation("info", op, key, value, _time(e, i), INF,
                               e.get("region") or e.get("target") or e.get("target_region"), None, None,
                               _client(e), i))
    return opens


def _paired_operations(history: Sequence[dict], *, only: str | None, unmatched: bool) -> list[Operation]:
    """Completions with neither a known invoke id nor a latency: pair each with its invoke by id
    when there is one, else by (client, operation, key), first in first out."""
    pending: dict[Any, list[tuple[float, int, dict]]] = {}
    out: list[Operation] = []
    for i, e in enumerate(history):
        typ = e.get("type")
        if typ not in ("invoke", "ok", "fail", "info"):
            raise HistoryError(f"history entry {i + 1}: type must be invoke, ok, fail or info (got {typ!r})")
        op = _get(e, "op", "f")
        if only is not None and op != only:
            continue
        key = canon_key(_get(e, "key", "k"))
        client = _client(e)
        t = _time(e, i)
        oid = e.get("id")
        pk = ("id", oid) if oid is not None else (client, op, key)
        if typ == "invoke":
            pending.setdefault(pk, []).append((t, i, e))
            continue
        queue = pending.get(pk)
        inv_t = queue.pop(0)[0] if queue else None
        if inv_t is None:
            lat = _latency(e)
            inv_t = -INF if lat is None else t - lat   # unplaceable: concurrent with all before it
        out.append(Operation(typ, op, key, _get(e, "value", "v"), inv_t, t,
                             e.get("region") or e.get("target") or e.get("target_region"),
                             e.get("served_by") or e.get("server_region") or e.get("served"),
                             _get(e, "status", "status_code"), client, i))
    if unmatched:
        for queue in pending.values():
            for t, i, e in queue:
                out.append(Operation("info", _get(e, "op", "f"), canon_key(_get(e, "key", "k")),
                                     _get(e, "value", "v"), t, INF,
                                     e.get("region") or e.get("target") or e.get("target_region"), None, None,
                                     _client(e), i))
    return out


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
    writes = _writes_by_key(history)
    n_acked = 0
    for ws in writes.values():
        for w in ws:
            if w[0] == "ok":
                n_acked += 1
    if not replicas:
        return CheckResult("lost_acked_writes", UNKNOWN, f"no replicas to check {n_acked} acknowledged writes against",
                           {"acked_writes": n_acked, "lost_acked_writes": None})

    regions = list(replicas)
    tables = {}
    for r in regions:
        t = replicas[r] or {}
        tables[r] = t if all(type(k) is str for k in t) else {canon_key(k): v for k, v in t.items()}
    skew = clock_skew_s
    MISSING = object()
    open_writes: set | None = None            # (key, canon value) of writes invoked but never completed
    lost: dict[tuple, list[str]] = {}         # (key, canon value) -> regions missing it
    lost_raw: dict[tuple, Any] = {}
    finals: dict[tuple, Any] = {}             # (key, region) -> final value, for the detail
    unexplained: list[tuple[Any, str, Any]] = []  # (key, region, value) that no recorded write wrote
    per_region = {r: 0 for r in regions}
    failed_visible = 0
    for key, ws in writes.items():
        memo_fcv = memo = None   # regions usually hold the same final value: judge it once
        for r in regions:
            final = tables[r].get(key, MISSING)
            if final is MISSING:
                fcv = None
                x_done = -INF
            else:
                fcv = final if type(final) is str else canon_value(final)
                if memo is None or fcv != memo_fcv:
                    memo_fcv = fcv
                    x_done, latest_ok, found, failed = _judge(ws, fcv)
                    foreign = False
                    if not found:
                        if open_writes is None:
                            open_writes = {(o.key, canon_value(o.value)) for o in _unmatched_invokes(
                                history, operations(history, only="write", unmatched=False), "write")}
                        if (key, fcv) in open_writes:
                            x_done = INF      # in flight when the history ended: may be last
                        else:
                            foreign = True
                    # (completion of the final value's write, nothing lost?, foreign?, a `fail` write's?)
                    memo = (x_done, x_done + skew >= latest_ok, foreign, failed)
                x_done, nothing_lost, foreign, failed = memo
                if failed:
                    failed_visible += 1       # a `fail` write was applied after all: it may be last
                if foreign:
                    unexplained.append((key, r, final))
                if nothing_lost:
                    continue  # the final value may follow every acked write to this key
            horizon = x_done + skew
            for typ, inv, done, cv, raw in ws:
                if inv > horizon and typ == "ok" and cv != fcv:
                    k2 = (key, cv)
                    regs = lost.get(k2)
                    if regs is None:
                        lost[k2] = regs = []
                        lost_raw[k2] = raw
                    regs.append(r)
                    per_region[r] += 1
                    finals[(key, r)] = final

    n_lost = len(lost)
    examples = []
    for (key, wcv), regs in list(lost.items())[:MAX_EXAMPLES]:
        has = ", ".join(f"{r} has {'no item' if finals[(key, r)] is MISSING else _fmt(finals[(key, r)])}" for r in regs)
        examples.append(f"{key}={_fmt(lost_raw[(key, wcv)])} acked but missing from {', '.join(regs)} ({has})")
    metrics = {"acked_writes": n_acked, "lost_acked_writes": n_lost,
               **{f"lost_in.{r}": n for r, n in per_region.items()},
               "failed_writes_visible": failed_visible, "foreign_values": len(unexplained)}
    if allowed > 0:
        metrics["allowed_lost_writes"] = allowed
    if n_acked == 0:
        return CheckResult("lost_acked_writes", UNKNOWN, "no acknowledged writes in the history: nothing to lose", metrics)
    head = f"{n_lost} of {n_acked} acknowledged writes lost"
    if allowed > 0:
        valid = n_lost <= allowed
        head += f" (RPO: at most {allowed} allowed: {'within' if valid else 'OVER'})"
    else:
        valid = n_lost == 0
    if n_lost:
        head += " (" + ", ".join(f"{r}: {n}" for r, n in per_region.items() if n) + "): " + _examples(examples, n_lost)
    if unexplained:
        key, r, final = unexplained[0]
        head += f"; {len(unexplained)} final values that no recorded write wrote (e.g. {key}={_fmt(final)} in {r})"
    if failed_visible:
        head += f"; {failed_visible} final values written by writes recorded as failed"
    return CheckResult("lost_acked_writes", valid, head, metrics)


def _judge(ws: list[tuple], fcv: Any) -> tuple[float, float, bool, bool]:
    """For a key's writes and its final (canonical) value: (when the write of that value completed,
    +inf if it may have landed later; the latest invocation of an acked write; whether any recorded
    write wrote it; whether it was a `fail` write)."""
    x_done = -INF
    latest_ok = -INF
    found = failed = False
    for typ, inv, done, cv, _raw in ws:
        if typ == "ok" and inv > latest_ok:
            latest_ok = inv
        if cv == fcv:
            found = True
            if typ == "fail":
                failed = True
                x_done = INF
            elif done > x_done:
                x_done = done
    return x_done, latest_ok, found, failed


def _writes_by_key(history: Sequence[dict]) -> dict[Any, list[tuple]]:
    """key -> [(type, invoked, completed, canon value, raw value)] of every write, with `info`
    writes, and writes invoked but never completed, completing at +inf (they may land any time).
    The hot loop of lost_acked_writes: operations() reads entries the same way (tests prove it),
    this is it inlined for speed. Histories it cannot place go through operations()."""
    if not isinstance(history, (list, tuple)):
        history = list(history)
    out: dict[Any, list[tuple]] = {}
    invoked_at: dict[Any, float] = {}   # write id -> invoke time (the sound lower bound of its start)
    i = -1
    for e in history:
        i += 1
        typ = e.get("type")
        op = e.get("op")
        if op is None:
            op = e.get("f")
        if typ == "invoke":
            if op == "write":
                oid = e.get("id")
                if oid is not None:
                    t = e.get("time")
                    invoked_at[oid] = t if type(t) is float else _time(e, i)
            continue
        if op != "write":
            if typ != "ok" and typ != "fail" and typ != "info":
                raise HistoryError(f"history entry {i + 1}: type must be invoke, ok, fail or info (got {typ!r})")
            continue
        t = e.get("time")
        if type(t) is not float:
            t = _time(e, i)
        oid = e.get("id")
        inv = invoked_at.pop(oid, None) if oid is not None else None
        if inv is None:
            lat = e.get("latency_s")
            if type(lat) is not float:
                lat = _latency(e)
                if lat is None:
                    return _writes_by_key_slow(history)
            inv = t - lat
        key = e.get("key")
        if type(key) is not str:
            key = canon_key(_get(e, "key", "k"))
        v = e.get("value")
        if v is None:
            v = e.get("v")
        tv = type(v)
        cv = v if tv is str else (str(v) if tv is int else canon_value(v))  # canon_value, inlined
        if typ == "ok":
            rec = ("ok", inv, t, cv, v)
        elif typ == "info":
            rec = ("info", inv, INF, cv, v)
        elif typ == "fail":
            rec = ("fail", inv, t, cv, v)
        else:
            raise HistoryError(f"history entry {i + 1}: type must be invoke, ok, fail or info (got {typ!r})")
        lst = out.get(key)
        if lst is None:
            out[key] = [rec]
        else:
            lst.append(rec)
    for o in _open_by_id(history, invoked_at) if invoked_at else ():
        # writes still in flight when the history ended: they may have landed at any time
        out.setdefault(o.key, []).append(("info", o.invoked, INF, canon_value(o.value), o.value))
    return out


def _writes_by_key_slow(history: Sequence[dict]) -> dict[Any, list[tuple]]:
    out: dict[Any, list[tuple]] = {}
    for o in operations(history, only="write", unmatched=True):
        done = INF if o.type == "info" else o.completed
        out.setdefault(o.key, []).append((o.type, o.invoked, done, canon_value(o.value), o.value))
    return out


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
    tally = _ryw_scan_plain(history) if isinstance(history, (list, tuple)) else None
    write_log = None   # with the fast path: its record of the writes, unless an invoke had no id
    if tally is None:
        tally = _ryw_scan(history)
    else:
        tally, write_log = tally[:6], tally[6]
    checked, unattributed, n_ops, violations, not_found, suspects = tally
    n_viol = not_found
    stale = 0
    if n_ops and unattributed == n_ops:
        return CheckResult("read_your_writes", UNKNOWN, "the history names no client (process, worker, client, "
                           "user or user_id): reads cannot be tied to their client's writes",
                           {"reads_checked": 0, "ryw_violations": None})
    if suspects:
        # did the read see a write that may have followed the client's own? (only these keys matter)
        keys = {s[0] for s in suspects}
        later = _later_writes_plain(history, write_log, keys) if write_log is not None else None
        if later is None:
            later = _later_writes(history, keys)
        for key, value, client, (w_inv, _, _, w_raw), where in suspects:
            x_done = later.get((key, canon_value(value)))
            if x_done is not None and x_done > w_inv:
                continue  # a write that may follow the client's own
            n_viol += 1
            stale += 1
            what = "an older value" if x_done is not None else "a value no recorded write wrote"
            violations.append(f"{_client_name(client)} wrote {key}={_fmt(w_raw)} in {where} then read "
                              f"{_fmt(value)} ({what})")
    metrics = {"reads_checked": checked, "ryw_violations": n_viol, "stale_reads": stale, "not_found_reads": not_found,
               "ops_without_client": unattributed}
    if checked == 0:
        return CheckResult("read_your_writes", UNKNOWN, "no read followed its client's acknowledged write of the "
                           "same key in the same region: nothing to check", metrics)
    detail = f"{n_viol} of {checked} reads after the client's own write missed it"
    if n_viol:
        detail += f" ({stale} stale, {not_found} not found): " + _examples(violations, n_viol)
    return CheckResult("read_your_writes", n_viol == 0, detail, metrics)


def _ryw_scan(history: Sequence[dict]) -> tuple:
    """read_your_writes' pass over the operations (any history iter_operations reads):
    (reads checked, operations without a client, operations, 404 violations, their count,
    suspects = reads that saw another value: (key, value, client, the client's write, region))."""
    last_write: dict[tuple, tuple] = {}   # (client, key, region) -> (invoked, completed, canon value, raw value)
    suspects: list[tuple] = []
    checked = unattributed = n_ops = not_found = 0
    violations: list[str] = []
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
            not_found += 1
            violations.append(f"{_client_name(client)} wrote {key}={_fmt(w[3])} in {where} then read 404")
        elif (value if type(value) is str else canon_value(value)) != w[2]:
            suspects.append((key, value, client, w, where))
    return checked, unattributed, n_ops, violations, not_found, suspects


_NO_CLIENT = (None, None, None, None, None)


def _ryw_scan_plain(history: Sequence[dict]) -> tuple | None:
    """_ryw_scan inlined over the entries for the histories loadgen records (every time a float,
    every completion placed by its invoke's id or a float latency_s): one pass, fields read once,
    nothing built for a read no write of its client precedes. None when an entry is outside that
    shape (then _ryw_scan reads it, with the same answer or the same error); tests prove both agree.
    Returns _ryw_scan's tuple and a record of the writes for _later_writes_plain (None when an
    invoke has no id): reading the entries again costs more than this record (cache misses)."""
    last_write: dict[tuple, tuple] = {}
    write_log: list[tuple] | None = []   # ("invoke", id) | (type, id, key, time, float latency_s?, entry)
    suspects: list[tuple] = []
    checked = unattributed = n_ops = not_found = 0
    violations: list[str] = []
    invoked_at: dict[Any, float] = {}
    for e in history:
        typ = e.get("type")
        op = e.get("op")
        if op is None:
            op = e.get("f")
        if typ == "invoke":
            oid = e.get("id")
            if oid is not None:
                t = e.get("time")
                if type(t) is not float:
                    return None
                invoked_at[oid] = t
                if op == "write" and write_log is not None:
                    write_log.append(("invoke", oid))
            else:
                write_log = None
            continue
        if typ != "ok" and typ != "fail" and typ != "info":
            return None
        t = e.get("time")
        if type(t) is not float:
            return None
        oid = e.get("id")
        inv = invoked_at.pop(oid, None) if oid is not None else None
        if inv is None:
            lat = e.get("latency_s")
            if type(lat) is not float:
                return None
            inv = t - lat
        n_ops += 1
        key = e.get("key")
        if key is None:
            key = e.get("k")
        if type(key) is not str and key is not None:
            key = str(key)
        if op == "write" and write_log is not None:
            write_log.append((typ, oid, key, t, type(e.get("latency_s")) is float, e))
        client = (e.get("process"), e.get("worker"), e.get("client"), e.get("user"), e.get("user_id"))   # _client
        if client == _NO_CLIENT:
            unattributed += 1
            continue
        if op != "write" and op != "read":
            continue
        where = (e.get("served_by") or e.get("server_region") or e.get("served")
                 or e.get("region") or e.get("target") or e.get("target_region"))
        if op == "write":
            if typ == "ok":
                value = e.get("value")
                if value is None:
                    value = e.get("v")
                # (invoked, completed, raw value): canonical only when a read is compared with it
                last_write[(client, key, where)] = (inv, t, value)
            continue
        w = last_write.get((client, key, where))
        if w is None:
            continue
        if inv != -INF and inv < w[1]:
            continue
        value = e.get("value")
        if value is None:
            value = e.get("v")
        status = e.get("status")
        if status is None:
            status = e.get("status_code")
        is_404 = status == 404 or status == "404" or (typ == "ok" and value is None)
        if not is_404 and typ != "ok":
            continue
        checked += 1
        if is_404:
            not_found += 1
            violations.append(f"{_client_name(client)} wrote {key}={_fmt(w[2])} in {where} then read 404")
        elif (value if type(value) is str else canon_value(value)) != canon_value(w[2]):
            suspects.append((key, value, client, (w[0], w[1], None, w[2]), where))
    return checked, unattributed, n_ops, violations, not_found, suspects, write_log


def _later_writes(history: Sequence[dict], keys: set) -> dict[tuple, float]:
    """(key, canon value) -> the latest completion of a write of that value to one of `keys`
    (+inf: a write that failed, ended unknown or was still in flight may land any time)."""
    later: dict[tuple, float] = {}
    for x in operations(history, only="write"):   # with writes still in flight at the end
        if x.key in keys:
            done = x.completed if x.type == "ok" else INF
            k = (x.key, canon_value(x.value))
            if done > later.get(k, -INF):
                later[k] = done
    return later


def _later_writes_plain(history: Sequence[dict], write_log: list[tuple], keys: set) -> dict[tuple, float] | None:
    """_later_writes from _ryw_scan_plain's record of the writes of a history it read whole (times
    floats, types valid, every invoke with an id): operations(history, only="write") pairs a write
    completion with the pending write invoke of its id, as replayed here. None when a write
    completion has neither that nor a float latency_s (operations() then pairs by client)."""
    later: dict[tuple, float] = {}
    invoked_at: dict[Any, bool] = {}   # ids of write invokes not yet completed
    for rec in write_log:
        if rec[0] == "invoke":
            invoked_at[rec[1]] = True
            continue
        typ, oid, key, t, has_latency, e = rec
        if (invoked_at.pop(oid, None) if oid is not None else None) is None and not has_latency:
            return None
        if key in keys:
            value = e.get("value")
            if value is None:
                value = e.get("v")
            done = t if typ == "ok" else INF
            k = (key, canon_value(value))
            if done > later.get(k, -INF):
                later[k] = done
    for x in _open_by_id(history, invoked_at) if invoked_at else ():
        if x.key in keys:
            later[(x.key, canon_value(x.value))] = INF
    return later


def _client_name(c: tuple) -> str:
    return "/".join(f"{f}={v}" for f, v in zip(CLIENT_FIELDS, c) if v is not None)


# -- error budget and RTO ----------------------------------------------------------------------------------

def _plain_entry(e: dict, typ: Any) -> bool:
    """Whether iter_operations gives this entry (its `time` a float) as an operation of its own
    type, completion time and regions, whatever the entries around it: a valid type, and for a
    completion a float latency_s or no latency at all (when neither its invoke's id nor a latency
    places it, iter_operations pairs the history by client, which gives those same three for
    every completion of a history of such entries, and raises nothing)."""
    if typ == "invoke":
        return True
    if typ != "ok" and typ != "fail" and typ != "info":
        return False
    lat = e.get("latency_s")
    return type(lat) is float or (lat is None and e.get("latency_ms") is None and e.get("latency") is None)


def _error_tally_plain(history: Sequence[dict], w0: float | None, w1: float | None) -> tuple | None:
    """error_budget's counts in one pass over the entries, for a list of entries that are all
    _plain_entry (None otherwise: then iter_operations reads the history, with the same answer
    or the same error; tests prove both agree): error_budget needs only each operation's type
    and completion time."""
    if not isinstance(history, (list, tuple)):
        return None
    n_ok = n_fail = n_info = wn = wbad = 0
    windowed = w0 is not None
    for e in history:
        typ = e.get("type")
        t = e.get("time")
        if type(t) is not float:
            return None
        if typ == "invoke":
            continue
        if typ == "ok":
            failed = 0
            n_ok += 1
        elif typ == "fail":
            failed = 1
            n_fail += 1
        elif typ == "info":
            failed = 1
            n_info += 1
        else:
            return None
        lat = e.get("latency_s")
        if type(lat) is not float and not _plain_entry(e, typ):
            return None
        if windowed and w0 <= t < w1:
            wn += 1
            wbad += failed
    return n_ok + n_fail + n_info, n_fail + n_info, n_fail, n_info, wn, wbad


def _rto_buckets_plain(history: Sequence[dict], t_fault: float, bucket_s: float,
                       region: str | None) -> tuple | None:
    """rto's per-bucket counts in one pass over the entries, for a list of entries that are all
    _plain_entry (None otherwise, as for _error_tally_plain): rto needs only each operation's
    type, completion time and serving region."""
    if not isinstance(history, (list, tuple)):
        return None
    all_n: dict[int, int] = {}
    ok_n: dict[int, int] = {}
    last = t_fault
    # operations come mostly in completion order: count a run of one bucket, then add it in
    cur = None
    run = run_ok = 0
    for e in history:
        typ = e.get("type")
        t = e.get("time")
        if type(t) is not float:
            return None
        if typ == "invoke":
            continue
        if type(e.get("latency_s")) is not float and not _plain_entry(e, typ):
            return None
        if t < t_fault:
            if typ != "ok" and typ != "fail" and typ != "info":
                return None
            continue
        b = (t - t_fault) // bucket_s     # rto's bucket is int() of this
        if b != cur:
            if run:
                k = int(cur)
                all_n[k] = all_n.get(k, 0) + run
                if run_ok:
                    ok_n[k] = ok_n.get(k, 0) + run_ok
            cur = b
            run = run_ok = 0
        if typ == "ok":
            if region is None or (e.get("served_by") or e.get("server_region") or e.get("served")) == region:
                run_ok += 1
        elif typ != "fail" and typ != "info":
            return None
        run += 1
        if t > last:
            last = t
    if run:
        k = int(cur)
        all_n[k] = all_n.get(k, 0) + run
        if run_ok:
            ok_n[k] = ok_n.get(k, 0) + run_ok
    return all_n, ok_n, last


@_gc_paused
def error_budget(history: Sequence[dict], *, budget: float, window: tuple[Any, Any] | None = None,
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
    tally = _error_tally_plain(history, w0, w1)
    if tally is not None:
        n, bad, n_fail, n_info, wn, wbad = tally
    else:
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


def _as_epoch(v: Any, what: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    try:
        return parse_time(v, what)
    except ReportError as e:
        raise ValueError(str(e)) from None


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
    ok_n: dict[int, int] = {}
    all_n: dict[int, int] = {}
    last = t_fault
    buckets = _rto_buckets_plain(history, t_fault, bucket_s, region)
    if buckets is not None:
        all_n, ok_n, last = buckets
    else:
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


# -- composing -----------------------------------------------------------------------------------------------

def compose(*results: CheckResult, name: str = "all") -> CheckResult:
    """valid = True when all are, False when any is False, else "unknown"; metrics merged."""
    if len(results) == 1 and isinstance(results[0], (list, tuple)):
        results = tuple(results[0])
    vals = [r.valid for r in results]
    if any(v is False for v in vals):
        valid: Valid = False
    elif results and all(v is True for v in vals):
        valid = True
    else:
        valid = UNKNOWN
    metrics: dict = {}
    for r in results:
        metrics.update(r.metrics)
    bad = [r for r in results if r.valid is not True]
    detail = f"{sum(v is True for v in vals)} of {len(results)} checks valid"
    if bad:
        detail += ": " + "; ".join(f"{r.name} {'FAILED' if r.valid is False else 'unknown'}: {r.detail}" for r in bad)
    return CheckResult(name, valid, detail, metrics)


def run_checks(history: Sequence[dict], replicas: dict | None, *, allowed_lost: int = 0, clock_skew_s: float = 0.0,
               error_budget_fraction: float | None = None, window: tuple | None = None,
               fault_time: Any = None, slo: float = 0.95, bucket_s: float = 1.0, rto_region: str | None = None,
               rto_deadline_s: float | None = None, divergence_samples: Iterable[tuple[float, int]] | None = None,
               convergence_deadline_s: float | None = None, convergence_started: float | None = None,
               read_your_writes_check: bool = True) -> list[CheckResult]:
    """The data checks a scenario usually wants, in one call; each optional one runs when its
    inputs are given (an error budget, a fault time, divergence samples)."""
    out: list[CheckResult] = []
    if replicas is not None:
        out.append(lost_acked_writes(history, replicas, allowed=allowed_lost, clock_skew_s=clock_skew_s))
        out.append(divergent_keys(replicas))
    if read_your_writes_check:
        out.append(read_your_writes(history))
    if error_budget_fraction is not None:
        out.append(error_budget(history, budget=error_budget_fraction, window=window))
    if fault_time is not None:
        out.append(rto(history, fault_time, slo=slo, bucket_s=bucket_s, region=rto_region, deadline_s=rto_deadline_s))
    if divergence_samples is not None:
        if convergence_deadline_s is None:
            raise ValueError("run_checks: divergence_samples need convergence_deadline_s")
        out.append(convergence(divergence_samples, convergence_deadline_s, started=convergence_started))
    return out
