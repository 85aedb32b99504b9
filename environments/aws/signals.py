"""The aws environment's timeline from AWS's own signals: each source reads one AWS API on its own
interval and returns what happened since its last read as events of the kinds the local
environment emits (`alarm` from DescribeAlarmHistory, `lambda_invocation` from the function's
CloudWatch Logs, ...), so the same scenario checks and report bands read them.

An event is stamped with AWS's own time of the change (`happened_at`), not the time it was read;
the poller adds `source` (the API it came from, e.g. "cloudwatch:DescribeAlarmHistory") and
`delay_s` (how long after the change it was read), so a report can say which events came from
which API and how late.

A source is any object with `name`, `interval_s` and `poll() -> list[dict]` (each dict has "kind",
"time": the change's epoch seconds, and that kind's fields, docs/architecture.md's run log).
SIGNAL_SOURCES lists the factories `AwsEnvironment.follow_signals()` builds them with; a source's
failure (throttled, a network error) is counted in `status()` and retried at its next interval,
never raised into the scenario.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from gameday.environments.aws import signals_cloudwatch
from gameday.environments.aws import signals_dns
from gameday.environments.aws import signals_ecs
from gameday.environments.aws import signals_lambda
from gameday.environments.aws import signals_route53_health

log = logging.getLogger("gameday.aws.signals")


class SignalSource(Protocol):
    name: str            # the API read, "service:Operation"
    interval_s: float    # how often it is read

    def poll(self) -> list[dict]:
        """Events since the last poll, oldest first: {"kind", "time" (epoch s, AWS's), **fields}."""


# factories (env -> SignalSource | None: None when the stack has nothing for it), in start order
SIGNAL_SOURCES: list[Callable[[object], SignalSource | None]] = [
    signals_cloudwatch.alarm_history,          # alarm, alarm_action: DescribeAlarmHistory
    signals_cloudwatch.replication_latency,    # replication_lag: GetMetricData ReplicationLatency
    signals_dns.make,                          # dns_change: the zone's name servers' answers (DNS, no API budget)
    signals_lambda.make,                       # lambda_invocation: the function's CloudWatch Logs (FilterLogEvents)
    signals_route53_health.make,               # route53_health: GetHealthCheckStatus (inside the Route 53 budget)
    signals_ecs.make,                          # ecs task_running / task_stopped: ListTasks + DescribeTasks
]


@dataclass
class _Counters:
    polls: int = 0
    events: int = 0
    errors: int = 0
    last_error: str | None = None
    last_delay_s: float | None = None
    max_delay_s: float | None = None


class SignalPollers:
    """One daemon thread per source, emitting its events into `events` (a gameday.events.EventLog)."""

    def __init__(self, events, sources: list[SignalSource], clock=time.time):
        self.events = events
        self.sources = sources
        self.clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counters = {s.name: _Counters() for s in sources}
        self._lock = threading.Lock()

    def start(self) -> "SignalPollers":
        for s in self.sources:
            t = threading.Thread(target=self._run, args=(s,), name=f"aws-signal-{s.name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []

    def poll_once(self, source: SignalSource) -> int:
        """One read of `source`, its events emitted; how many (tests call it to step a source)."""
        c = self._counters[source.name]
        try:
            found = source.poll()
        except Exception as e:  # noqa: BLE001 - a source's failure is reported, and retried next interval
            with self._lock:
                c.polls += 1
                c.errors += 1
                c.last_error = f"{type(e).__name__}: {e}"[:300]
            log.warning("signal source %s failed: %s", source.name, c.last_error)
            return 0
        now = self.clock()
        for ev in found:
            fields = {k: v for k, v in ev.items() if k not in ("kind", "time")}
            delay = round(max(0.0, now - float(ev["time"])), 3)
            try:
                self.events.emit(ev["kind"], happened_at=float(ev["time"]), source=source.name, delay_s=delay, **fields)
            except ValueError as e:   # an event that does not fit its model: the source's bug, said once per event
                log.error("signal source %s produced an invalid %s event: %s", source.name, ev.get("kind"), e)
                with self._lock:
                    c.errors += 1
                    c.last_error = f"invalid event: {e}"[:300]
                continue
            with self._lock:
                c.events += 1
                c.last_delay_s = delay
                c.max_delay_s = max(c.max_delay_s or 0.0, delay)
        with self._lock:
            c.polls += 1
        return len(found)

    def _run(self, source: SignalSource) -> None:
        while not self._stop.is_set():
            self.poll_once(source)
            self._stop.wait(source.interval_s)

    def status(self) -> dict:
        with self._lock:
            return {name: dict(c.__dict__) for name, c in self._counters.items()}
