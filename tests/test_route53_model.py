"""Route 53's rules (environments.local.route53_model) on a fake clock: which records an answer
is made of, the name servers' zone copy across refreshes, and a health checker's status.

Every table row cites the AWS page its expectation comes from (Amazon Route 53 Developer Guide
and API Reference):
[CHOOSE]   "How Amazon Route 53 chooses records when health checking is configured": a record
           without a health check is always healthy; if no record in the group is healthy, all
           are treated as healthy and chosen by the routing policy.
[WEIGHTED] "Weighted routing": traffic share = weight / sum of weights; the two tables "when the
           record with weight 0 includes / doesn't include a health check" (records 1, 2 weight
           1; record 3 weight 0); ResourceRecordSet.Weight: all weights 0 = equal probability.
[FAILOVER] ResourceRecordSet.Failover: primary when healthy regardless of the secondary; the
           secondary when the primary is unhealthy and the secondary healthy; the primary when
           the secondary is unhealthy; without a health check on the secondary, the secondary
           whenever the primary is unhealthy.
[MULTI]    "Multivalue answer routing": up to eight healthy records per answer.
[HEALTH]   "How Amazon Route 53 determines whether a health check is healthy": FailureThreshold
           consecutive checks; HealthCheckConfig.FailureThreshold (consecutive checks to change
           the status from unhealthy to healthy or vice versa), Inverted, and Disabled (always
           healthy; to stop traffic to its resource, change Inverted).
[BATCH]    ChangeResourceRecordSets, "Change batches and transactional changes": Route 53 validates a
           batch and makes all or none of its changes; each batch is applied and propagated on its
           own (PENDING, then INSYNC), so clients can be answered from the state between two batches.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from dnslib import QTYPE, RCODE

from gameday.clock import FakeClock
from gameday.environments.local.route53_model import (MULTIVALUE_MAX, ChangeBatch, HealthCheckModel, RecordSet,
                                                      Zone, ZoneCopy, always_healthy, eligible, pick)


def rs(ident: str, ip: str | None = None, hc: bool = True, **kw) -> RecordSet:
    """A record of the group w.gameday.test. A; its health check (if any) is named hc<ident>."""
    item = {"Name": "w.gameday.test.", "Type": "A", "TTL": 5,
            "ResourceRecords": [{"Value": ip or f"127.0.0.{len(ident) + 1}"}], "SetIdentifier": ident, **kw}
    if hc:
        item["HealthCheckId"] = f"hc{ident}"
    return RecordSet.from_route53(item)


def health_of(unhealthy: set[str]):
    return lambda hc_id: hc_id[2:] not in unhealthy


def chosen(sets, unhealthy: set[str]) -> set[str]:
    return {s.set_identifier for s, _ in eligible(tuple(sets), health_of(unhealthy))}


# -- answer selection ---------------------------------------------------------------------------------

W110 = (("1", 1, True), ("2", 1, True), ("3", 0, True))     # [WEIGHTED] first table: weight 0 with a check
W110_NO_HC = (("1", 1, True), ("2", 1, True), ("3", 0, False))  # second table: weight 0 without


@pytest.mark.parametrize("records,unhealthy,expected", [
    (W110, {"1", "2"}, {"3"}),            # [WEIGHTED] table 1 row 1: only the weight-0 record is healthy
    (W110, {"1", "2", "3"}, {"1", "2"}),  # row 2: none healthy: all treated healthy, non-zero weights first
    (W110, {"1", "3"}, {"2"}),            # row 3
    (W110, {"3"}, {"1", "2"}),            # row 4
    (W110, set(), {"1", "2"}),            # row 5: weight 0 is not answered while a non-zero one is healthy
    (W110_NO_HC, set(), {"1", "2"}),      # [WEIGHTED] table 2 row 1
    (W110_NO_HC, {"1", "2"}, {"3"}),      # row 2: the record without a check is always healthy
    (W110_NO_HC, {"1"}, {"2"}),           # row 3
    ((("1", 0, True), ("2", 0, True)), set(), {"1", "2"}),          # all weights 0: all answered
    ((("1", 0, True), ("2", 0, True)), {"1"}, {"2"}),               # ... healthy ones among them
    ((("1", 2, True), ("2", 1, False)), {"1"}, {"2"}),              # [CHOOSE] no check: always healthy
    ((("1", 2, True), ("2", 1, True)), {"1", "2"}, {"1", "2"}),     # [CHOOSE] none healthy: all
])
def test_weighted_eligible_records(records, unhealthy, expected):
    sets = [rs(i, Weight=w, hc=hc) for i, w, hc in records]
    assert chosen(sets, unhealthy) == expected


@pytest.mark.parametrize("weights,unhealthy,expected_share", [
    ({"a": 3, "b": 1, "c": 0}, set(), {"a": 0.75, "b": 0.25, "c": 0.0}),  # [WEIGHTED] weight / sum
    ({"a": 1, "b": 255}, set(), {"a": 1 / 256, "b": 255 / 256}),          # the page's own example
    ({"a": 0, "b": 0, "c": 0}, set(), {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),  # all 0: equal chances
    ({"a": 3, "b": 1, "c": 1}, {"a"}, {"a": 0.0, "b": 0.5, "c": 0.5}),    # unhealthy: out of the draw
])
def test_weighted_distribution_over_seeded_picks(weights, unhealthy, expected_share):
    sets = tuple(rs(i, f"127.0.0.{n}", Weight=w) for n, (i, w) in enumerate(weights.items(), 1))
    rng, n = random.Random(17), 5_000
    counts = Counter(s.set_identifier for _ in range(n) for s in pick(sets, health_of(unhealthy), rng))
    assert sum(counts.values()) == n  # one record per answer
    for ident, share in expected_share.items():
        # 4 standard deviations of a binomial(n, share), and at least 0.3 % for the rare ones
        margin = max(4 * (share * (1 - share) / n) ** 0.5, 0.003)
        assert abs(counts[ident] / n - share) <= margin, (ident, counts)


# (primary has a check, secondary has a check, primary healthy, secondary healthy) -> answered
@pytest.mark.parametrize("p_hc,s_hc,p_ok,s_ok,expected", [
    (True, True, True, True, "primary"),      # [FAILOVER] primary healthy: primary ...
    (True, True, True, False, "primary"),     # ... regardless of the secondary
    (True, True, False, True, "secondary"),   # primary unhealthy, secondary healthy
    (True, True, False, False, "primary"),    # secondary unhealthy: primary, regardless of its health
    (True, False, False, True, "secondary"),  # no check on the secondary: secondary when primary is down
    (False, True, True, False, "primary"),    # [CHOOSE] no check on the primary: always healthy
    (False, True, True, True, "primary"),
])
def test_failover_answer(p_hc, s_hc, p_ok, s_ok, expected):
    sets = (rs("secondary", "127.0.2.1", hc=s_hc, Failover="SECONDARY"),  # order in the zone does not matter
            rs("primary", "127.0.1.1", hc=p_hc, Failover="PRIMARY"))
    unhealthy = {n for n, ok in (("primary", p_ok), ("secondary", s_ok)) if not ok}
    assert [s.set_identifier for s in pick(sets, health_of(unhealthy), random.Random(0))] == [expected]


def test_failover_with_only_a_secondary_record_answers_it_even_unhealthy():
    sets = (rs("secondary", hc=True, Failover="SECONDARY"),)
    assert [s.set_identifier for s in pick(sets, health_of({"secondary"}), random.Random(0))] == ["secondary"]


@pytest.mark.parametrize("healthy_count,unhealthy_count,answered", [
    (3, 2, 3),                    # [MULTI] the healthy records
    (0, 4, 4),                    # [CHOOSE] none healthy: all
    (10, 1, MULTIVALUE_MAX),      # [MULTI] at most eight
])
def test_multivalue_answer(healthy_count, unhealthy_count, answered):
    idents = [f"h{i}" for i in range(healthy_count)] + [f"u{i}" for i in range(unhealthy_count)]
    sets = tuple(rs(i, f"127.0.3.{n}", MultiValueAnswer=True) for n, i in enumerate(idents, 1))
    got = pick(sets, lambda hc: not hc.startswith("hcu"), random.Random(3))
    assert len(got) == answered and len({s.set_identifier for s in got}) == answered
    if healthy_count:
        assert all(s.set_identifier.startswith("h") for s in got)


def test_simple_record_answers_all_its_values():
    simple = RecordSet.from_route53({"Name": "s.gameday.test.", "Type": "A", "TTL": 9,
                                     "ResourceRecords": [{"Value": "127.0.1.1"}, {"Value": "127.0.1.2"}]})
    assert simple.policy == "simple" and pick((simple,), health_of(set()), random.Random(0)) == [simple]
    assert [str(r.rdata) for r in simple.rrs] == ["127.0.1.1", "127.0.1.2"] and simple.rrs[0].ttl == 9


# -- the zone: names, wildcards, CNAMEs, negative answers -------------------------------------------------

ZONE_ITEMS = [
    {"Name": "gameday.test.", "Type": "SOA", "TTL": 900,
     "ResourceRecords": [{"Value": "ns-1.awsdns-1.com. hostmaster.example.com. 1 7200 900 1209600 60"}]},
    {"Name": "\\052.gameday.test.", "Type": "A", "TTL": 5, "ResourceRecords": [{"Value": "127.0.1.1"}]},
    {"Name": "www.gameday.test.", "Type": "CNAME", "TTL": 5, "ResourceRecords": [{"Value": "api.gameday.test"}]},
    {"Name": "api.gameday.test.", "Type": "A", "TTL": 7, "ResourceRecords": [{"Value": "127.0.2.1"}]},
    {"Name": "loop1.gameday.test.", "Type": "CNAME", "TTL": 5, "ResourceRecords": [{"Value": "loop2.gameday.test."}]},
    {"Name": "loop2.gameday.test.", "Type": "CNAME", "TTL": 5, "ResourceRecords": [{"Value": "loop1.gameday.test."}]},
    {"Name": "alias.gameday.test.", "Type": "A", "AliasTarget": {"DNSName": "x", "HostedZoneId": "Z",
                                                                 "EvaluateTargetHealth": False}},
]


@pytest.mark.parametrize("qname,qtype,rcode,answer", [
    ("api.gameday.test.", "A", RCODE.NOERROR, [("api.gameday.test.", "A", "127.0.2.1")]),
    ("anything.gameday.test.", "A", RCODE.NOERROR, [("anything.gameday.test.", "A", "127.0.1.1")]),  # RFC 4592
    ("www.gameday.test.", "A", RCODE.NOERROR, [("www.gameday.test.", "CNAME", "api.gameday.test."),
                                               ("api.gameday.test.", "A", "127.0.2.1")]),
    ("x.api.gameday.test.", "A", RCODE.NXDOMAIN, []),   # api exists: no wildcard below it
    ("api.gameday.test.", "AAAA", RCODE.NOERROR, []),   # the name exists, the type does not
    ("loop1.gameday.test.", "A", RCODE.SERVFAIL, None),  # a CNAME loop ends
])
def test_zone_query(qname, qtype, rcode, answer):
    zone = Zone.from_route53("gameday.test.", ZONE_ITEMS)
    got_rcode, got, auth = zone.query(qname, qtype, health_of(set()), random.Random(1))
    assert got_rcode == rcode
    if answer is not None:
        assert [(str(a.rname), QTYPE[a.rtype], str(a.rdata)) for a in got] == answer
    if rcode != RCODE.SERVFAIL and not answer:
        # negative answers carry the SOA, cached for min(SOA TTL, SOA MINIMUM) (RFC 2308)
        assert [(QTYPE[a.rtype], a.ttl) for a in auth] == [("SOA", 60)]


def test_zone_skips_what_it_cannot_serve_and_names_it():
    zone = Zone.from_route53("gameday.test.", ZONE_ITEMS)
    assert len(zone.skipped) == 1 and "alias.gameday.test. A" in zone.skipped[0] and "alias" in zone.skipped[0]
    assert zone.view(health_of(set()))["api.gameday.test."] == ["127.0.2.1"]


# -- the name servers' copy across refreshes ----------------------------------------------------------------

def a_item(ip: str) -> list[dict]:
    return [{"Name": "api.gameday.test.", "Type": "A", "TTL": 1, "ResourceRecords": [{"Value": ip}]}]


# after a first load answering 127.0.1.1 at t=0, each step: (t, "ok:<ip>" | "fail") and the
# events it returns, (kind, state or new answer); then the answer served, failures and zone age
@pytest.mark.parametrize("steps,events,answer,failures,age", [
    ([(1, "ok:127.0.1.1")], [[]], "127.0.1.1", 0, 0.0),
    ([(1, "ok:127.0.2.1")], [[("dns_change", "127.0.2.1")]], "127.0.2.1", 0, 0.0),
    ([(1, "fail"), (2, "fail"), (3, "fail")],
     [[("dns_refresh", "failing")], [], []], "127.0.1.1", 3, 3.0),  # one event; the last good copy serves
    ([(1, "fail"), (2.5, "ok:127.0.2.1")],
     [[("dns_refresh", "failing")], [("dns_refresh", "ok"), ("dns_change", "127.0.2.1")]], "127.0.2.1", 0, 0.0),
])
def test_zone_copy_across_refreshes(steps, events, answer, failures, age):
    clock, copy = FakeClock(), ZoneCopy()
    start = clock.monotonic()
    assert copy.refreshed(a_item("127.0.1.1"), start, apex="gameday.test.") == []
    copy.publish(health_of(set()))
    got = []
    for at, outcome in steps:
        clock.advance(start + at - clock.monotonic())
        if outcome == "fail":
            out = copy.refresh_failed("ConnectTimeoutError: hung", clock.monotonic())
        else:
            out = copy.refreshed(a_item(outcome[3:]), clock.monotonic())
        out += copy.publish(health_of(set()))
        got.append([(k, f.get("state") or f["new"][0]) for k, f in out])
    assert got == events
    assert copy.views == {"api.gameday.test.": [answer]} and copy.failures == failures
    assert copy.age(clock.monotonic()) == age
    if failures:
        assert copy.last_error.startswith("ConnectTimeoutError")


def test_zone_copy_reports_how_long_it_was_failing_and_keeps_the_zone_object_when_unchanged():
    copy = ZoneCopy()
    copy.refreshed(a_item("127.0.1.1"), 100.0, apex="gameday.test.")
    zone = copy.zone
    copy.refresh_failed("boom", 101.0)
    [(kind, fields)] = copy.refreshed(a_item("127.0.1.1"), 104.5)
    assert kind == "dns_refresh" and fields == {"state": "ok", "after_failures": 1, "zone_age_s": 4.5}
    assert copy.zone is zone  # same items: the query path keeps its zone
    with pytest.raises(ValueError, match="apex"):
        ZoneCopy().refreshed(a_item("127.0.1.1"), 0.0)


def test_queries_are_answered_from_the_published_zone_only():
    """A zone read but not yet published is not served: what a client gets is what status() and
    the timeline already hold (answering from the read zone let a client see a record status()
    lacked, in CI under load)."""
    copy = ZoneCopy()
    copy.refreshed(a_item("127.0.1.1"), 100.0, apex="gameday.test.")
    assert copy.served is None  # read, not published: the server answers nothing yet
    copy.publish(always_healthy, 100.0)
    first = copy.served
    assert first is copy.zone and copy.views
    copy.refreshed(a_item("127.0.2.1"), 101.0)
    assert copy.served is first and copy.zone is not first  # the new read waits for its publish
    [(kind, fields)] = copy.publish(always_healthy, 101.0)
    assert kind == "dns_change" and fields["new"] == ["127.0.2.1"]
    assert copy.served is copy.zone
    served = copy.served.query(fields["name"], "A", always_healthy, random.Random(0))
    assert [str(rr.rdata) for rr in served[1]] == copy.views[fields["name"]]
    # a zone change that moves no answer (the TTL) is served too, with no event
    copy.refreshed([{**a_item("127.0.2.1")[0], "TTL": 30}], 102.0)
    assert copy.publish(always_healthy, 102.0) == [] and copy.served is copy.zone
    assert copy.served.query(fields["name"], "A", always_healthy, random.Random(0))[1][0].ttl == 30


def test_health_moves_the_published_answer_without_a_zone_change():
    copy = ZoneCopy()
    items = [{"Name": "f.gameday.test.", "Type": "A", "TTL": 1, "SetIdentifier": r.lower(), "Failover": r,
              "HealthCheckId": f"hc{r.lower()}", "ResourceRecords": [{"Value": ip}]}
             for r, ip in (("PRIMARY", "127.0.1.1"), ("SECONDARY", "127.0.2.1"))]
    copy.refreshed(items, 0.0, apex="gameday.test.")
    copy.publish(health_of(set()))
    assert copy.publish(health_of({"primary"})) == [
        ("dns_change", {"name": "f.gameday.test.", "type": "A", "old": ["127.0.1.1"], "new": ["127.0.2.1"],
                        "source": "health"})]
    assert copy.publish(health_of({"primary"})) == []  # published once


# -- each change batch its own state [BATCH] -----------------------------------------------------------------

EAST, WEST = "127.0.1.1", "127.0.2.1"


def weighted(east: int, west: int, ttl: int = 1) -> list[dict]:
    """The service name's two weighted records, as list_resource_record_sets returns them."""
    return [{"Name": "api.gameday.test.", "Type": "A", "TTL": ttl, "SetIdentifier": ident, "Weight": w,
             "ResourceRecords": [{"Value": ip}]} for ident, w, ip in (("east", east, EAST), ("west", west, WEST))]


