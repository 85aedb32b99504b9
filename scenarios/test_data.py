"""Data scenarios: what a failover costs in acknowledged writes (RPO) when replication is behind,
and whether the system heals completely: faults rolled back, traffic back per the failback
policy, replicas converged, no acknowledged write lost."""

from __future__ import annotations

import time

import pytest

from gameday.assertions.eventually import eventually
from gameday.assertions.failover import alarm_fires, describe_alarm, dns_answers_region, lambda_invoked, read_replicas
from gameday.faults import block_region, pause_replication
from gameday.scenarios.baseline import point_record_at
from gameday.scenarios.steps import (FAILOVER_OPS, FOLLOWER_RPS, clients_follow, data_checks, end_load, failback_judged,
                             load_hold_s, needs_failover_function, other_region, start_surge)

pytestmark = pytest.mark.scenario


def unreplicated_at(history: list[dict], replica: dict, *, region: str, until: float) -> list[dict]:
    """Writes acknowledged by `region` up to `until` (epoch s) that `replica` does not hold."""
    return [e for e in history if e.get("type") == "ok" and e.get("op") == "write" and e.get("served_by") == region
            and e["time"] <= until and str(e.get("key")) not in replica]


def test_replication_paused_during_failover(env, scenario, nemesis, load):
    """Replication from the initial region is paused when its surge fails the service over: the
    writes it acknowledged but had not replicated are what a real regional loss would cost (the
    RPO), measured at the failover and held against budgets.rpo_s. Once replication resumes,
    nothing acknowledged may be lost."""
    needs_failover_function(env, "the failover here is driven by a surge, which leaves the load balancer healthy")
    src = env.config.initial_region
    dst = other_region(env, src)
    budget = scenario.budget("rpo_s", env.config.budgets.rpo_s)
    nemesis.inject(pause_replication(src, dst))
    run, started, wall = start_surge(scenario, load, src)
    scenario.expect("alarm_fires", lambda: alarm_fires(env, src, started=started), metric="detection_s")
    scenario.expect("dns_failover", lambda: dns_answers_region(env, dst, started=started), metric="failover_s")
    failed_over_at = time.time()
    replica = read_replicas(env, regions=(dst,))[dst]
    missing = unreplicated_at(run.history(), replica, region=src, until=failed_over_at)
    rpo_s = round(failed_over_at - min(e["time"] for e in missing), 3) if missing else 0.0
    scenario.check({"name": "rpo", "valid": rpo_s <= budget,
                    "detail": f"at failover {dst} lacked {len(missing)} acknowledged writes of {src}, the oldest "
                              f"{rpo_s:.1f}s old ({'within' if rpo_s <= budget else 'OVER'} the {budget:g}s budget)",
                    "metrics": {}})
    scenario.note(f"rpo_s={rpo_s} unreplicated_writes_at_failover={len(missing)}")
    scenario.expect("clients_follow", lambda: clients_follow(scenario, run, dst, started=started))
    end_load(scenario, env, run, fault_wall=wall, healthy_region=dst)
    nemesis.rollback_all()      # replication resumes: the backlog must arrive
    data_checks(scenario, env, run.history(), fault_wall=wall, healthy_region=dst,
                budget=env.config.budgets.absorbed_error_rate)
    failback_judged(scenario, env, src, since_wall=wall, fault_wall=wall)   # the surge has ended: its OK follows
    scenario.verdict()


@pytest.mark.alarms("healthy-hosts")   # a request-count alarm still in ALARM from a surge need not be OK first
def test_failback_after_heal(env, scenario, nemesis, load):
    """Lose the initial region, fail over, heal it, and go back per failover.failback: manual (the
    harness acts as the operator, after the failback rule found that the function did not fail back
    by itself) or automatic (the function fails back on the alarm's OK, after the hold the failback
    rule checks). Clients return, replicas converge, and no acknowledged write is lost."""
    src = env.config.initial_region
    dst = other_region(env, src)
    d = scenario.deadlines
    policy = env.config.failover.failback
    run = load.start(shape="constant", follower_rate=FOLLOWER_RPS, op_mix=FAILOVER_OPS,
                     hold_s=load_hold_s(scenario, d.recovery_s + d.rto_s + 5))
    run.wait_rate(src, FOLLOWER_RPS * 0.5, deadline_s=d.client_follow_s)
    started, wall = time.monotonic(), time.time()
    nemesis.inject(block_region(src, data_plane=True, mode="hang"))
    scenario.expect("alarm_fires", lambda: alarm_fires(env, src, "healthy-hosts", started=started),
                    metric="detection_s")
    if env.config.failover_function:
        scenario.expect("lambda_invoked", lambda: lambda_invoked(env, started=started, region=src))
    scenario.expect("dns_failover", lambda: dns_answers_region(env, dst, started=started), metric="failover_s")
    scenario.expect("clients_follow", lambda: clients_follow(scenario, run, dst, started=started))

    healed = time.monotonic()
    nemesis.rollback_all()
    name = env.endpoints["alarm_names"][src]["healthy-hosts"]

    def alarm_ok() -> None:
        state = describe_alarm(env, src, name)["StateValue"]
        assert state == "OK", f"{name} is {state}"

    scenario.expect("alarm_recovers", lambda: eventually(alarm_ok, deadline_s=d.recovery_s, started=healed,
                                                         what=f"{name} back to OK after the heal",
                                                         why_deadline="(evaluation periods + 1) x period + margin"))
    back = time.monotonic()
    if policy == "manual":
        # the policy says a human fails back: the function must not have done it on its own. Its
        # answer to the alarm's OK notification is the evidence (steps.failback_judged), judged
        # before the operator's own change, which the rule's window thereby leaves out
        failback_judged(scenario, env, src, since_wall=wall, fault_wall=wall)
        point_record_at(env, src, comment="gameday: operator fails back (failback = manual)")
        back = time.monotonic()  # from the operator's change: Route 53 answers, then clients follow
    scenario.expect("dns_failback", lambda: dns_answers_region(env, src, started=back,
                                                              deadline=d.lambda_s if policy == "automatic"
                                                              else d.client_follow_s))
    if policy == "automatic":
        failback_judged(scenario, env, src, since_wall=wall, fault_wall=wall, wait=False)   # the move just seen
    scenario.expect("clients_return", lambda: clients_follow(scenario, run, src, started=back))
    run.stop()
    data_checks(scenario, env, run.history(), fault_wall=wall, healthy_region=None,
                budget=env.config.budgets.error_rate)
    scenario.verdict()
