"""The reference regional service: one HTTP process per ECS task, behind the region's load balancer.

Run as a task would run it:

    python -m sut.service --port 8080 --region us-east-1 --table gameday-items \
        --endpoint http://127.0.0.1:4566 --task-id 0f3c... --az us-east-1a

Endpoints (every response carries X-Gameday-Region and X-Gameday-Task):
  PUT /items/{key}   body {"value": <any JSON>, "client_time": <epoch s, optional>}
                     -> PutItem to its own region's table; 200 {"key","value","region","task","written_at"}
  GET /items/{key}   -> GetItem (ConsistentRead); 200 the item, 404 when absent
  GET /health        -> 200 {"task","az","region"} (shallow: the load balancer's target health check)
Every response also carries Server-Timing (W3C): `app` (the task's whole handling, ms), `ddb`
(its DynamoDB call, retries included), `queue` (the wait for its turn, below) and whatever
Server-Timing the AWS endpoint returned.
Bad input (body not a JSON object, no "value", empty key) -> 400 {"message"}.

A task's CPU is finite: with --task-capacity-rps N (the harness passes service.task_capacity_rps)
the task serves N requests/s; beyond that requests wait their turn, and one that would wait more
than --max-queue-wait-s is answered 503 {"error": "OverCapacity"} at once (sut/capacity.py).

Written like a real service, not like a harness part: a plain boto3 client built from its own
flags and the environment's credentials, botocore's own retries switched off, and its retry
policy in one place (`call`): throttling, 5xx and connection errors are retried with exponential
backoff and full jitter until a total deadline (--retry-deadline-s), then the request is answered
503 with the last error. Client errors (ValidationException, ...) are not retried.

The item stores the writer (`region`, `task`, `az`) and `written_at` (epoch seconds), so a
replica shows where a value came from. boto3 is imported only after the flags are parsed and
the port is bound only once the client exists: an open port means the task can serve.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from .capacity import DEFAULT_MAX_WAIT_S, TaskCapacity

log = logging.getLogger("service")

# DynamoDB's and the SDKs' throttling codes (botocore's standard retry mode treats these as throttling).
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled",
    "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
})
POOL_CONNECTIONS = 32  # connections to the DynamoDB endpoint, and DynamoDB calls in flight at once
MAX_BODY_BYTES = 400 * 1024  # DynamoDB's item size limit: anything larger cannot be stored anyway


class BadRequest(Exception):
    """The client's fault: answered 400 with this message."""


class Unavailable(Exception):
    """DynamoDB did not answer successfully before the retry deadline: answered 503."""

    def __init__(self, message: str, attempts: int, error: str):
        super().__init__(message)
        self.attempts = attempts
        self.error = error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sut.service", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--region", required=True, help="the region this task runs in (its table's region)")
    p.add_argument("--table", required=True, help="DynamoDB table name")
    p.add_argument("--endpoint", default=None, help="AWS endpoint URL (default: the SDK's own)")
    p.add_argument("--task-id", required=True, help="this task's id (ECS task ARN's last part)")
    p.add_argument("--az", default="", help="this task's availability zone")
    p.add_argument("--retry-deadline-s", type=float, default=2.0,
                   help="total time a request may spend retrying DynamoDB before answering 503")
    p.add_argument("--retry-base-s", type=float, default=0.025, help="first backoff step (full jitter)")
    p.add_argument("--retry-cap-s", type=float, default=0.5, help="largest backoff step")
    p.add_argument("--connect-timeout-s", type=float, default=0.5)
    p.add_argument("--read-timeout-s", type=float, default=1.0)
    p.add_argument("--task-capacity-rps", type=float, default=_env_float("GAMEDAY_TASK_CAPACITY_RPS", 0.0),
                   help="requests/s this task serves, a model of its finite CPU (sut/capacity.py); beyond it "
                        "requests queue, and past --max-queue-wait-s they are answered 503. 0 = unlimited "
                        "(default: $GAMEDAY_TASK_CAPACITY_RPS, else 0)")
    p.add_argument("--max-queue-wait-s", type=float, default=DEFAULT_MAX_WAIT_S,
                   help="the longest a request waits for its turn before the task answers 503")
    args = p.parse_args(argv)
    if args.retry_deadline_s <= 0:
        p.error("--retry-deadline-s must be > 0")
    if args.task_capacity_rps < 0 or args.max_queue_wait_s < 0:
        p.error("--task-capacity-rps and --max-queue-wait-s must be >= 0")
    problem = endpoint_problem(args.endpoint)
    if problem:
        p.error(problem)
    return args