def loaded(items: list[dict], now: float = 0.0) -> ZoneCopy:
    copy = ZoneCopy()
    copy.refreshed(items, now, apex="gameday.test.")
    copy.publish(health_of(set()), now)
    return copy


# [BATCH] ChangeResourceRecordSets: Route 53 makes all or none of one batch's changes, and applies each
# batch on its own. Weights east/west from 1/0; each step (t, how, weights) is a batch the adapter saw
# ("change": read back before its caller had the answer) or a periodic read ("poll"); the answers
# published, with their source and how long the old answer lasted
@pytest.mark.parametrize("steps,published", [
    # two calls 1 ms apart (primary weight 0, then secondary weight 1): both states, the first answers
    # every region (all weights 0: equal chances) for 1 ms
    ([(10.0, "change", (0, 0)), (10.001, "change", (0, 1))],
     [([EAST, WEST], "change", 10.0), ([WEST], "change", 0.001)]),
    # the same move in one batch: one state, straight to the secondary
    ([(10.0, "change", (0, 1))], [([WEST], "change", 10.0)]),
    # the same two calls seen only by a poll after both (the old server's blind spot): one clean move
    ([(10.25, "poll", (0, 1))], [([WEST], "poll", 10.25)]),
    # a poll after a batch already applied reads the same zone: nothing new
    ([(10.0, "change", (0, 0)), (10.001, "change", (0, 1)), (10.25, "poll", (0, 1))],
     [([EAST, WEST], "change", 10.0), ([WEST], "change", 0.001)]),
    # a batch that changes no answer (weights 1/0 -> 2/0) is applied but publishes nothing
    ([(10.0, "change", (2, 0)), (10.5, "change", (0, 2))], [([WEST], "change", 10.5)]),
    # a change made straight against the API (no caller the adapter sees), found by the poll
    ([(3.0, "poll", (1, 1)), (3.25, "poll", (0, 1))], [([EAST, WEST], "poll", 3.0), ([WEST], "poll", 0.25)]),
])
def test_each_change_batch_is_published_as_its_own_state(steps, published):
    clock = FakeClock()
    start = clock.monotonic()
    copy = loaded(weighted(1, 0), start)
    got = []
    for at, how, (east, west) in steps:
        clock.advance(start + at - clock.monotonic())
        if how == "change":
            events = copy.applied(weighted(east, west), clock.monotonic(), health_of(set()),
                                  ChangeBatch(comment=f"east {east} west {west}"))
        else:
            events = copy.refreshed(weighted(east, west), clock.monotonic()) + copy.publish(
                health_of(set()), clock.monotonic())
        got += [(f["new"], f["source"], pytest.approx(f["old_lasted_s"], abs=1e-6)) for _, f in events]
        assert all(f["comment"] == f"east {east} west {west}" for _, f in events if how == "change")
    assert got == published


