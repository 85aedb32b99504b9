"""Route 53's data plane on loopback: an authoritative DNS server for the hosted zone. It holds a
copy of the zone, refreshed from Route 53's API every REFRESH_INTERVAL_S and kept when a refresh
fails (name servers keep answering when the control plane is impaired), and answers by Route
53's routing policies (simple, weighted, failover, multivalue), with health from
`Route53DnsServer.health`, a callable HealthCheckId -> bool.

The routing rules modelled, and what is not modelled: docs/local-environment.md, "Route 53's
data plane: the DNS server".
"""

from __future__ import annotations

import ast
import logging
import random
import re
import socketserver
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer
from tenacity import retry, stop_after_delay, wait_fixed

from gameday.environments.local.context import LocalContext
from gameday import aws

log = logging.getLogger("gameday.dns")

REFRESH_INTERVAL_S = 0.25  # how often the zone copy is refreshed from Route 53's API (one moto call each)
REFRESH_TIMEOUT_S = 1.0    # one poll's budget; the poll loop itself is the retry
START_TIMEOUT_S = 10.0     # first zone load (the server does not answer before it has a zone)
MULTIVALUE_MAX = 8         # Route 53 answers with up to eight healthy multivalue records
CNAME_MAX_HOPS = 8

Health = Callable[[str], bool]


def _always_healthy(_health_check_id: str) -> bool:
    return True


class DnsServerError(Exception):
    """The DNS server cannot start (no zone, port in use); the message says which and why."""


# -- the zone model ----------------------------------------------------------------------------------

def _route53_name(name: str) -> str:
    """A Route 53 name as this model keys it: lower case (DNS names are case-insensitive), octal
    escapes decoded (Route 53 returns * as \\052), final dot."""
    name = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), name).lower()
    return name if name.endswith(".") else name + "."


def _route53_value(rtype: str, value: str) -> str:
    # moto 5.2.5 returns its default SOA value as the repr of a dict: "{'Value': '...'}"
    if rtype == "SOA" and value.startswith("{"):
        try:
            value = ast.literal_eval(value)["Value"]
        except (ValueError, SyntaxError, KeyError, TypeError):
            pass
    # Route 53 accepts host names with or without the final dot; in zone-file syntax a name
    # without it would be relative
    if rtype in ("NS", "CNAME", "PTR") and not value.endswith("."):
        value += "."
    return value


@dataclass(frozen=True)
class RecordSet:
    """One Route 53 resource record set, with its answers pre-built for the DNS wire."""

    name: str                         # lower-case FQDN with the final dot
    rtype: str                        # "A", "AAAA", "CNAME", ...
    ttl: int
    values: tuple[str, ...]
    rrs: tuple[RR, ...] = field(repr=False, compare=False)
    set_identifier: str | None = None
    weight: int | None = None
    failover: str | None = None       # "PRIMARY" | "SECONDARY"
    health_check_id: str | None = None
    multivalue: bool = False

    @property
    def policy(self) -> str:
        if self.failover:
            return "failover"
        if self.weight is not None:
            return "weighted"
        if self.multivalue:
            return "multivalue"
        return "simple"

    def healthy(self, health: Health) -> bool:
        return self.health_check_id is None or bool(health(self.health_check_id))

    def rrs_for(self, owner: str) -> list[RR]:
        """Answers owned by `owner` (differs from self.name only for a wildcard match)."""
        if owner == self.name:
            return list(self.rrs)
        return [RR(owner, rr.rtype, rclass=rr.rclass, ttl=rr.ttl, rdata=rr.rdata) for rr in self.rrs]

    @classmethod
    def from_route53(cls, rs: dict) -> "RecordSet":
        """From one ResourceRecordSets item; ValueError when this model cannot serve it."""
        name, rtype = _route53_name(rs["Name"]), rs["Type"]
        if "AliasTarget" in rs:
            raise ValueError("alias records are not modelled")
        for key in ("Region", "GeoLocation", "GeoProximityLocation", "CidrRoutingConfig"):
            if key in rs:
                raise ValueError(f"{key} routing is not modelled")
        ttl = int(rs.get("TTL", 300))
        values = tuple(_route53_value(rtype, r["Value"]) for r in rs.get("ResourceRecords", []))
        if rtype == "A":
            rrs = tuple(RR(name, QTYPE.A, ttl=ttl, rdata=A(v)) for v in values)  # the hot type: no parser
        else:
            rrs = tuple(rr for v in values for rr in RR.fromZone(f"{name} {ttl} IN {rtype} {v}"))
        return cls(name=name, rtype=rtype, ttl=ttl, values=values, rrs=rrs,
                   set_identifier=rs.get("SetIdentifier"),
                   weight=int(rs["Weight"]) if "Weight" in rs else None,
                   failover=rs.get("Failover"), health_check_id=rs.get("HealthCheckId"),
                   multivalue=bool(rs.get("MultiValueAnswer", False)))


