"""One region's load balancer listener: accepts client requests on the region's loopback address
and forwards each to a healthy target, round robin, as an ALB does; 503 when no target is
healthy, 502 when the chosen target fails mid-request. Every answered request is reported to
`on_request` (metrics, the ECS scheduler's request count).

A data-plane block (fault block_region): "refuse" closes the listening socket (connections
refused), "hang" accepts and never answers until the block is lifted or HANG_MAX_S passes
(clients time out first).

A response failure (fault fail_responses): a share of the requests routed to a target are answered
with a 5XX in the target's name (its headers, counted as the target's 5XX) without being forwarded,
as the tasks of a failing deployment would answer them; which ones is deterministic (ResponseFailure).
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from typing import Callable

from gameday.environments.local.target_health import Target
from gameday.httpfwd import LoopbackServer, QuietHandler, UpstreamPool, forward_headers

HANG_MAX_S = 60.0  # a black-holed connection is dropped after this (clients give up sooner)
HOLD_POLL_S = 0.5

# on_request(status, target_error, response_s or None, started_at epoch s)
RequestObserver = Callable[[int, bool, "float | None", float], None]


class ResponseFailure:
    """Which requests a fail_responses fault answers with `status`: the n-th request (from 0) fails
    when floor((n + 1) x share) > floor(n x share), so errors are spread evenly and the first N
    requests get exactly floor(N x share) of them (a test can predict the counts). Thread-safe."""

    def __init__(self, share: float, status: int = 500):
        if not 0 < share <= 1:
            raise ValueError(f"share must be within 0 < share <= 1, got {share!r}")
        if not 500 <= status <= 599:
            raise ValueError(f"status must be a 5XX, got {status!r}")
        self.share, self.status = share, status
        self.seen = self.failed = 0
        self._lock = threading.Lock()

    def next_fails(self) -> bool:
        with self._lock:
            n = self.seen
            self.seen += 1
            fails = int((n + 1) * self.share + 1e-9) > int(n * self.share + 1e-9)
            self.failed += fails
            return fails

    def status_dict(self) -> dict:
        return {"share": self.share, "status": self.status, "requests": self.seen, "failed": self.failed}


class RegionProxy:
    def __init__(self, region: str, address: str, port: int, *, healthy_targets: Callable[[], list[Target]],
                 blocked: Callable[[], "str | None"], on_request: RequestObserver, pool: UpstreamPool):
        self.region, self.address, self.port = region, address, port
        self.healthy_targets, self.blocked, self.on_request = healthy_targets, blocked, on_request
        self.pool = pool
        self.server: LoopbackServer | None = None
        self._rr = itertools.count()
        self._hold = threading.Condition()
        self._stopping = False
        self.held = 0   # requests held by a "hang" block right now
        self.failure: ResponseFailure | None = None   # a fail_responses fault in effect

    # -- listening socket ---------------------------------------------------------------------------
    def open(self) -> None:
        if self.server is not None or self._stopping:
            return
        proxy = self

        class Handler(QuietHandler):
            def _any(self) -> None:
                proxy.handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any

        self.server = LoopbackServer(self.address, self.port, Handler).start(f"lb-{self.region}")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def block_changed(self) -> None:
        """The region's block changed: "refuse" closes the socket, anything else (re)opens it,
        and held ("hang") requests re-check whether they are still held."""
        if self.blocked() == "refuse":
            self.close()
        else:
            self.open()
        with self._hold:
            self._hold.notify_all()

    def stop(self) -> None:
        self._stopping = True
        with self._hold:
            self._hold.notify_all()
        self.close()

    # -- request path -----------------------------------------------------------------------------------
    def pick(self) -> Target | None:
        healthy = self.healthy_targets()
        return healthy[next(self._rr) % len(healthy)] if healthy else None

    def handle(self, h: QuietHandler) -> None:
        if self.blocked() == "hang":
            self._hang()
            h.close_connection = True
            return
        body = h.read_body()
        t0 = time.time()
        target = self.pick()
        status, target_error = 503, False
        region_header = {"X-Gameday-Region": self.region}
        failure = self.failure
        if target is None:
            h.send_json(503, {"message": f"no healthy targets in {self.region}"}, region_header)
        elif failure is not None and failure.next_fails():
            # answered in the target's name and never forwarded: nothing the request asked is done
            status, target_error = failure.status, True
            h.send_json(status, {"message": f"injected by gameday (fault fail_responses): HTTP {status}"},
                        {**region_header, "X-Gameday-Task": target.key, "X-Gameday-AZ": target.az,
                         "X-Gameday-Fault": "fail_responses"})
        else:
            try:
                status, headers, data = self.pool.request(target.host, target.port, h.command, h.path, body,
                                                          forward_headers(h))
                h.send_raw(status, data, with_target_time(headers, time.time() - t0))
                target_error = status >= 500
            except (OSError, http.client.HTTPException) as e:
                status = 502
                h.send_json(502, {"message": f"target {target.key} failed: {e}"}, region_header)
        self.on_request(status, target_error, None if target is None else time.time() - t0, t0)

    def _hang(self) -> None:
        deadline = time.monotonic() + HANG_MAX_S
        with self._hold:
            self.held += 1
            try:
                while self.blocked() == "hang" and time.monotonic() < deadline and not self._stopping:
                    self._hold.wait(HOLD_POLL_S)
            finally:
                self.held -= 1


def with_target_time(headers: list[tuple[str, str]], target_s: float) -> list[tuple[str, str]]:
    """The target's headers with the load balancer's `target` entry added to Server-Timing (W3C;
    ALB's TargetResponseTime: from forwarding the request to the target's last byte), so a client
    sees the load balancer's own share as its total minus this (benchmarks/bench_latency.py)."""
    entry = f"target;dur={target_s * 1000:.2f}"
    out, merged = [], False
    for k, v in headers:
        if not merged and k.lower() == "server-timing":
            k, v, merged = "Server-Timing", f"{entry}, {v}", True
        out.append((k, v))
    if not merged:
        out.append(("Server-Timing", entry))
    return out
