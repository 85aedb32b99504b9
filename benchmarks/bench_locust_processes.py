"""What one local load run costs in Locust processes: Locust standalone (one process running the
users itself: LoadRunner's default for one local worker) side by side with a headless master and
its one worker (what every run was before), the same plan against the same loopback stub
(benchmarks/bench_history.py's), alternating, --repeat runs of each.

Measured per run: the CPU seconds of every Locust process from its start to its exit (imports,
the run, the report: the children's rusage once they are reaped), the wall time from start() to
the processes' exit, and Locust's and the history's request counts (the same load both ways).

    python benchmarks/bench_locust_processes.py [--repeat 3] [--seconds 8] [--rate 40] [--no-write]

Results go to benchmarks/results.json under "locust_processes".
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_history import stub_endpoints  # noqa: E402
from benchmarks.results_io import record  # noqa: E402
from gameday.loadgen.runner import LoadRunner  # noqa: E402


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def one_run(out: Path, endpoints: dict, rate: float, seconds: float, standalone: bool) -> dict:
    """A scenario-sized load (the surge's region at `rate`, a follower at a third of it)."""
    c0, t0 = children_cpu_s(), time.monotonic()
    with LoadRunner(out, endpoints=endpoints, shape="constant", surge_region="us-east-1", surge_rate=rate,
                    follower_rate=rate / 3, hold_s=seconds, request_timeout_s=5, standalone=standalone) as load:
        processes = 1 + len(load.workers)
        load.wait()
    # leaving the with block joined the reaper: every Locust process has exited and been reaped
    wall, cpu = time.monotonic() - t0, children_cpu_s() - c0
    st = load.stats()
    return {"standalone": standalone, "processes": processes, "cpu_s": round(cpu, 3), "wall_s": round(wall, 2),
            "requests": st["requests"], "failures": st["failures"], "history_entries": len(load.history())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rate", type=float, default=40.0, help="the surge region's requests/s (a scenario's order)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    runs: list[dict] = []
    with stub_endpoints() as endpoints, tempfile.TemporaryDirectory(prefix="bench-locust-processes-") as tmp:
        for i in range(args.repeat):
            for standalone in (True, False):
                r = one_run(Path(tmp) / f"run{i}-{standalone}", endpoints, args.rate, args.seconds, standalone)
                runs.append(r)
                print(f"{'standalone' if standalone else 'master+worker':<14} {r['processes']} process(es)  "
                      f"CPU {r['cpu_s']:.2f} s  wall {r['wall_s']:.2f} s  {r['requests']} requests "
                      f"({r['failures']} failed)", flush=True)

    def median(standalone: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["standalone"] is standalone)

    alone, pair = median(True, "cpu_s"), median(False, "cpu_s")
    result = {
        "what": f"one local load run ({args.rate:g}/s at the surge region + {args.rate / 3:g}/s follower, "
                f"{args.seconds:g} s, history recorded) against a loopback stub: the CPU of every Locust "
                "process, start to exit",
        "statistic": "median of --repeat runs per configuration, alternating",
        "standalone_cpu_s": alone, "master_and_worker_cpu_s": pair,
        "cpu_ratio": round(alone / pair, 3), "cpu_saved_s": round(pair - alone, 3),
        "standalone_wall_s": median(True, "wall_s"), "master_and_worker_wall_s": median(False, "wall_s"),
        "requests": {"standalone": [r["requests"] for r in runs if r["standalone"]],
                     "master_and_worker": [r["requests"] for r in runs if not r["standalone"]]},
        "runs": runs,
    }
    print(f"standalone {alone:.2f} CPU s, master+worker {pair:.2f} CPU s: ratio {alone / pair:.2f}, "
          f"{pair - alone:.2f} s saved a run")
    if not args.no_write:
        record("locust_processes", result)


if __name__ == "__main__":
    main()
