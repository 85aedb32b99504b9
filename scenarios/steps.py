"""Steps the scenarios share: how much load, where the healthy region is, and the data checks
every scenario ends with. Each step records what it measured on the ScenarioRecord, so a
scenario reads as the story it rehearses.
"""

from __future__ import annotations

import time

import pytest

from gameday.assertions.checkers import (divergent_keys, error_budget, lost_acked_writes, on_incomplete_history,
                                         placement, read_your_writes, rto)
from gameday.assertions.eventually import eventually
from gameday.assertions.dns_timeline import dns_states, moved_once
from gameday.assertions.failback import failback_rule, health_at, moves_back, signals
from gameday.assertions.failover import (lambda_invoked, read_replicas, region_addresses, replicas_converge,
                                         replication_backlog)
from gameday.loadgen.history_stream import history_gaps, max_uncertainty, read_completeness

# DNS-following clients: modest and steady, so their share of successes tells where DNS sends
# normal traffic (the surge users aim at one region's load balancer directly).
FOLLOWER_RPS = 10.0
SURGE_FACTOR = "1.5x"          # 1.5 times the requests that trip the alarm in one period
# The surge crosses the alarm with cheap requests (GET /health through the load balancer: the
# alarm counts every request) and keeps a share of writes: a 2-core machine cannot serve the
# seed's 150 writes/s through the whole local model (~15 ms of CPU each, measured), and the
# data checks need writes, not all of them.
SURGE_OPS = "ping=0.8,write=0.2"
# No cross-region reads in failover scenarios: every request served by the healthy region is then
# a follower's, so "clients followed" is measured, not inferred.
FAILOVER_OPS = "write=0.7,read_own=0.3"


def needs_failover_function(env, why: str) -> None:
    """Skip, with the reason, a scenario that only a failover function can pass: with
    route53.routing = failover (and no function) Route 53's health checks move traffic, and they
    react to a region's health, not to its load or to Route 53's API. Which scenario applies to
    which pattern: docs/failover.md."""
    if not env.config.failover_function:
        pytest.skip(f"not applicable to route53.routing = {env.config.route53.routing} without a failover "
                    f"function: {why}")


def other_region(env, region: str) -> str:
    return next(r for r in env.regions if r != region)


def load_hold_s(scenario, extra_s: float = 0.0) -> float:
    """How long a scenario's load holds: through the whole failover and the clients' TTL, plus
    a few periods of evidence, and never longer (the run is bounded in time)."""
    d = scenario.deadlines
    return round(d.rto_s + extra_s + 5.0, 1)


def start_surge(scenario, load, region: str):
    """Start the surge at `region` (1.5x the alarm threshold, DNS followers beside it); return
    (run, started, wall): the clocks start once the surge runs, because Locust's own start-up
    (2-4 s on 2 busy cores) is not the system's detection time: CloudWatch can only count
    requests once they are sent."""
    run = load.start(shape="constant", surge_region=region, surge_rate=SURGE_FACTOR, follower_rate=FOLLOWER_RPS,
                     op_mix=FAILOVER_OPS, surge_op_mix=SURGE_OPS, hold_s=load_hold_s(scenario))
    return run, time.monotonic(), time.time()


def followers(history: list[dict]) -> list[dict]:
    return [e for e in history if e.get("role") == "dns"]


# How long the followers must be answered by the new region: longer than a request's timeout (the
# load's 2 s), so the requests that were still hanging on the lost region have ended by then. The
# recovery's own evidence (whole 2 s buckets back at the SLO) is end_load's wait, not this one.
FOLLOW_EVIDENCE_S = 2.5


def clients_follow(scenario, run, region: str, *, started: float, evidence_s: float = FOLLOW_EVIDENCE_S) -> float:
    """The DNS followers are answered by `region` (at least half their rate over 1 s windows) and
    keep being answered there for `evidence_s` (FOLLOW_EVIDENCE_S). Returns the seconds from
    `started` to the first such window."""
    d = scenario.deadlines
    since: list[float] = []

    def answered() -> float:
        r = run.rate(region, window_s=1.0)
        if r < FOLLOWER_RPS * 0.5:
            since.clear()
            raise AssertionError(f"{region} answers {r:.1f} requests/s (expected the followers' {FOLLOWER_RPS:g}/s)")
        if not since:
            since.append(time.monotonic())
        held = time.monotonic() - since[0]
        assert held >= evidence_s, f"{region} answers the followers, for {held:.1f}s of the {evidence_s:g}s of evidence"
        return since[0] - started

    took, _ = eventually(answered, deadline_s=d.rto_s + evidence_s, started=started, interval_s=0.1,
                         what=f"DNS-following clients answered by {region}",
                         why_deadline=f"failover deadline {d.failover_s:.1f}s + TTL and margin {d.client_follow_s:.1f}s "
                                      f"+ {evidence_s:g}s of evidence")
    return took


