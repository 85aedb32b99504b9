"""The one failback rule every failover scenario is judged by: after a failover away from region
F, Route 53 may answer F again only when `failover.failback = "automatic"` and F has been healthy
for at least `failover.failback_hold_periods` evaluation periods.

Pure: Route 53's answers (assertions/dns_timeline.dns_states) and the timeline's health signals in,
a check out; no clock is read.

- A move back is any answer that includes an address of F after an answer without one (a change
  made in two calls, whose intermediate answer has every region, moves back at that intermediate
  answer: clients can be given F from then on).
- F is healthy when every one of its alarms that notify the failover topic is OK (`alarm` events),
  or, with route53.routing = "failover" and no function, when its Route 53 health check passes
  (`route53_health` events). An alarm with no transition on the timeline yet counts as OK (it never
  fired).
- Periods are counted from the transition that made F healthy (its last alarm to go OK). An alarm's
  ALARM -> OK transition is an evaluation at a period boundary: CloudWatch's state is ALARM while at
  least M (DatapointsToAlarm) of the last N (EvaluationPeriods) datapoints breach (CloudWatch user
  guide, "Alarm evaluation"), and as the window slides by one period the breaching count can only
  fall when the period added is not breaching. So the OK itself certifies the last period as not
  breaching (for example healthy hosts, Minimum over the period, at or above the threshold all
  period long): F is healthy for k periods when it became healthy at least (k - 1) periods before
  the move. Hold 1 (the default) allows a failback at the OK notification, which is what the
  reference function does (sut/failover_lambda.py `_fail_back_to`: on the home region's OK, once
  every alarm of that region is OK).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

from gameday.assertions.dns_timeline import DnsState

CHECK = "failback_rule"
# The signal that made F healthy and the DNS change it caused are stamped by different threads
# (health checker / alarm evaluator vs the DNS server): a move this close before it is taken as at it.
SIGNAL_SKEW_S = 0.2


@dataclass(frozen=True)
class Signal:
    """One health signal of the region changing: an alarm's transition or a health check's."""

    time: float
    source: str        # who says it: "healthy-hosts alarm", "health check 1234"
    healthy: bool
    state: str         # as the source says it: OK / ALARM / INSUFFICIENT_DATA, passing / failing


@dataclass(frozen=True)
class Health:
    """The region's health at a moment: healthy since when, or which source is not, since when."""

    healthy: bool
    since: float | None                 # when the region became healthy / the blocking source went bad
    blocking: tuple[str, str] | None    # (source, state) of a source that is not healthy


def signals(events: Iterable[dict], *, region: str, alarms: Mapping[str, str] | None = None) -> list[Signal]:
    """F's health signals from timeline events, in time order: `alarm` transitions of F's alarms
    (`alarms`: AlarmName -> how to name it, e.g. "healthy-hosts alarm"; None: every alarm of F) and
    `route53_health` transitions of F's health checks."""
    out = []
    for e in events:
        if e.get("region") != region:
            continue
        kind = e.get("kind") or ("route53_health" if "healthy" in e else "alarm")
        if kind == "alarm" and (alarms is None or e.get("alarm") in alarms):
            name = str(e.get("alarm"))
            out.append(Signal(float(e["time"]), (alarms or {}).get(name, f"{name} alarm"), e.get("new") == "OK",
                              str(e.get("new"))))
        elif kind == "route53_health":
            healthy = bool(e.get("healthy"))
            out.append(Signal(float(e["time"]), f"health check {e.get('health_check_id')}", healthy,
                              "passing" if healthy else "failing"))
    return sorted(out, key=lambda s: s.time)


def health_at(sigs: Sequence[Signal], t: float) -> Health:
    """The region's health at `t` from its signals up to then (each source's latest one)."""
    latest: dict[str, Signal] = {}
    for s in sigs:
        if s.time > t:
            break
        latest[s.source] = s
    bad = sorted((s for s in latest.values() if not s.healthy), key=lambda s: s.time)
    if bad:
        return Health(False, bad[0].time, (bad[0].source, bad[0].state))
    since = max((s.time for s in latest.values()), default=None)
    return Health(True, since, None)


