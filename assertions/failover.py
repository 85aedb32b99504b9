"""Eventually-assertions on a running environment: the alarm fired, the failover Lambda ran,
Route 53 answers the healthy region, the replicas converged. Each one waits with
assertions.eventually.eventually for as long as the time profile says it may take
(assertions.deadlines.Deadlines) and RETURNS the measured duration from `started`, a
time.monotonic() value the scenario took when it began the surge or injected the fault.

Only the Environment interface is used (environments/base.py): `observer()` clients (not
subject to injected faults), `resolver(honour_ttl=False)`, `region_of_address()`, `events()`,
`endpoints` / `config` / `profile`. Where the timeline holds the moment something happened (an
alarm transition, a Lambda invocation's end), durations are measured to that moment rather than
to when a poll noticed it, so the poll interval does not inflate them.

A failure message says what was expected, what was last observed, and why the deadline is what
it is, e.g. "alarm gameday-request-count-us-east-1 still OK 14.1s after the start, expected ALARM
within 13.0s (deadline = (1+1) x 5s period + 3.0s harness margin ...); state reason: ...; last
datapoints of RequestCount (Sum per 5s, alarm when > 500): ...".
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

from gameday import aws
from gameday.assertions.checkers import divergent_keys
from gameday.assertions.deadlines import HARNESS_MARGIN_S, Deadlines
from gameday.assertions.eventually import NotWithinDeadline, eventually

ALARM, OK = "ALARM", "OK"
# moto/CloudWatch stamp a transition with their own clock; allow for rounding between the clocks
STATE_TIME_TOLERANCE_S = 1.0
LOG_LINES_IN_MESSAGE = 12
LAMBDA_OUTCOMES = ("ok", "error", "timeout", "failed", "any")


# -- deadlines and why ------------------------------------------------------------------------------------

def deadlines(env) -> Deadlines:
    cfg = env.config
    return Deadlines.from_profile(env.profile, cfg, replication_lag_s=cfg.dynamodb.replication_lag_s)


def explain(env) -> dict[str, str]:
    """Deadline name -> "12.0s = <the formula with this profile's numbers>", consistent with
    Deadlines.from_profile (each formula is re-evaluated and checked against it)."""
    p, cfg = env.profile, env.config
    d = deadlines(env)
    m = HARNESS_MARGIN_S
    t = cfg.failover.timeout_s
    retries = tuple(p.lambda_retry_delays_s)
    o, prop = p.observation_delay_s, p.dns_propagation_s
    seen = f" + {o:g}s reading AWS's signals" if o else ""
    detection = (f"({p.evaluation_periods}+1) x {p.period_s}s period + {m:g}s harness margin{seen} "
                 f"(CloudWatch evaluates at period boundaries: a surge starting just after one needs an extra period)")
    lam = (f"{len(retries) + 1} attempts x {t:g}s Lambda timeout + {'+'.join(f'{r:g}' for r in retries) or '0'}s "
           f"async retry delays + {m:g}s harness margin{seen}")
    failover = f"detection [{detection}] + {t:g}s Lambda timeout + {m:g}s margin (SNS + one invocation){seen}"
    follow = f"{p.dns_ttl_s}s record TTL" + (f" + {prop:g}s Route 53 propagation" if prop else "") + f" + {m:g}s margin"
    conv = f"max(5s, 3 x {cfg.dynamodb.replication_lag_s:g}s replication lag) + {m:g}s margin{seen}"
    det = (p.evaluation_periods + 1) * p.period_s + m + o
    fo = det + t + m + o
    fol = p.dns_ttl_s + prop + m
    values = {
        "detection_s": (det, detection),
        "lambda_s": ((len(retries) + 1) * t + sum(retries) + m + o, lam),
        "failover_s": (fo, failover),
        "client_follow_s": (fol, follow),
        "rto_s": (fo + fol, f"failover + follow [{follow}]"),
        "convergence_s": (max(5.0, 3 * cfg.dynamodb.replication_lag_s) + m + o, conv),
        "recovery_s": (det, f"({p.evaluation_periods}+1) x {p.period_s}s period "
                       f"+ {m:g}s margin{seen} (the alarm returns to OK after a non-breaching evaluation)"),
    }
    out = {}
    for name, (value, text) in values.items():
        actual = getattr(d, name)
        # never state a formula that does not add up to the deadline actually used
        out[name] = f"{actual:.1f}s = {text}" if abs(actual - value) < 1e-6 else f"{actual:.1f}s (Deadlines.{name})"
    return out


def _deadline(env, given: float | None, *names: str) -> tuple[float, str]:
    """(deadline, why): the sum of the named Deadlines fields with their formulas, or the given one."""
    if given is not None:
        return float(given), f"deadline {float(given):.1f}s given by the scenario"
    d = deadlines(env)
    texts = explain(env)
    total = sum(getattr(d, n) for n in names)
    if len(names) == 1:
        return total, f"deadline {texts[names[0]]}"
    return total, f"deadline {total:.1f}s = " + " + ".join(f"{n.removesuffix('_s')} {texts[n]}" for n in names)


def _wall(started: float) -> float:
    """The wall-clock time of a time.monotonic() value (timeline events carry wall time)."""
    return time.time() - (time.monotonic() - started)


def _events(env, kind: str) -> list[dict] | None:
    """The environment's timeline events of a kind; None when it has no timeline to offer."""
    try:
        return list(env.events(0, kind))
    except Exception:  # noqa: BLE001 - an environment without a timeline (or a dead control API)
        return None


