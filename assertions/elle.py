"""Export a client history in the EDN form Jepsen's checkers read, for teams that want a second
opinion from Elle (or Knossos) on the same run. gameday does not run them: users do, e.g. with
elle-cli (`java -jar elle-cli.jar --model rw-register history.edn`).

Single-key writes and reads are a read/write-register workload. Two forms:

- "rw-register" (Elle's rw-register, the default): every operation is a one-micro-op transaction,
    {:type :invoke, :f :txn, :value [[:w "k1" 3]], :process 0, :time 1200000, :index 0}
    {:type :ok,     :f :txn, :value [[:w "k1" 3]], :process 0, :time 9100000, :index 1}
    {:type :invoke, :f :txn, :value [[:r "k1" nil]], ...}   then   {:type :ok, ..., :value [[:r "k1" 3]]}
- "register" (jepsen.independent tuples of a per-key register, as Knossos checks them):
    {:type :invoke, :f :write, :value ["k1" 3], ...}   {:type :ok, :f :read, :value ["k1" 3], ...}

Jepsen's conventions are kept: one line per operation event, invoke before its completion,
`:index` counts from 0 in time order, `:time` is nanoseconds since the first event, a process
has at most one operation in flight, and a process whose operation ended `:info` (unknown) is
never used again (Jepsen gives the client a new process). A read answered 404 reads nil (the
register's initial state); an invoke that never completed gets an `:info` completion at the
end. Elle's rw-register needs writes to be unique per key, which the load generator ensures.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

from gameday.assertions.checkers import INF, Operation, operations

FORMS = ("rw-register", "register")


def edn(value: Any) -> str:
    """EDN text for the plain values a history holds (nil, booleans, numbers, strings, lists, maps)."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "##NaN" if math.isnan(value) else ("##Inf" if value > 0 else "##-Inf")
        return repr(value)
    if isinstance(value, str):
        # EDN strings escape like JSON's, minus \u for the characters JSON would escape: keep UTF-8
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(edn(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{edn(k)} {edn(v)}" for k, v in value.items()) + "}"
    return edn(str(value))


def _read_value(o: Operation) -> Any:
    if o.status == 404 or o.status == "404":
        return None
    return o.value


def events(history: Sequence[dict], *, form: str = "rw-register") -> Iterator[str]:
    """The history as EDN lines (no trailing newline), in time order."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}: expected one of {', '.join(FORMS)}")
    ops = [o for o in operations(history) if o.op in ("write", "read")]
    if not ops:
        return
    finite = [o.invoked for o in ops if o.invoked != -INF] + [o.completed for o in ops if o.completed != INF]
    t0 = min(finite) if finite else 0.0
    t_end = max(finite) if finite else 0.0
    # (time, 0 = invoke / 1 = completion, op number, event): invokes sort before completions at a tie
    timeline: list[tuple[float, int, int, str, Operation]] = []
    for n, o in enumerate(ops):
        inv = o.invoked if o.invoked != -INF else (o.completed if o.completed != INF else t0)
        done = o.completed if o.completed != INF else t_end
        if done < inv:
            done = inv
        timeline.append((inv, 0, n, "invoke", o))
        timeline.append((done, 1, n, o.type, o))   # an open invoke is `info` already (operations())
    timeline.sort(key=lambda x: (x[0], x[1], x[2]))

    # processes: one per client, at most one open operation each; retired after :info
    next_process = 0
    current: dict[Any, int] = {}
    busy: set[int] = set()
    process_of: dict[int, int] = {}
    index = 0
    for t, phase, n, typ, o in timeline:
        if phase == 0:
            client = o.client if o.client is not None else ("op", n)
            p = current.get(client)
            if p is None or p in busy:
                # a new client, or a client with operations in flight at once: give it its own process
                p = next_process
                next_process += 1
                current[client] = p
            busy.add(p)
            process_of[n] = p
        else:
            p = process_of[n]
            busy.discard(p)
            if typ == "info":
                client = o.client if o.client is not None else ("op", n)
                if current.get(client) == p:
                    del current[client]
        yield _line(o, typ, p, int(round((t - t0) * 1e9)), index, form, phase == 0)
        index += 1


def _line(o: Operation, typ: str, process: int, time_ns: int, index: int, form: str, invoke: bool) -> str:
    key = o.key
    if o.op == "write":
        value = o.value
        f = "write"
        micro = "w"
    else:
        value = None if invoke or typ != "ok" else _read_value(o)
        f = "read"
        micro = "r"
    if form == "rw-register":
        val = f"[[:{micro} {edn(key)} {edn(value)}]]"
        f = "txn"
    else:
        val = f"[{edn(key)} {edn(value)}]"
    return (f"{{:type :{typ if not invoke else 'invoke'}, :f :{f}, :value {val}, :process {process}, "
            f":time {time_ns}, :index {index}}}")


def export(history: Sequence[dict], path: str | Path | io.TextIOBase, *, form: str = "rw-register") -> int:
    """Write the EDN history (one operation event per line) to a path or open text file; returns
    the number of lines."""
    n = 0
    if isinstance(path, (str, Path)):
        with open(path, "w", encoding="utf-8") as f:
            for line in events(history, form=form):
                f.write(line + "\n")
                n += 1
        return n
    for line in events(history, form=form):
        path.write(line + "\n")
        n += 1
    return n
