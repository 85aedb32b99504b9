"""Noise from the healthy region: after a failover, the region now carrying all the traffic has an
alarm of its own go ALARM and back to OK (a burst of 5XX from its targets for about one period).
A failover function must stay on that region: the region it failed away from is still down. One
that fails back on any OK notification, or fails over "away" from whichever region alarmed,
sends every client into the dead region; the check names the notification it reacted to.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable, Sequence

import pytest

from gameday.assertions.deadlines import HARNESS_MARGIN_S
from gameday.assertions.dns_timeline import describe_states, dns_states
from gameday.assertions.eventually import eventually
from gameday.assertions.failover import (alarm_fires, alarm_name, dns_answers_region, describe_alarm, lambda_invoked,
                                         region_addresses)
from gameday.faults import block_region, fail_responses
from gameday.scenarios.steps import (FAILOVER_OPS, FOLLOWER_RPS, clients_follow, data_checks, dns_moved_once, end_load,
                                     load_hold_s, needs_failover_function, other_region,
                                     region_names)

pytestmark = pytest.mark.scenario

NOISE_ALARM = "target-5xx"      # gameday.toml's [alarms.target-5xx]: HTTPCode_Target_5XX_Count
NOISE_SHARE = 0.5               # the share of the healthy region's answers that fail: the followers keep
                                # half theirs, so their recovery stays measurable through the noise
NOISE_OVERSHOOT = 1.6           # target 5XX per period, as a multiple of the alarm's threshold
NOISE_OPS = "ping=1"            # the extra regional load is cheap GET /health (the alarm counts any 5XX)
LOCUST_START_S = 10.0           # a second Locust process's start-up on 2 busy cores (2.8 s measured alone)


def noise_rate(env) -> float:
    """Requests/s to add on the healthy region, beside the followers, so that NOISE_SHARE of all its
    requests is NOISE_OVERSHOOT x the target-5xx threshold per period."""
    spec = env.config.alarms[NOISE_ALARM]
    needed = NOISE_OVERSHOOT * spec.threshold / env.profile.period_s / NOISE_SHARE
    return round(max(1.0, needed - FOLLOWER_RPS), 1)


def _hms(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def _notification(ev: dict, alarms: Sequence[dict]) -> str:
    """'gameday-target-5xx-us-west-2 (us-west-2) OK at 12:00:01.250': the notification a
    lambda_invocation event handled, timed by the alarm's transition on the timeline."""
    alarm = ev.get("alarm") or {}
    name, state = alarm.get("AlarmName", "?"), alarm.get("NewStateValue", "?")
    begun = float(ev.get("start_ts") or ev.get("time", 0))
    moments = [float(a["time"]) for a in alarms if a.get("alarm") == name and a.get("new") == state
               and float(a.get("time", 0)) <= begun]
    return f"{name} ({ev.get('region') or '?'}) {state}" + (f" at {_hms(max(moments))}" if moments else "")


def cause_of(change_at: float, invocations: Sequence[dict], tolerance_s: float = 0.5) -> dict | None:
    """The failover-function invocation that made a DNS change at `change_at`: the one running
    then (start <= change <= end + tolerance: the DNS server applies a change a moment after the
    call), else the latest one that started before it."""
    started = [e for e in invocations if float(e.get("start_ts") or e.get("time", 0)) <= change_at + 0.05]
    running = [e for e in started if float(e.get("end_ts") or e.get("time", 0)) + tolerance_s >= change_at]
    pool = running or started
    return max(pool, key=lambda e: float(e.get("start_ts") or e.get("time", 0))) if pool else None


def stays_on_healthy_region(dns_events: Sequence[dict], invocations: Sequence[dict], *, name: str,
                            healthy: Sequence[str], region: str, since_wall: float, until_wall: float,
                            alarms: Sequence[dict] = (), named: Callable[[Sequence[str]], str] = ", ".join) -> dict:
    """Check: from the failover (the first answer of only `healthy` after `since_wall`) until
    `until_wall`, Route 53 answered `healthy` and nothing else. A change away names when, to what,
    for how long, and the function invocation (and the alarm notification it handled) behind it."""
    want = tuple(sorted(healthy))
    states = [s for s in dns_states(dns_events, name=name, since_wall=since_wall) if s.since <= until_wall]
    moved = next((s for s in states if s.since >= since_wall and s.answer == want), None)
    if moved is None:
        return {"name": "stays_on_healthy_region", "valid": False,
                "detail": f"Route 53 never answered {region} ({', '.join(want)}) after the failover: "
                          f"{describe_states(states, named, now=until_wall)}"}
    away = [s for s in states if s.since > moved.since and s.answer != want]
    if not away:
        return {"name": "stays_on_healthy_region", "valid": True,
                "detail": f"Route 53 answered {region} only, from the failover at {_hms(moved.since)} for "
                          f"{until_wall - moved.since:.1f}s, through the healthy region's alarm noise"}
    first = away[0]
    ev = cause_of(first.since, invocations)
    why = (f"; made by the failover function's invocation for the notification {_notification(ev, alarms)} "
           f"(attempt {ev.get('attempt', '?')}, {ev.get('outcome')}, returned {str(ev.get('result'))[:160]})"
           if ev else "; no failover-function invocation preceded it (another hand changed the record)")
    lasted = first.lasted_s(until_wall)
    return {"name": "stays_on_healthy_region", "valid": False,
            "detail": f"Route 53 moved away from the healthy region {region} at {_hms(first.since)}, "
                      f"{first.since - moved.since:.1f}s after the failover, to [{', '.join(first.answer) or 'no answer'}] "
                      f"({named(first.answer)}) for {lasted:.1f}s{why}; answers since the failover: "
                      f"{describe_states([s for s in states if s.since >= moved.since], named, now=until_wall)}"}


