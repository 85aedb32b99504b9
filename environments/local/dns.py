"""Route 53's data plane on loopback: an authoritative DNS server for the hosted zone. It holds a
copy of the zone and answers by Route 53's routing policies (simple, weighted, failover,
multivalue), with health from `Route53DnsServer.health`, a callable HealthCheckId -> bool.

The copy follows the zone two ways. Each change batch a customer makes (through the AWS router,
which calls `ctx.on_route53_change` before the caller has Route 53's answer) is read back and
published at once as its own state, as Route 53 applies each batch on its own: a failover made
of two calls shows its intermediate answer. And a poll every REFRESH_INTERVAL_S, the safety net,
finds changes made straight against moto (the harness's own) and answers that move with health;
a failed poll keeps the last good copy (name servers keep answering when the control plane is
impaired). The router holds `ctx.route53_lock` from a change to the end of its callbacks and
every read of the zone here takes it too, so the poll never reads a batch before its own
callback has published it. The rules (answer selection, the zone copy's refresh and change batches) are the
pure model in route53_model.py; this is its adapter: sockets, the poll thread on `ctx.clock`, the
change hook, Route 53 API calls, events.

The routing rules modelled, and what is not modelled: docs/local-environment.md, "Route 53's
data plane: the DNS server".
"""

from __future__ import annotations

import logging
import random
import socketserver
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from dnslib import QTYPE, RCODE
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer
from tenacity import retry, stop_after_delay, wait_fixed

from gameday.environments.local.context import LocalContext
from gameday.environments.local.moto_fix_route53 import UNSERVED_INSYNC_S
# the rules live in the model; re-exported here, where their users import them from
from gameday.environments.local.route53_model import (  # noqa: F401
    CNAME_MAX_HOPS, MULTIVALUE_MAX, ChangeBatch, Event, Health, RecordSet, Zone, ZoneCopy, always_healthy, eligible,
    pick)
from gameday import aws

log = logging.getLogger("gameday.dns")

REFRESH_INTERVAL_S = 0.25  # how often the zone copy is refreshed from Route 53's API (one moto call each)
REFRESH_TIMEOUT_S = 1.0    # one poll's budget; the poll loop itself is the retry
START_TIMEOUT_S = 10.0     # first zone load (the server does not answer before it has a zone)


class DnsServerError(Exception):
    """The DNS server cannot start (no zone, port in use); the message says which and why."""


# -- the DNS server ------------------------------------------------------------------------------------

class _ZoneResolver(BaseResolver):
    def __init__(self, owner: "Route53DnsServer"):
        self.owner = owner
        self.rng = random.Random()

    def resolve(self, request, handler):
        owner = self.owner
        owner._count_query()
        reply = request.reply(ra=0, aa=1)  # authoritative, no recursion (as Route 53's name servers)
        # the published zone, swapped whole with the answers status() shows: no lock on the query path.
        # (Answering from the zone as read, before it was published, let a client get an answer that
        # status() and the timeline did not hold yet: seen in CI under load.)
        zone = owner._copy.served
        try:
            qname = str(request.q.qname).lower()
            if zone is None or not zone.contains(qname):
                reply.header.aa = 0
                reply.header.rcode = RCODE.REFUSED  # not a zone this server is authoritative for
                return reply
            rcode, answer, authority = zone.query(qname, QTYPE[request.q.qtype], owner.health, self.rng)
        except Exception:  # noqa: BLE001 - a query must get an answer, never kill the server
            log.exception("DNS query %s failed", request.q)
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        reply.header.rcode = rcode
        for rr in answer:
            reply.add_answer(rr)
        for rr in authority:
            reply.add_auth(rr)
        return reply


class _Handler(DNSHandler):
    udplen = 512  # classic UDP limit: longer answers set TC and the client retries over TCP


class _QuietLogger(DNSLogger):
    """dnslib's default logger prints every query to stdout."""

    def __init__(self):
        super().__init__(log="-recv,-send,-request,-reply,-truncated,-data", prefix=False)

    def log_error(self, handler, e):
        log.warning("DNS request from %s: %s", handler.client_address, e)


class _UdpServer(socketserver.UDPServer):
    # Answers come from memory and never block, so one thread serves UDP (no thread per query).
    # No SO_REUSEADDR: on Linux it would let another UDP socket bind the same port and take our queries.
    allow_reuse_address = False


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


