"""The README's main job, `gameday run`, end to end on the embedded local environment: the whole
built-in suite, as a user runs it (CI's one real run of the whole suite on `--env local`;
tests/test_docker_env.py has the docker one), at tests/support.py's LIGHT_LOAD like the other
scenario runs of CI: at the seed's rate, beside the other workers' tests, 2 cores timed out a few
percent of the surge's requests (an absorbed-error budget of 5% missed by 0.5%); the seed's rate
is benchmarks/bench_suite.py's, run alone. It is also the mutation tests' reference, at the same
rate: a harness that fails everything would fail here, while tests/test_mutations.py proves each
broken handler fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import LIGHT_LOAD

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.needs_env, pytest.mark.slow, pytest.mark.whole_suite]

BUILTIN = {"surge_fails_over", "region_blackhole_fails_over", "all_tasks_stopped_fails_over",
           "route53_throttled_lambda_retries", "task_loss_is_absorbed", "replication_paused_during_failover",
           "failback_after_heal", "control_plane_region_lost", "healthy_region_alarm_noise",
           "surviving_region_absorbs_load"}


# the whole suite (10 scenarios, ~280 s alone at the seed's rate) beside the other workers' tests:
# pytest-timeout's default 300 s is a test's budget, not this one's
SUITE_TIMEOUT_S = 700


@pytest.mark.timeout(SUITE_TIMEOUT_S + 60)
def test_the_whole_builtin_suite_passes_on_the_reference_system(tmp_path, whole_suite_turn):
    # whole_suite_turn: never beside the docker suite (tests/scheduling.py)
    run_dir = tmp_path / "run"
    config = tmp_path / "gameday.toml"
    config.write_text(LIGHT_LOAD)
    proc = subprocess.run([sys.executable, "-m", "gameday.cli", "run", "--quiet", "-c", str(config),
                           "--run-dir", str(run_dir)], cwd=REPO, capture_output=True, text=True,
                          timeout=SUITE_TIMEOUT_S)
    out = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert (run_dir / "summary.json").exists(), f"no summary.json; gameday run said:\n{out}"
    summary = json.loads((run_dir / "summary.json").read_text())
    outcomes = {s["name"]: s["outcome"] for s in summary["scenarios"]}
    assert set(outcomes) == BUILTIN, f"the suite ran {sorted(outcomes)}"
    assert set(outcomes.values()) == {"passed"}, f"{outcomes}\n{out}"
    assert proc.returncode == 0 and summary["passed"] is True, out
    assert (run_dir / "report.html").is_file()
    surge = next(s for s in summary["scenarios"] if s["name"] == "surge_fails_over")["metrics"]
    assert surge["failover_s"] is not None and surge["lost_acked_writes"] == 0 and surge["acked_writes"] > 0, surge
    for s in summary["scenarios"]:   # no acknowledged write lost anywhere
        assert not s["metrics"].get("lost_acked_writes"), (s["name"], s["metrics"])
    # the noise scenario judged what it is for (tests/test_noise_scenario.py runs failback "automatic")
    noise = json.loads((run_dir / "scenarios" / "healthy_region_alarm_noise" / "result.json").read_text())
    assert {"healthy_region_alarm_fires", "healthy_region_alarm_recovers", "function_reacted",
            "stays_on_healthy_region"} <= {c["name"] for c in noise["checks"]}, noise["checks"]