def _env_float(name: str, default: float) -> float:
    """A number from the task's environment (the docker image's contract passes settings so)."""
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        return default


def endpoint_problem(endpoint: str | None) -> str | None:
    """Why this service refuses to call DynamoDB at `endpoint`, or None. An explicit endpoint is the
    harness's local AWS endpoint, on loopback (the local and docker environments: containers share
    the host's network); on AWS the flag is left out and the SDK picks the region's endpoint. The
    check is the standard library's (not gameday.net): the service image holds only sut/."""
    if not endpoint:
        return None
    host = urlsplit(endpoint).hostname
    if not host:
        return f"--endpoint {endpoint!r} names no host"
    try:
        addresses = {info[4][0].split("%")[0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except OSError as e:
        return f"--endpoint {endpoint}: {host} does not resolve ({e})"
    outside = sorted(a for a in addresses if not ipaddress.ip_address(a).is_loopback)
    if outside:
        return (f"--endpoint {endpoint}: refused, {', '.join(outside)} is not a loopback address (an explicit "
                "endpoint must be the harness's local one on 127.0.0.0/8; leave --endpoint out on AWS)")
    return None


class DynamoStore:
    """The service's data access: a plain boto3 client and the retry policy around each call."""

    def __init__(self, args: argparse.Namespace):
        import boto3
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
        from botocore.config import Config

        self.table = args.table
        self.deadline_s = args.retry_deadline_s
        self.base_s = args.retry_base_s
        self.cap_s = args.retry_cap_s
        # botocore's retries off: the policy is ours (one deadline for the whole request).
        # total_max_attempts, not max_attempts: in a client Config, max_attempts counts *retries*
        # (max_attempts=1 is one retry, measured: 2 calls per attempt).
        self.client = boto3.client(
            "dynamodb", region_name=args.region, endpoint_url=args.endpoint or None,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"},
                          connect_timeout=args.connect_timeout_s, read_timeout=args.read_timeout_s,
                          max_pool_connections=POOL_CONNECTIONS),
        )
        # At most as many calls in flight as the pool has connections: one more (the server runs a
        # thread per load balancer connection, so dozens under a surge) would make urllib3 open a
        # connection and throw it away afterwards ("Connection pool is full, discarding"), and
        # each of those is a new connection at the endpoint (measured: issue 17's tail latency).
        self._connections = threading.BoundedSemaphore(POOL_CONNECTIONS)
        self._ser = TypeSerializer()
        self._de = TypeDeserializer()

    # -- the retry policy ------------------------------------------------------------------------
    @staticmethod
    def retryable(exc: BaseException) -> bool:
        from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError

        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            return True  # refused, reset, timed out: the call may not have reached DynamoDB
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return code in THROTTLING_CODES or status >= 500
        return False

    def call(self, operation: str, **kwargs):
        from tenacity import RetryError, Retrying, retry_if_exception, stop_before_delay, wait_random_exponential

        retrying = Retrying(
            retry=retry_if_exception(self.retryable),
            # full jitter: uniform(0, min(cap, base * 2^n)) (AWS Architecture Blog, "Exponential Backoff And Jitter")
            wait=wait_random_exponential(multiplier=self.base_s, max=self.cap_s),
            # never start an attempt (or sleep) past the deadline
            stop=stop_before_delay(self.deadline_s),
            reraise=False,
        )
        call = getattr(self.client, operation)

        def fn(**kw):
            with self._connections:   # per attempt: a backoff sleep holds no connection
                return call(**kw)

        t0 = time.perf_counter()
        try:
            out = retrying(fn, **kwargs)
            _timing_add("ddb", time.perf_counter() - t0)
            # the AWS endpoint's own share, when it reports one (the local router does: moto's time)
            upstream = out.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("server-timing")
            if upstream:
                _timing_pass(upstream)
            return out
        except RetryError as e:
            last = e.last_attempt.exception()
            attempts = e.last_attempt.attempt_number
            error = _error_name(last)
            raise Unavailable(f"DynamoDB {operation} failed after {attempts} attempts within "
                              f"{self.deadline_s:g}s: {last}", attempts, error) from None

    # -- items -------------------------------------------------------------------------------------
    def put(self, key: str, value, client_time, writer: dict) -> dict:
        written_at = time.time()
        item = {"pk": {"S": key}, "value": self._ser.serialize(value),
                "written_at": {"N": repr(round(written_at, 6))}}
        if client_time is not None:
            item["client_time"] = self._ser.serialize(client_time)
        for k, v in writer.items():
            item[k] = {"S": v}
        self.call("put_item", TableName=self.table, Item=item)
        return {"written_at": written_at}

    def get(self, key: str) -> dict | None:
        out = self.call("get_item", TableName=self.table, Key={"pk": {"S": key}}, ConsistentRead=True)
        item = out.get("Item")
        if item is None:
            return None
        plain = {k: self._de.deserialize(v) for k, v in item.items()}
        return {"key": plain.pop("pk"), **plain}


# Server-Timing (W3C) entries of the request being served, per handler thread: where a request's
# time went (the task's whole handling "app", its DynamoDB call "ddb", and what the endpoint
# reported), read by benchmarks/bench_latency.py next to the load balancer's own entry.
_timings = threading.local()


def _timing_add(name: str, seconds: float) -> None:
    entries = getattr(_timings, "entries", None)
    if entries is not None:
        entries.append(f"{name};dur={seconds * 1000:.2f}")


def _timing_pass(header: str) -> None:
    entries = getattr(_timings, "entries", None)
    if entries is not None:
        entries.append(header)


def _error_name(exc: BaseException | None) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "ClientError")
    return type(exc).__name__ if exc else "unknown"