class Route53DnsServer:
    """Authoritative DNS for the hosted zone, on 127.0.0.1 (UDP and TCP, one port)."""

    def __init__(self, ctx: LocalContext, *, health: Health | None = None,
                 refresh_interval_s: float = REFRESH_INTERVAL_S):
        if ctx.provisioned is None:
            raise DnsServerError("Route 53 DNS needs a provisioned hosted zone (ctx.provisioned is None)")
        self.ctx = ctx
        self.zone_id = ctx.provisioned.hosted_zone_id
        self.health: Health = health or always_healthy
        self.refresh_interval_s = refresh_interval_s
        self.port = 0
        self._endpoint = ctx.moto_urls[aws.ROUTE53_HOME]
        # Same endpoint as ctx.internal_client("route53", ...), but no SDK retries and a short
        # timeout: the poll loop is the retry, and stop() must not wait on a long call.
        self._route53 = aws.client("route53", aws.ROUTE53_HOME, self._endpoint,
                                   retries=0, timeout_s=REFRESH_TIMEOUT_S)
        self._copy = ZoneCopy()  # the zone as last read, and the answers last published
        self._queries = 0
        self._lock = threading.Lock()
        self.changes_applied = 0
        self._stop = threading.Event()
        self._servers: list[DNSServer] = []  # bound
        self._serving: list[DNSServer] = []  # serve_forever running (shutdown() waits for it)
        self._threads: list[threading.Thread] = []
        # tells Route 53 (moto_fix_route53) which changes are served, off the router's request thread
        self._insync: ThreadPoolExecutor | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> "Route53DnsServer":
        if self._threads:
            return self
        self._stop.clear()

        @retry(stop=stop_after_delay(START_TIMEOUT_S), wait=wait_fixed(0.1), reraise=True)
        def first_load() -> None:
            self._refresh()

        try:
            first_load()
        except Exception as e:  # noqa: BLE001 - one clear line for whoever started us
            raise DnsServerError(f"Route 53 DNS: cannot read hosted zone {self.zone_id} from {self._endpoint} "
                                 f"within {START_TIMEOUT_S:.0f}s: {e}") from None
        self._copy.publish(self.health, self.ctx.clock.monotonic())  # the baseline later changes are events against
        self._bind()
        self._insync = ThreadPoolExecutor(1, thread_name_prefix="route53-dns-insync")
        # from start() on, this zone's changes are PENDING in GetChange until this server serves them
        self._send_route53("route53_dns_follow", {"zone_ids": [self.zone_id], "unserved_insync_s": UNSERVED_INSYNC_S})
        self.ctx.on_route53_change.append(self.change_committed)
        for srv, proto in zip(self._servers, ("udp", "tcp")):
            t = threading.Thread(target=srv.server.serve_forever, kwargs={"poll_interval": 0.05},
                                 name=f"route53-dns-{proto}", daemon=True)
            t.start()
            self._threads.append(t)
            self._serving.append(srv)
        poller = threading.Thread(target=self._poll_loop, name="route53-dns-refresh", daemon=True)
        poller.start()
        self._threads.append(poller)
        return self

    def _bind(self) -> None:
        resolver, logger = _ZoneResolver(self), _QuietLogger()
        wanted = self.ctx.dns_port
        last_error: OSError | None = None
        for _ in range(1 if wanted else 20):
            try:
                udp = DNSServer(resolver, "127.0.0.1", wanted, logger=logger, handler=_Handler, server=_UdpServer)
            except OSError as e:
                last_error = e
                continue
            port = udp.server.server_address[1]
            try:  # TCP on the same port number as UDP, as DNS clients expect
                tcp = DNSServer(resolver, "127.0.0.1", port, tcp=True, logger=logger, handler=_Handler,
                                server=_TcpServer)
            except OSError as e:
                udp.server.server_close()
                last_error = e
                continue
            self._servers = [udp, tcp]
            self.port = self.ctx.dns_port = port
            return
        raise DnsServerError(f"Route 53 DNS: cannot listen on 127.0.0.1:{wanted or '(any port)'} "
                             f"(UDP and TCP): {last_error}")

    def stop(self) -> None:
        self._stop.set()
        if self.change_committed in self.ctx.on_route53_change:
            self.ctx.on_route53_change.remove(self.change_committed)
        for srv in self._serving:
            srv.server.shutdown()
        for srv in self._servers:
            srv.server.server_close()
        for t in self._threads:
            t.join(timeout=REFRESH_TIMEOUT_S + 2)
        self._servers, self._serving, self._threads = [], [], []
        if self._insync is not None:
            self._insync.shutdown(wait=True)
            self._insync = None
            self._send_route53("route53_dns_follow", {"zone_ids": []})  # nobody serves the zone: nothing stays PENDING

    # -- refreshing the zone copy ---------------------------------------------------------------------
    def _poll_loop(self) -> None:
        clock = self.ctx.clock
        while not clock.wait(self._stop, self.refresh_interval_s):
            # one read + publish + emit at a time (this thread, the router's callbacks), so states are
            # published, and stamped on the timeline, in the order they were read
            with self.ctx.route53_lock:
                read_started_at = time.time()   # moto's clock: the changes submitted before it are in this read
                try:
                    events = self._refresh()
                    if self._copy.zone_moved:
                        self._tell_route53("route53_zone_served", zone_id=self.zone_id,
                                           read_started_at=read_started_at)
                except Exception as e:  # noqa: BLE001 - the data plane keeps the last good zone
                    events = self._copy.refresh_failed(f"{type(e).__name__}: {e}", clock.monotonic())
                # health can change the answers while the zone (or the API) does not
                self._emit(events + self._copy.publish(self.health, clock.monotonic()))

    def change_committed(self, hosted_zone_id: str, request: bytes, response: bytes) -> None:
        """A ChangeResourceRecordSets Route 53 accepted (the router calls it before the caller has
        the answer): read the zone back and publish it now, as the batch's own state."""
        if hosted_zone_id.rsplit("/", 1)[-1] != self.zone_id.rsplit("/", 1)[-1] or self._stop.is_set():
            return   # another zone: not served here
        batch = ChangeBatch.from_api(request, response)
        with self.ctx.route53_lock:   # held by the router already: an RLock
            try:
                items = self._read_zone()
            except Exception as e:  # noqa: BLE001 - the poll, the safety net, reads it later
                log.warning("Route 53 DNS: reading the zone back after change %s failed (%s: %s); "
                            "the next poll applies it", batch.id, type(e).__name__, e)
                return
            self.changes_applied += 1
            self._emit(self._copy.applied(items, self.ctx.clock.monotonic(), self.health, batch))
        if batch.id:
            self._tell_route53("route53_change_served", change_id=batch.id)

    def _tell_route53(self, route: str, **body) -> None:
        """One of moto_fix_route53's admin routes, in order, off the caller's thread."""
        if self._insync is not None:
            try:
                self._insync.submit(self._send_route53, route, body)
            except RuntimeError:  # stopping
                pass

    def _send_route53(self, route: str, body: dict) -> None:
        # a failure is logged: GetChange then goes INSYNC by its bound instead
        try:
            aws.moto_admin(self._endpoint, route, timeout_s=REFRESH_TIMEOUT_S, **body)
        except Exception as e:  # noqa: BLE001 - a status report, never the data plane
            log.warning("Route 53 DNS: telling Route 53 %s %s failed: %s", route, body, e)

    def _emit(self, events: list[Event]) -> None:
        for kind, fields in events:
            self.ctx.events.emit(kind, **fields)

    def _read_zone(self) -> list[dict]:
        items: list[dict] = []
        for page in self._route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=self.zone_id):
            items.extend(page["ResourceRecordSets"])
        return items

    def _refresh(self) -> list[Event]:
        items = self._read_zone()
        apex = None
        if self._copy.zone is None:
            apex = self._route53.get_hosted_zone(Id=self.zone_id)["HostedZone"]["Name"]
        return self._copy.refreshed(items, self.ctx.clock.monotonic(), apex)

    # -- observing -----------------------------------------------------------------------------------
    def _count_query(self) -> None:
        with self._lock:
            self._queries += 1

    def answers(self) -> dict[str, list[str]]:
        return dict(self._copy.views)

    def status(self) -> dict:
        copy = self._copy
        zone = copy.zone
        return {
            "port": self.port,
            "zone": zone.apex if zone else None,
            "hosted_zone_id": self.zone_id,
            "answers": self.answers(),
            "last_refresh_age_s": copy.age(self.ctx.clock.monotonic()),
            "refresh_failures": copy.failures,
            "last_error": copy.last_error,
            "queries": self._queries,
            "changes_applied": self.changes_applied,
            "record_sets": sum(len(g) for g in zone.groups.values()) if zone else 0,
            "skipped": list(zone.skipped) if zone else [],
        }