def test_health_after_a_batch_is_told_apart_from_the_batch():
    items = [{"Name": "f.gameday.test.", "Type": "A", "TTL": 1, "SetIdentifier": r.lower(), "Failover": r,
              "HealthCheckId": f"hc{r.lower()}", "ResourceRecords": [{"Value": ip}]}
             for r, ip in (("PRIMARY", EAST), ("SECONDARY", WEST))]
    copy = loaded(items)
    # a batch changing nothing the answers show, then the primary's health check fails between polls
    assert copy.applied(list(items), 1.0, health_of(set()), ChangeBatch()) == []
    [(_, fields)] = copy.publish(health_of({"primary"}), 1.5)
    assert (fields["new"], fields["source"], fields["old_lasted_s"]) == ([WEST], "health", 1.5)


REQUEST = (b'<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsRequest '
           b'xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Comment>failover: east-rc</Comment>'
           b'<Changes><Change><Action>UPSERT</Action><ResourceRecordSet><Name>api.gameday.test.</Name><Type>A</Type>'
           b'<SetIdentifier>east</SetIdentifier><Weight>0</Weight><TTL>1</TTL><ResourceRecords><ResourceRecord>'
           b'<Value>127.0.1.1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>'
           b'<Change><Action>DELETE</Action><ResourceRecordSet><Name>old.gameday.test.</Name><Type>A</Type>'
           b'<Failover>PRIMARY</Failover><SetIdentifier>p</SetIdentifier><TTL>1</TTL><ResourceRecords>'
           b'<ResourceRecord><Value>127.0.3.1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>'
           b'</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>')
