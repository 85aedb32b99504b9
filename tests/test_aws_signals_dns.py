"""The aws environment's `dns_change` events from what DNS answers (environments/aws/signals_dns.py)
and the Route 53 API budget every harness call to Route 53 waits for (environments/aws/route53_budget.py).

- The budget as a pure rule on a fake clock: rate, burst, blocking in order, counting; thread-safe.
- Against a running stand-in account (`gameday up --aws-config`, tests/test_aws_account.py's fixture):
  an UPSERT of the service record through the endpoint is one dns_change with the right old/new,
  stamped no later than its own bound (about the poll interval) after the call returned, and
  dns_moved_once reads it from AwsEnvironment.events(); a twin environment without the DNS source
  has nothing to read and the check fails. A weight change made in two calls shows its intermediate
  answer as its own change (what catches weights_in_two_calls); the same change as one batch does not.
- Over dns_answers_region polling 10 s with the signal pollers running, the harness's Route 53
  requests (counted by a hook on the session, not by the budget itself) stay within the budget;
  a twin with the budget switched off exceeds it.
"""

from __future__ import annotations

import threading
import time
import tomllib

import pytest

from gameday.assertions.dns_timeline import dns_states, moved_once
from gameday.assertions.eventually import NotWithinDeadline, eventually
from gameday.assertions.failover import dns_answers_region, region_addresses
from gameday.config import GamedayConfig, load_config
from gameday.environments.aws import AwsEnvironment, signals, signals_dns
from gameday.environments.aws.environment import _local_account_session
from gameday.environments.aws.route53_budget import BURST, TokenBucket, poll_interval_s
from gameday.environments.aws.route53_resolver import Route53Resolver
from gameday.environments.local.aws_account import to_toml
from gameday.events import EventLog
from gameday.scenarios.steps import region_names
from tests.test_aws_account import account  # noqa: F401 - the module's running stand-in account

CHANGE_SEEN_S = 3.0          # a change the DNS server serves at once, seen by a 0.1 s poll on busy cores
SCHEDULING_SLACK_S = 0.5     # a poll thread's wait(interval) overslept on 2 loaded cores


# -- the budget: the pure rule -------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now, self.slept = 100.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(round(s, 6))
        self.now += s


@pytest.mark.parametrize("rate, burst, gaps, waits", [
    (2.0, 2, [0, 0, 0, 0], [0, 0, 0.5, 0.5]),            # the burst goes at once, then 1/rate apart
    (2.0, 2, [0, 0, 10, 0, 0], [0, 0, 0, 0, 0.5]),       # idle 10 s saves up the burst, never more
    (4.0, 1, [0, 0.1, 0.1], [0, 0.15, 0.15]),            # burst 1: the calls go at +0, +0.25, +0.5 s
])
def test_the_bucket_blocks_each_call_until_its_token(rate, burst, gaps, waits):
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock=clock, sleep=clock.sleep)
    got = []
    for gap in gaps:
        clock.now += gap
        got.append(round(bucket.acquire(), 6))
    assert got == waits
    assert clock.slept == [w for w in waits if w > 0]                 # blocked, never refused
    st = bucket.status()
    assert st["calls"] == len(gaps) and st["waited"] == sum(1 for w in waits if w > 0)


def test_concurrent_callers_get_distinct_slots():
    clock = FakeClock()   # stands still: every caller reserves at the same instant
    bucket = TokenBucket(2.0, 2, clock=clock, sleep=lambda s: None)
    waits: list[float] = []
    lock = threading.Lock()

    def one():
        w = bucket.reserve()
        with lock:
            waits.append(round(w, 6))

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == [0, 0] + [0.5 * i for i in range(1, 11)] and bucket.calls == 12


def test_poll_interval_and_the_configured_rate():
    assert poll_interval_s(0, 2.0) == 0.05                 # DNS queries only: no budget
    assert poll_interval_s(1, 2.0) == 1.0                  # half the budget: 1 call/s
    assert poll_interval_s(2, 2.0) == 2.0
    assert GamedayConfig().aws.route53_calls_per_s == 2.0
    with pytest.raises(ValueError, match="below Route 53's 5 requests/s per account"):
        GamedayConfig.model_validate({"aws": {"route53_calls_per_s": 5}})


# -- against the stand-in account ------------------------------------------------------------------------

def _customer_route53(cfg):
    return _local_account_session().client("route53", region_name="us-east-1", endpoint_url=cfg.aws.endpoint_url)


def _upsert(r53, cfg, name: str, address: str, ttl: int = 1) -> None:
    r53.change_resource_record_sets(HostedZoneId=cfg.aws.hosted_zone_id, ChangeBatch={"Changes": [{
        "Action": "UPSERT", "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": ttl,
                                                  "ResourceRecords": [{"Value": address}]}}]})