def eligible(sets: tuple[RecordSet, ...], health: Health) -> list[tuple[RecordSet, float]]:
    """The record sets of one name+type group that Route 53 may answer with now, each with
    its relative chance."""
    policy = sets[0].policy
    if policy == "simple":
        return [(sets[0], 1.0)]
    if policy == "weighted":
        nonzero = [s for s in sets if s.weight]
        zero = [s for s in sets if not s.weight]
        # weight-0 record sets are considered only when no non-zero one is healthy
        live = [s for s in nonzero if s.healthy(health)] or [s for s in zero if s.healthy(health)]
        live = live or nonzero or zero  # all unhealthy: all are treated as healthy
        if not any(s.weight for s in live):
            return [(s, 1.0) for s in live]
        return [(s, float(s.weight)) for s in live if s.weight]
    if policy == "failover":
        ordered = [s for s in sets if s.failover == "PRIMARY"] + [s for s in sets if s.failover != "PRIMARY"]
        for s in ordered:
            if s.healthy(health):
                return [(s, 1.0)]
        return [(ordered[0], 1.0)]  # both unhealthy: the primary
    live = [s for s in sets if s.healthy(health)] or list(sets)  # multivalue
    return [(s, 1.0) for s in live]


def pick(sets: tuple[RecordSet, ...], health: Health, rng: random.Random) -> list[RecordSet]:
    """The record sets one DNS answer is made of."""
    choices = eligible(sets, health)
    policy = sets[0].policy
    if policy == "weighted" and len(choices) > 1:
        return rng.choices([s for s, _ in choices], weights=[w for _, w in choices])
    if policy == "multivalue" and len(choices) > MULTIVALUE_MAX:
        return rng.sample([s for s, _ in choices], MULTIVALUE_MAX)
    return [s for s, _ in choices]


class Zone:
    """An immutable copy of a hosted zone, answering queries. Swapped whole on refresh, so the
    query path needs no lock."""

    def __init__(self, apex: str, record_sets: Iterable[RecordSet], skipped: list[str] | None = None):
        self.apex = _route53_name(apex)
        groups: dict[tuple[str, str], list[RecordSet]] = {}
        for rs in record_sets:
            groups.setdefault((rs.name, rs.rtype), []).append(rs)
        self.groups: dict[tuple[str, str], tuple[RecordSet, ...]] = {k: tuple(v) for k, v in groups.items()}
        self.types_at: dict[str, list[str]] = {}
        for name, rtype in self.groups:
            self.types_at.setdefault(name, []).append(rtype)
        # a name exists if it owns records or has descendants that do (empty non-terminals)
        self.names: set[str] = set()
        for name in self.types_at:
            while name.endswith(self.apex) and name not in self.names:
                self.names.add(name)
                name = name.split(".", 1)[1] if name != self.apex else ""
        self.skipped = skipped or []
        soa = self.groups.get((self.apex, "SOA"))
        self.negative_soa: list[RR] = []
        if soa and soa[0].rrs:
            rr = soa[0].rrs[0]
            # RFC 2308: negative answers are cached for min(SOA TTL, SOA MINIMUM)
            neg_ttl = min(rr.ttl, getattr(rr.rdata, "times", (rr.ttl,))[-1])
            self.negative_soa = [RR(rr.rname, rr.rtype, rclass=rr.rclass, ttl=neg_ttl, rdata=rr.rdata)]

    @classmethod
    def from_route53(cls, apex: str, items: list[dict]) -> "Zone":
        sets, skipped = [], []
        for item in items:
            try:
                sets.append(RecordSet.from_route53(item))
            except Exception as e:  # noqa: BLE001 - one unservable record must not hide the zone
                ident = f"{item.get('Name')} {item.get('Type')}" + (
                    f" ({item['SetIdentifier']})" if item.get("SetIdentifier") else "")
                skipped.append(f"{ident}: {e}")
        return cls(apex, sets, skipped)

    def contains(self, qname: str) -> bool:
        return qname == self.apex or qname.endswith("." + self.apex)

    def _wildcard_for(self, qname: str) -> str | None:
        """RFC 4592: a name that does not exist matches *.<its closest existing ancestor>."""
        parent = qname
        while parent != self.apex:
            parent = parent.split(".", 1)[1]
            if parent in self.names:
                wildcard = "*." + parent
                return wildcard if wildcard in self.types_at else None
        return None

    def query(self, qname: str, qtype: str, health: Health, rng: random.Random) -> tuple[int, list[RR], list[RR]]:
        """(rcode, answer, authority) for a lower-case qname inside the zone."""
        answer: list[RR] = []
        owner = qname
        for _ in range(CNAME_MAX_HOPS):
            source = owner
            if source not in self.names:
                source = self._wildcard_for(owner)
                if source is None:
                    return (RCODE.NXDOMAIN if not answer else RCODE.NOERROR), answer, self.negative_soa
            types = self.types_at.get(source, [])
            wanted = types if qtype == "ANY" else [qtype] if qtype in types else []
            if not wanted and "CNAME" in types and qtype != "CNAME":
                cname = pick(self.groups[(source, "CNAME")], health, rng)[0]
                answer += cname.rrs_for(owner)
                target = _route53_name(str(cname.rrs[0].rdata.label)) if cname.rrs else ""
                if not self.contains(target):
                    return RCODE.NOERROR, answer, []
                owner = target
                continue
            for rtype in wanted:
                for rs in pick(self.groups[(source, rtype)], health, rng):
                    rrs = rs.rrs_for(owner)
                    answer += rng.sample(rrs, len(rrs)) if len(rrs) > 1 else rrs  # all values, random order
            return RCODE.NOERROR, answer, ([] if answer else self.negative_soa)
        return RCODE.SERVFAIL, answer, []  # CNAME loop

    def view(self, health: Health, rtype: str = "A") -> dict[str, list[str]]:
        """name -> every value an answer may carry now (for status and change events)."""
        out = {}
        for (name, t), sets in self.groups.items():
            if t == rtype:
                out[name] = sorted({v for s, _ in eligible(sets, health) for v in s.values})
        return out


