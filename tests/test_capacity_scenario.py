"""surviving_region_absorbs_load (scenarios/test_capacity.py) decides on capacity: the reference
sizing with target tracking passes it, and a region of one task without scaling FAILS it, naming
the error budget and the p99 latency. Each case is the real main job, `gameday run -k
surviving_region_absorbs_load`, as a subprocess with its own local environment, at tests/support.py's
VERDICT_LOAD.

The capacity is set relative to the test config's alarm threshold, so the verdicts mean the same
at any rate: the scenario's load is 80% of the request-count threshold (40 per 2 s here: 16
requests/s), a task serves 10 requests/s, so two tasks carry it at 80% of their capacity, target
tracking at 5 requests/s per task scales the surviving region to its max of 4, and one task
(desired = min = max = 1) is 60% short.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import VERDICT_LOAD

REPO = Path(__file__).resolve().parents[1]
SCENARIO = "surviving_region_absorbs_load"
pytestmark = [pytest.mark.needs_env, pytest.mark.slow]
XDIST_SPREAD = True   # each test is its own `gameday run`: pytest-xdist may run them apart (tests/scheduling.py)

CAPACITY = """
[service]
task_capacity_rps = 10
"""
REFERENCE = CAPACITY + """desired_tasks = 2
min_tasks = 2
max_tasks = 4
scale_out_requests_per_task_s = 5
"""
TOO_FEW = CAPACITY + """desired_tasks = 1
min_tasks = 1
max_tasks = 1
scale_out_requests_per_task_s = 0
"""


def run_scenario(tmp_path: Path, config: str) -> tuple[int, dict, str, Path]:
    run_dir = tmp_path / "run"
    cfg = tmp_path / "gameday.toml"
    cfg.write_text(VERDICT_LOAD + config)
    argv = [sys.executable, "-m", "gameday.cli", "run", "-k", SCENARIO, "--run-dir", str(run_dir), "--config", str(cfg)]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    result_file = run_dir / "scenarios" / SCENARIO / "result.json"
    assert result_file.exists(), f"no result.json; gameday run said:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.returncode, json.loads(result_file.read_text()), proc.stdout + proc.stderr, run_dir


def checks(result: dict) -> dict[str, dict]:
    return {c["name"]: c for c in result["checks"]}


def test_the_reference_sizing_scales_out_and_holds(tmp_path):
    rc, result, out, run_dir = run_scenario(tmp_path, REFERENCE)
    assert rc == 0 and result["outcome"] == "passed", out[-4000:]
    got = checks(result)
    for name in ("scaled_out", "surviving_region_serves", "surviving_region_error_budget", "latency_p99"):
        assert got[name]["valid"] is True, got[name]
    m = result["metrics"]
    assert m["tasks_before"] == 2 and m["tasks_after"] == 4, m
    assert m["p99_latency_s"] <= result["budgets"]["p99_latency_s"]
    # the scale-out is on the timeline, and the report draws the tasks over time
    scaled = [json.loads(line) for line in (run_dir / "timeline.jsonl").read_text().splitlines()
              if '"scaled"' in line]
    assert any(e.get("region") == "us-west-2" and e["new"] > e["old"] for e in scaled), scaled
    assert "ECS tasks" in (run_dir / "report.html").read_text()


def test_too_few_tasks_without_scaling_fails(tmp_path):
    rc, result, out, _ = run_scenario(tmp_path, TOO_FEW)
    assert rc != 0, f"one task of 10 requests/s carried 16 requests/s:\n{out[-3000:]}"
    assert result["outcome"] == "failed"
    bad = {name: c["detail"] for name, c in checks(result).items() if c["valid"] is False}
    assert {"surviving_region_error_budget", "latency_p99"} <= set(bad), bad
    assert "OVER the 1s budget" in bad["latency_p99"] and "us-west-2" in bad["latency_p99"]
    assert "scaled_out" not in checks(result)   # no target tracking configured: nothing to wait for
