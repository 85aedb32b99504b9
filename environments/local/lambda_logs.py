"""The function's log lines in CloudWatch Logs, as Lambda sends them: log group
/aws/lambda/<function> in the function's region, one log stream per execution environment
(YYYY/MM/DD/[VERSION]<environment id>), one log event per line with the time it was written.

The Lambda runner hands each invocation's lines over when the invocation ends (`ship`, which
never blocks); a thread sends them with PutLogEvents through the region's internal client
(Lambda's own delivery, not a customer call): whatever is queued when it is free, one call per
stream, so invocations ending while a call is made share the next one. In AWS delivery to
CloudWatch Logs is asynchronous too (typically seconds): a reader polls FilterLogEvents.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid

from gameday.environments.local.context import LocalContext

log = logging.getLogger("gameday.lambda.logs")

# PutLogEvents takes at most 10,000 events (and 1 MB) per call
MAX_BATCH_EVENTS = 1000


def log_group_name(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def log_stream_name(version: str, now: float) -> str:
    """A new execution environment's log stream, as Lambda names it: 2026/12/04/[$LATEST]<32 hex>."""
    return f"{time.strftime('%Y/%m/%d', time.gmtime(now))}/[{version}]{uuid.uuid4().hex}"


class LogShipper:
    def __init__(self, ctx: LocalContext, region: str, function_name: str):
        self.ctx = ctx
        self.region = region
        self.group = log_group_name(function_name)
        self._pending: queue.Queue = queue.Queue()     # (stream, [(epoch s, line), ...]) | None to stop
        self._streams: set[str] = set()
        self._group_made = False
        self._thread: threading.Thread | None = None
        self.shipped = 0          # log events CloudWatch Logs accepted
        self.failed = 0           # log events lost (an error from CloudWatch Logs; logged)

    def start(self) -> "LogShipper":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lambda-logs", daemon=True)
            self._thread.start()
        return self

    def ship(self, stream: str, events: list[tuple[float, str]]) -> None:
        """Queue an invocation's lines for its environment's stream (returns at once)."""
        if events:
            self._pending.put((stream, events))

    def stop(self) -> None:
        """Send what is queued, then stop."""
        if self._thread is not None:
            self._pending.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def status(self) -> dict:
        return {"log_group": self.group, "region": self.region, "streams": len(self._streams),
                "shipped": self.shipped, "failed": self.failed, "queued": self._pending.qsize()}

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._pending.get()
            batch: dict[str, list[tuple[float, str]]] = {}
            while item is not None:   # everything queued by now, in one call per stream
                batch.setdefault(item[0], []).extend(item[1])
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
            stopping = item is None
            for stream, events in batch.items():
                self._put(stream, events)

    def _put(self, stream: str, events: list[tuple[float, str]]) -> None:
        # CloudWatch Logs wants a batch's events in chronological order
        events = sorted(events, key=lambda e: e[0])
        try:
            logs = self.ctx.internal_client("logs", self.region)
            self._ensure(logs, stream)
            for i in range(0, len(events), MAX_BATCH_EVENTS):
                chunk = events[i:i + MAX_BATCH_EVENTS]
                logs.put_log_events(logGroupName=self.group, logStreamName=stream,
                                    logEvents=[{"timestamp": int(ts * 1000), "message": line} for ts, line in chunk])
                self.shipped += len(chunk)
        except Exception as e:  # noqa: BLE001 - a lost log batch must not stop the function
            self.failed += len(events)
            log.warning("CloudWatch Logs %s %s: %d event(s) lost: %s", self.group, stream, len(events), e)

    def _ensure(self, logs, stream: str) -> None:
        if not self._group_made:
            try:
                logs.create_log_group(logGroupName=self.group)
            except logs.exceptions.ResourceAlreadyExistsException:
                pass
            self._group_made = True
        if stream not in self._streams:
            try:
                logs.create_log_stream(logGroupName=self.group, logStreamName=stream)
            except logs.exceptions.ResourceAlreadyExistsException:
                pass
            self._streams.add(stream)
