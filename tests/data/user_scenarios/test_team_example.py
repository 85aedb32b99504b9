"""A team's own scenario, the worked example of docs/scenarios.md: the region that takes the
traffic loses its load balancer (connections hang) while clients that resolve the service name
keep writing. Two checks: Route 53 must answer the healthy region within the failover deadline,
and no write the service acknowledged may be lost once the replicas agree.

Copy it into your repository's scenarios/ and run it with `gameday run --suite mine`."""

from __future__ import annotations

import time

import pytest

from gameday.assertions.checkers import lost_acked_writes
from gameday.assertions.failover import dns_answers_region, read_replicas, replicas_converge
from gameday.faults import block_region

pytestmark = pytest.mark.scenario

FOLLOWER_RPS = 10.0        # clients that resolve the service name and honour the TTL


def test_our_region_outage_moves_traffic(env, scenario, nemesis, load):
    src = env.config.initial_region
    dst = next(r for r in env.regions if r != src)
    period, deadlines = env.profile.period_s, scenario.deadlines

    # load: DNS-following clients writing and reading their writes back, held through the whole
    # failover (rto_s) plus a period of steady state before the fault and a little evidence after
    run = load.start(shape="constant", follower_rate=FOLLOWER_RPS, op_mix="write=0.7,read_own=0.3",
                     hold_s=round(deadlines.rto_s + 2 * period + 5, 1))
    run.wait_rate(src, FOLLOWER_RPS * 0.8, deadline_s=deadlines.client_follow_s + period, window_s=period)

    # the fault: journaled before it is applied, rolled back when the scenario ends whatever happens
    started = time.monotonic()
    nemesis.inject(block_region(src, data_plane=True, mode="hang"))

    # check 1: Route 53 answers the healthy region (failover_s is measured from `started`)
    scenario.expect("dns_failover", lambda: dns_answers_region(env, dst, started=started), metric="failover_s")

    run.stop()
    nemesis.rollback_all()

    # check 2: no acknowledged write lost, judged on every region's table once replication caught up
    scenario.expect("replicas_converge", lambda: replicas_converge(env, started=time.monotonic()),
                    metric="convergence_s")
    history = run.history()
    scenario.metric("requests", sum(1 for e in history if e["type"] in ("ok", "fail", "info")))
    scenario.check(lost_acked_writes(history, read_replicas(env), allowed=env.config.budgets.lost_acked_writes))
    scenario.verdict()