def without_injected_errors(history: list[dict], *, region: str, status: int,
                            window: tuple[float, float]) -> tuple[list[dict], int]:
    """The history without the operations the fail_responses fault answered itself (status
    `status` from `region`, completed inside `window`): the scenario's own noise, never forwarded
    to the service (so never applied), not a failure of the system under test. Every other failure
    in that window still counts. Returns (history, how many operations were left out)."""
    w0, w1 = window
    injected = {(e.get("process"), e.get("id")) for e in history
                if e.get("type") in ("fail", "info") and e.get("status") == status and e.get("served_by") == region
                and w0 <= float(e["time"]) <= w1}
    return [e for e in history if (e.get("process"), e.get("id")) not in injected], len(injected)


def alarms_ok(env, region: str, *, started: float, deadline_s: float) -> float:
    """Every alarm of `region` is OK again (CloudWatch's view); the seconds from `started`."""
    names = [alarm_name(env, region, key) for key, spec in env.config.alarms.items() if spec.enabled]

    def ok() -> None:
        states = {n: describe_alarm(env, region, n).get("StateValue") for n in names}
        firing = {n: s for n, s in states.items() if s != "OK"}
        assert not firing, f"not OK yet: {firing}"

    _, took = eventually(ok, deadline_s=deadline_s, started=started, interval_s=0.2,
                         what=f"every alarm of {region} OK", why_deadline="the profile's recovery deadline")
    return took


def reactions_ended(env, region: str, *, since_wall: float, started: float,
                    deadline_s: float) -> tuple[float, float]:
    """Every alarm transition of `region` since `since_wall` (the notifications the function gets)
    has had its last invocation attempt end (a success, or an error with no retry left); returns
    (the epoch second the last of them ended, the seconds waited)."""
    def ended() -> float:
        transitions = [e for e in env.events(kind="alarm") if e.get("region") == region
                       and float(e.get("time", 0)) >= since_wall and e.get("new") in ("ALARM", "OK")]
        invocations = [e for e in env.events(kind="lambda_invocation") if e.get("region") == region
                       and float(e.get("time", 0)) >= since_wall and not e.get("will_retry")]
        ends = []
        for t in transitions:
            done = [float(e.get("end_ts") or e["time"]) for e in invocations
                    if (e.get("alarm") or {}).get("AlarmName") == t.get("alarm")
                    and (e.get("alarm") or {}).get("NewStateValue") == t.get("new")]
            assert done, f"no finished invocation yet for {t.get('alarm')} {t.get('new')} at {_hms(float(t['time']))}"
            ends.append(max(done))
        assert transitions, f"no alarm transition of {region} since {_hms(since_wall)}"
        return max(ends)

    return eventually(ended, deadline_s=deadline_s, started=started, interval_s=0.2,
                      what=f"the failover function's invocations for {region}'s notifications",
                      why_deadline="the profile's Lambda deadline (attempts, timeouts, retry delays)")


def settle(env, *, after_wall: float, settle_s: float) -> None:
    """Let `settle_s` pass after `after_wall`: a change the function made at its last moment reaches
    the DNS server and the clients' caches (TTL) within it, so the DNS check sees it."""
    def passed() -> None:
        left = after_wall + settle_s - time.time()
        assert left <= 0, f"{left:.1f}s of the settle time left"

    eventually(passed, deadline_s=settle_s + HARNESS_MARGIN_S, interval_s=0.1, what="DNS settle time",
               why_deadline=f"{settle_s:.1f}s (record TTL + margin)")


