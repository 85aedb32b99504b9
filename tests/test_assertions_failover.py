"""The environment assertions (assertions/failover.py).

Two halves:
- against real parts: a moto server per region, provisioned like the seed, the Route 53 DNS
  server on loopback, and the environment's timeline, behind a thin adapter giving the
  Environment interface (observer clients = the regions' moto servers, as the local
  environment's observer() does);
- failure messages, with a fake *observation source* (scripted CloudWatch answers, timeline
  events, DNS answers): the verdict and the message are the real code's.
End-to-end use on the whole local environment comes with the scenarios.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from botocore.exceptions import EndpointConnectionError

from gameday.assertions.deadlines import Deadlines
from gameday.assertions.eventually import NotWithinDeadline
from gameday.assertions.failover import (alarm_fires, alarm_stays, dns_answers_region, explain, lambda_invoked,
                                 read_replicas, record_points_at, replicas_converge)
from gameday.environments.local.dns import Route53DnsServer
from gameday.config import load_config
from gameday.net import region_address
from gameday.resolver import Answer, ResolveError, ServiceResolver
from tests.support import provisioned_context

E, W = "us-east-1", "us-west-2"


# -- a thin Environment over a provisioned LocalContext (real moto, real DNS) ----------------------------------

class ContextEnv:
    def __init__(self, ctx, dns: Route53DnsServer | None = None):
        self.ctx, self.dns = ctx, dns
        self.config, self.profile = ctx.config, ctx.profile
        self.regions = ctx.config.regions
        self.service_name = ctx.config.service.name
        self.endpoints = {
            "hosted_zone_id": ctx.provisioned.hosted_zone_id, "alarm_names": ctx.provisioned.alarm_names,
            "record_name": ctx.config.record_name, "table": ctx.config.dynamodb.table,
            "regions": {r: {"lb_address": a} for r, a in ctx.lb_addresses.items()},
        }

    def observer(self, service, region):
        return self.ctx.internal_client(service, region)

    def region_of_address(self, address):
        return next((r for r, a in self.ctx.lb_addresses.items() if a == address), None)

    def resolver(self, honour_ttl=True):
        return ServiceResolver("127.0.0.1", self.dns.port, honour_ttl=honour_ttl)

    def events(self, since=0, kind=None):
        return self.ctx.events.since(since, kind)


@pytest.fixture(scope="module")
def env():
    with provisioned_context() as ctx:
        dns = Route53DnsServer(ctx).start()
        try:
            yield ContextEnv(ctx, dns)
        finally:
            dns.stop()


def upsert(env, region: str) -> None:
    env.observer("route53", E).change_resource_record_sets(
        HostedZoneId=env.endpoints["hosted_zone_id"],
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": env.config.record_name, "Type": "A", "TTL": env.profile.dns_ttl_s,
            "ResourceRecords": [{"Value": env.ctx.lb_addresses[region]}]}}]})


def set_state(env, region: str, state: str, key: str = "request-count") -> None:
    env.observer("cloudwatch", region).set_alarm_state(
        AlarmName=env.config.alarm_name(region, key), StateValue=state, StateReason=f"test set {state}")


def test_read_replicas_scans_every_page_of_every_region(env):
    for region, n in ((E, 23), (W, 21)):
        ddb = env.observer("dynamodb", region)
        for i in range(n):
            ddb.put_item(TableName=env.config.dynamodb.table,
                         Item={"pk": {"S": f"k{i}"}, "value": {"N": str(i)} if i % 2 else {"S": f"v{i}"}})
    ddb = env.observer("dynamodb", W)
    ddb.put_item(TableName=env.config.dynamodb.table, Item={"pk": {"S": "noval"}, "other": {"N": "1.5"}})
    got = read_replicas(env, page_size=5)
    assert len(got[E]) == 23 and len(got[W]) == 22
    assert got[E]["k1"] == 1 and isinstance(got[E]["k1"], int) and got[E]["k2"] == "v2"
    assert got[W]["noval"] == {"other": 1.5}
    assert got[E]["k22"] == "v22" and "k22" not in got[W]


def test_replicas_converge_measures_and_samples(env):
    tables = {E: {"a": 1}, W: {}}
    samples: list = []
    t0 = time.monotonic()
    timer = threading.Timer(0.4, lambda: tables[W].update(a=1))
    timer.start()
    try:
        took = replicas_converge(env, started=t0, deadline=5, interval_s=0.05, samples=samples,
                                 reader=lambda: {r: dict(t) for r, t in tables.items()})
    finally:
        timer.cancel()
    assert 0.35 <= took < 3.0
    assert samples[0][1] == 1 and samples[-1][1] == 0
    stuck = {E: {"a": 1}, W: {"a": 2}}
    with pytest.raises(NotWithinDeadline, match=r"replicas still differ .* expected them to agree within 0.3s "
                                                r"\(deadline 0.3s given by the scenario\); last observation: 1 of 1 keys "
                                                r"differ .*a: us-east-1=1, us-west-2=2"):
        replicas_converge(env, started=time.monotonic(), deadline=0.3, interval_s=0.05, reader=lambda: stuck)


def test_alarm_fires_on_a_real_transition_and_measures_it(env, monkeypatch):
    set_state(env, E, "OK")
    t0 = time.monotonic()
    timer = threading.Timer(0.3, lambda: set_state(env, E, "ALARM"))
    timer.start()
    try:
        # polling every 1.0 s: the measured time comes from CloudWatch's StateUpdatedTimestamp,
        # not from when a poll noticed, so it is ~0.3 s, not ~1 s
        detection = alarm_fires(env, E, started=t0, deadline=5, interval_s=1.0)
    finally:
        timer.cancel()
    assert 0.25 <= detection < 0.9, detection
    # already in ALARM since before this start: it did not fire for this surge
    import gameday.assertions.failover as failover
    monkeypatch.setattr(failover, "STATE_TIME_TOLERANCE_S", 0.0)   # the clocks are one clock here
    with pytest.raises(NotWithinDeadline, match=r"already in ALARM since .* before the start: no new transition"):
        alarm_fires(env, E, started=time.monotonic(), deadline=0.3)
    set_state(env, E, "OK")


def test_alarm_stays_holds_and_catches_a_flip(env):
    set_state(env, W, "OK")
    held = alarm_stays(env, W, "OK", for_s=0.6, interval_s=0.1)
    assert held >= 0.6
    timer = threading.Timer(0.3, lambda: set_state(env, W, "ALARM"))
    timer.start()
    try:
        with pytest.raises(AssertionError, match=r"alarm gameday-request-count-us-west-2 is ALARM, expected it "
                                                 r"to stay OK for 5.0s \(it held 0\.\d+s\); state reason: test set ALARM"):
            alarm_stays(env, W, "OK", for_s=5.0, interval_s=0.1)
    finally:
        timer.cancel()
        set_state(env, W, "OK")


def test_record_points_at_and_dns_answers_region(env):
    upsert(env, E)
    assert record_points_at(env, E) == [env.ctx.lb_addresses[E]]
    with pytest.raises(AssertionError, match=r"points at 127\.0\.1\.1 \(us-east-1\), expected us-west-2 \(127\.0\.2\.1\)"):
        record_points_at(env, W)
    t0 = time.monotonic()
    upsert(env, W)
    failover = dns_answers_region(env, W, started=t0, deadline=5)
    assert 0 <= failover < 3.0
    assert record_points_at(env, W) == [env.ctx.lb_addresses[W]]
    with pytest.raises(NotWithinDeadline, match=r"still answers api\.gameday\.test with 127\.0\.2\.1 \(us-west-2\) "
                                                r".*expected us-east-1 \(127\.0\.1\.1\) within 0\.4s.*Route 53 record "
                                                r"sets: simple: 127\.0\.2\.1 \(us-west-2\); no failover Lambda invocation"):
        dns_answers_region(env, E, started=time.monotonic(), deadline=0.4)
    upsert(env, E)


# -- failure messages, with a scripted observation source ------------------------------------------------------

class FakeCloudWatch:
    def __init__(self, states: list[str], updated: datetime | None = None):
        self.states, self.updated = states, updated or datetime.now(timezone.utc) - timedelta(hours=1)
        self.calls = 0

    def describe_alarms(self, AlarmNames):
        state = self.states[min(self.calls, len(self.states) - 1)]
        self.calls += 1
        if state == "down":
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        if state == "missing":
            return {"MetricAlarms": []}
        return {"MetricAlarms": [{
            "AlarmName": AlarmNames[0], "StateValue": state, "StateReason": "Threshold Crossed: 1 datapoint [320.0] "
            "was not greater than the threshold (500.0).", "StateUpdatedTimestamp": self.updated,
            "Namespace": "AWS/ApplicationELB", "MetricName": "RequestCount", "Statistic": "Sum", "Period": 5,
            "EvaluationPeriods": 1, "DatapointsToAlarm": 1, "Threshold": 500.0,
            "ComparisonOperator": "GreaterThanThreshold",
            "Dimensions": [{"Name": "LoadBalancer", "Value": "gameday-lb-us-east-1"}]}]}

    def get_metric_statistics(self, **kw):
        now = datetime.now(timezone.utc)
        return {"Datapoints": [{"Timestamp": now - timedelta(seconds=10), "Sum": 320.0},
                               {"Timestamp": now - timedelta(seconds=5), "Sum": 410.0}]}


class FakeRoute53:
    def __init__(self, address: str):
        self.address = address

    def list_resource_record_sets(self, **kw):
        return {"ResourceRecordSets": [
            {"Name": "api.gameday.test.", "Type": "A", "TTL": 1, "ResourceRecords": [{"Value": self.address}]}],
            "IsTruncated": False}


class FakeResolver:
    server = "127.0.0.1:5353"

    def __init__(self, answers):
        self.answers = answers

    def lookup(self, name):
        a = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(a, Exception):
            raise a
        return Answer(a, 1)


class FakeEnv:
    """Scripted observations; everything else (config, profile, deadlines) is the seed's."""

    def __init__(self, *, cw=None, events=(), answers=None, record="127.0.1.1"):
        self.config = load_config(None)
        self.profile = self.config.profile("local")
        self.regions = self.config.regions
        self.service_name = self.config.service.name
        self.endpoints = {"hosted_zone_id": "Z1", "regions": {r: {"lb_address": region_address(i)}
                                                              for i, r in enumerate(self.regions)}}
        self._cw, self._events, self._answers = cw, list(events), answers or [["127.0.1.1"]]
        self._r53 = FakeRoute53(record)

    def observer(self, service, region):
        return {"cloudwatch": self._cw, "route53": self._r53}[service]

    def region_of_address(self, a):
        return {region_address(i): r for i, r in enumerate(self.regions)}.get(a)

    def resolver(self, honour_ttl=True):
        return FakeResolver(self._answers)

    def events(self, since=0, kind=None):
        return [e for e in self._events if kind is None or e["kind"] == kind]


