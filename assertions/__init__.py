"""Assertions: eventually-assertions on a running environment that return measured durations
(failover), checkers: pure functions over histories and replicas (checkers), the same checkers
as composable parts over one run (protocol), plus an export of histories for Jepsen's Elle (elle)."""

from gameday.assertions.checkers import (CheckResult, HistoryError, Operation, convergence, divergent_keys,
                                         error_budget, iter_operations, lost_acked_writes, operations,
                                         read_your_writes, rto)
from gameday.assertions.deadlines import Deadlines
from gameday.assertions.eventually import NotWithinDeadline, eventually
from gameday.assertions.failover import (alarm_fires, alarm_stays, dns_answers_region, explain, lambda_invoked,
                                         read_replicas, record_points_at, replicas_converge)
from gameday.assertions.protocol import (Checker, Composite, CompositeResult, Convergence, DivergentKeys,
                                         ErrorBudget, LostAckedWrites, ReadYourWrites, Rto, RunView, compose)

__all__ = [
    "CheckResult", "HistoryError", "Operation", "convergence", "divergent_keys", "error_budget",
    "iter_operations", "lost_acked_writes", "operations", "read_your_writes", "rto",
    "Checker", "Composite", "CompositeResult", "Convergence", "DivergentKeys", "ErrorBudget", "LostAckedWrites",
    "ReadYourWrites", "Rto", "RunView", "compose",
    "Deadlines", "NotWithinDeadline", "eventually",
    "alarm_fires", "alarm_stays", "dns_answers_region", "explain", "lambda_invoked", "read_replicas",
    "record_points_at", "replicas_converge",
]
