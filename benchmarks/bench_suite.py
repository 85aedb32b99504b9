"""The whole local resilience suite, timed: `gameday run` wall time (goal < 3 min on 2 cores) and
each scenario's measured failover_s next to the profile's floor (evaluation periods x period +
TTL), from the run's own summary.json.

Run: python benchmarks/bench_suite.py. Writes benchmarks/results.json key "suite".
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import record  # noqa: E402


def main() -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="gameday-suite-")) / "run"
    t0 = time.monotonic()
    rc = subprocess.call([sys.executable, "-m", "gameday.cli", "run", "--run-dir", str(run_dir)], cwd=ROOT,
                         stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    summary = json.loads((run_dir / "summary.json").read_text())
    floor = summary["profile"]["floor_s"]
    scenarios = {s["name"]: {"outcome": s["outcome"], "detection_s": s["metrics"]["detection_s"],
                             "failover_s": s["metrics"]["failover_s"], "rto_s": s["metrics"]["rto_s"],
                             "failover_minus_floor_s": None if s["metrics"]["failover_s"] is None
                             else round(s["metrics"]["failover_s"] - floor, 3)}
                 for s in summary["scenarios"]}
    res = record("suite", {"wall_s": round(wall, 1), "goal_wall_s": 180, "exit_code": rc, "passed": summary["passed"],
                           "floor_s": floor, "scenarios": scenarios,
                           "note": "failover_s counts from the surge's first request or the fault's injection; a "
                                   "health-alarm failover can beat the surge floor (Minimum of HealthyHostCount "
                                   "breaches within the period in progress)"})
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
