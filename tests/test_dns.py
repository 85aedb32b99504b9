"""Route 53's data plane (environments.local.dns), its health checkers
(environments.local.healthchecks) and the client resolver (gameday.resolver), end to end.

Real parts: one moto server per region, provisioned with failover routing (health checks on
each region's load-balancer address), fake load balancers on loopback HTTP, the health checkers
probing them, the DNS server on loopback UDP/TCP, dnspython and dnslib clients. The rules
themselves (routing policies, FailureThreshold, Inverted/Disabled, the zone copy across
refreshes) are tables in tests/test_route53_model.py; these tests show the adapters carry them
out over real sockets and processes. The TTL checks are also run against deliberately broken
resolvers to prove they can fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from gameday.environments.local.dns import REFRESH_INTERVAL_S, REFRESH_TIMEOUT_S, Route53DnsServer
from gameday.resolver import Answer, ResolveError, ServiceResolver
from tests.support import descendants, provisioned_context

REPO = Path(__file__).resolve().parents[1]
# The server polls Route 53 every REFRESH_INTERVAL_S; a change must show within a few polls.
PROPAGATION_BOUND_S = 10 * REFRESH_INTERVAL_S
PROPAGATION_DEADLINE_S = 3.0  # how long tests wait before calling it a failure (2 loaded cores)
TTL_MARGIN_S = 0.35           # a cached answer must be replaced within TTL + this
# A simple record beside the provisioned failover records of the service name
SIMPLE = "simple.gameday.test."


def eventually(deadline_s: float, interval_s: float = 0.02):
    return retry(stop=stop_after_delay(deadline_s), wait=wait_fixed(interval_s), reraise=True,
                 retry=retry_if_exception_type(AssertionError))


def upsert_a(ctx, name: str, address: str, ttl: int, **extra) -> None:
    ctx.customer_client("route53", "us-east-1").change_resource_record_sets(
        HostedZoneId=ctx.provisioned.hosted_zone_id,
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": name, "Type": "A", "TTL": ttl, "ResourceRecords": [{"Value": address}], **extra}}]})


def last_seq(ctx) -> int:
    events = ctx.events.since(0)
    return events[-1]["seq"] if events else 0


def wait_until_served(server: Route53DnsServer, name: str, addresses: list[str]) -> float:
    """Seconds until the server answers name with addresses (asked over the wire, uncached)."""
    fresh = ServiceResolver("127.0.0.1", server.port, honour_ttl=False)
    t0 = time.monotonic()

    @eventually(PROPAGATION_DEADLINE_S, 0.005)
    def served():
        try:
            got = fresh.lookup(name).addresses
        except ResolveError as e:  # e.g. NXDOMAIN until a new name reaches the server
            raise AssertionError(str(e)) from None
        assert got == addresses

    served()
    return time.monotonic() - t0


# -- provisioned routing patterns and Route 53 health checks (environments.local.healthchecks) --------------

class FakeLoadBalancers:
    """An HTTP endpoint on each region's load-balancer address and a shared port, answering the health
    path with 200 ("ok"), 503 ("fail"), never ("hang"), or not listening ("refuse")."""

    def __init__(self, ctx):
        import http.server

        self.mode = {r: "ok" for r in ctx.lb_addresses}
        self.hits = {r: 0 for r in ctx.lb_addresses}
        self.released = threading.Event()
        self.servers = {}
        fake = self
        for region, ip in ctx.lb_addresses.items():
            class Handler(http.server.BaseHTTPRequestHandler):
                region_name = region

                def do_GET(self):  # noqa: N802
                    fake.hits[self.region_name] += 1
                    if fake.mode[self.region_name] == "hang":
                        fake.released.wait(10)
                        return
                    code = 200 if fake.mode[self.region_name] == "ok" else 503
                    self.send_response(code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

                def log_message(self, *a):
                    pass

            srv = http.server.ThreadingHTTPServer((ip, ctx.lb_port), Handler)
            srv.daemon_threads = True
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self.servers[region] = srv

    def set(self, region: str, mode: str) -> None:
        if mode == "refuse":
            srv = self.servers.pop(region)
            srv.shutdown()
            srv.server_close()
        self.mode[region] = mode

    def stop(self) -> None:
        self.released.set()
        for srv in self.servers.values():
            srv.shutdown()
            srv.server_close()


@pytest.fixture(scope="module")
def routed():
    """A zone provisioned with route53.routing = failover (health checks on each region's load-balancer
    address), fake load balancers, health checkers at HC_INTERVAL_S and the DNS server following them."""
    from gameday.environments.local.healthchecks import Route53HealthCheckers
    from gameday.environments.local.provision import provision
    from gameday.config import load_config
    from gameday.net import free_port_on_all

    cfg = load_config(None, {"route53": {"routing": "failover"}, "failover": {"failback": "automatic"}})
    with provisioned_context(cfg, do_provision=False) as ctx:
        ctx.lb_port = free_port_on_all(list(ctx.lb_addresses.values()))
        ctx.provisioned = provision(ctx)
        lbs = FakeLoadBalancers(ctx)
        checkers = Route53HealthCheckers(ctx, interval_s=HC_INTERVAL_S, refresh_interval_s=0.5).start()
        server = Route53DnsServer(ctx, health=checkers.is_healthy).start()
        try:
            yield ctx, lbs, checkers, server
        finally:
            server.stop()
            checkers.stop()
            lbs.stop()


HC_INTERVAL_S = 0.2
# FailureThreshold (3) probes, each at most the interval or the 1 s compressed timeout, + scheduling
HC_DEADLINE_S = 3 * (1.0 + HC_INTERVAL_S) + 2.0


def _health_events(ctx, region, healthy, since):
    return [e for e in ctx.events.since(since, "route53_health") if e["region"] == region and e["healthy"] is healthy]


@pytest.fixture(scope="module")
def dns(routed):
    """(ctx, DNS server) of the one provisioned stack: every test here shares its moto servers."""
    ctx, _, _, server = routed
    return ctx, server


def addresses(ctx):
    cfg = ctx.config
    return ctx.lb_addresses[cfg.initial_region], ctx.lb_addresses["us-west-2"]


def service_name(ctx) -> str:
    return ctx.config.record_name  # "api.gameday.test.", failover records


def _fail(msg):
    raise AssertionError(msg)


# -- answering -----------------------------------------------------------------------------------------

def test_record_resolves_over_udp_and_tcp(dns):
    ctx, server = dns
    old, _ = addresses(ctx)
    upsert_a(ctx, SIMPLE, old, ctx.profile.dns_ttl_s)
    wait_until_served(server, SIMPLE, [old])
    assert server.port and ctx.dns_port == server.port
    for tcp in (False, True):
        reply = DNSRecord.parse(DNSRecord.question(SIMPLE, "A").send(
            "127.0.0.1", server.port, tcp=tcp, timeout=2))
        assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1, reply
        assert [str(rr.rdata) for rr in reply.rr] == [old]
        assert reply.rr[0].ttl == ctx.profile.dns_ttl_s  # the record's TTL, not a default
    answer = ServiceResolver("127.0.0.1", server.port).lookup(SIMPLE)
    assert answer == Answer([old], ctx.profile.dns_ttl_s)
    # status() shows the answers the server answers from: a record just served is in them at once
    # (the server once answered from a zone it had read but not yet published, and status() lacked
    # the record for a moment: seen twice in three full runs; route53_model.ZoneCopy.served)
    st = server.status()
    json.dumps(st)
    assert st["port"] == server.port and st["answers"].get(SIMPLE) == [old], st["answers"]
    assert st["last_refresh_age_s"] < 1.0


def test_unknown_name_nxdomain_other_zone_refused(dns):
    ctx, server = dns
    r = ServiceResolver("127.0.0.1", server.port)
    with pytest.raises(ResolveError, match="NXDOMAIN") as e:
        r.resolve("nope.gameday.test")
    assert "nope.gameday.test" in str(e.value) and f"127.0.0.1:{server.port}" in str(e.value)
    with pytest.raises(ResolveError, match="REFUSED"):
        r.resolve("api.example.com")

    def ask(name, qtype="A"):
        return DNSRecord.parse(DNSRecord.question(name, qtype).send("127.0.0.1", server.port, timeout=2))

    nx = ask("nope.gameday.test")
    assert nx.header.rcode == RCODE.NXDOMAIN and nx.header.aa == 1
    assert [QTYPE[a.rtype] for a in nx.auth] == ["SOA"]  # negative answers carry the SOA (RFC 2308)
    assert ask("api.example.com").header.rcode == RCODE.REFUSED
    upsert_a(ctx, SIMPLE, addresses(ctx)[0], ctx.profile.dns_ttl_s)   # this test's own record, not an earlier test's
    wait_until_served(server, SIMPLE, [addresses(ctx)[0]])
    nodata = ask(SIMPLE, "AAAA")  # the name exists, the type does not: NOERROR, empty
    assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr
    assert ask("gameday.test", "SOA").rr and ask("gameday.test", "NS").rr


def test_upsert_is_answered_promptly_and_emits_dns_change(dns):
    ctx, server = dns
    name = SIMPLE
    old, new = addresses(ctx)
    upsert_a(ctx, name, old, ctx.profile.dns_ttl_s)
    wait_until_served(server, name, [old])
    since = last_seq(ctx)
    t0 = time.monotonic()
    upsert_a(ctx, name, new, ctx.profile.dns_ttl_s)
    wait_until_served(server, name, [new])
    delay = time.monotonic() - t0  # from before the UPSERT call to the first new answer
    print(f"UPSERT -> new answer: {delay * 1000:.0f} ms")
    assert delay < PROPAGATION_BOUND_S, f"Route 53 DNS took {delay:.2f}s to answer the UPSERT"

    @eventually(PROPAGATION_DEADLINE_S)
    def event_emitted():
        changes = [e for e in ctx.events.since(since, "dns_change") if e["name"] == name]
        assert changes and changes[-1]["old"] == [old] and changes[-1]["new"] == [new], changes

    event_emitted()
    assert server.status()["answers"][name] == [new]


# -- the client cache honours the TTL ----------------------------------------------------------------------

def check_follows_after_ttl(ctx, server, resolver: ServiceResolver, ttl: int) -> dict:
    """resolver caches the old answer, Route 53 moves, and the resolver must keep the old address
    until ttl has passed since it got the answer, then return the new one within TTL_MARGIN_S."""
    name = SIMPLE
    old, new = addresses(ctx)
    upsert_a(ctx, name, old, ttl)
    wait_until_served(server, name, [old])
    filled = time.monotonic()
    assert resolver.resolve(name) == [old]
    upsert_a(ctx, name, new, ttl)
    wait_until_served(server, name, [new])
    if time.monotonic() - filled >= ttl:
        pytest.fail(f"setup too slow: Route 53 moved {time.monotonic() - filled:.2f}s after the cache was "
                    f"filled, not within the TTL ({ttl}s), so the test cannot tell a cache from a re-query")
    seen: list[tuple[float, list[str]]] = []

    @eventually(ttl + TTL_MARGIN_S + 0.5, 0.01)
    def moved():
        got = resolver.resolve(name)
        seen.append((time.monotonic() - filled, got))
        assert got == [new], f"still {got} at {seen[-1][0]:.2f}s"

    moved()
    early = [(round(t, 3), a) for t, a in seen if t < ttl and a != [old]]
    assert not early, f"the resolver dropped its cached answer before the {ttl}s TTL ran out: {early}"
    first_new = next(t for t, a in seen if a == [new])
    assert ttl <= first_new <= ttl + TTL_MARGIN_S, f"new answer after {first_new:.2f}s, TTL {ttl}s"
    return {"first_new_s": first_new}


def test_cached_resolver_keeps_old_answer_until_ttl(dns):
    ctx, server = dns
    ttl = max(ctx.profile.dns_ttl_s, 1)
    out = check_follows_after_ttl(ctx, server, ServiceResolver("127.0.0.1", server.port), ttl)
    print(f"TTL {ttl}s: cached resolver moved after {out['first_new_s']:.3f}s")


class _CachesForever(ServiceResolver):
    def lookup(self, name):
        return Answer(super().lookup(name).addresses, 3600)


def test_ttl_check_catches_broken_resolvers(dns):
    ctx, server = dns
    ttl = max(ctx.profile.dns_ttl_s, 1)
    with pytest.raises(AssertionError, match="before the"):
        check_follows_after_ttl(ctx, server, ServiceResolver("127.0.0.1", server.port, honour_ttl=False), ttl)
    with pytest.raises(AssertionError, match="still"):
        check_follows_after_ttl(ctx, server, _CachesForever("127.0.0.1", server.port), ttl)


def test_ttl_zero_is_always_fresh(dns):
    ctx, server = dns
    name = SIMPLE
    old, new = addresses(ctx)
    upsert_a(ctx, name, old, 0)
    wait_until_served(server, name, [old])
    cached = ServiceResolver("127.0.0.1", server.port)
    fresh = ServiceResolver("127.0.0.1", server.port, honour_ttl=False)
    assert cached.resolve(name) == [old] and cached.lookup(name).ttl == 0
    upsert_a(ctx, name, new, 0)

    @eventually(PROPAGATION_DEADLINE_S, 0.005)
    def moved():
        assert fresh.lookup(name).addresses == [new]

    moved()
    assert cached.resolve(name) == [new]  # nothing cached with TTL 0
    upsert_a(ctx, name, old, ctx.profile.dns_ttl_s)


def test_resolver_is_thread_safe(dns):
    ctx, server = dns
    name = SIMPLE
    old, new = addresses(ctx)
    upsert_a(ctx, name, old, 0)
    wait_until_served(server, name, [old])
    r = ServiceResolver("127.0.0.1", server.port)
    errors: list[Exception] = []
    answers: set[tuple[str, ...]] = set()
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                answers.add(tuple(r.resolve(name)))
            except Exception as e:  # noqa: BLE001 - collected and asserted
                errors.append(e)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    upsert_a(ctx, name, new, 0)
    wait_until_served(server, name, [new])
    stop.set()
    for t in threads:
        t.join(5)
    assert not errors, errors[:3]
    assert answers <= {(old,), (new,)} and (new,) in answers
    upsert_a(ctx, name, old, ctx.profile.dns_ttl_s)


def test_weighted_routing_record_sets_and_restore(routed):
    """route53.routing = weighted as provision() writes it (and the baseline restores it), into the
    same zone under another name: set identifiers (configured or the region name), weight 100 on
    the active region and 0 elsewhere, swapped in one batch."""
    from gameday.environments.local.provision import route53_record_sets
    from gameday.config import load_config

    ctx, _, _, server = routed
    cfg = load_config(None, {"service": {"name": "weighted.gameday.test"},
                             "route53": {"routing": "weighted", "set_identifiers": {"us-east-1": "east"}}})
    east, west = addresses(ctx)
    r53 = ctx.internal_client("route53", "us-east-1")

    def apply(active):
        r53.change_resource_record_sets(HostedZoneId=ctx.provisioned.hosted_zone_id, ChangeBatch={"Changes": [
            {"Action": "UPSERT", "ResourceRecordSet": rs}
            for rs in route53_record_sets(cfg, ctx.lb_addresses, 1, active)]})

    apply(cfg.initial_region)
    sets = {s["SetIdentifier"]: s for s in r53.list_resource_record_sets(
        HostedZoneId=ctx.provisioned.hosted_zone_id)["ResourceRecordSets"] if s["Name"] == cfg.record_name}
    assert {k: (v["Weight"], v["ResourceRecords"][0]["Value"]) for k, v in sets.items()} == {
        "east": (100, east), "us-west-2": (0, west)}
    wait_until_served(server, cfg.record_name, [east])
    apply("us-west-2")
    wait_until_served(server, cfg.record_name, [west])


def test_failover_routing_follows_real_health_checks(routed):
    ctx, lbs, checkers, server = routed
    east, west = addresses(ctx)
    r53 = ctx.internal_client("route53", "us-east-1")
    ids = ctx.provisioned.health_check_ids
    assert set(ids) == {"us-east-1", "us-west-2"}
    hc = r53.get_health_check(HealthCheckId=ids["us-east-1"])["HealthCheck"]["HealthCheckConfig"]
    assert (hc["IPAddress"], hc["Port"], hc["Type"], hc["ResourcePath"], hc["RequestInterval"],
            hc["FailureThreshold"]) == (east, ctx.lb_port, "HTTP", "/health", 10, 3)
    sets = {s["Failover"]: s for s in r53.list_resource_record_sets(HostedZoneId=ctx.provisioned.hosted_zone_id)[
        "ResourceRecordSets"] if s["Name"] == service_name(ctx)}
    assert sets["PRIMARY"]["HealthCheckId"] == ids["us-east-1"] and sets["PRIMARY"]["SetIdentifier"] == "us-east-1"
    assert sets["SECONDARY"]["ResourceRecords"][0]["Value"] == west
    wait_until_served(server, service_name(ctx), [east])

    # 503: unhealthy after FailureThreshold consecutive failures, and DNS answers the secondary
    since = last_seq(ctx)
    probes_before = checkers.status()["checks"][ids["us-east-1"]]["probes"]
    lbs.set("us-east-1", "fail")

    @eventually(HC_DEADLINE_S)
    def unhealthy():
        assert _health_events(ctx, "us-east-1", False, since)

    unhealthy()
    st = checkers.status()["checks"][ids["us-east-1"]]
    assert st["probes"] - probes_before >= 3, "went unhealthy before FailureThreshold probes"
    assert "503" in st["last_result"]
    wait_until_served(server, service_name(ctx), [west])
    # the change event comes with the server's next poll tick
    eventually(PROPAGATION_DEADLINE_S)(lambda: any(e["new"] == [west] for e in ctx.events.since(since, "dns_change"))
                                       or _fail("no dns_change to the secondary"))()

    # healthy again (failback is automatic with failover routing), then a hung endpoint times out
    lbs.set("us-east-1", "ok")
    eventually(HC_DEADLINE_S)(lambda: _health_events(ctx, "us-east-1", True, since) or _fail("still unhealthy"))()
    wait_until_served(server, service_name(ctx), [east])
    since = last_seq(ctx)
    lbs.set("us-east-1", "hang")
    eventually(HC_DEADLINE_S)(lambda: _health_events(ctx, "us-east-1", False, since) or _fail("still healthy"))()
    assert "no HTTP response" in checkers.status()["checks"][ids["us-east-1"]]["last_result"]
    wait_until_served(server, service_name(ctx), [west])
    assert lbs.hits["us-west-2"] > 0  # the secondary is checked too
    assert not _health_events(ctx, "us-west-2", False, 0)


def test_tcp_health_checks_pass_a_hung_endpoint_and_fail_a_refusing_one(routed):
    """A TCP health check (its own name in the zone, on us-west-2's fake load balancer) passes an
    endpoint that accepts connections and never answers: the mistake a hung region exposes."""
    ctx, lbs, checkers, server = routed
    r53 = ctx.internal_client("route53", "us-east-1")
    east, west = addresses(ctx)
    hid = r53.create_health_check(CallerReference=f"tcp-{time.time()}", HealthCheckConfig={
        "IPAddress": west, "Port": ctx.lb_port, "Type": "TCP", "RequestInterval": 10,
        "FailureThreshold": 3})["HealthCheck"]["Id"]
    name = "tcp.gameday.test."
    upsert_a(ctx, name, west, 0, SetIdentifier="p", Failover="PRIMARY", HealthCheckId=hid)
    upsert_a(ctx, name, east, 0, SetIdentifier="s", Failover="SECONDARY")
    eventually(PROPAGATION_DEADLINE_S)(lambda: hid in checkers.status()["checks"] or _fail("not picked up"))()
    wait_until_served(server, name, [west])
    since = last_seq(ctx)
    lbs.set("us-west-2", "hang")   # accepts connections, never answers: TCP cannot tell
    before = checkers.status()["checks"][hid]["probes"]
    eventually(HC_DEADLINE_S)(lambda: checkers.status()["checks"][hid]["probes"] >= before + 4 or _fail("no probes"))()
    assert checkers.is_healthy(hid) and "TCP connection established" in checkers.status()["checks"][hid]["last_result"]
    wait_until_served(server, name, [west])
    lbs.set("us-west-2", "refuse")
    eventually(HC_DEADLINE_S)(lambda: not checkers.is_healthy(hid) or _fail("still healthy"))()
    wait_until_served(server, name, [east])
    assert [e for e in ctx.events.since(since, "route53_health") if e["health_check_id"] == hid]


# -- each change batch its own state (the router tells the DNS server) ---------------------------------------

@pytest.fixture
def via_router(routed):
    """The AWS router in front of the module's moto servers (customers' calls, as a failover function
    makes them), its Route 53 changes told to the DNS server; then customers go straight to moto again."""
    from gameday.environments.local.router import AwsRouter

    ctx = routed[0]
    direct = ctx.router_url
    router = AwsRouter(ctx).start()
    try:
        yield router
    finally:
        router.stop()
        ctx.router_url = direct


def set_weights(r53, ctx, name: str, weights: dict[str, int], comment: str) -> None:
    east, west = addresses(ctx)
    r53.change_resource_record_sets(HostedZoneId=ctx.provisioned.hosted_zone_id, ChangeBatch={
        "Comment": comment, "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": name, "Type": "A", "TTL": 1, "SetIdentifier": ident, "Weight": weight,
            "ResourceRecords": [{"Value": {"east": east, "west": west}[ident]}]}} for ident, weight in weights.items()]})


def changes_of(ctx, name: str, since: int) -> list[dict]:
    return [e for e in ctx.events.since(since, "dns_change") if e["name"] == name]


def test_each_change_batch_is_its_own_state_as_soon_as_it_is_made(routed, via_router):
    """A weighted failover written as two calls (primary weight 0, then secondary weight 1), back to
    back through the router as a failover function makes them: each batch is served and on the
    timeline by the time its caller has the answer, the intermediate one (every weight 0: both
    regions) with a measurable duration. The poll alone (every REFRESH_INTERVAL_S) would show one move."""
    from gameday import aws

    ctx, _, _, server = routed
    east, west = addresses(ctx)
    name = "twocalls.gameday.test."
    set_weights(ctx.internal_client("route53", "us-east-1"), ctx, name, {"east": 1, "west": 0}, "start")
    # the poll's own event for it (a query may be answered from the new zone a moment before it)
    eventually(PROPAGATION_DEADLINE_S)(lambda: changes_of(ctx, name, 0) or _fail("the poll missed the start"))()
    since = last_seq(ctx)
    # a function in us-west-2 signs Route 53 for its own region; the router sends it to us-east-1
    r53 = aws.client("route53", "us-west-2", ctx.router_url, retries=0, cached=False)
    set_weights(r53, ctx, name, {"east": 0}, "primary weight 0")
    [first] = changes_of(ctx, name, since)           # no waiting: applied before the call returned
    assert server.answers()[name] == [east, west]
    set_weights(r53, ctx, name, {"west": 1}, "secondary weight 1")
    assert ServiceResolver("127.0.0.1", server.port, honour_ttl=False).lookup(name).addresses == [west]
    [_, second] = changes_of(ctx, name, since)
    assert (first["old"], first["new"], first["source"], first["comment"]) == ([east], [east, west], "change",
                                                                              "primary weight 0")
    assert first["changes"] == [f"UPSERT {name} A (east) weight 0: {east}"]
    assert (second["new"], second["source"], second["comment"]) == ([west], "change", "secondary weight 1")
    lasted = second["time"] - first["time"]           # the intermediate state, from the events alone
    print(f"intermediate state (both regions) lasted {lasted * 1000:.1f} ms; "
          f"old_lasted_s {second['old_lasted_s'] * 1000:.1f} ms")
    assert 0 < lasted < PROPAGATION_BOUND_S
    assert second["old_lasted_s"] == pytest.approx(lasted, abs=0.05)
    assert server.status()["changes_applied"] >= 2


def test_a_rejected_change_publishes_nothing_and_the_poll_finds_direct_changes(routed, via_router):
    """A change Route 53 refuses is no state; a change made straight against moto
    (the harness's own, e.g. the baseline) reaches the answers through the poll, labelled so."""
    import botocore.exceptions
    from gameday import aws

    ctx, _, _, server = routed
    east, west = addresses(ctx)
    name = "polled.gameday.test."
    since = last_seq(ctx)
    applied = server.status()["changes_applied"]
    # (AWS says InvalidChangeBatch for a DELETE of an absent record; moto 5.2.5 says InvalidInput)
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidChangeBatch|InvalidInput"):
        aws.client("route53", "us-east-1", ctx.router_url, retries=0, cached=False).change_resource_record_sets(
            HostedZoneId=ctx.provisioned.hosted_zone_id, ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": {
                "Name": "absent.gameday.test.", "Type": "A", "TTL": 1, "ResourceRecords": [{"Value": east}]}}]})
    assert server.status()["changes_applied"] == applied
    set_weights(ctx.internal_client("route53", "us-east-1"), ctx, name, {"east": 1, "west": 1}, "direct")
    eventually(PROPAGATION_DEADLINE_S)(lambda: changes_of(ctx, name, since) or _fail("the poll missed it"))()
    [change] = changes_of(ctx, name, since)
    assert (change["new"], change["source"]) == ([east, west], "poll") and "comment" not in change
    assert server.status()["changes_applied"] == applied