RESPONSE = (b'<ChangeResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeInfo>'
            b'<Id>/change/C2682N5HXP0BZ4</Id><Status>INSYNC</Status></ChangeInfo></ChangeResourceRecordSetsResponse>')


@pytest.mark.parametrize("request_body,response_body,fields", [
    (REQUEST, RESPONSE, {"change_id": "/change/C2682N5HXP0BZ4", "comment": "failover: east-rc", "changes": [
        "UPSERT api.gameday.test. A (east) weight 0: 127.0.1.1",
        "DELETE old.gameday.test. A (p) failover PRIMARY: 127.0.3.1"]}),
    (REQUEST.replace(b"<Comment>failover: east-rc</Comment>", b""), b"", {"changes": [
        "UPSERT api.gameday.test. A (east) weight 0: 127.0.1.1",
        "DELETE old.gameday.test. A (p) failover PRIMARY: 127.0.3.1"]}),   # no Comment, no response body
    (b"<not xml", RESPONSE, {}),                                           # unreadable: nothing claimed
])
def test_change_batch_says_what_the_call_said(request_body, response_body, fields):
    assert ChangeBatch.from_api(request_body, response_body).fields() == fields


# -- a health checker ---------------------------------------------------------------------------------------

HC = {"IPAddress": "127.0.1.1", "Port": 80, "Type": "HTTP", "ResourcePath": "/health"}