# -- alarms ------------------------------------------------------------------------------------------------

def alarm_name(env, region: str, alarm_key: str = "request-count") -> str:
    names = (getattr(env, "endpoints", None) or {}).get("alarm_names") or {}
    if region in names and alarm_key in names[region]:
        return names[region][alarm_key]
    return env.config.alarm_name(region, alarm_key)


@contextlib.contextmanager
def _observing(what: str):
    """An AWS call that fails while observing (a hiccup of the endpoint) is an observation to
    retry until the deadline, not a crash: it becomes an AssertionError naming it."""
    import botocore.exceptions
    try:
        yield
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        raise AssertionError(f"could not {what}: {type(e).__name__}: {e}") from None


def _poll(env, interval_s: float) -> float:
    """A wait's poll interval, never under the environment's floor: on --env aws each poll is an API
    call against the account's quotas (DescribeAlarms: 9 per second per region)."""
    return max(interval_s, float(getattr(env, "min_poll_interval_s", 0.0) or 0.0))


def describe_alarm(env, region: str, name: str) -> dict:
    """The alarm as CloudWatch describes it; a missing alarm is a setup error, not a wait."""
    with _observing(f"describe alarm {name}"):
        found = env.observer("cloudwatch", region).describe_alarms(AlarmNames=[name]).get("MetricAlarms", [])
    if not found:
        raise LookupError(f"no CloudWatch alarm named {name} in {region} (is the environment provisioned, "
                          f"and is the alarm enabled in the config?)")
    return found[0]


