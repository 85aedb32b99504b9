"""Every AWS API request the harness sends on --env aws, counted: per service and operation, and
for Route 53 the busiest second (its quota is 5 requests/s per account, shared with the failover
function; route53_budget.py keeps the harness under aws.route53_calls_per_s). Hooked on
botocore's `before-send`, so retries and further pages count as the requests they are.
Written to RUN_DIR/env/api_calls.json when the environment stops: what a team reads to size
the rehearsal's footprint against its quotas.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter


class ApiCallCounter:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.route53_times: list[float] = []

    def attach(self, client) -> None:
        service = client.meta.service_model.service_name   # "route53", "logs", "elbv2" (boto3's names)
        client.meta.events.register("before-send", lambda **kw: self._before_send(service=service, **kw))

    def _before_send(self, event_name: str = "", service: str | None = None, **_kwargs) -> None:
        # "before-send.<service>.<Operation>" (the service as botocore's event names spell it: route-53)
        _, _, rest = event_name.partition(".")
        named, _, operation = rest.partition(".")
        service = service or named
        now = self.clock()
        with self._lock:
            self.calls[(service, operation)] += 1
            if service == "route53":
                self.route53_times.append(now)

    def busiest_second(self, times: list[float] | None = None) -> int:
        """The most requests in any window of 1 s (sliding)."""
        ts = sorted(self.route53_times if times is None else times)
        return max((bisect.bisect_left(ts, t + 1.0) - i for i, t in enumerate(ts)), default=0)

    def summary(self) -> dict:
        with self._lock:
            calls = dict(self.calls)
            r53 = list(self.route53_times)
        minutes = max(1e-9, (self.clock() - self.started) / 60.0)
        by_service: Counter[str] = Counter()
        for (service, _), n in calls.items():
            by_service[service] += n
        return {"duration_s": round(minutes * 60.0, 1),
                "by_service": {s: {"calls": n, "per_min": round(n / minutes, 1)} for s, n in sorted(by_service.items())},
                "by_operation": {f"{s}:{op}": n for (s, op), n in sorted(calls.items())},
                "route53": {"calls": len(r53), "per_min": round(len(r53) / minutes, 1),
                            "busiest_second": self.busiest_second(r53)}}
