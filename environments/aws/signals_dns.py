"""`dns_change` events from what DNS really answers (a signal source of environments/aws/signals.py).

The zone's authoritative name servers are asked for the service's A record every `interval_s`
(DNS_POLL_INTERVAL_S, 0.1 s) with dnspython, the way a resolver with an empty cache would ask:
on a real account the hosted zone's DelegationSet NameServers (GetHostedZone, one Route 53 call at
start, within the harness's budget), or `aws.dns_server` when the config names one (the stand-in
account writes it). DNS queries are not Route 53 API calls: they take nothing from the budget.

When the answer (its sorted addresses) changes, one `dns_change` is returned, stamped with the
time of the poll that first saw the new answer: the change happened after the previous poll that
did not see it, so the stamp is late by at most `lateness_bound_s` (the time since that previous
poll: the interval plus scheduling) and never early. The first answer is the baseline, not a change.

One server answers all polls (the first that answers; the next one only when it stops), so the
timeline follows one name server's view: while a change propagates (up to 60 s on AWS) another
server may still answer the old one. A weighted answer is one draw among the records with weight,
so for `route53.routing = "weighted"` each poll asks WEIGHTED_DRAWS times and takes every address
seen: the set Route 53 may answer now. A change that lasted less than one interval (two calls made
back to back) can be missed; the intermediate state of two calls further apart is its own change.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Callable

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from gameday.config import split_host_port

log = logging.getLogger("gameday.aws.signals_dns")

DNS_POLL_INTERVAL_S = 0.1   # 10 queries/s to one name server; the bound on how late a change is stamped
DNS_TIMEOUT_S = 1.0         # one query; a server that does not answer in time gives way to the next
WEIGHTED_DRAWS = 8          # queries per poll for weighted records: two equal records both seen with p = 99.2%


class DnsAnswerError(Exception):
    """No name server answered the query; str() names each server and why."""


class DnsAnswerSource:
    """The service name's A answer as the zone's name servers give it, one `dns_change` per change."""

    def __init__(self, servers: list[tuple[str, int]], record_name: str, *, interval_s: float = DNS_POLL_INTERVAL_S,
                 draws: int = 1, timeout_s: float = DNS_TIMEOUT_S, clock: Callable[[], float] = time.time):
        if not servers:
            raise ValueError("a DNS answer source needs at least one name server")
        self.servers = list(servers)           # (host name or address, port)
        self.record_name = record_name if record_name.endswith(".") else record_name + "."
        self.interval_s, self.draws, self.timeout_s, self.clock = interval_s, max(1, draws), timeout_s, clock
        host, port = self.servers[0]
        self.name = f"dns:{host}" if port == 53 else f"dns:{host}:{port}"
        self._current = 0                      # the server that answered last
        self._addresses: dict[str, str] = {}   # name server host -> IPv4 address (resolved once)
        self._answer: list[str] | None = None
        self._since: float | None = None       # when the current answer was first seen
        self._last_poll: float | None = None   # the last poll that got an answer
        self.queries = 0

    def poll(self) -> list[dict]:
        t = self.clock()                       # the query goes now: a change it sees happened before this
        answer, server = self._ask()
        previous, self._last_poll = self._last_poll, t
        if self._answer is None or answer == self._answer:
            if self._answer is None:
                self._answer, self._since = answer, t   # the baseline
            return []
        old, old_since = self._answer, self._since
        self._answer, self._since = answer, t
        return [{"kind": "dns_change", "time": t, "name": self.record_name, "type": "A", "old": old, "new": answer,
                 "old_lasted_s": round(t - old_since, 3), "server": server,
                 "lateness_bound_s": round(t - previous, 3)}]

    def _ask(self) -> tuple[list[str], str]:
        """(sorted addresses, "host:port") from the first server that answers, the last good one first."""
        errors = []
        order = self.servers[self._current:] + self.servers[:self._current]
        for i, (host, port) in enumerate(order):
            try:
                seen: set[str] = set()
                for _ in range(self.draws):
                    seen.update(self._query(host, port))
            except Exception as e:  # noqa: BLE001 - this server failed: the next one is asked
                errors.append(f"{host}:{port}: {type(e).__name__}: {e}")
                continue
            self._current = (self._current + i) % len(self.servers)
            return sorted(seen), f"{host}:{port}"
        raise DnsAnswerError(f"no name server answered {self.record_name} A: " + "; ".join(errors))

    def _query(self, host: str, port: int) -> list[str]:
        where = self._addresses.get(host) or self._resolve(host)
        self.queries += 1
        reply, _tcp = dns.query.udp_with_fallback(dns.message.make_query(self.record_name, "A"), where,
                                                  timeout=self.timeout_s, port=port)
        if reply.rcode() == dns.rcode.NXDOMAIN:
            return []
        if reply.rcode() != dns.rcode.NOERROR:
            raise DnsAnswerError(f"rcode {dns.rcode.to_text(reply.rcode())}")
        return [rd.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rd in rrset]

    def _resolve(self, host: str) -> str:
        """A name server's IPv4 address (a real zone's name servers are host names), resolved once."""
        address = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
        self._addresses[host] = address
        return address


def name_servers(env) -> list[tuple[str, int]]:
    """Where the zone is answered: aws.dns_server when the config names one (no Route 53 call),
    else the hosted zone's DelegationSet NameServers (GetHostedZone), port 53."""
    spec = env.config.aws
    if spec.dns_server:
        host, port = split_host_port(spec.dns_server)
        return [(host, int(port))]
    zone = env.observer("route53", "us-east-1").get_hosted_zone(Id=spec.hosted_zone_id)
    return [(ns.rstrip("."), 53) for ns in (zone.get("DelegationSet") or {}).get("NameServers", [])]


def make(env) -> DnsAnswerSource | None:
    """The source for SIGNAL_SOURCES: None without a hosted zone or name servers to ask."""
    spec = env.config.aws
    if not spec.dns_server and not spec.hosted_zone_id:
        return None
    servers = name_servers(env)
    if not servers:
        log.warning("hosted zone %s has no delegation set: no dns_change events from DNS", spec.hosted_zone_id)
        return None
    weighted = env.config.route53.routing == "weighted"
    return DnsAnswerSource(servers, env.record_name, draws=WEIGHTED_DRAWS if weighted else 1)