def _epoch(ts: Any) -> float | None:
    if isinstance(ts, datetime):
        return (ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(ts, (int, float)):
        return float(ts)
    return None


def _datapoints(env, region: str, alarm: dict) -> str:
    """The alarm's metric over the last few periods, for a failure message."""
    try:
        period = int(alarm["Period"])
        stat = alarm.get("Statistic") or "Sum"
        now = datetime.now(timezone.utc)
        span = (int(alarm.get("EvaluationPeriods", 1)) + 3) * period
        out = env.observer("cloudwatch", region).get_metric_statistics(
            Namespace=alarm["Namespace"], MetricName=alarm["MetricName"], Dimensions=alarm.get("Dimensions", []),
            StartTime=now - timedelta(seconds=span), EndTime=now, Period=period, Statistics=[stat])
        pts = sorted(out.get("Datapoints", []), key=lambda p: p["Timestamp"])
        op = {"GreaterThanThreshold": ">", "GreaterThanOrEqualToThreshold": ">=", "LessThanThreshold": "<",
              "LessThanOrEqualToThreshold": "<="}.get(alarm.get("ComparisonOperator"), alarm.get("ComparisonOperator"))
        head = (f"last datapoints of {alarm['MetricName']} ({stat} per {period}s, alarm when {op} "
                f"{alarm.get('Threshold'):g} for {alarm.get('DatapointsToAlarm') or alarm.get('EvaluationPeriods')} "
                f"of {alarm.get('EvaluationPeriods')} periods)")
        if not pts:
            return head + f": none in the last {span}s"
        return head + ": " + ", ".join(f"{p['Timestamp'].astimezone(timezone.utc):%H:%M:%S} {p.get(stat, 0):g}"
                                       for p in pts)
    except Exception as e:  # noqa: BLE001 - diagnostics must never hide the real failure
        return f"(could not read the alarm's datapoints: {type(e).__name__}: {e})"


def alarm_fires(env, region: str, alarm_key: str = "request-count", started: float | None = None,
                deadline: float | None = None, *, interval_s: float = 0.1) -> float:
    """Wait until the alarm transitions to ALARM after `started`; return detection_s (start ->
    the transition, by CloudWatch's StateUpdatedTimestamp or the timeline's alarm event).
    An alarm already in ALARM since before the start does not count: it did not fire for this.
    `started` is a time.monotonic() value (default: now)."""
    started = time.monotonic() if started is None else started
    name = alarm_name(env, region, alarm_key)
    d, why = _deadline(env, deadline, "detection_s")
    start_wall = _wall(started)
    last: dict = {}

    def fired() -> float:
        try:
            a = describe_alarm(env, region, name)
        except AssertionError as e:   # could not observe: keep polling, and say so if it lasts
            last["error"] = str(e)
            raise
        last["alarm"] = a
        last.pop("error", None)
        ev = next((e for e in _events(env, "alarm") or [] if e.get("alarm") == name and e.get("new") == ALARM
                   and float(e.get("time", 0)) >= start_wall), None)
        if ev is not None:
            return max(0.0, float(ev["time"]) - start_wall)
        changed = _epoch(a.get("StateUpdatedTimestamp"))
        if a.get("StateValue") == ALARM:
            if changed is None or changed >= start_wall - STATE_TIME_TOLERANCE_S:
                return max(0.0, (changed if changed is not None else time.time()) - start_wall)
            last["stale"] = (f"already in ALARM since {datetime.fromtimestamp(changed, timezone.utc):%H:%M:%S}, "
                             f"{start_wall - changed:.1f}s before the start: no new transition")
            raise AssertionError(last["stale"])
        last.pop("stale", None)
        raise AssertionError(f"state {a.get('StateValue')}")

    try:
        detection, _ = eventually(fired, deadline_s=d, what=f"alarm {name}", interval_s=_poll(env, interval_s), started=started,
                                  why_deadline=why)
        return detection
    except NotWithinDeadline:
        a = last.get("alarm") or {}
        elapsed = time.monotonic() - started
        if last.get("error"):
            observed = f"could not be observed {elapsed:.1f}s after the start ({last['error']})"
        elif last.get("stale"):
            observed = f"{last['stale']} {elapsed:.1f}s after the start"
        else:
            observed = f"still {a.get('StateValue', '?')} {elapsed:.1f}s after the start"
        raise NotWithinDeadline(
            f"alarm {name} {observed}, expected a transition to ALARM within {d:.1f}s ({why}); "
            f"state reason: {a.get('StateReason', '?')}; {_datapoints(env, region, a) if a else ''}"
        ) from None


def alarm_stays(env, region: str, state: str = OK, for_s: float | None = None, *,
                alarm_key: str = "request-count", interval_s: float = 0.2) -> float:
    """Prove the alarm did NOT leave `state`: it holds at every poll for `for_s` seconds, and the
    timeline shows no transition away from it in between. Returns the seconds it was watched."""
    if for_s is None:
        raise TypeError("alarm_stays needs for_s: how long the alarm must hold")
    name = alarm_name(env, region, alarm_key)
    started = time.monotonic()
    start_wall = _wall(started)
    pause = threading.Event()
    while True:
        a = describe_alarm(env, region, name)
        elapsed = time.monotonic() - started
        moved = [e for e in _events(env, "alarm") or [] if e.get("alarm") == name
                 and float(e.get("time", 0)) >= start_wall and e.get("new") != state]
        if a.get("StateValue") != state or moved:
            what = (f"went {moved[0]['new']} {float(moved[0]['time']) - start_wall:.1f}s into the watch "
                    f"(reason: {moved[0].get('reason')})") if moved else f"is {a.get('StateValue')}"
            raise AssertionError(
                f"alarm {name} {what}, expected it to stay {state} for {for_s:.1f}s (it held {elapsed:.1f}s); "
                f"state reason: {a.get('StateReason', '?')}; {_datapoints(env, region, a)}")
        if elapsed >= for_s:
            return elapsed
        pause.wait(min(_poll(env, interval_s), max(0.0, for_s - elapsed)))


# -- the failover Lambda -----------------------------------------------------------------------------------

def _outcome_matches(ev: dict, outcome: str) -> bool:
    got = ev.get("outcome")
    return outcome == "any" or got == outcome or (outcome == "failed" and got in ("error", "timeout"))


def error_payload(result: Any) -> bool:
    """A return value that reports a failure ({"statusCode": 500}, {"errorMessage": ...}, {"ok": false}):
    Lambda counts such an invocation as a success, so only its effect can tell."""
    if not isinstance(result, dict):
        return False
    code = result.get("statusCode", result.get("status_code"))
    try:
        bad_code = code is not None and int(code) >= 400
    except (TypeError, ValueError):
        bad_code = False
    return bad_code or "errorMessage" in result or result.get("ok") is False or result.get("success") is False


def _describe_invocation(ev: dict) -> str:
    err = ev.get("error") or {}
    alarm = ev.get("alarm") or {}
    from_logs = str(ev.get("source") or "").startswith("logs:")   # --env aws: read from CloudWatch Logs
    s = f"attempt {ev.get('attempt', '?')} {ev.get('outcome')}"
    if alarm:
        s += f" for {alarm.get('AlarmName')} {alarm.get('NewStateValue')}"
    if err:
        s += f" ({err.get('type')}: {err.get('message')})"
    elif ev.get("outcome") == "ok" and from_logs and ev.get("result") is None:
        s += " (what it returned is not in its logs)"
    elif ev.get("outcome") == "ok":
        result = ev.get("result")
        text = json.dumps(result, default=str)
        s += f", returned {text[:300]}{'...' if len(text) > 300 else ''}"
        if error_payload(result):
            s += " (an error payload: Lambda counts the invocation as a success, the function did not do its job)"
    if ev.get("will_retry"):
        s += f", retry in {ev.get('retry_in_s')}s"
    logs = ev.get("logs") or []
    if isinstance(logs, str):
        logs = logs.splitlines()
    if logs:
        s += f"; {'its CloudWatch Logs' if from_logs else 'logs'}:\n    " + "\n    ".join(
            str(x) for x in logs[-LOG_LINES_IN_MESSAGE:])
    elif from_logs:
        s += "; its CloudWatch Logs hold no line of its own (only START/END/REPORT)"
    if ev.get("attributed"):
        s += f"; attributed {ev['attributed']}"
    return s


# An invocation read from a function's logs that do not name the alarm it handled (a team's function
# that does not log its event) is attributed to the alarm action CloudWatch published last before it
# started: SNS delivers to Lambda within about a second (log and alarm-history clocks may differ by that).
ATTRIBUTION_SKEW_S = 1.0


def attribute_by_time(invocations: list[dict], actions: list[dict]) -> list[dict]:
    """Pure: `invocations` with region and alarm filled in, for those that have neither, from the
    latest `alarm_action` at or before their start (+ ATTRIBUTION_SKEW_S); two actions of different
    regions that close leave it unattributed. Attributed ones say so in "attributed"."""
    acts = sorted((a for a in actions if a.get("region")), key=lambda a: float(a["time"]))
    out = []
    for e in invocations:
        if e.get("region") or e.get("alarm"):
            out.append(e)
            continue
        t = float(e.get("start_ts") or e.get("time", 0))
        before = [a for a in acts if float(a["time"]) <= t + ATTRIBUTION_SKEW_S]
        if not before:
            out.append(e)
            continue
        last = before[-1]
        close = {a["region"] for a in before if float(last["time"]) - float(a["time"]) <= ATTRIBUTION_SKEW_S}
        if len(close) > 1:
            out.append(e)
            continue
        out.append({**e, "region": last["region"], "alarm": {"AlarmName": last.get("alarm"), "NewStateValue": last.get("new")},
                    "attributed": f"by time: the last alarm action before it ({last.get('alarm')} {last.get('new')}); "
                                  f"the function's log names no alarm"})
    return out


def _invocations(env) -> list[dict] | None:
    evs = _events(env, "lambda_invocation")
    if evs is None or not any(e.get("region") is None and not e.get("alarm") for e in evs):
        return evs
    return attribute_by_time(evs, _events(env, "alarm_action") or [])


def lambda_invoked(env, started: float | None = None, deadline: float | None = None, outcome: str = "ok", *,
                   region: str | None = None, alarm_state: str | None = "ALARM", interval_s: float = 0.1) -> float:
    """Wait for a failover-Lambda invocation that ended with `outcome` (ok | error | timeout |
    failed = error or timeout | any) after `started`, optionally for an alarm of `region`, and for a
    notification of `alarm_state` (CloudWatch also delivers OK transitions, which are not the
    failover; None = any; an invocation whose event names no alarm state counts). Returns the
    seconds from the start to the end of that invocation. The default deadline counts from a
    surge: detection, then the Lambda with its retries."""
    started = time.monotonic() if started is None else started
    if outcome not in LAMBDA_OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(LAMBDA_OUTCOMES)}, got {outcome!r}")
    d, why = _deadline(env, deadline, "detection_s", "lambda_s")
    start_wall = _wall(started)
    seen: list[dict] = []

    def invoked() -> float:
        evs = _invocations(env)
        if evs is None:
            raise AssertionError("the environment offers no timeline of Lambda invocations")
        mine = [e for e in evs if float(e.get("time", 0)) >= start_wall and (region is None or e.get("region") == region)
                and (alarm_state is None or (e.get("alarm") or {}).get("NewStateValue", alarm_state) == alarm_state)]
        seen[:] = mine
        hit = next((e for e in mine if _outcome_matches(e, outcome)), None)
        if hit is None:
            raise AssertionError(f"{len(mine)} invocation(s), none {outcome}")
        end = hit.get("end_ts") or hit.get("time")
        return max(0.0, float(end) - start_wall)

    try:
        took, _ = eventually(invoked, deadline_s=d, what="failover Lambda", interval_s=interval_s, started=started,
                             why_deadline=why)
        return took
    except NotWithinDeadline:
        elapsed = time.monotonic() - started
        where = f" for an alarm of {region}" if region else ""
        others = [e for e in _invocations(env) or [] if float(e.get("time", 0)) >= start_wall
                  and (region is None or e.get("region") == region)]
        if seen:
            observed = f"{len(seen)} invocation(s), none {outcome}; the last: {_describe_invocation(seen[-1])}"
        elif others:
            observed = (f"no invocation for an {alarm_state} notification yet; {len(others)} other invocation(s) "
                        f"(e.g. OK notifications) kept the function busy, the last: {_describe_invocation(others[-1])}")
        else:
            actions = [e for e in _events(env, "alarm_action") or [] if float(e.get("time", 0)) >= start_wall]
            observed = "no invocation at all" + (
                f"; alarm actions published since the start: " + ", ".join(
                    f"{e.get('alarm')} {e.get('new')}" + (f" FAILED ({e['error']})" if e.get("error") else "")
                    for e in actions[-5:]) if actions else "; no alarm action was published since the start either")
        raise NotWithinDeadline(f"failover Lambda: no invocation{where} ending {outcome} {elapsed:.1f}s after the "
                                f"start, expected within {d:.1f}s ({why}); observed: {observed}") from None