def _changes(env, since: float, new: list[str] | None = None) -> list[dict]:
    return [e for e in env.events(kind="dns_change") if e["time"] >= since and (new is None or e["new"] == new)]


def _started(config, **kwargs) -> AwsEnvironment:
    return AwsEnvironment(load_config(config), **kwargs).start()


def test_an_upsert_is_one_dns_change_read_by_dns_moved_once(account, monkeypatch):  # noqa: F811
    cfg = account["cfg"]
    env = _started(account["config"]).follow_signals()
    monkeypatch.setattr(signals, "SIGNAL_SOURCES", [m for m in signals.SIGNAL_SOURCES if m is not signals_dns.make])
    twin = _started(account["config"]).follow_signals()      # every source but the DNS one
    r53 = _customer_route53(cfg)
    try:
        src = next(s for s in env._signals.sources if s.name.startswith("dns:"))
        assert src.name == f"dns:{cfg.aws.dns_server}"
        here = env.resolver(honour_ttl=False).lookup(env.record_name).addresses
        other = next(r for r in env.regions if region_addresses(env, r) != here)
        new = region_addresses(env, other)
        eventually(lambda: src._answer is not None, deadline_s=CHANGE_SEEN_S, what="the baseline answer")
        t_sent = time.time()
        _upsert(r53, cfg, env.record_name, new[0])
        t_done = time.time()   # the DNS server serves a change before its caller has the answer

        def seen():
            assert _changes(env, t_sent - 1, new), "no dns_change yet"
        eventually(seen, deadline_s=CHANGE_SEEN_S, what="the dns_change")
        [ev] = _changes(env, t_sent - 1)
        late = ev["time"] - t_done
        print(f"\ndns_change seen {late * 1000:.0f} ms after the UPSERT returned (bound {ev['lateness_bound_s']}s, "
              f"interval {src.interval_s}s)")
        assert ev["old"] == sorted(here) and ev["source"] == src.name and ev["server"] == cfg.aws.dns_server
        assert ev["time"] >= t_sent - SCHEDULING_SLACK_S and late <= ev["lateness_bound_s"], ev
        assert ev["lateness_bound_s"] <= src.interval_s + SCHEDULING_SLACK_S, ev

        states = dns_states(env.events(kind="dns_change"), name=env.config.service.name)
        check = moved_once(states, new, since_wall=t_sent - 1, region=other, named=region_names(env))
        assert check["valid"] is True, check["detail"]
        no_source = moved_once(dns_states(twin.events(kind="dns_change"), name=cfg.service.name), new,
                               since_wall=t_sent - 1, region=other, named=region_names(twin))
        assert no_source["valid"] is False and "saw 0" in no_source["detail"]
    finally:
        _upsert(r53, cfg, env.record_name, here[0])
        env.stop()
        twin.stop()


def _weighted(r53, cfg, name: str, weights: dict[str, tuple[str, int]], comment: str) -> None:
    r53.change_resource_record_sets(HostedZoneId=cfg.aws.hosted_zone_id, ChangeBatch={"Comment": comment, "Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": 1, "SetIdentifier": sid,
                                                   "Weight": w, "ResourceRecords": [{"Value": a}]}}
        for sid, (a, w) in weights.items()]})


def _polled_answer(pollers, src, want: list[str]) -> None:
    pollers.poll_once(src)
    assert src._answer == want, f"answer {src._answer}"


@pytest.mark.parametrize("two_calls", [True, False])
def test_a_weight_change_in_two_calls_shows_its_intermediate_answer(account, two_calls):  # noqa: F811
    cfg = account["cfg"]
    env = _started(account["config"])
    east, west = (region_addresses(env, r)[0] for r in cfg.regions)
    name = f"weighted-{int(two_calls)}.{cfg.route53.zone.rstrip('.')}."
    r53 = _customer_route53(cfg)
    host, port = signals_dns.name_servers(env)[0]
    src = signals_dns.DnsAnswerSource([(host, port)], name, draws=signals_dns.WEIGHTED_DRAWS)
    log = EventLog(None)
    pollers = signals.SignalPollers(log, [src])
    try:
        _weighted(r53, cfg, name, {"east": (east, 100), "west": (west, 0)}, "before")
        pollers.poll_once(src)                                           # the baseline: east only
        t0 = time.time()
        if two_calls:   # as tests/byo/broken_handlers.weights_in_two_calls: east to 0 first (every weight 0)
            _weighted(r53, cfg, name, {"east": (east, 0)}, "failover 1/2")
            # every weight 0: one answer is a draw of either; polls until both were drawn (p 99.2% a poll)
            eventually(lambda: _polled_answer(pollers, src, sorted([east, west])), deadline_s=CHANGE_SEEN_S,
                       what="the intermediate answer")
            _weighted(r53, cfg, name, {"west": (west, 100)}, "failover 2/2")
        else:
            _weighted(r53, cfg, name, {"east": (east, 0), "west": (west, 100)}, "failover")
        pollers.poll_once(src)
        states = dns_states(log.since(0, "dns_change"), name=name)
        check = moved_once(states, [west], since_wall=t0, region=cfg.regions[1], named=region_names(env))
        if two_calls:
            assert tuple(sorted([east, west])) in [s.answer for s in states] and states[-1].answer == (west,)
            assert check["valid"] is False and "on the way" in check["detail"], check["detail"]
        else:
            assert check["valid"] is True, check["detail"]
    finally:
        r53.change_resource_record_sets(HostedZoneId=cfg.aws.hosted_zone_id, ChangeBatch={"Changes": [
            {"Action": "DELETE", "ResourceRecordSet": {"Name": name, "Type": "A", "TTL": 1, "SetIdentifier": sid,
                                                       "Weight": w, "ResourceRecords": [{"Value": a}]}}
            for sid, a, w in (("east", east, 0), ("west", west, 100))]})