def test_alarm_failure_message_says_expected_observed_and_why():
    env = FakeEnv(cw=FakeCloudWatch(["OK"]))
    with pytest.raises(NotWithinDeadline) as e:
        alarm_fires(env, E, started=time.monotonic(), deadline=0.3, interval_s=0.05)
    msg = str(e.value)
    assert msg.startswith("alarm gameday-request-count-us-east-1 still OK 0.")
    assert "expected a transition to ALARM within 0.3s (deadline 0.3s given by the scenario)" in msg
    assert "state reason: Threshold Crossed: 1 datapoint [320.0]" in msg
    assert re.search(r"last datapoints of RequestCount \(Sum per 5s, alarm when > 500 for 1 of 1 periods\): "
                     r"\d\d:\d\d:\d\d 320, \d\d:\d\d:\d\d 410$", msg), msg


def test_alarm_observation_errors_are_retried_but_a_missing_alarm_is_not():
    flaky = FakeEnv(cw=FakeCloudWatch(["down", "down", "ALARM"], updated=datetime.now(timezone.utc)))
    assert alarm_fires(flaky, E, started=time.monotonic() - 0.1, deadline=2, interval_s=0.02) < 0.5
    assert flaky._cw.calls == 3
    down = FakeEnv(cw=FakeCloudWatch(["down"]))
    with pytest.raises(NotWithinDeadline, match=r"alarm gameday-request-count-us-east-1 could not be observed 0\.\ds "
                                                r"after the start \(could not describe alarm .*EndpointConnectionError"):
        alarm_fires(down, E, started=time.monotonic(), deadline=0.2, interval_s=0.05)
    with pytest.raises(LookupError, match="no CloudWatch alarm named gameday-request-count-us-east-1 in us-east-1"):
        alarm_fires(FakeEnv(cw=FakeCloudWatch(["missing"])), E, started=time.monotonic(), deadline=5)