# results as a string: "+" a passing probe, "-" a failing one; status after each probe ("H"/"U")
@pytest.mark.parametrize("config,results,statuses", [
    ({"FailureThreshold": 3}, "---", "HHU"),              # [HEALTH] 3 consecutive failures
    ({"FailureThreshold": 3}, "--+--", "HHHHH"),          # a pass restarts the count
    ({"FailureThreshold": 3}, "---++-+", "HHUUUUU"),      # back only after 3 consecutive passes
    ({"FailureThreshold": 3}, "---+++", "HHUUUH"),
    ({}, "---", "HHU"),                                   # FailureThreshold defaults to 3
    ({"FailureThreshold": 1}, "-+-", "UHU"),
    ({"FailureThreshold": 10}, "-" * 10, "H" * 9 + "U"),  # Route 53 allows 1..10
    ({"FailureThreshold": 2, "Inverted": True}, "++--", "HUUH"),  # Inverted: a passing probe counts as failing
    ({"FailureThreshold": 1, "Disabled": True}, "---", "HHH"),    # Disabled: always healthy
    ({"FailureThreshold": 1, "Disabled": True, "Inverted": True}, "+++", "UUU"),  # ... inverted: unhealthy
    ({"FailureThreshold": 2, "MeasureLatency": True}, "--", "HU"),  # MeasureLatency changes nothing
])
def test_health_status_follows_failure_threshold(config, results, statuses):
    clock = FakeClock()
    model = HealthCheckModel({**HC, **config}, interval_s=10.0, started=clock.monotonic())
    seen, transitions = [], []
    for r in results:
        clock.advance(10.0)
        t = model.observe(r == "+", clock.monotonic(), "HTTP Status Code 200" if r == "+" else "HTTP 503")
        transitions += [t] if t else []
        seen.append("H" if model.healthy else "U")
    assert "".join(seen) == statuses
    initial = "U" if config.get("Disabled") and config.get("Inverted") else "H"
    assert len(transitions) == sum(a != b for a, b in zip(initial + statuses, statuses))  # one per change
    assert all(t.failure_threshold == config.get("FailureThreshold", 3) for t in transitions)
    if transitions:
        assert transitions[-1].at == model.changed_at and transitions[-1].healthy == model.healthy
    if not config.get("Disabled"):
        assert model.probes == len(results) and model.failures == sum(
            (r == "+") == bool(config.get("Inverted")) for r in results)


