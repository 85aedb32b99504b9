"""Route 53 health checkers on loopback: the data plane of failover routing. moto stores health
checks but does not run them; this probes every health check that monitors an endpoint by IP
address (HTTP or TCP, Route 53's timeouts compressed with the profile's interval), changes its
status after FailureThreshold consecutive results the other way, and answers
`is_healthy(health_check_id)`, which the DNS server's answers follow. Every status change is a
`route53_health` event on the timeline. The status rule (FailureThreshold, Inverted, Disabled,
the probe schedule) is `HealthCheckModel` in route53_model.py; this adapter probes on loopback
and waits on `ctx.clock`.

The rules followed and how the local profile compresses them: docs/local-environment.md, "Route
53 health checkers".
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
from dataclasses import dataclass, field

from gameday import aws
from gameday.environments.local.context import LocalContext
from gameday.environments.local.moto_fix_route53 import health_status_report
from gameday.environments.local.route53_model import HealthCheckModel, HealthTransition

log = logging.getLogger("gameday.healthchecks")

REFRESH_INTERVAL_S = 2.0          # how often the list of health checks is re-read from Route 53's API
MIN_TIMEOUT_S = 1.0               # compressed timeouts never go below this
# Route 53's own timeouts at its 10 s interval
HTTP_CONNECT_TIMEOUT_S, HTTP_RESPONSE_TIMEOUT_S, TCP_CONNECT_TIMEOUT_S = 4.0, 2.0, 10.0
USER_AGENT = "Amazon-Route53-Health-Check-Service (ref {id}; report http://amzn.to/1vsZADi)"
PROBED_TYPES = ("HTTP", "TCP")
# GetHealthCheckStatus (moto_fix_route53): each checker's last observation is told to Route 53 when its
# text changes, and at least this often so that its CheckedTime stays recent
REPORT_REFRESH_S = 5.0
CHECKER_ADDRESS = "127.0.0.1"     # the checkers' source address on loopback (the observation's IPAddress)
DEFAULT_CHECKER_REGION = "us-east-1"


def report_due(last_text: str | None, last_at: float | None, text: str, now: float,
               refresh_s: float = REPORT_REFRESH_S) -> bool:
    """Whether a checker tells Route 53 its observation now: a new status text, or the last told is old."""
    return text != last_text or last_at is None or now - last_at >= refresh_s


@dataclass
class CheckState:
    """One health check being probed: its model (the status) and its thread."""

    health_check_id: str
    model: HealthCheckModel
    region: str | None
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)
    reported: tuple[str, float] | None = None   # the observation last told to Route 53: (status text, when)

    @property
    def config(self) -> dict:
        return self.model.config

    @property
    def healthy(self) -> bool:
        return self.model.healthy


class Route53HealthCheckers:
    def __init__(self, ctx: LocalContext, *, interval_s: float | None = None,
                 refresh_interval_s: float = REFRESH_INTERVAL_S):
        self.ctx = ctx
        self.interval_s = float(interval_s if interval_s is not None else ctx.profile.health_check_interval_s)
        self.refresh_interval_s = refresh_interval_s
        scale = min(1.0, self.interval_s / 10.0)
        self.http_connect_s = max(MIN_TIMEOUT_S, HTTP_CONNECT_TIMEOUT_S * scale)
        self.http_response_s = max(MIN_TIMEOUT_S, HTTP_RESPONSE_TIMEOUT_S * scale)
        self.tcp_connect_s = max(MIN_TIMEOUT_S, TCP_CONNECT_TIMEOUT_S * scale)
        self._region_of = {ip: r for r, ip in ctx.lb_addresses.items()}
        self._checks: dict[str, CheckState] = {}
        self._skipped: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._last_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> "Route53HealthCheckers":
        if self._refresher is not None:
            return self
        self._stop.clear()
        self._refresh()   # the first list must work: a failover-routing zone without its checks is broken
        self._refresher = threading.Thread(target=self._refresh_loop, name="route53-healthchecks", daemon=True)
        self._refresher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            checks = list(self._checks.values())
        for c in checks:
            c.stop.set()
        for t in [self._refresher, *(c.thread for c in checks)]:
            if t is not None:
                t.join(timeout=self.http_connect_s + self.http_response_s + 2)
        self._refresher = None

    # -- what the DNS server asks -------------------------------------------------------------------------
    def is_healthy(self, health_check_id: str) -> bool:
        c = self._checks.get(health_check_id)
        return True if c is None else c.healthy  # an unknown (e.g. calculated) check is not ours to fail

    def status(self) -> dict:
        with self._lock:
            checks = list(self._checks.values())
        return {
            "interval_s": self.interval_s,
            "timeouts_s": {"http_connect": self.http_connect_s, "http_response": self.http_response_s,
                           "tcp_connect": self.tcp_connect_s},
            "checks": {c.health_check_id: {
                "region": c.region, "healthy": c.healthy, "type": c.config.get("Type"),
                "target": f"{c.config.get('IPAddress')}:{c.config.get('Port')}{c.config.get('ResourcePath', '')}",
                "failure_threshold": c.model.threshold, "probes": c.model.probes,
                "failures": c.model.failures, "last_result": c.model.last_result} for c in checks},
            "skipped": dict(self._skipped),
            "last_error": self._last_error,
        }

    # -- the list of health checks --------------------------------------------------------------------------
    def _refresh_loop(self) -> None:
        while not self.ctx.clock.wait(self._stop, self.refresh_interval_s):
            try:
                self._refresh()
                self._last_error = None
            except Exception as e:  # noqa: BLE001 - keep checking what we know
                self._last_error = f"{type(e).__name__}: {e}"

    def _refresh(self) -> None:
        r53 = self.ctx.internal_client("route53", "us-east-1")
        listed: dict[str, dict] = {}
        for page in r53.get_paginator("list_health_checks").paginate():
            for hc in page["HealthChecks"]:
                listed[hc["Id"]] = hc["HealthCheckConfig"]
        with self._lock:
            for hid in list(self._checks):
                if hid not in listed or listed[hid] != self._checks[hid].config:
                    self._checks.pop(hid).stop.set()   # deleted or updated: a fresh checker
            for hid, config in listed.items():
                if hid in self._checks:
                    continue
                if config.get("Type") not in PROBED_TYPES or not config.get("IPAddress"):
                    self._skipped[hid] = (f"type {config.get('Type')} by "
                                          f"{'IP address' if config.get('IPAddress') else 'domain name'} "
                                          f"is not probed (HTTP/TCP on an IP address are)")
                    continue
                model = HealthCheckModel(config, self.interval_s, started=self.ctx.clock.monotonic())
                state = CheckState(hid, model, self._region_of.get(config["IPAddress"]))
                if not model.healthy:  # disabled and inverted: unhealthy without a probe
                    self._emit(state, HealthTransition(False, model.last_result, model.threshold, model.started))
                state.thread = threading.Thread(target=self._check_loop, args=(state,),
                                                name=f"route53-hc-{state.region or hid[:8]}", daemon=True)
                self._checks[hid] = state
                state.thread.start()

    # -- one checker ---------------------------------------------------------------------------------------
    def _check_loop(self, c: CheckState) -> None:
        clock = self.ctx.clock
        while not (c.stop.is_set() or self._stop.is_set()):
            due = c.model.next_due(clock.monotonic())
            if due is None:  # disabled: Route 53 sends no requests
                return
            if clock.wait(c.stop, due - clock.monotonic()) or self._stop.is_set():
                return
            ok, detail, http_status = self._probe(c)
            self._record(c, ok, detail)
            self._report(c, ok, http_status)

    def _report(self, c: CheckState, ok: bool, http_status: int | None) -> None:
        """The observation GetHealthCheckStatus answers (moto_fix_route53), when report_due says so."""
        now = self.ctx.clock.time()
        text = health_status_report(ok, http_status=http_status, check_type=c.config.get("Type", "HTTP"))
        last_text, last_at = c.reported or (None, None)
        if c.stop.is_set() or not report_due(last_text, last_at, text, now):
            return
        try:
            aws.moto_admin(self.ctx.moto_urls[aws.ROUTE53_HOME], "route53_health_observed", timeout_s=MIN_TIMEOUT_S,
                           health_check_id=c.health_check_id, ip_address=CHECKER_ADDRESS, status=text,
                           region=(c.config.get("Regions") or [DEFAULT_CHECKER_REGION])[0], checked_time=now)
            c.reported = (text, now)
        except Exception as e:  # noqa: BLE001 - a status report; the next probe tells it again
            log.debug("health check %s: telling Route 53 its status failed: %s", c.health_check_id, e)

    def _probe(self, c: CheckState) -> tuple[bool, str, int | None]:
        """(healthy, detail, HTTP status code if one came back)."""
        cfg = c.config
        host, port = cfg["IPAddress"], int(cfg.get("Port") or (80 if cfg["Type"] == "HTTP" else 0))
        if cfg["Type"] == "TCP":
            try:
                socket.create_connection((host, port), timeout=self.tcp_connect_s).close()
                return True, "TCP connection established", None
            except OSError as e:
                return False, f"TCP connection failed: {type(e).__name__}: {e}", None
        conn = http.client.HTTPConnection(host, port, timeout=self.http_connect_s)
        try:
            try:
                conn.connect()
            except OSError as e:
                return False, f"no TCP connection within {self.http_connect_s:g}s: {type(e).__name__}: {e}", None
            conn.sock.settimeout(self.http_response_s)
            try:
                conn.request("GET", cfg.get("ResourcePath") or "/",
                             headers={"User-Agent": USER_AGENT.format(id=c.health_check_id)})
                status = conn.getresponse().status
            except (OSError, http.client.HTTPException) as e:
                return False, f"no HTTP response within {self.http_response_s:g}s: {type(e).__name__}: {e}", None
            if 200 <= status < 400:
                return True, f"HTTP Status Code {status}", status
            return False, f"HTTP Status Code {status} (expected 2xx or 3xx)", status
        finally:
            conn.close()

    def _record(self, c: CheckState, ok: bool, detail: str) -> None:
        if c.stop.is_set():  # deleted or replaced while probing: its result no longer counts
            return
        transition = c.model.observe(ok, self.ctx.clock.monotonic(), detail)
        if transition is not None:
            self._emit(c, transition)

    def _emit(self, c: CheckState, t: HealthTransition) -> None:
        log.info("health check %s (%s) is now %s: %s", c.health_check_id, c.region,
                 "healthy" if t.healthy else "unhealthy", t.reason)
        self.ctx.events.emit("route53_health", health_check_id=c.health_check_id, region=c.region,
                             healthy=t.healthy, reason=t.reason, failure_threshold=t.failure_threshold,
                             target=f"{c.config.get('IPAddress')}:{c.config.get('Port')}")
