"""Mutation tests: the resilience suite must FAIL on a broken system, naming the check that caught
it. The reference system's PASS, without which a harness that always fails would pass these too, is
tests/test_main_job.py (the whole built-in suite on the same local environment).

Each case runs the real main job, `gameday run -k surge_fails_over`, as a subprocess with its own
local environment, exactly as a user would with `--failover-handler`, at tests/support.py's
VERDICT_LOAD (a fifth of the seed's rate, 2 s periods: the verdicts depend on neither).
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


def run_suite(tmp_path: Path, *args: str, config: str | None = None) -> tuple[int, dict, str]:
    run_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "gameday.cli", "run", "-k", "surge_fails_over", "--run-dir", str(run_dir), *args]
    cfg = tmp_path / "gameday.toml"
    cfg.write_text(VERDICT_LOAD + (config or ""))   # a fifth of the seed's rate, 2 s periods: see tests/support.py
    argv += ["--config", str(cfg)]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    result_file = run_dir / "scenarios" / "surge_fails_over" / "result.json"
    assert result_file.exists(), f"no result.json; gameday run said:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.returncode, json.loads(result_file.read_text()), proc.stdout + proc.stderr


def failing_checks(result: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in result["checks"] if c["valid"] is False}


@pytest.mark.parametrize("handler, caught_by, says", [
    ("does_nothing", "dns_failover", "us-east-1"),                    # Lambda ok, DNS never moves
    ("points_at_failing_region", "dns_failover", "us-east-1"),        # record rewritten to the wrong region
    ("deletes_record", "dns_failover", ""),                           # name stops resolving
    ("too_slow", "lambda_invoked", "Timedout"),                       # killed at its timeout, every retry
    ("raises", "lambda_invoked", "GAMEDAY_TARGET_REGION"),            # the handler's own error is quoted
    ("fails_back_while_unhealthy", "failback_rule", "request-count alarm was still ALARM"),  # cooldown, not health
])
def test_broken_failover_fails_the_suite(tmp_path, handler, caught_by, says):
    rc, result, out = run_suite(tmp_path, "--failover-handler", f"tests.mutants:{handler}")
    assert rc != 0, f"suite passed with the broken handler {handler}:\n{out[-3000:]}"
    assert result["outcome"] == "failed"
    bad = failing_checks(result)
    assert caught_by in bad, f"expected check {caught_by} to catch {handler}; failing checks: {bad}"
    assert says in bad[caught_by], bad[caught_by]
    assert caught_by in (result["message"] or "") or caught_by in out


def test_replication_that_drops_writes_fails_the_suite(tmp_path):
    rc, result, out = run_suite(tmp_path, config="[dynamodb]\nmutation_drop_fraction = 0.3\n")
    assert rc != 0, f"suite passed although replication dropped 30% of writes:\n{out[-3000:]}"
    bad = failing_checks(result)
    assert {"lost_acked_writes", "divergent_keys", "replicas_converge"} <= set(bad), bad
    assert result["metrics"]["lost_acked_writes"] > 0
