"""Helpers for component tests: real moto servers per region, provisioned like the seed."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from gameday.environments.local.context import LocalContext
from gameday.environments.local.moto_region import MotoServer
from gameday.environments.local.provision import provision
from gameday.config import GamedayConfig, TimeProfile, load_config
from gameday.events import EventLog
from gameday.net import region_address

# gameday.toml fragments for the tests that run whole scenarios in a subprocess.
#
# LIGHT_LOAD: the request-count alarm at 20 requests/s (the seed's is 100/s: 500 per 5 s period),
# so the surge (1.5x) is 30 requests/s instead of 150, at the seed's 5 s period. The whole-suite runs
# (test_main_job, the docker and aws suites) use it: at the seed's rate, beside the other workers'
# tests, 2 cores timed out a few percent of the surge's requests; their evidence is every scenario's
# verdict at the seed's period, so their error budgets mean what they mean for a user.
#
# VERDICT_LOAD: the same rate with a VERDICT_PERIOD_S period, the thresholds scaled with it, for the
# tests that prove one verdict (a broken handler fails naming its check, a team's handler passes, the
# CLI tells the story): every deadline is derived from the profile, so the verdict does not depend
# on the period's length, and each run is about a quarter shorter (most of a scenario is evidence
# windows counted in periods). Not for whole suites: an error budget is a share of the operations,
# and the same outage (a request's 2 s timeout, the TTL) is a bigger share of a shorter scenario
# (all_tasks_stopped_fails_over on docker: 25.4% against 25% at a 2 s period).
#
# The seed's rate and period keep their own end-to-end runs (test_local_e2e, test_loadgen,
# benchmarks/bench_suite.py: the whole suite, alone).
# ([alarms] replaces the seed's alarms as a whole: the other two are written out as the seed has them.)
SEED_PERIOD_S = TimeProfile().period_s
VERDICT_PERIOD_S = 2


def light_load(period_s: int = SEED_PERIOD_S) -> str:
    """The alarms at a fifth of the seed's rate for a `period_s` period (and that period for the
    local and docker environments when it is not the seed's)."""
    profile = "" if period_s == SEED_PERIOD_S else f"""
[profiles.local]
period_s = {period_s}

[profiles.docker]
period_s = {period_s}
"""
    return f"""
[alarms.request-count]
metric = "RequestCount"
statistic = "Sum"
threshold = {20 * period_s}
comparison = "GreaterThanThreshold"
treat_missing_data = "notBreaching"

[alarms.target-5xx]
metric = "HTTPCode_Target_5XX_Count"
statistic = "Sum"
threshold = {10 * period_s}
comparison = "GreaterThanThreshold"
treat_missing_data = "notBreaching"

[alarms.healthy-hosts]
metric = "HealthyHostCount"
statistic = "Minimum"
threshold = 1
comparison = "LessThanThreshold"
treat_missing_data = "breaching"
""" + profile


LIGHT_LOAD = light_load()
VERDICT_LOAD = light_load(VERDICT_PERIOD_S)


@contextlib.contextmanager
def provisioned_context(config: GamedayConfig | None = None, run_dir: Path | None = None,
                        do_provision: bool = True):
    """Yield a LocalContext with one moto server per region (+ us-east-1 for Route 53), provisioned."""
    cfg = config or load_config(None)
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="gameday-test-"))
    regions = list(dict.fromkeys([*cfg.regions, "us-east-1"]))
    servers = {r: MotoServer(r, run_dir / "logs") for r in regions}
    try:
        for s in servers.values():
            s.start()
        ctx = LocalContext(
            config=cfg, profile=cfg.profile("local"), run_dir=run_dir,
            events=EventLog(run_dir / "events.jsonl"),
            moto_urls={r: s.url for r, s in servers.items()},
            lb_addresses={r: region_address(i) for i, r in enumerate(cfg.regions)},
        )
        # Without the router, customers talk to their region's moto directly (tests of one component).
        ctx.router_url = servers["us-east-1"].url
        if do_provision:
            ctx.provisioned = provision(ctx)
        yield ctx
    finally:
        for s in servers.values():
            s.stop()


def drive_load(url: str, rps: float, duration_s: float, *, path=lambda i: f"/items/k{i}", method: str = "PUT",
               threads: int = 8, max_requests: int = 20000) -> dict:
    """A bounded open-loop load for component tests (scenarios use Locust): about `rps`
    requests/s for `duration_s`, never more than max_requests. Returns status counts."""
    import json as _json
    import threading
    import time as _time

    import requests as _requests

    counts: dict[int | str, int] = {}
    lock = threading.Lock()
    total = min(int(rps * duration_s), max_requests)
    t0 = _time.monotonic()
    next_i = iter(range(total))

    def worker():
        s = _requests.Session()
        while True:
            with lock:
                i = next(next_i, None)
            if i is None:
                return
            due = t0 + i / rps
            delay = due - _time.monotonic()
            if delay > 0:
                _time.sleep(delay)  # pacing an open-loop load, not waiting for a condition
            try:
                r = s.request(method, url + path(i), data=_json.dumps({"value": i, "client_time": _time.time()}),
                              timeout=5)
                key: int | str = r.status_code
            except _requests.RequestException as e:
                key = type(e).__name__
            with lock:
                counts[key] = counts.get(key, 0) + 1

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=duration_s + 30)
    return counts


def descendants(pid: int) -> set[int]:
    """All live descendant pids of pid (from /proc), for no-process-left-behind checks."""
    import os

    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            children.setdefault(int(fields[1]), []).append(int(d))
        except OSError:
            continue
    out: set[int] = set()
    stack = [pid]
    while stack:
        for c in children.get(stack.pop(), []):
            out.add(c)
            stack.append(c)
    return out


def alive(pids: set[int]) -> set[int]:
    import os

    live = set()
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    live.add(p)
        except OSError:
            pass
        _ = os
    return live
