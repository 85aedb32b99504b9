"""Route 53's signals from the running local model (issue 19, item 4): GetChange goes PENDING ->
INSYNC when the local DNS server serves the change (environments/local/dns.py tells moto,
moto_fix_route53 answers), and GetHealthCheckStatus reports what the local health checkers
observed (environments/local/healthchecks.py). Real moto servers with the corrections, the real
DNS server, router and checkers on loopback; each check has a twin with the component's report
switched off, where it must fail. Each test prints how long after the change the signal was
visible (pytest -s shows it).
"""

from __future__ import annotations


import pytest

from gameday.assertions.eventually import NotWithinDeadline, eventually
from gameday.config import load_config
from gameday.environments.local.dns import REFRESH_INTERVAL_S, Route53DnsServer
from gameday.environments.local.moto_fix_route53 import health_status_report
from gameday.resolver import ResolveError, ServiceResolver
from tests.support import provisioned_context

NAME = "signals.gameday.test."
# the DNS server applies a change at once (router) or at its next poll: a few polls, on busy cores
SERVED_DEADLINE_S = 10 * REFRESH_INTERVAL_S + 2.0
HC_INTERVAL_S = 0.2
# a probe every interval (timeouts 1 s compressed), the report right after it, + scheduling
HC_DEADLINE_S = 2 * (1.0 + HC_INTERVAL_S) + 2.0


def _upsert(r53, zone: str, address: str) -> dict:
    return r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {"Name": NAME, "Type": "A", "TTL": 1,
                                                  "ResourceRecords": [{"Value": address}]}}]})["ChangeInfo"]


def insync_when_served(r53, server: Route53DnsServer, change: dict, address: str, deadline_s: float) -> float:
    """Seconds until GetChange says INSYNC; by then the DNS server answers the change (AssertionError otherwise)."""
    assert change["Status"] == "PENDING", change
    resolver = ServiceResolver("127.0.0.1", server.port, honour_ttl=False)

    def insync():
        assert r53.get_change(Id=change["Id"])["ChangeInfo"]["Status"] == "INSYNC", "PENDING"
        try:
            assert resolver.lookup(NAME).addresses == [address], "INSYNC before the DNS server serves the change"
        except ResolveError as e:
            raise AssertionError(f"INSYNC before the DNS server serves the change: {e}") from None

    return eventually(insync, deadline_s=deadline_s, what=f"change {change['Id']} INSYNC", interval_s=0.005)[1]


@pytest.fixture(scope="module")
def ctx():
    with provisioned_context() as c:
        yield c


def test_a_change_goes_insync_when_the_dns_server_serves_it(ctx):
    zone = ctx.provisioned.hosted_zone_id
    server = Route53DnsServer(ctx).start()
    direct = ctx.router_url
    try:
        # made straight against moto (the harness's own change): the server's poll serves it
        straight = ctx.internal_client("route53", "us-east-1")
        polled_s = insync_when_served(straight, server, _upsert(straight, zone, "127.0.9.1"), "127.0.9.1",
                                      SERVED_DEADLINE_S)
        # made by a customer through the router: the server applies it before the caller has the answer
        from gameday.environments.local.router import AwsRouter

        router = AwsRouter(ctx).start()
        try:
            r53 = ctx.customer_client("route53", "us-east-1")
            routed_s = insync_when_served(r53, server, _upsert(r53, zone, "127.0.9.2"), "127.0.9.2",
                                          SERVED_DEADLINE_S)
        finally:
            router.stop()
            ctx.router_url = direct
    finally:
        server.stop()
    print(f"\nGetChange PENDING -> INSYNC: {polled_s * 1000:.0f} ms (a change straight to moto, served by the "
          f"poll every {REFRESH_INTERVAL_S * 1000:.0f} ms), {routed_s * 1000:.0f} ms (a customer's, through the "
          f"router)")
    # nobody serves the zone any more: nothing waits for a DNS server
    assert _upsert(ctx.internal_client("route53", "us-east-1"), zone, "127.0.9.3")["Status"] == "INSYNC"