# -- Route 53 ----------------------------------------------------------------------------------------------

def region_addresses(env, region: str) -> list[str]:
    regions = (getattr(env, "endpoints", None) or {}).get("regions") or {}
    if region in regions and isinstance(regions[region], dict) and "lb_address" in regions[region]:
        return [regions[region]["lb_address"]]
    return []


def _named(env, addresses: list[str]) -> str:
    return ", ".join(f"{a} ({env.region_of_address(a) or 'no region'})" for a in addresses) or "no address"


def _hosted_zone_id(env, r53) -> str:
    zid = (getattr(env, "endpoints", None) or {}).get("hosted_zone_id")
    if zid:
        return zid
    zone = env.config.route53.zone.rstrip(".") + "."
    for z in r53.list_hosted_zones_by_name(DNSName=zone).get("HostedZones", []):
        if z["Name"] == zone:
            return z["Id"].rsplit("/", 1)[-1]
    raise LookupError(f"no Route 53 hosted zone {zone}")


def record_sets(env) -> list[dict]:
    """The service name's A record sets, as Route 53's control plane holds them."""
    r53 = env.observer("route53", "us-east-1")
    return aws.record_sets(r53, _hosted_zone_id(env, r53), env.config.record_name)


def record_points_at(env, region: str) -> list[str]:
    """Assert now that the service's A record points at `region` (simple record: its values;
    weighted records: every record with a non-zero weight; failover routing: what Route 53's DNS
    answers now, since that depends on health checks). Returns the addresses."""
    sets = record_sets(env)
    if not sets:
        raise AssertionError(f"Route 53 has no A record for {env.config.record_name}")
    if any("Failover" in s for s in sets):
        # failover routing: which record answers depends on health checks, not on the record sets,
        # so "points at" is what Route 53's DNS answers now
        addresses = list(env.resolver(honour_ttl=False).lookup(env.service_name).addresses)
        if {env.region_of_address(a) for a in addresses} != {region}:
            roles = "; ".join(f"{s.get('Failover')} {s.get('SetIdentifier')}: "
                              f"{_named(env, [rr['Value'] for rr in s.get('ResourceRecords', [])])}" for s in sets)
            raise AssertionError(f"Route 53 answers {env.config.record_name} with {_named(env, addresses)}, expected "
                                 f"{region}; failover records: {roles}{_health_since(env, time.monotonic() - 3600)}")
        return addresses
    live = [s for s in sets if "Weight" not in s or s["Weight"] > 0]
    addresses = [rr["Value"] for s in live for rr in s.get("ResourceRecords", [])]
    regions = {env.region_of_address(a) for a in addresses}
    if not addresses or regions != {region}:
        desc = "; ".join(f"{s.get('SetIdentifier', 'simple')}"
                         + (f" weight {s['Weight']}" if "Weight" in s else "")
                         + f": {_named(env, [rr['Value'] for rr in s.get('ResourceRecords', [])])}" for s in sets)
        raise AssertionError(f"Route 53 record {env.config.record_name} A points at {_named(env, addresses)}, "
                             f"expected {region} ({', '.join(region_addresses(env, region)) or '?'}); record sets: {desc}")
    return addresses


