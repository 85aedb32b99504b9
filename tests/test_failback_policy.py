"""The reference failover function passes every failover scenario with `failover.failback =
"automatic"` too, failing back under the failback rule (assertions/failback.py): at the home
region's OK, once all its alarms are OK. tests/test_main_job.py covers the manual policy (the seed);
tests/test_mutations.py's `fails_back_while_unhealthy` is the failback the rule must catch.

Each case runs the real main job, `gameday run -k <scenarios>`, as a subprocess with its own local
environment at tests/support.py's VERDICT_LOAD (tests/test_mutations.py's style); the scenarios are
split in two runs so that pytest-xdist can run them apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import VERDICT_LOAD

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.needs_env, pytest.mark.slow]
XDIST_SPREAD = True   # each test is its own `gameday run`: pytest-xdist may run them apart (tests/scheduling.py)

AUTOMATIC = """
[failover]
failback = "automatic"
"""


def run_suite(tmp_path: Path, k: str) -> tuple[int, dict[str, dict], str]:
    run_dir = tmp_path / "run"
    cfg = tmp_path / "gameday.toml"
    cfg.write_text(AUTOMATIC + VERDICT_LOAD)   # a fifth of the seed's rate, 2 s periods: see tests/support.py
    argv = [sys.executable, "-m", "gameday.cli", "run", "-k", k, "--run-dir", str(run_dir), "--config", str(cfg)]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    results = {p.parent.name: json.loads(p.read_text()) for p in (run_dir / "scenarios").glob("*/result.json")}
    assert results, f"no result.json; gameday run said:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.returncode, results, proc.stdout + proc.stderr


@pytest.mark.parametrize("scenarios", [
    # the surge ends, its request-count alarm goes OK, and the function fails back
    ("surge_fails_over", "route53_throttled_lambda_retries", "replication_paused_during_failover"),
    # the fault is rolled back (or ECS replaces the tasks), the health alarm goes OK, the function fails back
    ("region_blackhole_fails_over", "all_tasks_stopped_fails_over", "failback_after_heal"),
], ids=["surges", "faults"])
def test_reference_function_fails_back_by_the_rule(tmp_path, scenarios):
    rc, results, out = run_suite(tmp_path, " or ".join(scenarios))
    assert set(results) == set(scenarios), f"ran {sorted(results)}:\n{out[-3000:]}"
    for name, result in results.items():
        bad = {c["name"]: c["detail"] for c in result["checks"] if c["valid"] is False}
        assert result["outcome"] == "passed" and not bad, f"{name} failed with automatic failback: {bad}\n{out[-3000:]}"
        rule = [c for c in result["checks"] if c["name"] == "failback_rule"]
        assert rule, f"{name} recorded no failback_rule check: {[c['name'] for c in result['checks']]}"
        # the failback really happened inside the evidence window: the rule judged a move, not silence
        assert "DNS answered us-east-1 again" in rule[-1]["detail"], (name, rule[-1]["detail"])
    assert rc == 0, out[-3000:]
