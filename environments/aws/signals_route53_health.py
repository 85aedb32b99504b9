"""Signal source `route53:GetHealthCheckStatus`: the `route53_health` events of the record's
health checks (route53.routing = "failover", or any record set with a HealthCheckId), in the local
environment's shape (gameday/runlog.py: Route53HealthEvent), so health_check_fails and the
failback rule read them unchanged (environments/aws/signals.py's contract).

Route 53's rule (Developer Guide, "How Route 53 determines whether a health check is healthy"):
an endpoint is healthy when more than 18% of the health checkers report it healthy. Each
checker's StatusReport says Success/Failure and its CheckedTime: a transition is stamped with the
newest CheckedTime of the reports that show it (AWS's time, not the time it was read).

Budget: GetHealthCheckStatus is a Route 53 API call, inside the account's 5 requests/s that the
failover function needs too: the source reads through the environment's Route 53 budget
(route53_budget.py) and its interval leaves a quarter of that budget free for a failover function:
checks / (0.75 x aws.route53_calls_per_s), two checks every 1.33 s at the default 2 calls/s.
Without a function (failover routing alone) it takes the whole budget: two checks every second. A dip shorter than the
interval can be missed: GetHealthCheckStatus shows each checker's latest report only.
"""

from __future__ import annotations

import logging
import threading

from gameday import aws
from gameday.environments.aws.signals_cloudwatch import _epoch

log = logging.getLogger("gameday.aws.signals")

API = "route53:GetHealthCheckStatus"
HEALTHY_FRACTION = 0.18      # Route 53: healthy when MORE than 18% of the checkers say so
BUDGET_SHARE = 0.75          # of the harness's Route 53 budget, at most, for this source
MIN_INTERVAL_S = 0.5


def verdict(observations: list[dict]) -> tuple[bool | None, float | None, str | None]:
    """(healthy, time of the newest report, one failing report's text) from GetHealthCheckStatus's
    HealthCheckObservations; healthy is None when no checker has reported yet."""
    reports = [o.get("StatusReport") or {} for o in observations]
    reports = [r for r in reports if r.get("Status")]
    if not reports:
        return None, None, None
    ok = sum(1 for r in reports if str(r["Status"]).startswith("Success"))
    latest = max(_epoch(r["CheckedTime"]) for r in reports if r.get("CheckedTime") is not None)
    failing = next((str(r["Status"]) for r in reports if not str(r["Status"]).startswith("Success")), None)
    return ok / len(reports) > HEALTHY_FRACTION, latest, failing


def record_health_checks(env) -> dict[str, str | None]:
    """health check id -> the region its record set sends to (by SetIdentifier, else by address)."""
    cfg = env.config
    by_identifier = {cfg.set_identifier(r): r for r in cfg.regions}
    out: dict[str, str | None] = {}
    for rs in aws.record_sets(env.observer("route53", "us-east-1"), cfg.aws.hosted_zone_id, env.record_name):
        if rs.get("HealthCheckId"):
            values = [v["Value"] for v in rs.get("ResourceRecords", [])]
            region = by_identifier.get(rs.get("SetIdentifier")) or next(
                (env.region_of_address(v) for v in values if env.region_of_address(v)), None)
            out[rs["HealthCheckId"]] = region
    return out


class HealthCheckSource:
    name = API

    def __init__(self, env, checks: dict[str, str | None], configs: dict[str, dict]):
        self.env = env
        self.checks = checks                 # id -> region
        self.configs = configs               # id -> HealthCheckConfig
        self.healthy: dict[str, bool] = {}   # what was last seen
        self.last: dict[str, dict] = {}
        self._lock = threading.Lock()
        rate = env.route53_budget.rate_per_s or 5.0
        # without a failover function nothing else of the stack calls Route 53's API in a rehearsal:
        # the whole budget then goes to reading the checks (a dip shorter than a read can be missed)
        share = BUDGET_SHARE if env.config.failover_function else 1.0
        # as often as the budget allows, not by RequestInterval: checkers report every interval each,
        # staggered (and the stand-in's compressed checks are faster than the API can say)
        self.interval_s = round(max(MIN_INTERVAL_S, len(checks) / (share * rate)), 3)

    def poll(self) -> list[dict]:
        r53 = self.env.client("route53", "us-east-1")    # through the Route 53 budget
        out = []
        for hid, region in self.checks.items():
            obs = r53.get_health_check_status(HealthCheckId=hid)["HealthCheckObservations"]
            healthy, at, failing = verdict(obs)
            with self._lock:
                self.last[hid] = {"region": region, "healthy": healthy, "checkers": len(obs), "reason": failing,
                                  "type": self.configs[hid].get("Type"),
                                  "target": f"{self.configs[hid].get('IPAddress') or self.configs[hid].get('FullyQualifiedDomainName')}"
                                            f":{self.configs[hid].get('Port')}{self.configs[hid].get('ResourcePath', '')}",
                                  "last_result": failing or ("Success" if healthy else None)}
                was = self.healthy.get(hid)
                if healthy is None or healthy == was or (was is None and healthy):
                    if healthy is not None:
                        self.healthy[hid] = healthy
                    continue   # no change (a first reading of "healthy" is the baseline, not a transition)
                self.healthy[hid] = healthy
            out.append({"kind": "route53_health", "time": at, "health_check_id": hid, "region": region,
                        "healthy": healthy, "reason": failing,
                        "failure_threshold": self.configs[hid].get("FailureThreshold"),
                        "target": self.last[hid]["target"]})
        return sorted(out, key=lambda e: e["time"])

    def status(self) -> dict:
        """The local environment's route53_health_checks shape: {"checks": {id: {...}}}."""
        with self._lock:
            return {"interval_s": self.interval_s, "checks": {h: dict(v) for h, v in self.last.items()}}


def make(env) -> HealthCheckSource | None:
    """None when the record has no health checks (simple or weighted routing without them)."""
    if not env.config.aws.hosted_zone_id:
        return None
    checks = record_health_checks(env)
    if not checks:
        return None
    r53 = env.observer("route53", "us-east-1")
    configs = {h: r53.get_health_check(HealthCheckId=h)["HealthCheck"]["HealthCheckConfig"] for h in checks}
    return HealthCheckSource(env, checks, configs)