def _fail_over(scenario, env, nemesis, load, src: str, dst: str):
    """Followers served by src for one period, then src's data plane blocked: alarm -> function ->
    Route 53 answers dst (in one change) -> followers answered by dst. Returns (run, wall)."""
    period = env.profile.period_s
    d = scenario.deadlines
    extra = period + LOCUST_START_S + d.detection_s + d.recovery_s + d.lambda_s + d.client_follow_s
    run = load.start(shape="constant", follower_rate=FOLLOWER_RPS, op_mix=FAILOVER_OPS,
                     hold_s=load_hold_s(scenario, extra))
    run.wait_rate(src, FOLLOWER_RPS * 0.8, deadline_s=d.client_follow_s + period, window_s=period)
    started, wall = time.monotonic(), time.time()
    nemesis.inject(block_region(src, data_plane=True, mode="hang"))
    scenario.expect("alarm_fires", lambda: alarm_fires(env, src, "healthy-hosts", started=started),
                    metric="detection_s")
    scenario.expect("lambda_invoked", lambda: lambda_invoked(env, started=started, region=src))
    scenario.expect("dns_failover", lambda: dns_answers_region(env, dst, started=started), metric="failover_s")
    scenario.expect("clients_follow", lambda: clients_follow(scenario, run, dst, started=started))
    return run, wall


def _noise(scenario, env, nemesis, load, dst: str) -> tuple[float, float]:
    """NOISE_SHARE of dst's answers fail (plus regional pings, so that the share crosses the 5XX
    threshold) until dst's target-5xx alarm fires; then the fault and the pings end and every alarm
    of dst must be OK again. Returns the noise's (start, end) wall times."""
    d = scenario.deadlines
    rate = noise_rate(env)
    pings = load.start(shape="constant", surge_region=dst, surge_rate=rate, surge_op_mix=NOISE_OPS,
                       follower_rate=0, hold_s=LOCUST_START_S + d.detection_s + d.recovery_s)
    pings.wait_rate(dst, rate * 0.8, deadline_s=LOCUST_START_S + env.profile.period_s)
    started, noise_wall = time.monotonic(), time.time()
    fault = nemesis.inject(fail_responses(dst, share=NOISE_SHARE))
    try:
        took = scenario.expect("healthy_region_alarm_fires",
                               lambda: alarm_fires(env, dst, NOISE_ALARM, started=started))
    finally:
        nemesis.rollback(fault)
        pings.stop()
    ended, end_wall = time.monotonic(), time.time()
    scenario.note(f"noise: {NOISE_SHARE:.0%} of {dst}'s answers HTTP 500 with {rate:g} pings/s beside the followers; "
                  f"{alarm_name(env, dst, NOISE_ALARM)} ALARM {took:.1f}s after; fault counts {fault.rollback_detail}")
    scenario.expect("healthy_region_alarm_recovers",
                    lambda: alarms_ok(env, dst, started=ended, deadline_s=d.recovery_s))
    return noise_wall, end_wall


# both faults are needed before anything runs: on --env aws (no fail_responses) a failover of the real
# stack would otherwise be rehearsed for nothing before the skip
@pytest.mark.capability("block_data_plane", "fail_responses")
def test_healthy_region_alarm_noise(env, scenario, nemesis, load):
    """The initial region is down and traffic has failed over; then the healthy region's own 5XX
    alarm goes ALARM and back to OK. The function must keep the record on the healthy region
    (failback = "manual" or "automatic": the failed region is still down), through both
    notifications and the TTL after them."""
    needs_failover_function(env, "the healthy region's alarms reach only a failover function (Route 53 health "
                                 "checks look at the failed region's endpoint, not at alarms)")
    src = env.config.initial_region
    dst = other_region(env, src)
    d = scenario.deadlines
    run, wall = _fail_over(scenario, env, nemesis, load, src, dst)
    noise_wall, end_wall = _noise(scenario, env, nemesis, load, dst)
    dns_moved_once(scenario, env, dst, since_wall=wall, until_wall=noise_wall)   # the failover itself, in one change
    last_end, _ = scenario.expect("function_reacted", lambda: reactions_ended(
        env, dst, since_wall=noise_wall, started=time.monotonic(), deadline_s=d.lambda_s))
    settle(env, after_wall=last_end, settle_s=d.client_follow_s)
    scenario.check(stays_on_healthy_region(
        env.events(kind="dns_change"), env.events(kind="lambda_invocation"), name=env.config.service.name,
        healthy=region_addresses(env, dst), region=dst, since_wall=wall, until_wall=time.time(),
        alarms=env.events(kind="alarm"), named=region_names(env)))
    end_load(scenario, env, run, fault_wall=noise_wall, healthy_region=dst)
    nemesis.rollback_all()
    history, left_out = without_injected_errors(run.history(), region=dst, status=500,
                                                window=(noise_wall, end_wall + HARNESS_MARGIN_S))
    scenario.note(f"error budget: {left_out} follower operation(s) answered HTTP 500 by the injected fault between "
                  f"{_hms(noise_wall)} and {_hms(end_wall)} left out (never forwarded: the scenario's own noise)")
    data_checks(scenario, env, history, fault_wall=wall, healthy_region=dst, budget=env.config.budgets.error_rate)
    scenario.verdict()