def test_twin_a_dns_server_that_never_reports_leaves_changes_pending(ctx, monkeypatch):
    zone = ctx.provisioned.hosted_zone_id
    server = Route53DnsServer(ctx)
    monkeypatch.setattr(server, "_tell_route53", lambda route, **body: None)   # follows the zone, never reports
    server.start()
    try:
        r53 = ctx.internal_client("route53", "us-east-1")
        change = _upsert(r53, zone, "127.0.9.4")
        with pytest.raises(NotWithinDeadline, match="PENDING"):
            insync_when_served(r53, server, change, "127.0.9.4", SERVED_DEADLINE_S)
    finally:
        server.stop()
    # its follower stopped: the change is not left PENDING
    assert r53.get_change(Id=change["Id"])["ChangeInfo"]["Status"] == "INSYNC"


# -- GetHealthCheckStatus from the health checkers --------------------------------------------------------------

@pytest.fixture(scope="module")
def routed():
    """Failover routing: health checks on each region's load-balancer address, fake load balancers."""
    from gameday.environments.local.provision import provision
    from gameday.net import free_port_on_all
    from tests.test_dns import FakeLoadBalancers

    cfg = load_config(None, {"route53": {"routing": "failover"}, "failover": {"failback": "automatic"}})
    with provisioned_context(cfg, do_provision=False) as c:
        c.lb_port = free_port_on_all(list(c.lb_addresses.values()))
        c.provisioned = provision(c)
        lbs = FakeLoadBalancers(c)
        try:
            yield c, lbs
        finally:
            lbs.stop()


def observed(r53, hid: str, status: str) -> dict:
    """GetHealthCheckStatus reports `status` (AssertionError otherwise)."""
    obs = r53.get_health_check_status(HealthCheckId=hid)["HealthCheckObservations"]
    assert [o["StatusReport"]["Status"] for o in obs] == [status], obs
    assert obs[0]["IPAddress"] == "127.0.0.1" and obs[0]["Region"] == "us-east-1"
    return obs[0]


def _fail_and_heal(c, lbs, checkers) -> tuple[float, float]:
    r53, hid = c.internal_client("route53", "us-east-1"), c.provisioned.health_check_ids["us-west-2"]
    checkers.start()
    try:
        ok, failing = health_status_report(True, http_status=200), health_status_report(False, http_status=503)
        eventually(lambda: observed(r53, hid, ok), deadline_s=HC_DEADLINE_S, what="first observation")
        lbs.set("us-west-2", "fail")
        _, fail_s = eventually(lambda: observed(r53, hid, failing), deadline_s=HC_DEADLINE_S, what="failure observed")
        lbs.set("us-west-2", "ok")
        _, heal_s = eventually(lambda: observed(r53, hid, ok), deadline_s=HC_DEADLINE_S, what="success observed")
        return fail_s, heal_s
    finally:
        checkers.stop()
        lbs.set("us-west-2", "ok")


def test_get_health_check_status_follows_the_checkers(routed):
    from gameday.environments.local.healthchecks import Route53HealthCheckers

    c, lbs = routed
    fail_s, heal_s = _fail_and_heal(c, lbs, Route53HealthCheckers(c, interval_s=HC_INTERVAL_S))
    print(f"\nGetHealthCheckStatus: failure visible {fail_s * 1000:.0f} ms after the endpoint failed, success "
          f"{heal_s * 1000:.0f} ms after it healed (probe interval {HC_INTERVAL_S * 1000:.0f} ms)")


