"""Small pieces shared by the HTTP front doors the local environment runs (the AWS API router,
the regional load balancers, the control API): a threaded keep-alive server bound to one
loopback address, and forwarding a request upstream over pooled keep-alive connections.

Written by hand on purpose: it sits on the hot path of every request, and the standard
library's http.server + http.client do it with no dependency and about 0.3 ms per hop.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gameday.net import LOCAL_ONLY, check_address

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade"}


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler]):
        super().__init__((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self, name: str) -> "LoopbackServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        try:
            self.shutdown()
        finally:
            self.server_close()
        if self._thread:
            self._thread.join(timeout=5)


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one segment: with Nagle on, a split response meets the
    # peer's delayed ACK and every keep-alive request costs 40 ms.
    wbufsize = -1

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass  # one line per request would cost more than the request itself

    def read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send_json(self, status: int, obj, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def send_raw(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


class UpstreamPool:
    """Keep-alive connections to each upstream, shared by every server thread: a request takes an
    idle connection (the most recently used) or opens one, and gives it back when the answer is
    read. Connections outlive the thread that opened them: a front door runs one thread per
    client connection, and per-thread connections died with their thread, so every new client
    connection meant a new upstream connection, a new thread in the upstream server (moto) and,
    under load, SYNs dropped at its listen queue (a 1 s retransmit: the tail of issue 17).

    Every upstream is checked against `allowed` (networks, gameday.net) before the first
    connection to it: the local front doors forward only to loopback."""

    def __init__(self, timeout_s: float = 10.0, allowed=LOCAL_ONLY):
        self.timeout_s = timeout_s
        self.allowed = allowed
        self._checked: set[str] = set()   # hosts already allowed: the check stays off the hot path
        self._idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self.opened = 0                   # connections opened so far (reuse is the point: tests read it)

    def _take(self, key: tuple[str, int]) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._idle.get(key)
            return idle.pop() if idle else None

    def _give_back(self, key: tuple[str, int], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(conn)

    def _open(self, host: str, port: int, timeout_s: float) -> http.client.HTTPConnection:
        if host not in self._checked:
            check_address(host, self.allowed, what="a forwarded request")
            self._checked.add(host)
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.opened += 1
        return conn

    def request(self, host: str, port: int, method: str, path: str, body: bytes,
                headers: dict[str, str], timeout_s: float | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        key = (host, port)
        timeout = timeout_s or self.timeout_s
        for attempt in (1, 2):
            conn = self._take(key)
            fresh = conn is None
            if fresh:
                conn = self._open(host, port, timeout)
            elif conn.timeout != timeout and conn.sock is not None:
                conn.timeout = timeout
                conn.sock.settimeout(timeout)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                conn.close()
                # a stale keep-alive connection: retry once on a fresh one, never twice
                if fresh or attempt == 2:
                    raise e
                continue
            except (OSError, http.client.HTTPException):
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                self._give_back(key, conn)
            return resp.status, resp.getheaders(), data
        raise RuntimeError("unreachable")

    def close(self) -> None:
        """Close the idle connections (those in use are closed by their request if it fails)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


def forward_headers(handler: BaseHTTPRequestHandler, host_header: str | None = None) -> dict[str, str]:
    out = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
    if host_header:
        out["Host"] = host_header
    return out
