"""Local environment benchmarks, each side by side with its baseline in the same run:

1. cold start: `LocalEnvironment.start()` (moto per region, tasks healthy behind the load
   balancers, alarms armed, Lambda runner subscribed, DNS serving) next to the bare parts it
   cannot do without: one moto server start plus the task processes started in parallel until
   they answer /health. Goal: ratio <= 1.5.
2. failover: a surge of 1.5x the alarm threshold at the initial region, from its first request to
   Route 53's DNS answering the other region, next to the profile's floor (evaluation periods x
   period + TTL). Also split out: detection (to ALARM) and alarm -> DNS. Goal: <= floor + 1 s on
   the part the harness controls (see the note in the output: a surge that starts mid-period
   needs that period to fill before CloudWatch can see it, in AWS too).

Run: python benchmarks/bench_environment.py [--repeat 3] [--cold-start-only]. Writes benchmarks/results.json
keys "environment_cold_start" and "failover_vs_floor".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import record  # noqa: E402
from gameday.environments.local import LocalEnvironment  # noqa: E402
from gameday.environments.local.moto_region import MotoServer  # noqa: E402
from gameday import procs  # noqa: E402
from gameday.config import load_config  # noqa: E402
from gameday.net import free_port  # noqa: E402
from gameday.scenarios.baseline import alarm_states, restore_baseline  # noqa: E402
from tests.support import drive_load  # noqa: E402


def bare_parts(cfg, tmp: Path) -> tuple[float, float]:
    """(moto start s, task processes to healthy s): the floor of any local cold start."""
    t0 = time.monotonic()
    moto = MotoServer("us-east-1", tmp / "logs").start()
    moto_s = time.monotonic() - t0
    n = cfg.service.desired_tasks * len(cfg.regions)
    ports = [free_port() for _ in range(n)]
    t1 = time.monotonic()
    tasks = [procs.spawn([procs.python(), "-m", "gameday.sut.service", "--port", str(p), "--region", "us-east-1",
                          "--table", cfg.dynamodb.table, "--endpoint", moto.url, "--task-id", f"bench{i}",
                          "--az", "us-east-1a"], tmp / "logs" / f"task{i}.log",
                         cwd=Path(__file__).resolve().parents[1]) for i, p in enumerate(ports)]
    try:
        pending = set(ports)
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for p in list(pending):
                try:
                    if requests.get(f"http://127.0.0.1:{p}/health", timeout=0.5).status_code == 200:
                        pending.discard(p)
                except requests.RequestException:
                    pass
            if pending:
                threading.Event().wait(0.02)  # polling a port, not waiting for time to pass
        tasks_s = time.monotonic() - t1
        if pending:
            raise RuntimeError(f"tasks on ports {sorted(pending)} never answered /health")
    finally:
        for t in tasks:
            procs.terminate(t)
        moto.stop()
    return moto_s, tasks_s


def one_failover(env, cfg) -> dict:
    prof = env.profile
    restore_baseline(env)
    src, dst = cfg.initial_region, next(r for r in cfg.regions if r != cfg.initial_region)
    dst_ip = env.endpoints["regions"][dst]["lb_address"]
    resolver = env.resolver(honour_ttl=False)
    rps = 1.5 * cfg.alarms["request-count"].threshold / prof.period_s
    stop = threading.Event()
    since = env.events()[-1]["seq"]
    t0 = time.time()
    # GET /health through the load balancer: the alarm counts every request (the scenarios' surge
    # mixes in writes; this measures the alarm -> DNS pipeline, not the write path)
    load = threading.Thread(target=drive_load, args=(env.lb_url(src), rps, 4 * prof.period_s + prof.dns_ttl_s + 5),
                            kwargs={"method": "GET", "path": lambda i: "/health", "threads": 32}, daemon=True)
    load.start()
    alarm_at = dns_at = None
    deadline = time.monotonic() + prof.floor_s + 3 * prof.period_s + 10
    while time.monotonic() < deadline and dns_at is None:
        if alarm_at is None and alarm_states(env)[src].get(cfg.alarm_name(src, "request-count")) == "ALARM":
            alarm_at = time.time()
        if resolver.lookup(cfg.service.name).addresses == [dst_ip]:
            dns_at = time.time()
        stop.wait(0.02)
    load.join(timeout=60)
    ev = [e for e in env.events(since, "alarm") if e.get("new") == "ALARM" and e.get("region") == src]
    # the end of the first period the surge touched: CloudWatch cannot see a period before it closes
    first_boundary = (int(t0 // prof.period_s) + 1) * prof.period_s
    # the boundary that closed the breaching period(s): from there AWS needs only the TTL more
    closed = int(ev[0]["time"] // prof.period_s) * prof.period_s if ev else None
    return {"failover_s": None if dns_at is None else round(dns_at - t0, 3),
            "harness_overhead_s": None if (dns_at is None or closed is None) else round(dns_at - closed, 3),
            "detection_s": None if alarm_at is None else round(alarm_at - t0, 3),
            "alarm_event_after_boundary_s": round(ev[0]["time"] - first_boundary, 3) if ev else None,
            "alarm_to_dns_s": None if (dns_at is None or alarm_at is None) else round(dns_at - alarm_at, 3),
            "partial_first_period_s": round(first_boundary - t0, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="cold starts and failovers to measure (median reported)")
    ap.add_argument("--cold-start-only", action="store_true", help="measure the cold start only (no failovers)")
    args = ap.parse_args()
    cfg = load_config(None)
    tmp = Path(tempfile.mkdtemp(prefix="gameday-bench-"))

    bare, cold, timings = [], [], []
    for i in range(args.repeat):
        m, t = bare_parts(cfg, tmp / f"bare{i}")
        bare.append((m, t))
        t0 = time.monotonic()
        env = LocalEnvironment(cfg, tmp / f"env{i}").start()
        cold.append(time.monotonic() - t0)
        timings.append(env.endpoints["timings"])
        if i < args.repeat - 1 or args.cold_start_only:
            env.stop()
    moto_s = statistics.median(b[0] for b in bare)
    tasks_s = statistics.median(b[1] for b in bare)
    cold_s = statistics.median(cold)
    res1 = record("environment_cold_start", {
        "env_cold_start_s": round(cold_s, 3), "bare_moto_start_s": round(moto_s, 3),
        "bare_tasks_healthy_s": round(tasks_s, 3), "ratio": round(cold_s / (moto_s + tasks_s), 3), "goal_ratio": 1.5,
        "runs": [{"env_s": round(c, 3), "moto_s": round(b[0], 3), "tasks_s": round(b[1], 3)} for c, b in zip(cold, bare)],
        "stack_timings_last": timings[-1], "stack_timings_runs": timings})
    print(f"cold start {cold_s:.2f}s vs bare moto {moto_s:.2f}s + tasks {tasks_s:.2f}s: ratio {res1['ratio']}")
    for t in timings:
        print("  stack:", ", ".join(f"{k} {v:.2f}" for k, v in t.items()))
    if args.cold_start_only:
        return

    try:
        runs = [one_failover(env, cfg) for _ in range(args.repeat)]
    finally:
        env.stop()
    floor = env.profile.floor_s
    ok = [r for r in runs if r["failover_s"] is not None]
    med = statistics.median(r["failover_s"] for r in ok) if ok else None
    overhead = [r["harness_overhead_s"] for r in ok if r["harness_overhead_s"] is not None]
    res2 = record("failover_vs_floor", {
        "floor_s": floor, "failover_s_median": med, "failed_runs": len(runs) - len(ok),
        "harness_overhead_s_median": round(statistics.median(overhead), 3) if overhead else None,
        "goal_overhead_s": 1.0, "runs": runs,
        "note": "failover_s counts from the surge's first request, so it includes the part of the first "
                "alarm period the surge started in (partial_first_period_s), which CloudWatch waits out in AWS "
                "too. harness_overhead_s = DNS answer time - end of the breaching period (clients then need the TTL, as in "
                "AWS): what the local model adds above the floor (metric flush, evaluation grace, SNS, Lambda, DNS refresh)."})
    print(f"failover median {med}s vs floor {floor}s; harness overhead median {res2['harness_overhead_s_median']}s")


if __name__ == "__main__":
    main()