def dns_answers_region(env, region: str, started: float | None = None, deadline: float | None = None, *,
                       interval_s: float = 0.05) -> float:
    """Wait until Route 53's DNS answers the service name with `region`'s address(es) only, asked
    over the wire with no client cache; return failover_s (start -> first such answer)."""
    started = time.monotonic() if started is None else started
    # never faster than the environment allows (the aws environment: its Route 53 API budget)
    interval_s = max(interval_s, getattr(env, "dns_poll_interval_s", 0.0))
    d, why = _deadline(env, deadline, "failover_s")
    resolver = env.resolver(honour_ttl=False)
    name = env.service_name
    last: dict = {}
    weighted = getattr(env.config.route53, "routing", "simple") == "weighted"

    def answers() -> None:
        try:
            addresses = list(resolver.lookup(name).addresses)
        except Exception as e:  # noqa: BLE001 - ResolveError and socket errors: an observation, keep polling
            last["answer"] = f"no answer ({e})"
            raise AssertionError(last["answer"]) from None
        last["answer"] = _named(env, addresses)
        if not addresses or {env.region_of_address(a) for a in addresses} != {region}:
            raise AssertionError(last["answer"])
        if weighted:
            # one weighted answer is one draw: the region must be the only record with traffic
            # (Route 53 answers only non-zero weights while any is healthy), not a lucky draw
            live = [s for s in record_sets(env) if s.get("Weight")]
            others = [s for s in live if {env.region_of_address(rr["Value"]) for rr in s.get("ResourceRecords", [])}
                      != {region}]
            if others:
                last["answer"] += " (this draw; weighted records with traffic elsewhere: " + "; ".join(
                    f"{s.get('SetIdentifier')} weight {s['Weight']}: "
                    f"{_named(env, [rr['Value'] for rr in s.get('ResourceRecords', [])])}" for s in others) + ")"
                raise AssertionError(last["answer"])

    try:
        _, took = eventually(answers, deadline_s=d, what=f"DNS {name}", interval_s=interval_s, started=started,
                             why_deadline=why)
        return took
    except NotWithinDeadline:
        elapsed = time.monotonic() - started
        try:
            record = "; Route 53 record sets: " + "; ".join(
                f"{s.get('SetIdentifier', 'simple')}" + (f" weight {s['Weight']}" if "Weight" in s else "")
                + (f" {s['Failover']}" if "Failover" in s else "")
                + f": {_named(env, [rr['Value'] for rr in s.get('ResourceRecords', [])])}" for s in record_sets(env))
        except Exception as e:  # noqa: BLE001
            record = f"; (could not read the record sets: {type(e).__name__}: {e})"
        lam = _invocations_since(env, started) + _health_since(env, started)
        server = getattr(resolver, "server", "?")
        expected = ", ".join(region_addresses(env, region)) or "its load balancer"
        raise NotWithinDeadline(
            f"DNS server {server} still answers {name} with {last.get('answer', 'nothing')} {elapsed:.1f}s after the "
            f"start, expected {region} ({expected}) within {d:.1f}s ({why}){record}{lam}") from None