def test_health_transition_carries_the_reason_and_threshold():
    model = HealthCheckModel({**HC, "FailureThreshold": 2, "Inverted": True}, 10.0, started=0.0)
    assert model.observe(True, 10.0, "HTTP Status Code 200") is None
    t = model.observe(True, 20.0, "HTTP Status Code 200")
    assert (t.healthy, t.reason, t.failure_threshold, t.at) == (False, "inverted: HTTP Status Code 200", 2, 20.0)
    assert model.last_result == "inverted: HTTP Status Code 200"


# probe finish times (seconds after start) -> when the next probe is due after each
@pytest.mark.parametrize("finished_at,due_after", [
    ([0.1, 10.2, 20.05], [10.0, 20.0, 30.0]),   # fixed rate from the first probe, not from each finish
    ([0.1, 25.0, 30.1], [10.0, 25.0, 35.0]),    # a probe that overran its slot: the next starts at once
])
def test_probe_schedule(finished_at, due_after):
    clock = FakeClock()
    start = clock.monotonic()
    model = HealthCheckModel(dict(HC), interval_s=10.0, started=start)
    assert model.next_due(start) == start  # the first probe at once
    for finish, due in zip(finished_at, due_after):
        clock.advance(start + finish - clock.monotonic())
        model.observe(True, clock.monotonic())
        assert model.next_due(clock.monotonic()) == pytest.approx(start + max(due, finish))
    assert model.next_due(start + 1000.0) == start + 1000.0  # overdue: now


def test_disabled_health_check_is_never_probed():
    model = HealthCheckModel({**HC, "Disabled": True}, interval_s=10.0, started=5.0)
    assert model.next_due(5.0) is None and model.observe(False, 15.0) is None and model.probes == 0
    assert model.healthy and "disabled" in model.last_result