# -- the DNS server ------------------------------------------------------------------------------------

class _ZoneResolver(BaseResolver):
    def __init__(self, owner: "Route53DnsServer"):
        self.owner = owner
        self.rng = random.Random()

    def resolve(self, request, handler):
        owner = self.owner
        owner._count_query()
        reply = request.reply(ra=0, aa=1)  # authoritative, no recursion (as Route 53's name servers)
        zone = owner._zone
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
        self.health: Health = health or _always_healthy
        self.refresh_interval_s = refresh_interval_s
        self.port = 0
        self._endpoint = ctx.moto_urls[aws.ROUTE53_HOME]
        # Same endpoint as ctx.internal_client("route53", ...), but no SDK retries and a short
        # timeout: the poll loop is the retry, and stop() must not wait on a long call.
        self._route53 = aws.client("route53", aws.ROUTE53_HOME, self._endpoint,
                                   retries=0, timeout_s=REFRESH_TIMEOUT_S)
        self._zone: Zone | None = None
        self._raw: list[dict] | None = None
        self._views: dict[str, list[str]] = {}
        self._last_ok: float | None = None
        self._failures = 0
        self._last_error: str | None = None
        self._queries = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._servers: list[DNSServer] = []  # bound
        self._serving: list[DNSServer] = []  # serve_forever running (shutdown() waits for it)
        self._threads: list[threading.Thread] = []

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
        self._views = self._zone.view(self.health)
        self._bind()
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
        for srv in self._serving:
            srv.server.shutdown()
        for srv in self._servers:
            srv.server.server_close()
        for t in self._threads:
            t.join(timeout=REFRESH_TIMEOUT_S + 2)
        self._servers, self._serving, self._threads = [], [], []

    # -- refreshing the zone copy ---------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.wait(self.refresh_interval_s):
            try:
                self._refresh()
                if self._failures:
                    self.ctx.events.emit("dns_refresh", state="ok", after_failures=self._failures,
                                         zone_age_s=round(time.monotonic() - self._last_ok, 3))
                self._failures, self._last_error = 0, None
            except Exception as e:  # noqa: BLE001 - the data plane keeps the last good zone
                self._failures += 1
                self._last_error = f"{type(e).__name__}: {e}"
                if self._failures == 1:
                    self.ctx.events.emit("dns_refresh", state="failing", error=self._last_error,
                                         serving="last good copy of the zone")
            # health can change the answers while the zone (or the API) does not
            self._publish_changes()

    def _refresh(self) -> None:
        items: list[dict] = []
        for page in self._route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=self.zone_id):
            items.extend(page["ResourceRecordSets"])
        if items != self._raw:
            apex = self._zone.apex if self._zone else self._route53.get_hosted_zone(Id=self.zone_id)["HostedZone"]["Name"]
            self._zone = Zone.from_route53(apex, items)
            self._raw = items
        self._last_ok = time.monotonic()

    def _publish_changes(self) -> None:
        views = self._zone.view(self.health)
        if views == self._views:
            return
        for name in sorted(views.keys() | self._views.keys()):
            old, new = self._views.get(name, []), views.get(name, [])
            if old != new:
                self.ctx.events.emit("dns_change", name=name, type="A", old=old, new=new)
        self._views = views

    # -- observing -----------------------------------------------------------------------------------
    def _count_query(self) -> None:
        with self._lock:
            self._queries += 1

    def answers(self) -> dict[str, list[str]]:
        return dict(self._views)

    def status(self) -> dict:
        zone = self._zone
        return {
            "port": self.port,
            "zone": zone.apex if zone else None,
            "hosted_zone_id": self.zone_id,
            "answers": self.answers(),
            "last_refresh_age_s": round(time.monotonic() - self._last_ok, 3) if self._last_ok else None,
            "refresh_failures": self._failures,
            "last_error": self._last_error,
            "queries": self._queries,
            "record_sets": sum(len(g) for g in zone.groups.values()) if zone else 0,
            "skipped": list(zone.skipped) if zone else [],
        }