def _function_runs(env) -> bool:
    cfg = env.config
    return getattr(cfg, "failover_function", True)


def _invocations_since(env, started: float, last: int = 2) -> str:
    """The failover function's last invocations for ALARM notifications since `started` (else its
    last invocations of any kind), each with its outcome, return value and log lines: the evidence
    a scenario that judges effects attaches when the effect is missing."""
    if not _function_runs(env):
        return ""
    evs = [e for e in _invocations(env) or [] if float(e.get("time", 0)) >= _wall(started)]
    if not evs:
        return "; no failover Lambda invocation since the start"
    alarm_evs = [e for e in evs if (e.get("alarm") or {}).get("NewStateValue", "ALARM") == "ALARM"]
    shown = (alarm_evs or evs)[-last:]
    what = "invocation(s) for ALARM notifications" if alarm_evs else "invocation(s)"
    return (f"; failover Lambda: {len(evs)} invocation(s) since the start, the last {len(shown)} {what}: "
            + "; ".join(_describe_invocation(e) for e in shown))


def _health_since(env, started: float) -> str:
    """Route 53 health-check transitions since `started` (failover routing)."""
    if getattr(env.config.route53, "routing", "simple") != "failover":
        return ""
    evs = [e for e in _events(env, "route53_health") or [] if float(e.get("time", 0)) >= _wall(started)]
    if not evs:
        return "; no Route 53 health check changed status since the start"
    return "; Route 53 health checks: " + ", ".join(
        f"{e.get('region')} {'healthy' if e.get('healthy') else 'UNHEALTHY'} at +{float(e['time']) - _wall(started):.1f}s "
        f"({e.get('reason')})" for e in evs[-4:])