# -- the budget over a stretch of polling --------------------------------------------------------------------

def _api_resolved(account, monkeypatch):
    """The written config without aws.dns_server: the resolver reads the record through Route 53's API
    (one call a poll). The DNS source still asks the stand-in's DNS server (as the zone's delegation:
    moto's canned name servers are not on loopback)."""
    data = tomllib.loads(account["config"].read_text())
    server = data["aws"].pop("dns_server")
    p = account["tmp"] / "api-resolved.toml"
    p.write_text(to_toml(data))
    host, _, port = server.rpartition(":")
    monkeypatch.setattr(signals_dns, "name_servers", lambda env: [(host, int(port))])
    return p


def _counted_session():
    """A session whose every Route 53 request is stamped (a hook of the test's own, not the budget's).
    register_last: the stamp runs after the budget's own before-send hook has waited for its token,
    so it is the moment the request goes out; stamped before that wait, the calls that merely asked
    during the opening burst counted as sent (5 in a second with 2 threads, a false failure)."""
    session = _local_account_session()
    sent: list[float] = []
    session.events.register_last("before-send.route53", lambda **_: sent.append(time.monotonic()))
    return session, sent


def _busiest(sent: list[float], window_s: float = 1.0) -> int:
    return max((sum(1 for u in sent if t <= u < t + window_s) for t in sent), default=0)


def test_route53_calls_stay_within_the_budget_while_dns_answers_region_polls(account, monkeypatch):  # noqa: F811
    config = _api_resolved(account, monkeypatch)
    session, sent = _counted_session()
    env = AwsEnvironment(load_config(config), session=session).start().follow_signals()
    try:
        rate = env.route53_budget.rate_per_s
        assert isinstance(env.resolver(), Route53Resolver) and env.dns_poll_interval_s == 1.0
        here = env.resolver(honour_ttl=False).lookup(env.record_name).addresses
        other = next(r for r in env.regions if region_addresses(env, r) != here)
        before, t0 = len(sent), time.monotonic()
        with pytest.raises(NotWithinDeadline):
            dns_answers_region(env, other, deadline=10)     # the answer never moves: 10 s of polling
        span = time.monotonic() - t0
        mine = sent[before:]
        per_min = len(mine) * 60 / span
        print(f"\nRoute 53 calls over {span:.1f}s of dns_answers_region + pollers: {len(mine)} ({per_min:.0f}/min), "
              f"busiest second {_busiest(mine)}; budget {env.route53_budget.status()}")
        assert len(mine) <= rate * span + BURST and _busiest(mine) <= rate + BURST
        assert env.route53_budget.bucket.calls == len(sent)               # the budget counts every request
    finally:
        env.stop()


@pytest.mark.parametrize("budget_on", [True, False])
def test_the_budget_holds_back_a_tight_loop(account, monkeypatch, budget_on):  # noqa: F811
    config = _api_resolved(account, monkeypatch)
    session, sent = _counted_session()
    env = AwsEnvironment(load_config(config), session=session).start()
    if not budget_on:
        env.route53_budget.bucket.rate_per_s = env.route53_budget.bucket.burst = 1000.0
    resolver, stop = Route53Resolver(env, honour_ttl=False), threading.Event()

    def hammer():
        while not stop.is_set():
            resolver.lookup(env.record_name)

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(2)]
    before, t0 = len(sent), time.monotonic()
    for t in threads:
        t.start()
    stop.wait(3.0)
    stop.set()
    for t in threads:
        t.join(timeout=5)
    mine, span = sent[before:], time.monotonic() - t0
    within = len(mine) <= 2.0 * span + BURST and _busiest(mine) <= 2.0 + BURST
    print(f"\nbudget {'on' if budget_on else 'off'}: {len(mine)} calls in {span:.1f}s, busiest second {_busiest(mine)}")
    assert within is budget_on