def dns_moved_once(scenario, env, region: str, *, since_wall: float, until_wall: float | None = None,
                   until_failback: bool = False) -> None:
    """Route 53's answer changed exactly once since `since_wall` (until `until_wall`), straight to
    `region`: a failover that flaps (a function reacting to OK notifications, or to the healthy
    region's alarms) or passes through an intermediate answer (a change made in two calls) is a
    failure even when it ends on the right region (assertions/dns_timeline.py). With
    `until_failback` (a scenario that records failback_judged too) it judges the failover itself:
    a move back to the failed region ends the window, and the failback rule judges that move and
    what follows."""
    states = dns_states(env.events(kind="dns_change"), name=env.config.service.name)
    back = moves_back(states, [a for r in env.regions if r != region for a in region_addresses(env, r)],
                      since_wall=since_wall, until_wall=until_wall) if until_failback else []
    if back:
        until_wall = back[0].since - 1e-3
    scenario.check(moved_once(states, region_addresses(env, region), since_wall=since_wall, region=region,
                              until_wall=until_wall, named=region_names(env)))


def region_names(env):
    """answer -> 'us-east-1, us-west-2': the regions a DNS answer's addresses belong to (the
    `named` of assertions/dns_timeline's messages)."""
    return lambda answer: ", ".join(sorted({env.region_of_address(a) or "no region" for a in answer})) or "no region"


# after the function's answer to the OK notifications (or Route 53's health check passing), how long
# a move back can still take to show on the timeline: the record's TTL and this margin
FAILBACK_MARGIN_S = 0.5


def failed_region_signals(env, region: str) -> list:
    """`region`'s health signals on the timeline (assertions/failback.signals): its alarms that notify
    the failover topic, or with route53.routing = failover and no function its health check."""
    if not env.config.failover_function:
        return signals(env.events(kind="route53_health"), region=region)
    names = (env.endpoints.get("alarm_names") or {}).get(region) or {}
    return signals(env.events(kind="alarm"), region=region,
                   alarms={name: f"{key} alarm" for key, name in names.items()} or None)


def _failback_watch_s(scenario, env, region: str, *, since_wall: float) -> float:
    """Wait until `region` is healthy again (its alarms OK / its health check passing; at most the
    recovery deadline and one period more) and the function's invocation for the last OK
    notification has ended (at most the Lambda deadline); return how long DNS must then still be
    watched for a move back. The extra period: once a surge stops its load balancer publishes no
    RequestCount at all, and CloudWatch keeps the alarm in ALARM while any datapoint is left in the
    evaluation range (N + 2 periods) before it treats the missing ones as not breaching (measured:
    OK 15.8s after the surge's last request, 5s periods)."""
    d, t0 = scenario.deadlines, time.monotonic()

    def healthy() -> list:
        sigs = failed_region_signals(env, region)
        h = health_at(sigs, time.time())
        assert h.healthy, f"{region}'s {h.blocking[0]} is {h.blocking[1]}"
        return sigs

    try:
        sigs, _ = eventually(healthy, deadline_s=d.recovery_s + env.profile.period_s, started=t0, interval_s=0.1,
                             what=f"{region} healthy again", why_deadline="the recovery deadline + one period")
    except AssertionError:
        return env.profile.dns_ttl_s + FAILBACK_MARGIN_S   # still unhealthy: a move back now breaks the rule anyway
    watch_s = env.profile.dns_ttl_s + FAILBACK_MARGIN_S
    if not env.config.failover_function:
        return watch_s
    last_ok = max((s.time for s in sigs if s.healthy and s.time >= since_wall), default=None)
    invocations = [e for e in env.events(kind="lambda_invocation") if float(e.get("time", 0)) >= since_wall]
    if last_ok is None or not invocations:   # no OK notification to wait for / no timeline of invocations
        return watch_s if last_ok is None else d.client_follow_s
    try:
        lambda_invoked(env, started=time.monotonic() - (time.time() - last_ok), deadline=d.lambda_s, outcome="any",
                       region=region, alarm_state="OK")
    except AssertionError:
        return d.client_follow_s
    return watch_s


