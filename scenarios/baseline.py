"""Bringing the shared environment back to its steady state between scenarios, so each scenario
starts where the seed starts: the A record at the initial region, every alarm out of ALARM,
every region serving with at least min_tasks healthy targets, replication caught up.

Scenarios share one environment per session (starting one costs seconds); faults are rolled
back by the nemesis at the end of each scenario, and this waits for their after-effects to
settle, with a deadline from the time profile. A baseline that cannot be reached is an error
of the next scenario (it says what is still off), never a silent carry-over.
"""

from __future__ import annotations

import time

from assertions.deadlines import Deadlines
from assertions.eventually import eventually


def point_record_at(env, region: str, comment: str = "gameday baseline") -> None:
    """UPSERT the service's simple A record to `region`'s load balancer (the harness's own hand,
    through the unfaulted observer client: this is not the system under test acting)."""
    ep = env.endpoints
    env.observer("route53", "us-east-1").change_resource_record_sets(
        HostedZoneId=ep["hosted_zone_id"],
        ChangeBatch={"Comment": comment, "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": ep["record_name"], "Type": "A", "TTL": env.profile.dns_ttl_s,
            "ResourceRecords": [{"Value": ep["regions"][region]["lb_address"]}]}}]})


def alarm_states(env) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for region, names in env.endpoints["alarm_names"].items():
        alarms = env.observer("cloudwatch", region).describe_alarms(AlarmNames=list(names.values()))["MetricAlarms"]
        out[region] = {a["AlarmName"]: a["StateValue"] for a in alarms}
    return out


def restore_baseline(env, deadlines: Deadlines | None = None) -> float:
    """Return the seconds it took; raise AssertionError naming what did not settle."""
    d = deadlines or Deadlines.from_profile(env.profile, env.config)
    t0 = time.monotonic()
    point_record_at(env, env.config.initial_region)
    need = env.config.service.min_tasks
    initial_ip = env.endpoints["regions"][env.config.initial_region]["lb_address"]
    resolver = env.resolver(honour_ttl=False)

    def settled() -> None:
        problems: list[str] = []
        firing = {r: [n for n, s in st.items() if s == "ALARM"] for r, st in alarm_states(env).items()}
        problems += [f"{r} alarms in ALARM: {names}" for r, names in firing.items() if names]
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
