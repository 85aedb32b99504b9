"""What recording the history costs the load generator: the same Locust run with and without
--record-history, side by side, against a fast loopback stub (not the local environment,
whose service path tops out far below what one Locust worker can send).

Two measurements, each run with and without the history (alternating, best of --repeat):
  saturation   a rate no worker can reach: the requests/s one worker sustains;
  fixed rate   a rate both reach: the worker's CPU milliseconds per request (from /proc),
               the cost that decides how much load one core can make.

    python benchmarks/bench_history.py [--repeat 2] [--seconds 8] [--no-write]

Results go to benchmarks/results.json under "history_overhead" (other benchmarks own other keys).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gameday import procs  # noqa: E402
from gameday.net import free_port_on_all  # noqa: E402
from loadgen.runner import LoadRunner  # noqa: E402

ADDRESSES = {"us-east-1": "127.0.1.1", "us-west-2": "127.0.2.1"}
CLK_TCK = os.sysconf("SC_CLK_TCK")

# A keep-alive HTTP/1.1 responder on asyncio, answering like the service (X-Gameday-Region by the
# address it listens on): several times faster than a Locust worker, so it is never the limit.
STUB = textwrap.dedent("""
    import asyncio, json, sys
    port = int(sys.argv[1]); regions = json.loads(sys.argv[2]); store = {}
    class P(asyncio.Protocol):
        def connection_made(self, t):
            self.t, self.buf = t, b""
            self.region = regions[t.get_extra_info("sockname")[0]]
        def data_received(self, d):
            self.buf += d
            while True:
                i = self.buf.find(b"\\r\\n\\r\\n")
                if i < 0:
                    return
                lines = self.buf[:i].split(b"\\r\\n")
                method, path = lines[0].split(b" ")[:2]
                n = 0
                for ln in lines[1:]:
                    if ln[:15].lower() == b"content-length:":
                        n = int(ln[15:])
                if len(self.buf) < i + 4 + n:
                    return
                body, self.buf = self.buf[i + 4:i + 4 + n], self.buf[i + 4 + n:]
                key = path[7:]
                if method == b"PUT":
                    store[key] = body
                    st, out = 200, b'{"ok":true}'
                elif key in store:
                    st, out = 200, b'{"value":"v"}'
                else:
                    st, out = 404, b'{"message":"no item"}'
                self.t.write(b"HTTP/1.1 %d X\\r\\nContent-Length: %d\\r\\nX-Gameday-Region: %s\\r\\n"
                             b"X-Gameday-Task: stub\\r\\n\\r\\n%s" % (st, len(out), self.region.encode(), out))
    async def main():
        loop = asyncio.get_running_loop()
        for a in regions:
            await loop.create_server(P, a, port)
        print("ready", flush=True)
        await asyncio.Event().wait()
    asyncio.run(main())
""")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def one_run(out: Path, endpoints: dict, rate: float, seconds: float, record: bool, users: int) -> dict:
    with LoadRunner(out, endpoints=endpoints, shape="constant", surge_region="us-east-1", surge_rate=rate,
                    follower_rate=0, hold_s=seconds, per_user_rps=rate / users, record_history=record,
                    max_requests=int(rate * seconds * 2) + 100, request_timeout_s=5) as load:
        worker = load.workers[0].pid
        # the run has started (the runner waited for it); measure the load phase only
        t0 = time.monotonic()
        c0 = cpu_s(worker)
        time.sleep(seconds * 0.8)          # a benchmark's measuring window, not a wait for a condition
        c1 = cpu_s(worker)
        t1 = time.monotonic()
        load.wait()
    st = load.stats()
    done = json.loads(next(out.glob("*.done")).read_text()) if record else None
    rps = st["requests"] / seconds            # the rate is constant over the run: the window saw rps x its length
    return {"history": record, "rate_planned": rate, "requests": st["requests"], "failures": st["failures"],
            "requests_per_s": round(rps, 1),
            "worker_cpu_share": round((c1 - c0) / (t1 - t0), 3),
            "cpu_ms_per_request": round(1000 * (c1 - c0) / max(1.0, rps * (t1 - t0)), 4),
            "history_entries": (done["invokes"] + done["completions"]) if done else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--saturation-rate", type=float, default=4000.0)
    ap.add_argument("--fixed-rate", type=float, default=600.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    port = free_port_on_all(list(ADDRESSES.values()))
    regions = {a: r for r, a in ADDRESSES.items()}
    stub = procs.spawn([sys.executable, "-c", STUB, str(port), json.dumps(regions)], stdout=subprocess.PIPE)
    try:
        assert stub.stdout.readline().strip() == b"ready"
        endpoints = {"env": "bench", "service_name": "api.gameday.test", "dns": {"host": "127.0.0.1", "port": 1},
                     "lb_port": port, "pid": stub.pid, "profile": {"period_s": 5}, "alarm_threshold": 500,
                     "regions": {r: {"lb_url": f"http://{a}:{port}", "lb_address": a} for r, a in ADDRESSES.items()}}
        load_before = os.getloadavg()
        runs = {"saturation": [], "fixed": []}
        with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
            n = 0
            for _ in range(args.repeat):
                for record in (True, False):
                    for kind, rate, users in (("saturation", args.saturation_rate, 200), ("fixed", args.fixed_rate, 20)):
                        n += 1
                        r = one_run(Path(tmp) / f"run{n}", endpoints, rate, args.seconds, record, users)
                        runs[kind].append(r)
                        print(f"{kind:<10} history={record!s:<5} {r['requests_per_s']:>8.1f} req/s  "
                              f"{r['cpu_ms_per_request']:.4f} CPU ms/request  worker CPU {r['worker_cpu_share']:.0%}",
                              flush=True)
    finally:
        procs.terminate(stub)

    def best(kind: str, record: bool, key: str, pick) -> float:
        return pick(r[key] for r in runs[kind] if r["history"] is record)

    sat_with = best("saturation", True, "requests_per_s", max)
    sat_without = best("saturation", False, "requests_per_s", max)
    cpu_with = best("fixed", True, "cpu_ms_per_request", min)
    cpu_without = best("fixed", False, "cpu_ms_per_request", min)
    result = {
        "what": "one Locust worker (FastHttpUser, gameday's paced users and ops) against a loopback stub, "
                "with and without recording the history (2 JSON lines per request, line-buffered)",
        "saturation": {"with_history_rps": sat_with, "without_history_rps": sat_without,
                       "throughput_ratio": round(sat_with / sat_without, 3)},
        "fixed_rate": {"rate": args.fixed_rate, "with_history_cpu_ms_per_request": cpu_with,
                       "without_history_cpu_ms_per_request": cpu_without,
                       "cpu_ratio": round(cpu_with / cpu_without, 3)},
        "seconds_per_run": args.seconds, "repeat": args.repeat,
        "loadavg_before": [round(x, 2) for x in load_before], "runs": runs,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if not args.no_write:
        from benchmarks.results_io import record

        record("history_overhead", result)


if __name__ == "__main__":
    main()