def moves_back(states: Sequence[DnsState], addresses: Iterable[str], *, since_wall: float,
               until_wall: float | None = None) -> list[DnsState]:
    """The states, from `since_wall` to `until_wall`, that answered F again after an answer without
    F (a failover away): each is one move back, at its `since`."""
    own = set(addresses)
    out, away = [], False
    for s in states:
        has_f = bool(own & set(s.answer))
        if s.since >= since_wall and (until_wall is None or s.since <= until_wall) and away and has_f:
            out.append(s)
        if has_f:
            away = False
        elif s.answer:            # no answer at all (a deleted record) is no failover to another region
            away = True
    return out


def _judge(move: DnsState, sigs: Sequence[Signal], *, region: str, policy: str, hold_s: float, hold_periods: int,
           at: Callable[[float], str]) -> str | None:
    """Why this move back breaks the rule, or None when it keeps it."""
    t = move.since
    health = health_at(sigs, t + SIGNAL_SKEW_S)
    moved = f"DNS answered {region} again at {at(t)}"
    unhealthy = (f"{region}'s {health.blocking[0]} was still {health.blocking[1]} (since {at(health.since)})"
                 if health.blocking else None)
    if policy != "automatic":
        return f"failback = {policy} but {moved}" + (f", while {unhealthy}" if unhealthy else "")
    if unhealthy:
        return f"{moved} while {unhealthy}"
    healthy_for = t - health.since if health.since is not None else None
    if healthy_for is not None and healthy_for + SIGNAL_SKEW_S < hold_s:
        return (f"{moved}, {region} healthy for {max(0.0, healthy_for):.1f}s (since {at(health.since)}) of the "
                f"{hold_s:g}s after its OK that the {hold_periods}-period hold needs (the OK certifies the first period)")
    return None


def failback_rule(states: Sequence[DnsState], sigs: Sequence[Signal], *, region: str, addresses: Iterable[str],
                  since_wall: float, policy: str, hold_periods: int = 1, period_s: float, origin_wall: float,
                  until_wall: float | None = None) -> dict:
    """Check `failback_rule` over Route 53's answers from `since_wall` (the fault, or the surge) to
    `until_wall` (None: the end of the timeline; a move the harness makes itself, the operator's
    failback, is left out by ending the window before it). Every move back to `region` after a
    failover away from it must come with policy "automatic" and with `region` healthy for
    `hold_periods` periods (see the module's docstring); the failure names the moment and what was
    still unhealthy. Times in the detail are seconds after `origin_wall` (the fault)."""
    def at(t: float) -> str:
        return f"+{t - origin_wall:.1f}s"

    hold_s = (hold_periods - 1) * period_s
    moves = moves_back(states, addresses, since_wall=since_wall, until_wall=until_wall)
    broken = [why for m in moves if (why := _judge(m, sigs, region=region, policy=policy, hold_s=hold_s,
                                                   hold_periods=hold_periods, at=at))]
    metrics = {"failbacks": len(moves), "failback_at_s": round(moves[0].since - origin_wall, 3) if moves else None}
    if broken:
        return {"name": CHECK, "valid": False, "metrics": metrics, "detail": "; ".join(broken)}
    if not moves:
        detail = f"Route 53 did not answer {region} again after the failover (failback = {policy})"
    else:
        health = health_at(sigs, moves[0].since + SIGNAL_SKEW_S)
        detail = (f"DNS answered {region} again at {at(moves[0].since)}, {region} healthy since "
                  + (at(health.since) if health.since is not None else "the start")
                  + f" (failback = automatic, hold {hold_periods} period(s) of {period_s:g}s)")
    return {"name": CHECK, "valid": True, "metrics": metrics, "detail": detail}