def test_alarm_transition_between_polls_is_seen_on_the_timeline():
    """CloudWatch says OK again by the time we look, but the timeline has the ALARM transition."""
    t0 = time.monotonic()
    ev = {"kind": "alarm", "alarm": "gameday-request-count-us-east-1", "new": "ALARM", "old": "OK",
          "time": time.time() + 0.2}
    env = FakeEnv(cw=FakeCloudWatch(["OK"]), events=[ev])
    assert alarm_fires(env, E, started=t0, deadline=2) == pytest.approx(0.2, abs=0.05)
    with pytest.raises(AssertionError, match=r"went ALARM 0\.\ds into the watch"):
        alarm_stays(env, E, "OK", for_s=1.0, interval_s=0.05)


def test_default_deadlines_are_explained_from_the_profile():
    cfg = load_config(None)
    env = SimpleNamespace(config=cfg, profile=cfg.profile("local"))
    d = Deadlines.from_profile(env.profile, cfg)
    why = explain(env)
    assert why["detection_s"].startswith(f"{d.detection_s:.1f}s = (1+1) x 5s period + 3s harness margin")
    assert why["lambda_s"].startswith(f"{d.lambda_s:.1f}s = 3 attempts x 5s Lambda timeout + 1+2s async retry")
    for name in ("failover_s", "client_follow_s", "rto_s", "convergence_s", "recovery_s"):
        assert why[name].startswith(f"{getattr(d, name):.1f}s = "), why[name]   # each formula adds up
    slow = cfg.model_copy(update={"profiles": {**cfg.profiles, "local": cfg.profile("local").model_copy(
        update={"period_s": 10, "evaluation_periods": 3, "datapoints_to_alarm": 2})}})
    env2 = SimpleNamespace(config=slow, profile=slow.profile("local"))
    assert explain(env2)["detection_s"].startswith("43.0s = (3+1) x 10s period + 3s harness margin")