def test_twin_checkers_that_never_report_leave_no_observation(routed, monkeypatch):
    from gameday.environments.local.healthchecks import Route53HealthCheckers

    c, lbs = routed
    checkers = Route53HealthCheckers(c, interval_s=HC_INTERVAL_S)
    monkeypatch.setattr(checkers, "_report", lambda *a, **k: None)
    # run alone, nothing is observed at all; after the test above, its last "Success" stays and the
    # failure is never observed
    with pytest.raises(NotWithinDeadline, match="first observation|failure observed"):
        _fail_and_heal(c, lbs, checkers)


@pytest.mark.parametrize("page_size", [None, 1, 2])
def test_record_sets_reads_one_names_sets_and_no_other(ctx, page_size):
    """gameday.aws.record_sets, the one reader of a record's sets (preflight, the stack's TTL, the
    health checks' regions, the failover assertions): a weighted record's every set, across pages,
    and not the sets of the names around it nor another type of the same name."""
    from gameday import aws

    r53, zone = ctx.internal_client("route53", "us-east-1"), ctx.provisioned.hosted_zone_id
    name = "weighted.gameday.test."

    def rs(n, t, value, ident=None):
        out = {"Name": n, "Type": t, "TTL": 5, "ResourceRecords": [{"Value": value}]}
        return {**out, "SetIdentifier": ident, "Weight": 1} if ident else out

    wanted = [rs(name, "A", f"127.0.9.{i}", f"set-{i}") for i in range(3)]
    around = [rs("aaa.gameday.test.", "A", "127.0.8.1"), rs("zzz.gameday.test.", "A", "127.0.8.2"),
              rs("x.weighted.gameday.test.", "A", "127.0.8.3"), rs(name, "AAAA", "::1", "v6")]
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": s} for s in wanted + around]})
    try:
        got = aws.record_sets(r53, zone, name.rstrip(".").upper(), page_size=page_size)
        assert sorted((s["SetIdentifier"], s["ResourceRecords"][0]["Value"]) for s in got) == [
            (f"set-{i}", f"127.0.9.{i}") for i in range(3)], got
        assert aws.record_sets(r53, zone, "absent.gameday.test", page_size=page_size) == []
    finally:
        r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
            {"Action": "DELETE", "ResourceRecordSet": s} for s in wanted + around]})


def test_record_sets_refuses_to_loop_on_an_endpoint_that_pages_in_place():
    """A page that ends inside a weighted record's sets and names no next set (moto before
    moto_fix_route53's correction) is an error naming the defect, never an endless loop."""
    from gameday import aws

    class InPlace:
        calls = 0

        def list_resource_record_sets(self, **kw):
            self.calls += 1
            assert self.calls < 5, "looping"
            return {"ResourceRecordSets": [{"Name": "w.gameday.test.", "Type": "A", "SetIdentifier": "a"}],
                    "IsTruncated": True, "NextRecordName": "w.gameday.test.", "NextRecordType": "A"}

    with pytest.raises(RuntimeError, match="NextRecordIdentifier"):
        aws.record_sets(InPlace(), "Z1", "w.gameday.test", page_size=1)


def test_a_page_inside_one_names_sets_starts_at_its_identifier():
    """moto_fix_route53.record_sets_page: StartRecordIdentifier skips the name's sets before it."""
    from types import SimpleNamespace as S

    from gameday.environments.local.moto_fix_route53 import record_sets_page

    ordered = [S(name="w.test.", type="A", set_identifier=i) for i in ("a", "b", "c")] + [
        S(name="x.test.", type="A", set_identifier=None)]
    page, nxt = record_sets_page(ordered, None, 2)
    assert [r.set_identifier for r in page] == ["a", "b"] and nxt.set_identifier == "c"
    page, nxt = record_sets_page(ordered, ("W.test", "A", "c"), 1)
    assert [r.set_identifier for r in page] == ["c"] and nxt.name == "x.test."
    page, nxt = record_sets_page(ordered, ("w.test.", "A", "c"), 5)
    assert [r.name for r in page] == ["w.test.", "x.test."] and nxt is None
