"""Assertions: eventually-assertions on a running environment that return measured durations
(failover), and checkers: pure functions over histories and replicas (checkers), plus an
export of histories for Jepsen's Elle (elle)."""

from gameday.assertions.checkers import (CheckResult, HistoryError, Operation, compose, convergence, divergent_keys,
                                 error_budget, iter_operations, lost_acked_writes, operations, read_your_writes,
                                 rto, run_checks)
from gameday.assertions.deadlines import Deadlines
from gameday.assertions.eventually import NotWithinDeadline, eventually
from gameday.assertions.failover import (alarm_fires, alarm_stays, dns_answers_region, explain, lambda_invoked,
                                 read_replicas, record_points_at, replicas_converge)

__all__ = [
    "CheckResult", "HistoryError", "Operation", "compose", "convergence", "divergent_keys", "error_budget",
    "iter_operations", "lost_acked_writes", "operations", "read_your_writes", "rto", "run_checks",
    "Deadlines", "NotWithinDeadline", "eventually",
    "alarm_fires", "alarm_stays", "dns_answers_region", "explain", "lambda_invoked", "read_replicas",
    "record_points_at", "replicas_converge",
]