# -- inside Locust: gevent ---------------------------------------------------------------------------

GEVENT_PROBE = textwrap.dedent("""
    import sys
    if sys.argv[2] == "patched":
        from gevent import monkey
        monkey.patch_all()
    import json, socket, time
    import gevent
    from gameday.resolver import ResolveError, ServiceResolver

    ok = ServiceResolver("127.0.0.1", int(sys.argv[1])).resolve(sys.argv[3])
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a DNS server that never answers
    silent.bind(("127.0.0.1", 0))
    dead = ServiceResolver("127.0.0.1", silent.getsockname()[1], timeout_s=0.5)
    ticks = []

    def ticker():
        end = time.monotonic() + 0.7
        while time.monotonic() < end:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    def waiter():
        try:
            dead.lookup("api.gameday.test")
            return "answered"
        except ResolveError as e:
            return str(e)

    g1, g2 = gevent.spawn(ticker), gevent.spawn(waiter)
    gevent.joinall([g1, g2])
    gap = max(b - a for a, b in zip(ticks, ticks[1:]))
    print(json.dumps({"ok": ok, "max_gap_s": gap, "waiter": g2.value}))
""")


def _probe(server, name, mode) -> dict:
    out = subprocess.run([sys.executable, "-c", GEVENT_PROBE, str(server.port), mode, name],
                         capture_output=True, text=True, timeout=30, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_resolver_cooperates_with_gevent(dns):
    ctx, server = dns
    name = SIMPLE
    upsert_a(ctx, name, addresses(ctx)[0], ctx.profile.dns_ttl_s)
    wait_until_served(server, name, [addresses(ctx)[0]])
    patched = _probe(server, name, "patched")
    assert patched["ok"] == [addresses(ctx)[0]]
    assert "no answer within 0.5s" in patched["waiter"], patched
    # a resolver waiting on a silent server must not stop the other greenlets (Locust users)
    assert patched["max_gap_s"] < 0.25, patched
    # the same probe without monkey-patching blocks: proves the probe can tell
    assert _probe(server, name, "unpatched")["max_gap_s"] >= 0.4


# -- the data plane outlives the control plane ------------------------------------------------------------

def _moto_pid(ctx, region: str) -> int:
    port = ctx.moto_urls[region].rsplit(":", 1)[1]
    for pid in descendants(os.getpid()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(m in argv for m in (b"moto.server", b"gameday.environments.local.moto_main")) and port.encode() in argv:
            return pid
    raise AssertionError(f"no moto server child for {region} on port {port}")


def test_keeps_answering_last_good_zone_while_route53_api_hangs(dns):
    """Last in the module: it freezes the shared Route 53 moto. A second DNS server on the same
    zone shows the adapter side of the rule (test_route53_model has the rule): a hung API call
    blocks neither the answers nor stop(); the shared server shows recovery and changes flowing."""
    ctx, server = dns
    old, new = addresses(ctx)
    upsert_a(ctx, SIMPLE, new, 0)
    wait_until_served(server, SIMPLE, [new])
    ctx.dns_port = 0  # the second server takes a port of its own
    try:
        second = Route53DnsServer(ctx).start()
    finally:
        ctx.dns_port = server.port
    fresh = ServiceResolver("127.0.0.1", second.port, honour_ttl=False)
    pid = _moto_pid(ctx, "us-east-1")
    since = last_seq(ctx)
    os.kill(pid, signal.SIGSTOP)  # hung API: calls time out
    try:
        answers = []

        @eventually(1.0 + 3 * REFRESH_TIMEOUT_S + 2, 0.05)
        def failing_for_a_while():
            answers.append(fresh.lookup(SIMPLE).addresses)
            st = second.status()
            assert st["refresh_failures"] >= 1 and st["last_refresh_age_s"] >= 1.0, st

        failing_for_a_while()
        # every answer meanwhile came from the last good copy of the zone
        assert len(answers) > 3 and all(a == [new] for a in answers), answers
        failing = [e for e in ctx.events.since(since, "dns_refresh") if e["state"] == "failing"]
        assert failing and "serving" in failing[0], failing
        t0 = time.monotonic()
        second.stop()
        second.stop()  # idempotent
        assert time.monotonic() - t0 < REFRESH_TIMEOUT_S + 1.5, "stop() waited on the hung API"
    finally:
        os.kill(pid, signal.SIGCONT)

    @eventually(3 * REFRESH_TIMEOUT_S + 2)
    def recovered():
        assert server.status()["refresh_failures"] == 0
        assert ctx.events.since(since, "dns_refresh")[-1]["state"] == "ok"

    recovered()
    upsert_a(ctx, SIMPLE, old, 0)  # and changes flow again
    wait_until_served(server, SIMPLE, [old])
    json.dumps(server.status())
