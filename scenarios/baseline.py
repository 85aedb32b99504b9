"""Bringing the shared environment back to its steady state between scenarios, so each scenario
starts where the seed starts: the service's records as provisioned for the configured routing
(simple, weighted or failover) with traffic on the initial region, every alarm out of ALARM,
every region serving with at least min_tasks healthy targets, replication caught up.

Scenarios share one environment per session (starting one costs seconds); faults are rolled
back by the nemesis at the end of each scenario, and this waits for their after-effects to
settle, with a deadline from the time profile. A baseline that cannot be reached is an error
of the next scenario (it says what is still off), never a silent carry-over.
"""

from __future__ import annotations

import time

from gameday import aws
from gameday.assertions.deadlines import Deadlines
from gameday.assertions.eventually import eventually


def point_record_at(env, region: str, comment: str = "gameday baseline") -> None:
    """Put the service's Route 53 records back as provisioned, with traffic on `region`, for the
    configured routing (simple: the A record at its load balancer; weighted: its weight 100, the
    others 0; failover: it is PRIMARY, with the provisioned health checks). Record sets of the name
    that do not belong there (a handler's UPSERT with a wrong SetIdentifier) are deleted. The
    harness's own hand, through the unfaulted observer client: not the system under test acting."""
    from gameday.environments.local.provision import route53_record_sets

    ep, cfg = env.endpoints, env.config
    r53 = env.observer("route53", "us-east-1")
    addresses = {r: v["lb_address"] for r, v in ep["regions"].items()}
    health_checks = (ep.get("route53") or {}).get("health_check_ids") or {}
    wanted = route53_record_sets(cfg, addresses, env.profile.dns_ttl_s, region, health_checks)
    keep = {rs.get("SetIdentifier") for rs in wanted}
    existing = aws.record_sets(r53, ep["hosted_zone_id"], ep["record_name"])
    # a set of another routing policy (or identifier) cannot stay next to the wanted ones
    stray = [rs for rs in existing if rs.get("SetIdentifier") not in keep
             or ("Weight" in rs) != any("Weight" in w for w in wanted)
             or ("Failover" in rs) != any("Failover" in w for w in wanted)]
    changes = [{"Action": "DELETE", "ResourceRecordSet": rs} for rs in stray]
    changes += [{"Action": "UPSERT", "ResourceRecordSet": rs} for rs in wanted]
    r53.change_resource_record_sets(HostedZoneId=ep["hosted_zone_id"],
                                    ChangeBatch={"Comment": comment, "Changes": changes})


def alarm_states(env) -> dict[str, dict[str, str]]:
    return {region: {name: a["StateValue"] for name, a in alarms.items()} for region, alarms in _alarms(env).items()}


def _alarms(env) -> dict[str, dict[str, dict]]:
    """region -> alarm name -> DescribeAlarms' MetricAlarm, for the config's alarms."""
    out: dict[str, dict[str, dict]] = {}
    for region, names in env.endpoints["alarm_names"].items():
        alarms = env.observer("cloudwatch", region).describe_alarms(AlarmNames=list(names.values()))["MetricAlarms"]
        out[region] = {a["AlarmName"]: a for a in alarms}
    return out


# CloudWatch's StateReason of an alarm it has never evaluated (INSUFFICIENT_DATA since PutMetricAlarm)
UNCHECKED_REASON = "Unchecked:"


def never_evaluated(alarms: dict[str, dict], watched: set[str]) -> list[str]:
    """The watched alarms (name -> DescribeAlarms' MetricAlarm) CloudWatch has not evaluated yet:
    INSUFFICIENT_DATA with the reason PutMetricAlarm left. One it evaluated and left (or put) in
    INSUFFICIENT_DATA, missing data treated as missing, is a baseline as any other state."""
    return sorted(n for n, a in alarms.items() if n in watched and a.get("StateValue") == "INSUFFICIENT_DATA"
                  and str(a.get("StateReason", "")).startswith(UNCHECKED_REASON))


def restore_baseline(env, deadlines: Deadlines | None = None, alarms: tuple[str, ...] | None = None) -> float:
    """Return the seconds it took; raise AssertionError naming what did not settle. `alarms`: the
    alarms (config keys, e.g. "healthy-hosts") the next scenario's story relies on; only those
    must be out of ALARM and evaluated at least once (None: every alarm). An alarm the previous scenario left in ALARM then
    returns to OK during the next one: CloudWatch evaluates it at the period after its metric
    calmed down, up to (evaluation periods + 1) x period later, which a scenario that does not
    use it need not wait for (its OK notification reaches the function as any OK does)."""
    d = deadlines or Deadlines.from_profile(env.profile, env.config)
    t0 = time.monotonic()
    point_record_at(env, env.config.initial_region)
    need = env.config.service.min_tasks
    initial_ip = env.endpoints["regions"][env.config.initial_region]["lb_address"]
    resolver = env.resolver(honour_ttl=False)
    watched = {name for names in env.endpoints["alarm_names"].values() for key, name in names.items()
               if alarms is None or key in alarms}

    def settled() -> None:
        problems: list[str] = []
        alarms = _alarms(env)
        firing = {r: [n for n, a in st.items() if a["StateValue"] == "ALARM" and n in watched] for r, st in alarms.items()}
        problems += [f"{r} alarms in ALARM: {names}" for r, names in firing.items() if names]
        # an alarm never evaluated yet (a new environment's first period has not closed) is not a
        # baseline: a story that needs it to stay OK would see INSUFFICIENT_DATA (seen in CI, when
        # the first scenario's fault came within a period of the environment's start). One that
        # CloudWatch evaluated and left INSUFFICIENT_DATA (missing data treated as missing) is a
        # baseline as any other state (never_evaluated)
        unchecked = {r: never_evaluated(st, watched) for r, st in alarms.items()}
        problems += [f"{r} alarms not evaluated yet: {names}" for r, names in unchecked.items() if names]
        st = env.status()
        for r, lb in st.get("load_balancers", {}).items():
            if lb.get("blocked"):
                problems.append(f"{r} data plane still blocked ({lb['blocked']})")
            if lb.get("healthy", 0) < need:
                problems.append(f"{r} has {lb.get('healthy')} healthy targets (< {need})")
        for direction, rep in (st.get("replication") or {}).items():
            if isinstance(rep, dict) and (rep.get("paused") or rep.get("pending", 0) > 0):
                problems.append(f"replication {direction} paused={rep.get('paused')} pending={rep.get('pending')}")
        answer = resolver.lookup(env.service_name).addresses
        if answer != [initial_ip]:
            problems.append(f"DNS answers {answer}, not the initial region's {initial_ip}")
        assert not problems, "; ".join(problems)

    _, took = eventually(settled, deadline_s=d.recovery_s + d.convergence_s, interval_s=0.25, started=t0,
                         what="environment back to its baseline before the scenario",
                         why_deadline="alarms return to OK within (evaluation periods + 1) x period; replication catch-up")
    return took
