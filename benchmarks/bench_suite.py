"""The whole resilience suite, timed: `gameday run` wall time (goal < 3 min on 2 cores) and each
scenario's measured failover_s next to the profile's floor (evaluation periods x period + TTL),
from the run's own summary.json.

With `--env docker` (or `--env both`, the default when a Docker daemon answers) the suite also
runs on the docker environment right after the local one, in the same invocation, and the
ratio docker / local of wall time and of each scenario's failover_s is recorded: what running
the tasks as containers costs, against the local environment as the baseline.

Run: python benchmarks/bench_suite.py [--env local|docker|both]. Writes benchmarks/results.json
keys "suite" (local) and "suite_docker" (docker, with the ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import record  # noqa: E402

GOAL_WALL_S = 180


def run_suite(env: str) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"gameday-suite-{env}-")) / "run"
    print(f"[bench_suite] gameday run --env {env} (run dir {run_dir}) ...", flush=True)
    t0 = time.monotonic()
    rc = subprocess.call([sys.executable, "-m", "gameday.cli", "run", "--env", env, "--run-dir", str(run_dir)],
                         cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    summary_file = run_dir / "summary.json"
    if not summary_file.exists():
        sys.exit(f"bench_suite: the {env} suite wrote no summary.json (exit {rc}); see {run_dir}")
    summary = json.loads(summary_file.read_text())
    floor = summary["profile"]["floor_s"]
    scenarios = {s["name"]: {"outcome": s["outcome"], "detection_s": s["metrics"]["detection_s"],
                             "failover_s": s["metrics"]["failover_s"], "rto_s": s["metrics"]["rto_s"],
                             "failover_minus_floor_s": None if s["metrics"]["failover_s"] is None
                             else round(s["metrics"]["failover_s"] - floor, 3)}
                 for s in summary["scenarios"]}
    for name, took in scenario_wall_s(run_dir).items():
        if name in scenarios:
            scenarios[name]["wall_s"] = took
    load1 = os.getloadavg()[0]
    print(f"[bench_suite] {env}: {wall:.0f}s, exit {rc}, load {load1:.2f}", flush=True)
    return {"env": env, "wall_s": round(wall, 1), "goal_wall_s": GOAL_WALL_S, "exit_code": rc,
            "passed": summary["passed"], "floor_s": floor, "scenarios": scenarios, "load_average_1m_after": load1,
            "note": "failover_s counts from the surge's first request or the fault's injection; a "
                    "health-alarm failover can beat the surge floor (Minimum of HealthyHostCount "
                    "breaches within the period in progress)"}


def scenario_wall_s(run_dir: Path) -> dict[str, float]:
    """Each scenario's wall time as pytest measured it (the run's junit.xml: set-up with the
    baseline restore, the body, teardown), by scenario name."""
    import xml.etree.ElementTree as ET

    junit = run_dir / "junit.xml"
    if not junit.exists():
        return {}
    return {c.get("name", "").removeprefix("test_"): round(float(c.get("time", 0)), 1)
            for c in ET.parse(junit).iter("testcase")}


def ratios(docker: dict, local: dict) -> dict:
    out = {"wall_s": round(docker["wall_s"] / local["wall_s"], 3)}
    for name, d in docker["scenarios"].items():
        base = local["scenarios"].get(name, {}).get("failover_s")
        if d["failover_s"] is not None and base:
            out[f"{name}.failover_s"] = round(d["failover_s"] / base, 3)
    return out


def docker_answers() -> bool:
    try:
        return subprocess.call(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=20) == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", choices=["local", "docker", "both"], default=None,
                    help="which environment(s) to time (default: both if a Docker daemon answers, else local)")
    wanted = ap.parse_args().env
    docker_up = docker_answers()
    env = wanted or ("both" if docker_up else "local")
    if env in ("docker", "both") and not docker_up:
        sys.exit("bench_suite: Docker is not running: start it with `dockerd &` (as root) or `systemctl start docker`")
    # the local suite is the baseline: always run it, in this invocation, before the docker one
    local = run_suite("local")
    print(json.dumps(record("suite", local), indent=2))
    if env in ("docker", "both"):
        docker = run_suite("docker")
        docker["ratio_over_local"] = ratios(docker, local)
        docker["baseline"] = "the local suite of this same invocation (benchmarks/results.json key suite)"
        print(json.dumps(record("suite_docker", docker), indent=2))


if __name__ == "__main__":
    main()