def failback_judged(scenario, env, region: str, *, since_wall: float, fault_wall: float,
                    until_wall: float | None = None, wait: bool = True) -> dict:
    """Record the failback rule (assertions/failback.py) for `region`, the region failed away from,
    over Route 53's answers from `since_wall` to `until_wall` (None: now; the operator's own failback
    is left out by ending before it). With `wait`, the evidence first covers the time the function
    can react to the OK notifications that follow the fault's end: `region` healthy again, the
    function's invocation for the last OK ended, then the TTL and a margin (FAILBACK_MARGIN_S)."""
    addresses = region_addresses(env, region)
    if wait:
        t0 = time.monotonic()
        watch_s = _failback_watch_s(scenario, env, region, since_wall=since_wall)
        t1 = time.monotonic()

        def watched() -> None:
            """Over at once when a move back shows (the evidence is there), else after watch_s."""
            states = dns_states(env.events(kind="dns_change"), name=env.config.service.name)
            if not moves_back(states, addresses, since_wall=since_wall, until_wall=until_wall):
                assert time.monotonic() - t1 >= watch_s, f"watching DNS for a move back to {region}"

        eventually(watched, deadline_s=watch_s + 1.0, started=t1, interval_s=0.1,
                   what=f"DNS watched {watch_s:.1f}s for a move back to {region}", why_deadline="TTL + margin")
        scenario.note(f"failback rule: {time.monotonic() - t0:.1f}s spent for {region} to heal, the function to "
                      f"answer its OK notifications and DNS to show a move back")
    fo = env.config.failover
    states = dns_states(env.events(kind="dns_change"), name=env.config.service.name)
    return scenario.check(failback_rule(states, failed_region_signals(env, region), region=region,
                                        addresses=addresses, since_wall=since_wall,
                                        policy=fo.failback, hold_periods=fo.failback_hold_periods,
                                        period_s=env.profile.period_s, origin_wall=fault_wall, until_wall=until_wall))


def drained(env, *, deadline_s: float, started: float) -> None:
    """Until the replicator holds no write it has read and not applied (its status, no table scan):
    a scan of every replica costs ~0.5 s at a few thousand items on 2 cores, so the convergence
    check scans once the backlog it can see is gone, not every 0.25 s meanwhile. A paused direction
    never drains: the scan then tells what it lacks. Not a check: the scans below are the evidence."""
    def idle() -> None:
        busy = replication_backlog(env, paused=False)
        assert not busy, f"replication still applying {busy} write(s)"

    try:
        eventually(idle, deadline_s=deadline_s, started=started, interval_s=0.05, what="replication backlog applied",
                   why_deadline="the profile's convergence deadline")
    except AssertionError:
        pass   # the convergence check below waits out the same deadline and says what differs


def followers_rto(scenario, env, history: list[dict], *, fault_wall: float, region: str):
    """The followers' recovery time on `region` (checkers.rto). 2 s buckets: at the followers' 10
    requests/s a 1 s bucket is 10 operations, and one straggler (a read of a key written to the
    lost region, failing at its 2 s timeout) would decide a whole bucket against a 95% SLO.
    Streamed workers' clocks are known to +- their offset uncertainty: the deadline widens by it."""
    completeness = read_completeness(scenario.dir)
    return on_incomplete_history(
        rto(followers(history), fault_wall, slo=env.config.budgets.rto_slo, region=region,
            deadline_s=scenario.deadlines.rto_s + max_uncertainty(completeness), bucket_s=2.0),
        history_gaps(completeness))


HANGING_S = 0.5   # a follower request unanswered this long is hanging (answered ones take milliseconds)