def health_check_unhealthy(env, region: str, started: float | None = None, deadline: float | None = None, *,
                           interval_s: float = 0.1) -> float:
    """Wait until Route 53's health check of `region` turns unhealthy after `started` (failover
    routing: the data plane's detection); return the seconds from the start to that transition."""
    started = time.monotonic() if started is None else started
    p = env.profile
    threshold = env.config.route53.health_check_failure_threshold
    # FailureThreshold probes, each taking at most its interval or the compressed timeouts (~2 s)
    d = float(deadline) if deadline is not None else threshold * max(p.health_check_interval_s, 2.0) + HARNESS_MARGIN_S
    why = (f"deadline {d:.1f}s given by the scenario" if deadline is not None else
           f"deadline {d:.1f}s = {threshold} (FailureThreshold) x max({p.health_check_interval_s:g}s interval, 2s "
           f"probe timeout) + {HARNESS_MARGIN_S:g}s harness margin")
    start_wall = _wall(started)

    def unhealthy() -> float:
        evs = _events(env, "route53_health")
        if evs is None:
            raise AssertionError("the environment offers no timeline of Route 53 health checks")
        hit = next((e for e in evs if e.get("region") == region and e.get("healthy") is False
                    and float(e.get("time", 0)) >= start_wall), None)
        if hit is None:
            raise AssertionError(f"no unhealthy transition of {region}'s health check")
        return max(0.0, float(hit["time"]) - start_wall)

    try:
        took, _ = eventually(unhealthy, deadline_s=d, what=f"Route 53 health check of {region}", interval_s=interval_s,
                             started=started, why_deadline=why)
        return took
    except NotWithinDeadline:
        try:
            checks = (env.status().get("route53_health_checks") or {}).get("checks", {})
            now = "; ".join(f"{c.get('region')}: {'healthy' if c.get('healthy') else 'unhealthy'}, {c.get('type')} "
                            f"{c.get('target')}, last probe: {c.get('last_result')}" for c in checks.values())
        except Exception as e:  # noqa: BLE001
            now = f"(could not read the health checks: {type(e).__name__}: {e})"
        raise NotWithinDeadline(f"Route 53 health check of {region} still healthy {time.monotonic() - started:.1f}s "
                                f"after the start, expected unhealthy within {d:.1f}s ({why}); checks now: "
                                f"{now or 'none provisioned'}") from None


# -- DynamoDB replicas -------------------------------------------------------------------------------------

def _plain(v: Any) -> Any:
    """DynamoDB's Decimal/set/Binary as JSON-able values (Decimal 5 -> 5, 1.5 -> 1.5)."""
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, (set, frozenset)):
        return sorted((_plain(x) for x in v), key=repr)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", "replace")
    if hasattr(v, "value") and isinstance(getattr(v, "value"), (bytes, bytearray)):  # boto3 Binary
        return bytes(v.value).decode("utf-8", "replace")
    return v


