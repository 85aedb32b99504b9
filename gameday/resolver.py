"""A client's view of the service name: a stub resolver with a TTL cache, on dnspython.

Clients move to the failover region only when their cached answer expires, so the harness
resolves the service name the way a real client does: `resolve()` keeps an answer for the
TTL the DNS server gave it, then asks again. `lookup()` always asks (what Route 53 answers
right now).

It runs in plain threads and inside Locust (gevent monkey-patched sockets): it starts no
threads and takes no locks, and dnspython looks up socket and selector classes when it
queries, so a patched process gets cooperative sockets. A cache hit is one dict lookup and
one clock read, because it is on every request's path.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from gameday.net import LOCAL_ONLY, check_address


class ResolveError(Exception):
    """The name could not be resolved; the message names the name, the server and the cause."""

    def __init__(self, name: str, server: str, cause: str):
        super().__init__(f"cannot resolve {name} with DNS server {server}: {cause}")
        self.name, self.server, self.cause = name, server, cause


@dataclass(frozen=True)
class Answer:
    addresses: list[str]
    ttl: int


class CachingResolver:
    """The TTL cache every resolver of the harness shares; subclasses say how to `lookup()`
    (a DNS query here, the Route 53 API in environments/aws) and set `server` and
    `honour_ttl` and an empty `_cache` (name -> (addresses, monotonic expiry))."""

    server: str
    honour_ttl: bool
    _cache: dict[str, tuple[tuple[str, ...], float]]

    def lookup(self, name: str) -> Answer:
        raise NotImplementedError

    def resolve(self, name: str) -> list[str]:
        """Addresses for name, from the cache until the answer's TTL has run out."""
        hit = self._cache.get(name)
        if hit is not None and time.monotonic() < hit[1]:
            return list(hit[0])
        answer = self.lookup(name)
        if self.honour_ttl:
            # the TTL counts from when the answer arrived, as in any caching resolver
            self._cache[name] = (tuple(answer.addresses), time.monotonic() + answer.ttl)
        return answer.addresses

    def address(self, name: str) -> str:
        """One address to connect to: a random one when the answer holds several."""
        addresses = self.resolve(name)
        return addresses[0] if len(addresses) == 1 else random.choice(addresses)


class ServiceResolver(CachingResolver):
    """Asks one DNS server, which must lie in `allowed` (networks, gameday.net: loopback unless
    told otherwise): the harness queries only the DNS server its environment started."""

    def __init__(self, host: str, port: int, *, honour_ttl: bool = True, timeout_s: float = 1.0,
                 allowed=LOCAL_ONLY):
        check_address(host, allowed, what="DNS queries")
        self.server = f"{host}:{port}"
        self.honour_ttl = honour_ttl
        r = dns.resolver.Resolver(configure=False)  # not /etc/resolv.conf: only the given server
        r.nameservers = [host]
        r.port = port
        r.timeout = r.lifetime = timeout_s
        self._resolver = r
        # name -> (addresses, monotonic time the answer expires)
        self._cache: dict[str, tuple[tuple[str, ...], float]] = {}

    def lookup(self, name: str) -> Answer:
        """Ask the server now (no cache)."""
        try:
            ans = self._resolver.resolve(dns.name.from_text(name), dns.rdatatype.A, search=False)
        except dns.resolver.NXDOMAIN:
            raise ResolveError(name, self.server, "NXDOMAIN (no such name)") from None
        except dns.resolver.NoAnswer:
            raise ResolveError(name, self.server, "no A record for this name (NODATA)") from None
        except dns.resolver.NoNameservers as e:
            # REFUSED (not a zone the server serves) or SERVFAIL land here
            raise ResolveError(name, self.server, f"the server did not answer it: {e}") from None
        except dns.exception.Timeout:
            raise ResolveError(name, self.server, f"no answer within {self._resolver.lifetime:g}s") from None
        except (dns.exception.DNSException, OSError) as e:
            raise ResolveError(name, self.server, f"{type(e).__name__}: {e}") from None
        return Answer([rd.address for rd in ans], int(ans.chaining_result.minimum_ttl))