def hanging_followers(history: list[dict], *, older_than_s: float) -> int:
    """Followers' requests invoked more than `older_than_s` ago and not completed yet."""
    now = time.time()
    open_since: dict = {}
    for e in followers(history):
        if e.get("type") == "invoke":
            open_since[e.get("id")] = e["time"]
        else:
            open_since.pop(e.get("id"), None)
    return sum(1 for t in open_since.values() if now - t > older_than_s)


def end_load(scenario, env, run, *, fault_wall: float, healthy_region: str | None = None) -> None:
    """Stop the load; with healthy_region, first keep it on until the followers' recovery time can
    be told from the history (a whole 2 s bucket back at the SLO and no follower request hanging)
    and the followers have been served for one alarm period since (as long as the steady state
    before the fault), or the rto deadline passed: the load's end is the history's end, and an
    rto cut short is "unknown" instead of a number. A stop ends the run at once
    (loadgen.shapes.end_now), so this wait is the evidence, not slack."""
    if healthy_region is not None:
        def told() -> None:
            history = run.history()
            # a request hanging on the lost region fails at its timeout, after the stop: it belongs to
            # the evidence, so the load ends only once none hangs (a request is answered in ms here)
            hanging = hanging_followers(history, older_than_s=HANGING_S)
            assert not hanging, f"{hanging} follower request(s) still hanging"
            r = followers_rto(scenario, env, history, fault_wall=fault_wall, region=healthy_region)
            assert r.valid != "unknown", r.detail
            # as much recovered service after the fault as steady state before it (one alarm
            # period): the error budget is a share of the run, and a run cut at the first
            # recovered bucket weighs the outage against an arbitrary tail
            recovered_for = time.time() - fault_wall - (r.metrics.get("rto_s") or 0.0)
            assert r.valid is False or recovered_for >= env.profile.period_s, \
                f"recovered for {recovered_for:.1f}s of the {env.profile.period_s:g}s (one period) of evidence"

        started = time.monotonic() - (time.time() - fault_wall)
        try:
            eventually(told, deadline_s=scenario.deadlines.rto_s, started=started, interval_s=0.25,
                       what="the followers' recovery in the history", why_deadline="the profile's rto deadline")
        except AssertionError:
            pass   # the rto check itself says what the history shows
    run.stop()


def data_checks(scenario, env, history: list[dict], *, fault_wall: float, healthy_region: str | None,
                budget: float, window: tuple[float, float] | None = None) -> None:
    """Replicas converge, then: no acknowledged write lost, no divergent key, read-your-writes,
    the error budget, and (with healthy_region) the followers' recovery time."""
    cfg = env.config
    t0 = time.monotonic()
    scenario.metric("requests", sum(1 for e in history if e.get("type") in ("ok", "fail", "info")))
    last_scan: dict = {}

    def scan() -> dict:
        last_scan["tables"] = read_replicas(env)
        return last_scan["tables"]

    try:
        backlog = replication_backlog(env)
        drained(env, deadline_s=scenario.deadlines.convergence_s, started=t0)
        scenario.expect("replicas_converge", lambda: replicas_converge(env, started=t0, backlog=backlog, reader=scan),
                        metric="convergence_s")
    except AssertionError:
        pass  # recorded as an invalid check; the data checks below say what the divergence cost
    # the scan that proved convergence (or the last one that did not) is what the data checks read
    replicas = last_scan.get("tables") or read_replicas(env)
    scenario.save_replicas(replicas)
    placed = placement(history)   # the history read once for every checker below
    # streamed workers that died or lost batches: the checks needing every operation say "unknown"
    gaps = history_gaps(read_completeness(scenario.dir))
    lost = lost_acked_writes(placed, replicas, allowed=cfg.budgets.lost_acked_writes)
    scenario.check(on_incomplete_history(lost, gaps))
    scenario.check(divergent_keys(replicas))
    ryw = read_your_writes(placed)
    if ryw.valid != "unknown":
        scenario.check(on_incomplete_history(ryw, gaps))
    scenario.budget("error_rate", budget)
    eb = error_budget(placed, budget=budget, window=window)
    scenario.check(eb)
    scenario.metric("error_rate", eb.metrics.get("error_rate"))
    if healthy_region is not None:
        scenario.budget("rto_s", round(scenario.deadlines.rto_s, 1))
        scenario.check(followers_rto(scenario, env, history, fault_wall=fault_wall, region=healthy_region))
