"""What recording the history costs the load generator: the same Locust run with and without
--record-history, side by side, against a fast loopback stub (not the local environment,
whose service path tops out far below what one Locust worker can send).

Two measurements, each run with and without the history (alternating, median of --repeat):
  saturation   a rate no worker can reach: the requests/s one worker sustains;
  fixed rate   a rate both reach: the worker's CPU milliseconds per request (from /proc),
               the cost that decides how much load one core can make.

    python benchmarks/bench_history.py [--repeat 2] [--seconds 8] [--no-write]

Results go to benchmarks/results.json under "history_overhead" (other benchmarks own other keys).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
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
from gameday.loadgen.runner import LoadRunner  # noqa: E402

ADDRESSES = {"us-east-1": "127.0.1.1", "us-west-2": "127.0.2.1"}
CLK_TCK = os.sysconf("SC_CLK_TCK")

# A keep-alive HTTP/1.1 responder on asyncio, answering like the service (X-Gameday-Region by the
# address it listens on); one process per region address, so together they outrun a Locust worker.
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


@contextlib.contextmanager
def stub_endpoints():
    """The loopback stub (one process per region address), as an endpoints dict for LoadRunner."""
    port = free_port_on_all(list(ADDRESSES.values()))
    stubs = [procs.spawn([sys.executable, "-c", STUB, str(port), json.dumps({a: r})], stdout=subprocess.PIPE)
             for r, a in ADDRESSES.items()]
    try:
        for stub in stubs:
            assert stub.stdout.readline().strip() == b"ready"
        yield {"env": "local", "service_name": "api.gameday.test", "dns": {"host": "127.0.0.1", "port": 1},
               "lb_port": port, "pid": stubs[0].pid, "profile": {"period_s": 5}, "alarm_threshold": 500,
               "regions": {r: {"lb_url": f"http://{a}:{port}", "lb_address": a} for r, a in ADDRESSES.items()}}
    finally:
        for stub in stubs:
            procs.terminate(stub)


def one_run(out: Path, endpoints: dict, rate: float, seconds: float, record: bool, users: int) -> dict:
    # half the rate to each region: one stub process per region, so the stub is never the limit
    with LoadRunner(out, endpoints=endpoints, shape="constant", surge_region="us-east-1", surge_rate=rate / 2,
                    region_mix={"us-west-2": rate / 2}, follower_rate=0, hold_s=seconds,
                    per_user_rps=rate / users, record_history=record,
                    max_requests=int(rate * seconds * 2) + 100, request_timeout_s=5,
                    standalone=False) as load:   # a worker, as before: the series compares with earlier runs
        worker = load.workers[0].pid
        # the run has started (the runner waited for it); measure the load phase only
        t0 = time.monotonic()
        c0 = procs.cpu_seconds(worker)
        time.sleep(seconds * 0.8)          # a benchmark's measuring window, not a wait for a condition
        c1 = procs.cpu_seconds(worker)
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


def record_requests(writer, n: int) -> float:
    """Microseconds per request a history writer takes: the invoke entry, then the completion entry
    built as the request listener builds it; the writer is closed at the end."""
    t0 = time.perf_counter()
    for i in range(n):
        op = {"id": f"r:w0:{i}", "process": "w0/3", "op": "write", "kind": "write", "key": f"r-w0-{i}",
              "value": f"w0/3#{i}", "region": "us-east-1", "address": "127.0.1.1", "role": "regional",
              "worker": "w0"}
        writer.invoke(op)
        op.update(outcome="ok", status=200, served_by="us-east-1", task="t-1", az="us-east-1a", error=None,
                  name="regional write us-east-1")
        entry = {k: v for k, v in op.items() if k != "outcome"}
        entry.update(type="ok", latency_s=0.0012, time=time.time(), mono=time.monotonic())
        writer.complete(entry)
    took = time.perf_counter() - t0
    writer.close()
    return took / n * 1e6


def writer_cost_us(n: int = 20000) -> float:
    """Microseconds the history adds to one request in the worker (both entries encoded and written)."""
    from gameday.loadgen.history import HistoryWriter

    with tempfile.TemporaryDirectory() as d:
        return round(record_requests(HistoryWriter(Path(d) / "history.bench.w0-1@x.jsonl", "w0"), n), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--saturation-rate", type=float, default=5000.0)   # the harness limit; 4000 was reached
    ap.add_argument("--fixed-rate", type=float, default=600.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    with stub_endpoints() as endpoints:
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

    def median(kind: str, record: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind] if r["history"] is record)

    # medians: the machine is shared, single runs of one configuration vary by tens of percent
    sat_with = median("saturation", True, "requests_per_s")
    sat_without = median("saturation", False, "requests_per_s")
    sat_cpu_with = median("saturation", True, "cpu_ms_per_request")
    sat_cpu_without = median("saturation", False, "cpu_ms_per_request")
    cpu_with = median("fixed", True, "cpu_ms_per_request")
    cpu_without = median("fixed", False, "cpu_ms_per_request")
    micro = writer_cost_us()
    result = {
        "writer_us_per_request": micro,
        "writer_share_of_request_cpu": round(micro / 1000 / sat_cpu_without, 3),
        "statistic": "median of --repeat runs per configuration",
        "what": "one Locust worker (FastHttpUser, gameday's paced users and ops) against a loopback stub, "
                "with and without recording the history (2 JSON lines per request, buffered, flushed every 0.2 s)",
        "saturation": {"with_history_rps": sat_with, "without_history_rps": sat_without,
                       "throughput_ratio": round(sat_with / sat_without, 3),
                       # each run with the history beside the run without it that followed: the spread is the noise
                       "pair_throughput_ratios": [round(a["requests_per_s"] / max(b["requests_per_s"], 1e-9), 3)
                                                  for a, b in zip(runs["saturation"][0::2], runs["saturation"][1::2])],
                       "with_history_cpu_ms_per_request": sat_cpu_with,
                       "without_history_cpu_ms_per_request": sat_cpu_without,
                       "cpu_ratio": round(sat_cpu_with / sat_cpu_without, 3)},
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
