"""Where a request's time goes under the README's load, all measured side by side in one run:

- `gameday up` (LocalEnvironment: the same `gameday.cli up` process), then the default
  locustfile run as the README runs it (`locust -f loadgen/locustfile.py --headless -u 20 -r 20
  -t 10s`, a subprocess; the locustfile's load shape decides the real rate and length);
- Locust's own numbers: requests, unanswered/failed requests, p50/p95/p99 (its CSV);
- a probe beside the load (a few PUT/GET/health requests per second at the surge region) that
  reads the Server-Timing entries each layer adds: the load balancer's `target` (forward to the
  task's last byte), the task's `app` (its whole handling) and `ddb` (its DynamoDB call), and the
  router's `moto` (moto's answer to that call). Differences give each layer's share:
  client+LB = total - target, LB->task hop = target - app, service = app - ddb,
  router+SDK = ddb - moto, moto = moto;
- CPU seconds of every process of the environment during the load (psutil), per layer: the
  stack process (load balancers, AWS router, replication, metrics, alarms, Lambda runner, DNS),
  each region's moto, the tasks, and Locust.

Beside it, side by side: a burst of new connections at moto (werkzeug closes every connection,
so each AWS call is a new TCP connection) with werkzeug's listen queue (128) and with a larger one.

Run: python benchmarks/bench_latency.py [--locust-args "--surge-rate 60"]. Writes
benchmarks/results.json key "latency". Goal: 0 unanswered requests, p99 < 100 ms. On a shared
machine the numbers are noisy: `uptime` load averages are recorded before and after.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import record  # noqa: E402
from gameday.config import load_config  # noqa: E402
from gameday.environments.local import LocalEnvironment  # noqa: E402
from gameday.loadgen.runner import LOCUSTFILE  # noqa: E402

README_ARGS = ["--headless", "-u", "20", "-r", "20", "-t", "10s"]
PROBE_INTERVAL_S = 0.2


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q / 100 * len(s)))], 2)


def server_timing(header: str) -> dict[str, float]:
    """{"target": ms, "app": ms, ...} from a Server-Timing header (first entry of each name)."""
    out: dict[str, float] = {}
    for entry in header.split(","):
        name, _, params = entry.strip().partition(";")
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k == "dur" and name not in out:
                try:
                    out[name] = float(v)
                except ValueError:
                    pass
    return out


class Probe(threading.Thread):
    """PUT, GET and /health at one load balancer, one every PROBE_INTERVAL_S, keep-alive, recording the
    client's total and the layers' Server-Timing entries."""

    def __init__(self, base: str, stop: threading.Event):
        super().__init__(daemon=True, name="latency-probe")
        self.base, self.stop = base, stop
        self.samples: list[dict] = []
        self.errors = 0

    def run(self) -> None:
        s = requests.Session()
        n = 0
        while not self.stop.wait(PROBE_INTERVAL_S):
            n += 1
            key = f"latency-probe-{n}"
            for method, path, body in (("PUT", f"/items/{key}", '{"value": 1}'), ("GET", f"/items/{key}", None),
                                       ("GET", "/health", None)):
                t0 = time.perf_counter()
                try:
                    r = s.request(method, self.base + path, data=body, timeout=5)
                except requests.RequestException:
                    self.errors += 1
                    continue
                total = (time.perf_counter() - t0) * 1000
                kind = "health" if path == "/health" else method.lower()
                self.samples.append({"kind": kind, "status": r.status_code, "total": total,
                                     **server_timing(r.headers.get("Server-Timing", ""))})


def layers(samples: list[dict]) -> dict:
    """Per kind: p50/p95/p99 (ms) of the total and of each layer's share."""
    out = {}
    for kind in ("put", "get", "health"):
        rows = [s for s in samples if s["kind"] == kind and s["status"] < 500]
        shares: dict[str, list[float]] = {"total": [s["total"] for s in rows]}
        for s in rows:
            t, app, ddb, moto = s.get("target"), s.get("app"), s.get("ddb"), s.get("moto")
            for name, value in (("client_and_lb", t is not None and s["total"] - t),
                                ("lb_to_task_hop", t is not None and app is not None and t - app),
                                ("service", app is not None and app - (ddb or 0)),
                                ("router_and_sdk", ddb is not None and moto is not None and ddb - moto),
                                ("moto", moto)):
                if value is not None and value is not False:
                    shares.setdefault(name, []).append(value)
        out[kind] = {"n": len(rows), **{name: {"p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99)}
                                        for name, v in shares.items()}}
    return out


def environment_processes(env: LocalEnvironment) -> dict[int, str]:
    """pid -> layer name, for the stack process and its children."""
    moto_ports = {str(url).rsplit(":", 1)[-1]: r for r, url in (env.endpoints.get("moto_urls") or {}).items()}
    root = psutil.Process(env.proc.pid)
    names = {root.pid: "stack (lb, router, replication, metrics, alarms, lambda, dns)"}
    for p in root.children(recursive=True):
        try:
            cmd, comm = p.cmdline(), p.name()
        except psutil.Error:
            continue
        text = " ".join(cmd)
        # a process forked from a zygote keeps the zygote's command line: its name (/proc/PID/comm,
        # zygote.become_forked_child) says what it is: moto-<region>, task-<region>, lambda-worker
        forked = comm.split("-", 1)
        if forked[0] in ("moto", "task") and len(forked) == 2:
            names[p.pid] = f"{forked[0]} {forked[1]}"
        elif comm == "lambda-worker":
            names[p.pid] = "lambda worker"
        elif "--fork" in cmd:
            names[p.pid] = "moto zygote"
        elif "environments.local.zygote" in text:
            names[p.pid] = "task zygote"
        elif "moto" in text:
            port = cmd[cmd.index("-p") + 1] if "-p" in cmd else "?"
            names[p.pid] = f"moto {moto_ports.get(port, port)}"
        elif "gameday.sut.service" in text:
            names[p.pid] = f"task {cmd[cmd.index('--region') + 1] if '--region' in cmd else '?'}"
        else:
            names[p.pid] = p.name()
    return names


def cpu_seconds(pids: dict[int, str]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def listen_overflows() -> int | None:
    """The kernel's count of SYNs dropped at a full listen queue (machine-wide: other processes
    count too), each a 1 s retransmit for the client that sent it."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:]))
            return int(row.get("ListenOverflows", 0))
    return None


def locust_stats(prefix: Path) -> dict:
    rows = list(csv.DictReader(open(f"{prefix}_stats.csv", newline="")))
    agg = next(r for r in rows if r["Name"] == "Aggregated")
    num = (lambda k: float(agg[k]) if agg.get(k) not in (None, "", "N/A") else None)
    by_name = {r["Name"]: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                           "p99_ms": num("99%") and float(r["99%"])} for r in rows if r["Name"] != "Aggregated"}
    return {"requests": int(agg["Request Count"]), "failures": int(agg["Failure Count"]),
            "p50_ms": num("50%"), "p95_ms": num("95%"), "p99_ms": num("99%"), "max_ms": num("Max Response Time"),
            "requests_per_s": num("Requests/s"), "by_name": by_name}


def run_locust(env: LocalEnvironment, out: Path, extra: list[str]) -> tuple[dict, float, str]:
    prefix = out / "locust"
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *README_ARGS, "--only-summary",
            "--gameday-state", str(env.state_file), "--csv", str(prefix), *extra]
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=out, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    (out / "locust.log").write_text(proc.stderr)
    plan = next((line.split("gameday load: ", 1)[1] for line in proc.stderr.splitlines()
                 if "gameday load: run" in line), "")
    return locust_stats(prefix), wall, plan


def one_run(env: LocalEnvironment, out: Path, extra: list[str], surge_region: str) -> dict:
    pids = environment_processes(env)
    before, overflows = cpu_seconds(pids), listen_overflows()
    stop = threading.Event()
    probe = Probe(env.lb_url(surge_region), stop)
    probe.start()
    try:
        stats, wall, plan = run_locust(env, out, extra)
    finally:
        stop.set()
        probe.join(timeout=10)
    after = cpu_seconds(pids)
    cpu: dict[str, float] = {}
    for pid, name in pids.items():
        if pid in before and pid in after:
            cpu[name] = round(cpu.get(name, 0) + after[pid] - before[pid], 2)
    return {"locust_args": README_ARGS + extra, "plan": plan, "locust_wall_s": round(wall, 1), "locust": stats,
            "probe_errors": probe.errors,
            "listen_queue_overflows": None if overflows is None else listen_overflows() - overflows, "layers_ms": layers(probe.samples),
            "cpu_s_by_process": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
            "cpu_s_per_request": round(sum(cpu.values()) / max(1, stats["requests"]) * 1000, 2)}


LIST_TABLES = {"X-Amz-Target": "DynamoDB_20120810.ListTables", "Content-Type": "application/x-amz-json-1.0",
               "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261203/us-east-1/dynamodb/aws4_request, "
                                "SignedHeaders=host, Signature=x"}


def _moto_with_backlog(port: int, backlog: int | None) -> subprocess.Popen:
    """environments/local/moto_main as the environment runs it, its listen queue raised to `backlog`."""
    code = ("import sys, runpy, werkzeug.serving as ws\n"
            + (f"ws.BaseWSGIServer.request_queue_size = {backlog}\n" if backlog else "")
            + f"sys.argv = ['moto', '-H', '127.0.0.1', '-p', '{port}']\n"
            "runpy.run_module('gameday.environments.local.moto_main', run_name='__main__')")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def accept_queue_burst(backlog: int | None, clients: int = 200, calls: int = 15) -> dict:
    """`clients` threads each make `calls` DynamoDB calls to one moto server, one TCP connection per
    call (werkzeug answers every request with Connection: close); calls slower than 0.9 s are the
    ones whose SYN was dropped at a full listen queue (Linux retransmits it after 1 s, then 3 s)."""
    import http.client

    from gameday.net import free_port

    port = free_port()
    proc = _moto_with_backlog(port, backlog)
    lat: list[float] = []
    failed: list[str] = []

    def calls_of_one_client() -> None:
        for _ in range(calls):
            try:
                call()
            except OSError as e:   # a connection that never got through (after SYN retransmits)
                failed.append(f"{type(e).__name__}: {e}")

    def call() -> None:
        t0 = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            c.request("POST", "/", b"{}", LIST_TABLES)
            c.getresponse().read()
        finally:
            c.close()
        lat.append((time.perf_counter() - t0) * 1000)

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                call()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                threading.Event().wait(0.1)   # polling a port, not waiting for time to pass
        lat.clear()
        threads = [threading.Thread(target=calls_of_one_client) for _ in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return {"backlog": backlog or "werkzeug default (128)", "calls": len(lat), "failed": len(failed),
            "wall_s": round(wall, 2),
            "over_900ms": sum(v > 900 for v in lat), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "max_ms": round(max(lat), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--locust-args", action="append", default=[],
                    help="extra Locust/gameday options for one more run beside the README's (repeatable), "
                         'e.g. --locust-args "--surge-rate 60"')
    ap.add_argument("--skip-burst", action="store_true", help="skip the moto listen-queue comparison")
    args = ap.parse_args()
    burst = [] if args.skip_burst else [accept_queue_burst(b) for b in (None, 4096, None, 4096)]
    for b in burst:
        print(f"moto listen queue {b['backlog']}: {b['over_900ms']} of {b['calls']} calls over 0.9 s, "
              f"{b['failed']} never answered, "
              f"p99 {b['p99_ms']} ms")
    cfg = load_config(None)
    tmp = Path(tempfile.mkdtemp(prefix="gameday-bench-latency-"))
    load_before = os.getloadavg()
    env = LocalEnvironment(cfg, tmp / "run").start()
    runs = []
    try:
        for i, extra in enumerate([[]] + [shlex.split(a) for a in args.locust_args]):
            out = tmp / f"locust{i}"
            out.mkdir()
            runs.append(one_run(env, out, extra, cfg.initial_region))
            r = runs[-1]["locust"]
            print(f"{' '.join(runs[-1]['locust_args'])}: {r['requests']} requests, {r['failures']} failed, "
                  f"p50 {r['p50_ms']} p95 {r['p95_ms']} p99 {r['p99_ms']} ms; cpu {runs[-1]['cpu_s_by_process']}")
    finally:
        env.stop()
    result = record("latency", {
        "goal": {"unanswered": 0, "p99_ms": 100}, "cpus": psutil.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "runs": runs, "logs": str(tmp), "moto_listen_queue_burst": burst,
        "note": "noisy when the machine is shared (see load averages); the probe's layers are "
                "Server-Timing entries: client_and_lb = total - target, lb_to_task_hop = target - app, "
                "service = app - ddb, router_and_sdk = ddb - moto."})
    print(f"results: benchmarks/results.json key latency (logs {result['logs']})")


if __name__ == "__main__":
    main()