def _no_constants(name: str):
    raise BadRequest(f"{name} cannot be stored (DynamoDB numbers are finite)")


def _json_default(o):
    if isinstance(o, Decimal):
        return int(o) if o == o.to_integral_value() else float(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, (bytes, bytearray)):
        return o.decode("utf-8", "replace")
    return str(o)


class CapacityGate:
    """The task's capacity rule (sut/capacity.py) on the real clock, shared by the handler threads
    (one per load balancer connection)."""

    def __init__(self, rate_rps: float, max_wait_s: float):
        self.model = TaskCapacity(rate_rps, max_wait_s)
        self._lock = threading.Lock()

    def enter(self) -> float | None:
        """Wait for this request's turn; the seconds waited, or None: the queue is full (answer 503)."""
        if self.model.unlimited:
            return 0.0
        with self._lock:
            wait = self.model.admit(time.monotonic())
        if wait:
            time.sleep(wait)   # the model's queueing delay: the requests before this one use the task's CPU
        return wait


class ServiceHandler(BaseHTTPRequestHandler):
    """The endpoints; make_handler binds a store and the task's flags to a subclass (the server
    builds one handler per request from the class)."""

    store: DynamoStore
    args: argparse.Namespace
    capacity: CapacityGate
    identity: dict[str, str]    # response headers naming the task
    writer: dict[str, str]      # what each item stores about its writer

    protocol_version = "HTTP/1.1"
    server_version = "gameday-service"
    # headers and body in one segment: with Nagle on, a split response meets the peer's
    # delayed ACK and every keep-alive request costs 40 ms
    wbufsize = -1

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *a):  # noqa: A002 - the stdlib's name
        pass  # one log line per request would cost more than the request

    def send_json(self, status: int, obj) -> None:
        body = json.dumps(obj, default=_json_default).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in self.identity.items():
            self.send_header(k, v)
        started = getattr(_timings, "started", None)
        if started is not None:
            entries = [f"app;dur={(time.perf_counter() - started) * 1000:.2f}", *_timings.entries]
            self.send_header("Server-Timing", ", ".join(entries))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise BadRequest("send the body with a Content-Length (chunked bodies are not supported)")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise BadRequest("Content-Length is not a number") from None
        if n > MAX_BODY_BYTES:
            self.close_connection = True
            raise BadRequest(f"body is {n} bytes; at most {MAX_BODY_BYTES}")
        return self.rfile.read(n) if n > 0 else b""

    def _probe(self, path: str) -> bool:
        """The load balancer's health check, which takes no turn in the task's queue: ALB's probe says
        ELB-HealthChecker (the local one sends no User-Agent; clients, through the load balancer, send
        theirs). Its rate is an artefact of the compressed profile (every 0.5 s, not AWS's 10-30 s):
        counted, it would eat a fifth of a small task's capacity that on AWS it never takes."""
        agent = self.headers.get("User-Agent")
        return path == "/health" and (not agent or agent.startswith("ELB-HealthChecker"))

    def _key(self, path: str) -> str | None:
        if not path.startswith("/items/") and path != "/items":
            return None
        key = unquote(path[len("/items/"):])
        if not key:
            raise BadRequest("empty key: use /items/{key}")
        return key

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        _timings.started, _timings.entries = time.perf_counter(), []
        try:
            body = self._body()
            wait = 0.0 if self._probe(path) else self.capacity.enter()
            if wait is None:
                self.send_json(503, {"message": f"task over capacity ({self.args.task_capacity_rps:g} requests/s): "
                                                f"queue full ({self.args.max_queue_wait_s:g}s)", "error": "OverCapacity"})
                return
            if wait:
                _timing_add("queue", wait)
            if path == "/health" and self.command == "GET":
                self.send_json(200, {"task": self.args.task_id, "az": self.args.az, "region": self.args.region})
                return
            key = self._key(path)
            if key is None:
                self.send_json(404, {"message": f"no route {self.command} {path}"})
            elif self.command == "PUT":
                self._put(key, body)
            elif self.command == "GET":
                self._get(key)
            else:
                self.send_json(405, {"message": f"{self.command} not allowed on /items/{{key}}: GET or PUT"})
        except BadRequest as e:
            self.send_json(400, {"message": str(e)})
        except Unavailable as e:
            log.warning("%s %s: %s", self.command, path, e)
            self.send_json(503, {"message": str(e), "error": e.error, "attempts": e.attempts})
        except Exception as e:  # noqa: BLE001 - one bad request must not take the task down
            from botocore.exceptions import ClientError

            if isinstance(e, ClientError):
                code = _error_name(e)
                status = 400 if code in ("ValidationException", "SerializationException") else 500
                self.send_json(status, {"message": str(e), "error": code})
            else:
                log.exception("%s %s failed", self.command, path)
                self.send_json(500, {"message": f"{type(e).__name__}: {e}"})

    def _put(self, key: str, raw: bytes) -> None:
        try:
            doc = json.loads(raw, parse_float=Decimal, parse_constant=_no_constants) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadRequest(f"body is not JSON: {e}") from None
        except RecursionError:
            raise BadRequest("body is nested too deeply") from None
        if not isinstance(doc, dict):
            raise BadRequest('body must be a JSON object like {"value": ..., "client_time": ...}')
        if "value" not in doc:
            raise BadRequest('body has no "value"')
        client_time = doc.get("client_time")
        if client_time is not None and (isinstance(client_time, bool) or not isinstance(client_time, (int, Decimal))):
            raise BadRequest("client_time must be a number (epoch seconds)")
        try:
            written = self.store.put(key, doc["value"], client_time, self.writer)
        except (TypeError, ArithmeticError) as e:  # the serializer refuses NaN, Infinity, > 38 digits
            raise BadRequest(f"value cannot be stored: {e}") from None
        self.send_json(200, {"key": key, "value": doc["value"], "region": self.args.region, "task": self.args.task_id,
                             "written_at": written["written_at"]})

    def _get(self, key: str) -> None:
        item = self.store.get(key)
        if item is None:
            self.send_json(404, {"message": f"no item {key!r}", "key": key})
        else:
            self.send_json(200, item)

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = _dispatch


def make_handler(store: DynamoStore, args: argparse.Namespace) -> type[ServiceHandler]:
    identity = {"X-Gameday-Region": args.region, "X-Gameday-Task": args.task_id, "X-Gameday-AZ": args.az}
    writer = {"region": args.region, "task": args.task_id, "az": args.az}
    capacity = CapacityGate(args.task_capacity_rps, args.max_queue_wait_s)
    return type("Handler", (ServiceHandler,), {"store": store, "args": args, "identity": identity, "writer": writer,
                                               "capacity": capacity})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s task {args.task_id[:8]} %(levelname)s %(message)s")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    store = DynamoStore(args)
    try:
        server = Server((args.host, args.port), make_handler(store, args))
    except OSError as e:
        print(f"cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1

    def on_term(signum, frame):
        # shutdown() waits for serve_forever() to return, and serve_forever runs in this
        # (the main) thread: ask from another thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log.info("serving %s table %s on %s:%d (az %s, capacity %s)", args.region, args.table, args.host, args.port,
             args.az, f"{args.task_capacity_rps:g} requests/s" if args.task_capacity_rps > 0 else "unlimited")
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