def test_lambda_failure_message_carries_the_error_and_logs():
    now = time.time()
    failed = {"kind": "lambda_invocation", "time": now + 0.05, "end_ts": now + 0.05, "outcome": "error", "attempt": 1,
              "region": E, "error": {"type": "Runtime.ExitError", "message": "Runtime exited with error: exit status 3"},
              "logs": ["START RequestId: r1", "Traceback (most recent call last):", "KeyError: 'GAMEDAY_REGIONS'",
                       "END RequestId: r1"], "will_retry": True, "retry_in_s": 1.0}
    env = FakeEnv(events=[failed])
    with pytest.raises(NotWithinDeadline) as e:
        lambda_invoked(env, started=time.monotonic() - 0.01, deadline=0.3, interval_s=0.05)
    msg = str(e.value)
    assert "failover Lambda: no invocation ending ok" in msg and "expected within 0.3s" in msg
    assert "1 invocation(s), none ok; the last: attempt 1 error (Runtime.ExitError: Runtime exited with error: " \
           "exit status 3), retry in 1.0s" in msg
    assert "KeyError: 'GAMEDAY_REGIONS'" in msg
    # asking for the failure finds it, measured to the invocation's end (not to when the poll saw it)
    t0 = time.monotonic() - (time.time() - now)    # the start, on the monotonic clock, is `now`
    took = lambda_invoked(env, started=t0, deadline=1, outcome="failed")
    assert took == pytest.approx(0.05, abs=0.02)
    nothing = FakeEnv(events=[{"kind": "alarm_action", "time": time.time() + 0.01, "alarm": "gameday-request-count-us-east-1",
                               "new": "ALARM", "error": "EndpointConnectionError: sns down"}])
    with pytest.raises(NotWithinDeadline, match=r"no invocation at all; alarm actions published since the start: "
                                                r"gameday-request-count-us-east-1 ALARM FAILED \(EndpointConnectionError"):
        lambda_invoked(nothing, started=time.monotonic() - 0.01, deadline=0.2, interval_s=0.05)


def test_dns_failure_message_names_answers_record_and_lambda():
    env = FakeEnv(answers=[ResolveError("api.gameday.test", "127.0.0.1:5353", "no answer within 1s"),
                           ["127.0.1.1"]], record="127.0.1.1")
    with pytest.raises(NotWithinDeadline) as e:
        dns_answers_region(env, W, started=time.monotonic(), deadline=0.3)
    msg = str(e.value)
    assert "DNS server 127.0.0.1:5353 still answers api.gameday.test with 127.0.1.1 (us-east-1)" in msg
    assert "expected us-west-2 (127.0.2.1) within 0.3s (deadline 0.3s given by the scenario)" in msg
    assert "Route 53 record sets: simple: 127.0.1.1 (us-east-1); no failover Lambda invocation since the start" in msg
    # an answer naming both regions is not a failover to one
    both = FakeEnv(answers=[["127.0.1.1", "127.0.2.1"]])
    with pytest.raises(NotWithinDeadline, match=r"127\.0\.1\.1 \(us-east-1\), 127\.0\.2\.1 \(us-west-2\)"):
        dns_answers_region(both, W, started=time.monotonic(), deadline=0.2)
    moved = FakeEnv(answers=[["127.0.1.1"], ["127.0.1.1"], ["127.0.2.1"]])
    assert dns_answers_region(moved, W, started=time.monotonic(), deadline=2, interval_s=0.02) < 1.0


def test_lambda_outcome_is_validated():
    with pytest.raises(ValueError, match="outcome must be one of"):
        lambda_invoked(FakeEnv(), started=time.monotonic(), outcome="succeeded")

