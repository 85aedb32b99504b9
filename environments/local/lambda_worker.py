"""One warm Lambda execution environment: a process that imports the handler once (the
init phase) and then runs one invocation at a time for the Lambda runner.

The process environment already is the Lambda environment (the runner spawned us with it):
AWS_REGION, AWS_ENDPOINT_URL, credentials, _HANDLER, LAMBDA_TASK_ROOT, the function's own
variables. So a handler that makes `boto3.client("route53")` at import time works unchanged.

Protocol with the runner, one JSON object per line:
  stdin  <- {"type": "invoke", "request_id", "event", "deadline_ms", "invoked_function_arn"}
  stdout -> {"type": "ready", "init_ms"} | {"type": "init_error", "error"}   (once, after import)
            {"type": "log", "line"}                                           (as the handler logs)
            {"type": "result", "request_id", "ok", "result" | "error", "started_at", "duration_ms", "max_memory_mb"}
The real stdout is kept for the protocol alone: fd 1 is pointed at stderr (the worker's log
file), and sys.stdout/sys.stderr/logging go to the invocation's log, as Lambda's runtime
sends them to CloudWatch Logs.

Deliberately standard-library only, and importing nothing from gameday: this file is the
runtime, the handler's code is the only thing imported into it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import resource
import sys
import threading
import time
import traceback

# Variables that steer the AWS SDK. Anything the runner did not set is the host's and must
# not leak into the function (a host AWS_PROFILE would outrank the function's credentials).
_SDK_PREFIXES = ("AWS_", "BOTO_", "BOTOCORE_")
LAMBDA_ENV_KEYS_VAR = "GAMEDAY_LAMBDA_ENV_KEYS"

# Lambda's Python runtime log format (text format), one line per record.
LOG_FORMAT = "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s"


class _Protocol:
    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, msg: dict) -> None:
        line = json.dumps(msg, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class _LogStream(io.TextIOBase):
    """What print() and logging write to: each complete line is one log line of the current
    invocation (lines written between invocations land in the next one, as in CloudWatch)."""

    def __init__(self, proto: _Protocol, tee):
        super().__init__()
        self._proto = proto
        self._tee = tee
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if not s:
            return 0
        try:
            self._tee.write(s)
            self._tee.flush()
        except OSError:
            pass
        with self._lock:
            text = self._partial + s
            *lines, self._partial = text.split("\n")
        for line in lines:
            self._proto.send({"type": "log", "line": line})
        return len(s)

    def flush(self) -> None:
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest:
            self._proto.send({"type": "log", "line": rest})

    def event(self, text: str) -> None:
        """One log event of several lines, as Lambda's runtime logs an uncaught error with its traceback."""
        self.flush()
        try:
            self._tee.write(text if text.endswith("\n") else text + "\n")
            self._tee.flush()
        except OSError:
            pass
        self._proto.send({"type": "log", "line": text.rstrip("\n")})


class _RequestIdFilter(logging.Filter):
    request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


class LambdaContext:
    """The context object of Lambda's Python runtime (same attribute names and types)."""

    def __init__(self, request_id: str, deadline_ms: int, invoked_function_arn: str):
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        # a string, as in Lambda's runtime (it is read from the environment)
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))


def _error(exc: BaseException, error_type: str | None = None, message: str | None = None) -> dict:
    return {"type": error_type or type(exc).__name__,
            "message": message if message is not None else str(exc),
            "stack": traceback.format_exception(exc)[-6:]}


def _scrub_environment() -> None:
    keep = set(filter(None, os.environ.pop(LAMBDA_ENV_KEYS_VAR, "").split(",")))
    for key in list(os.environ):
        if key.startswith(_SDK_PREFIXES) and key not in keep:
            del os.environ[key]


def _load_handler(spec: str):
    # Lambda's _HANDLER is module.function (the last dot separates); module:function is accepted too
    module_name, _, function_name = spec.partition(":") if ":" in spec else spec.rpartition(".")
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        # Lambda's wording, so users recognise it
        raise _InitError(_error(e, "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {e}"))
    except Exception as e:  # noqa: BLE001 - an exception at import time fails the init phase
        raise _InitError(_error(e))
    fn = getattr(module, function_name, None)
    if not callable(fn):
        raise _InitError({"type": "Runtime.HandlerNotFound",
                          "message": f"Handler '{function_name}' missing on module '{module_name}'", "stack": []})
    return fn


class _InitError(Exception):
    def __init__(self, error: dict):
        super().__init__(error["message"])
        self.error = error


def main() -> int:
    # The protocol keeps the real stdout; everything else written to fd 1 goes to the log file.
    proto = _Protocol(os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8"))
    os.dup2(2, 1)
    log_stream = _LogStream(proto, sys.__stderr__)
    sys.stdout = sys.stderr = log_stream

    _scrub_environment()
    # This file's own directory must not shadow the function's imports (it holds dns.py, ...).
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    sys.path.insert(0, task_root)

    request_filter = _RequestIdFilter()
    handler = logging.StreamHandler(log_stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S"))
    handler.formatter.converter = time.gmtime
    handler.addFilter(request_filter)
    root = logging.getLogger()
    root.addHandler(handler)
    # Lambda's default (text log format, no log-level config): WARNING unless the function sets it.
    root.setLevel(os.environ.get("AWS_LAMBDA_LOG_LEVEL", "WARNING").upper())

    t0 = time.perf_counter()
    try:
        fn = _load_handler(os.environ["_HANDLER"])
    except _InitError as e:
        log_stream.event(f"[ERROR] {e.error['type']}: {e.error['message']}\n" + "".join(e.error.get("stack", [])))
        proto.send({"type": "init_error", "error": e.error,
                    "init_ms": round((time.perf_counter() - t0) * 1000, 3)})
        return 1
    log_stream.flush()
    proto.send({"type": "ready", "init_ms": round((time.perf_counter() - t0) * 1000, 3), "pid": os.getpid()})

    for raw in sys.stdin.buffer:
        try:
            msg = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if msg.get("type") != "invoke":
            continue
        request_id = msg["request_id"]
        request_filter.request_id = request_id
        context = LambdaContext(request_id, msg["deadline_ms"], msg.get("invoked_function_arn", ""))
        started_at = time.time()
        t_start = time.perf_counter()
        reply: dict = {"type": "result", "request_id": request_id, "started_at": started_at}
        try:
            result = fn(msg["event"], context)
            try:
                reply["result"] = json.loads(json.dumps(result))
                reply["ok"] = True
            except (TypeError, ValueError) as e:
                reply["ok"] = False
                reply["error"] = _error(e, "Runtime.MarshalError", f"Unable to marshal response: {e}")
        except Exception as e:  # noqa: BLE001 - the function's error is the invocation's result
            reply["ok"] = False
            reply["error"] = _error(e)
            # Lambda's runtime logs an uncaught exception like this, with its traceback
            log_stream.event(f"[ERROR] {type(e).__name__}: {e}\n{traceback.format_exc()}")
        reply["duration_ms"] = round((time.perf_counter() - t_start) * 1000, 3)
        log_stream.flush()
        reply["max_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        request_filter.request_id = ""
        proto.send(reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
