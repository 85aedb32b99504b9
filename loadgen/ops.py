"""The operations a simulated user performs, one per request slot, each recorded in the history.

  write       PUT /items/{unique key} {"value", "client_time"} to the slot's region
  read_own    GET the key this user just wrote, from the region that took the write
  read_cross  GET a key from another region than the one that took the write (replication)

Where each lands:
  - a regional slot for region R sends every operation to R's load balancer (so a surge of N/s
    at R is N requests/s at R): read_own reads this user's last write to R, read_cross reads
    at R a key that another region acknowledged (written by any user of this process);
  - a DNS slot writes to the region the user's cached DNS answer names; read_own reads its last
    write back from the region that served it, read_cross from another region's load balancer.
A read with nothing to read yet is a write instead.

Every request goes through Locust's client with catch_response, so Locust counts it once; the
history completion is written by the request-event listener (loadgen.locustfile), at the very
moment Locust counts it: the op dict travels in the request's context. Requests are named
"<role> <kind> <region that answered>" ("... <region aimed> unanswered" when nothing answered),
so Locust's table shows per region and operation what the service saw.
"""

from __future__ import annotations

import json
import random
import time
from collections import deque

from gameday.loadgen.context import LoadContext
from gameday.loadgen.history import classify

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class Target:
    """Where a slot's write goes: a region (or None: an address no region owns), the address
    dialled and the base URL; plus, for DNS followers, when the answer was looked up and its TTL."""

    __slots__ = ("region", "address", "base", "dns_at", "dns_ttl")

    def __init__(self, region, address, base, dns_at=None, dns_ttl=None):
        self.region, self.address, self.base, self.dns_at, self.dns_ttl = region, address, base, dns_at, dns_ttl


class Operations:
    def __init__(self, user, ctx: LoadContext, role: str, process: str):
        self.user = user
        self.ctx = ctx
        self.role = role
        self.process = process
        self.rng = random.Random()
        mix = ctx.plan.surge_op_mix if role == "regional" else ctx.plan.op_mix
        kinds = [k for k, w in mix.items() if w > 0]
        self._kinds = kinds
        self._weights = [mix[k] for k in kinds]
        self.mine: deque = deque(maxlen=16)     # (key, value, region that acknowledged it)

    def choose(self) -> str:
        return self.rng.choices(self._kinds, self._weights)[0] if len(self._kinds) > 1 else self._kinds[0]

    # -- one slot ---------------------------------------------------------------------------------------
    def run(self, slot, target_fn) -> None:
        """target_fn(slot) -> Target (may raise ResolveError for DNS users)."""
        kind = self.choose()
        regional = self.role == "regional"
        if kind == "ping":
            return self._ping(slot, target_fn)
        if kind == "read_own" and regional:
            region = slot.stream.region
            mine = [m for m in self.mine if m[2] == region]
            if mine:
                key, _v, _r = mine[-1]
                return self._read(kind, key, region)
        elif kind == "read_own" and self.mine:
            key, _v, region = self.mine[-1]
            return self._read(kind, key, region)
        elif kind == "read_cross" and regional:
            region = slot.stream.region
            pool = [k for r, q in self.ctx.acked.items() if r != region for k in q]
            if pool:
                return self._read(kind, self.rng.choice(pool), region)
        elif kind == "read_cross" and self.mine:
            key, _v, wrote_at = self.rng.choice(self.mine)
            others = [r for r in self.ctx.lb_url if r != wrote_at]
            if others:
                return self._read(kind, key, self.rng.choice(others))
        self._write(slot, target_fn)

    # -- requests -----------------------------------------------------------------------------------------
    def _op(self, kind: str, key: str, value, region, address, extra: dict | None = None) -> dict:
        op = {"id": f"{self.ctx.run}:{self.ctx.worker}:{self.ctx.next_id()}", "process": self.process,
              "op": kind if kind in ("write", "ping") else "read", "kind": kind, "key": key, "value": value,
              "region": region, "address": address, "role": self.role, "worker": self.ctx.worker}
        if extra:
            op.update(extra)
        if self.ctx.writer is not None:
            self.ctx.writer.invoke(op)
        else:
            op["time"] = time.time()
            op["mono"] = time.monotonic()
        return op

    def _write(self, slot, target_fn) -> None:
        n = self.ctx.next_id()
        key = f"{self.ctx.run}-{self.ctx.worker}-{n}"
        value = f"{self.process}#{n}"
        try:
            target = target_fn(slot)
        except Exception as e:  # noqa: BLE001 - ResolveError (and anything else a lookup raises)
            return self._unsent("write", key, value, e)
        extra = {"dns_at": target.dns_at, "dns_ttl": target.dns_ttl} if target.dns_at is not None else None
        op = self._op("write", key, value, target.region, target.address, extra)
        body = json.dumps({"value": value, "client_time": op["time"]})
        status, served = self._send(op, "PUT", target.base + "/items/" + key, body)
        if op.get("outcome") == "ok" and served in self.ctx.acked:
            self.mine.append((key, value, served))
            self.ctx.acked[served].append(key)

    def _ping(self, slot, target_fn) -> None:
        try:
            target = target_fn(slot)
        except Exception as e:  # noqa: BLE001 - ResolveError (and anything else a lookup raises)
            return self._unsent("ping", None, None, e)
        op = self._op("ping", None, None, target.region, target.address)
        self._send(op, "GET", target.base + "/health", None)

    def _read(self, kind: str, key: str, region: str) -> None:
        op = self._op(kind, key, None, region, self.ctx.lb_address[region])
        self._send(op, "GET", self.ctx.lb_url[region] + "/items/" + key, None)

    def _send(self, op: dict, method: str, url: str, body: str | None):
        kind = op["kind"]
        with self.user.client.request(method, url, name=f"{self.role} {kind} {op['region']}", data=body,
                                      headers=JSON_HEADERS, catch_response=True,
                                      context={"gameday": op}) as resp:
            status = resp.status_code or 0
            headers = resp.headers or {}
            served = headers.get("X-Gameday-Region") if status else None
            task = headers.get("X-Gameday-Task") if status else None
            outcome, error = classify(kind, status, task is not None, getattr(resp, "error", None) if not status else None)
            if outcome == "ok" and op["op"] == "read":
                op["value"] = _read_value(resp) if status == 200 else None
            op.update(outcome=outcome, status=status, served_by=served, task=task,
                      az=headers.get("X-Gameday-AZ") if status else None, error=error)
            name = f"{self.role} {kind} {served}" if served else f"{self.role} {kind} {op['region']} unanswered"
            resp.request_meta["name"] = op["name"] = name
            if outcome == "ok":
                resp.success()
            else:
                resp.failure(error or f"HTTP {status}")
        return status, served

    def _unsent(self, kind: str, key: str, value, error: BaseException) -> None:
        """The request could not be sent (the name did not resolve): Locust counts a failure and the
        history records a fail, through the same request event."""
        op = self._op(kind, key, value, None, None)
        text = f"{type(error).__name__}: {error}"
        name = f"{self.role} {kind} unresolved"
        op.update(outcome="fail", status=0, served_by=None, task=None, az=None, error=text, name=name)
        self.user.environment.events.request.fire(
            request_type="PUT" if kind == "write" else "GET", name=name, response_time=0.0,
            response_length=0, exception=error, context={"gameday": op}, response=None,
            start_time=op["time"], url=None)


def _read_value(resp):
    try:
        doc = json.loads(resp.content or b"null")
    except ValueError:
        return None
    return doc.get("value") if isinstance(doc, dict) else None
