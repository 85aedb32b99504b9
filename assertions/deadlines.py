"""Deadlines derived from the time profile, so a scenario waits as long as AWS's rules say it
may take, plus a stated margin for the harness, and no longer.

CloudWatch evaluates at period boundaries: a surge that starts just after a boundary needs
up to one extra period before a full breaching period has been seen, so detection may take
(evaluation_periods + 1) x period. The failover Lambda may need its async retries.
"""

from __future__ import annotations

from dataclasses import dataclass

from gameday.config import GamedayConfig, TimeProfile

HARNESS_MARGIN_S = 3.0  # metric flush + evaluation tick + SNS delivery + scheduling on 2 busy cores
# A paused or lagging stream leaves a backlog that replication applies one conditional write at a
# time: ~17 ms per item was measured here (a 580-item backlog drained in 10 s), so the convergence
# deadline grows by this much per write still pending when the wait starts (DynamoDB itself gives
# no bound: global tables replicate "usually within a second" once the stream flows)
REPLICATION_APPLY_S = 0.025


@dataclass(frozen=True)
class Deadlines:
    detection_s: float       # surge/fault start -> alarm ALARM
    lambda_s: float          # alarm -> failover Lambda succeeded (with retries)
    failover_s: float        # start -> Route 53 answers the healthy region
    client_follow_s: float   # Route 53 change -> clients reach the new region (TTL)
    rto_s: float             # start -> clients succeed again
    convergence_s: float     # replication resumed -> replicas agree
    recovery_s: float        # load stopped -> alarms back to OK

    @classmethod
    def from_profile(cls, profile: TimeProfile, config: GamedayConfig, *, replication_lag_s: float = 0.0) -> "Deadlines":
        p = profile
        # a change is seen up to observation_delay_s late (--env aws reads AWS's signals on an interval)
        seen = p.observation_delay_s
        detection = (p.evaluation_periods + 1) * p.period_s + HARNESS_MARGIN_S + seen
        lam = (len(p.lambda_retry_delays_s) + 1) * config.failover.timeout_s + sum(p.lambda_retry_delays_s)
        lam_typical = config.failover.timeout_s + HARNESS_MARGIN_S + seen
        failover = detection + lam_typical
        # a record change reaches every name server within dns_propagation_s, then caches expire (TTL)
        follow = p.dns_ttl_s + p.dns_propagation_s + HARNESS_MARGIN_S
        return cls(
            detection_s=detection,
            lambda_s=lam + HARNESS_MARGIN_S + seen,
            failover_s=failover,
            client_follow_s=follow,
            rto_s=failover + follow,
            convergence_s=max(5.0, 3 * replication_lag_s) + HARNESS_MARGIN_S + seen,
            recovery_s=(p.evaluation_periods + 1) * p.period_s + HARNESS_MARGIN_S + seen,
        )