def read_replicas(env, *, table: str | None = None, key_attr: str = "pk", value_attr: str | None = "value",
                  regions: tuple[str, ...] | None = None, consistent: bool = True,
                  page_size: int | None = None) -> dict[str, dict]:
    """Every region's table as {region: {key: value}}, scanned through the observer clients with
    pagination (strongly consistent within each region). The value is the item's `value_attr`
    (the reference service's attribute); an item without it, or value_attr=None, gives the whole
    item minus the key.

    The regions are scanned side by side (one moto server each, so one per core), and with
    value_attr only the key and that attribute are asked for (ProjectionExpression): moto
    serialises every attribute it returns, and the two together take a scenario's final scan of
    a few thousand items from ~2.4 s to under 1 s on 2 cores. A region where some item lacks
    value_attr (a service of its own shape) is scanned again whole, for the whole-item answer."""
    from concurrent.futures import ThreadPoolExecutor

    table = table or (getattr(env, "endpoints", None) or {}).get("table") or env.config.dynamodb.table
    wanted = list(regions or env.regions)
    clients = {r: env.observer("dynamodb", r) for r in wanted}   # made here: creating clients is not thread-safe

    def one(region: str) -> dict:
        kwargs: dict = {"TableName": table, "ConsistentRead": consistent}
        if page_size:
            kwargs["PaginationConfig"] = {"PageSize": page_size}
        if value_attr is not None:
            items = _scan(clients[region], {**kwargs, "ProjectionExpression": "#k, #v",
                                            "ExpressionAttributeNames": {"#k": key_attr, "#v": value_attr}},
                          key_attr, value_attr)
            if items is not None:
                return items
        return _scan(clients[region], kwargs, key_attr, value_attr, whole=True)

    with ThreadPoolExecutor(max(1, len(wanted))) as pool:
        return dict(zip(wanted, pool.map(one, wanted)))


def _scan(ddb, kwargs: dict, key_attr: str, value_attr: str | None, whole: bool = False) -> dict | None:
    """{key: value} of one region's scan; None when an item lacks value_attr and `whole` is False."""
    from boto3.dynamodb.types import TypeDeserializer   # not at import time: reports import this package

    des = TypeDeserializer()
    items: dict = {}
    for page in ddb.get_paginator("scan").paginate(**kwargs):
        for raw in page.get("Items", []):
            item = {k: des.deserialize(v) for k, v in raw.items()}
            key = item.pop(key_attr, None)
            if key is None:
                continue
            key = str(_plain(key))
            if value_attr is not None and value_attr in item:
                items[key] = _plain(item[value_attr])
            elif not whole:
                return None
            else:
                items[key] = _plain(item)
    return items


def replication_backlog(env, *, paused: bool = True) -> int:
    """Replicated writes read from the streams but not applied yet, over every direction (0 when
    the environment does not report replication); `paused=False` leaves out paused directions
    (their backlog waits for a resume, not for time)."""
    try:
        rep = (env.status() or {}).get("replication") or {}
    except Exception:  # noqa: BLE001 - an observation, not a check: no backlog known
        return 0
    dirs = rep.get("directions", rep) if isinstance(rep, dict) else {}
    return sum(int(v.get("pending") or 0) for v in dirs.values()
               if isinstance(v, dict) and (paused or not v.get("paused")))


def replicas_converge(env, started: float | None = None, deadline: float | None = None, *, interval_s: float = 0.25,
                      samples: list | None = None, reader: Callable[[], dict] | None = None, backlog: int = 0,
                      **read_kwargs) -> float:
    """Wait until every region's table holds the same items; return convergence_s. Each poll's
    (wall time, divergent key count) is appended to `samples` when given (for checkers.convergence).
    `backlog`: replicated writes still pending when the wait starts (replication_backlog(env));
    each adds REPLICATION_APPLY_S to the profile's deadline."""
    started = time.monotonic() if started is None else started
    d, why = _deadline(env, deadline, "convergence_s")
    if deadline is None and backlog > 0:
        from gameday.assertions.deadlines import REPLICATION_APPLY_S

        d += backlog * REPLICATION_APPLY_S
        why += f" + {backlog} pending replicated writes x {REPLICATION_APPLY_S}s = {d:.1f}s"
    read = reader or (lambda: read_replicas(env, **read_kwargs))
    last: dict = {}

    def agree() -> None:
        with _observing("scan the replicas"):
            tables = read()
        result = divergent_keys(tables)
        n = result.metrics.get("divergent_keys")
        if samples is not None:
            samples.append((time.time(), n if n is not None else 0))
        last["detail"] = result.detail
        if result.valid is not True:
            raise AssertionError(result.detail)

    try:
        _, took = eventually(agree, deadline_s=d, what="replicas", interval_s=interval_s, started=started,
                             why_deadline=why)
        return took
    except NotWithinDeadline:
        elapsed = time.monotonic() - started
        raise NotWithinDeadline(f"replicas still differ {elapsed:.1f}s after the start, expected them to agree "
                                f"within {d:.1f}s ({why}); last observation: {last.get('detail', 'none')}") from None
