"""Bring your own failover: teams' functions and Route 53 patterns, rehearsed unchanged.

Each case runs the real main job, `gameday run -k <scenario>`, as a subprocess with its own local
environment and a gameday.toml as a team would write it (tests/test_mutations.py's style), and
requires PASS for the correct setup and FAIL, naming the check and quoting the evidence, for
the broken one:

- sut/examples/env_only_handler.py: configured only by environment variables (placeholders), its
  boto3 client made at import, errors returned as {"statusCode": 500}; broken: a variable left out
  of the config (the failure must quote the handler's own log line);
- sut/examples/weighted_handler.py: shifts weighted records; broken: weights written back unchanged
  (tests/byo/broken_handlers.py), the weights shifted in two calls (an intermediate answer), and a
  wrong SetIdentifier in the config;
- failover routing with Route 53 health checks and no function: the region black-hole must fail
  over (and the surge scenario is skipped with its reason); broken: TCP health checks, which a
  hung load balancer still passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import VERDICT_LOAD

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "sut" / "examples"
pytestmark = [pytest.mark.needs_env, pytest.mark.slow]
XDIST_SPREAD = True   # each test is its own `gameday run`: pytest-xdist may run them apart (tests/scheduling.py)

ENV_ONLY = f"""
[failover]
handler = "{EXAMPLES / 'env_only_handler.py'}:handler"
timeout_s = 5

[failover.environment]
HOSTED_ZONE_ID = "{{hosted_zone_id}}"
RECORD_NAME = "{{record_name}}"
RECORD_TYPE = "{{record_type}}"
RECORD_TTL = "{{record_ttl}}"
PRIMARY_REGION = "us-east-1"
PRIMARY_ADDRESS = "{{lb_address:us-east-1}}"
SECONDARY_REGION = "us-west-2"
SECONDARY_ADDRESS = "{{lb_address:us-west-2}}"
"""

WEIGHTED = f"""
[route53]
routing = "weighted"
set_identifiers = {{"us-east-1" = "east", "us-west-2" = "west"}}

[failover]
handler = "weighted_handler:handler"
code_dir = "{EXAMPLES}"
reserved_concurrency = 1

[failover.environment]
HOSTED_ZONE_ID = "{{hosted_zone_id}}"
RECORD_NAME = "{{record_name}}"
RECORD_TTL = "{{record_ttl}}"
PRIMARY_REGION = "us-east-1"
PRIMARY_SET_ID = "{{set_identifier:us-east-1}}"
PRIMARY_ADDRESS = "{{lb_address:us-east-1}}"
SECONDARY_REGION = "us-west-2"
SECONDARY_SET_ID = "{{set_identifier:us-west-2}}"
SECONDARY_ADDRESS = "{{lb_address:us-west-2}}"
"""

FAILOVER_ROUTING = """
[route53]
routing = "failover"

[failover]
failback = "automatic"
"""


def run_suite(tmp_path: Path, config: str, k: str, *args: str) -> tuple[int, dict[str, dict], str]:
    run_dir = tmp_path / "run"
    cfg = tmp_path / "gameday.toml"
    cfg.write_text(config + VERDICT_LOAD)   # a fifth of the seed's rate, 2 s periods: see tests/support.py
    argv = [sys.executable, "-m", "gameday.cli", "run", "-k", k, "--run-dir", str(run_dir), "--config", str(cfg), *args]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=400)
    results = {p.parent.name: json.loads(p.read_text()) for p in (run_dir / "scenarios").glob("*/result.json")}
    assert results, f"no result.json; gameday run said:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.returncode, results, proc.stdout + proc.stderr


def failing_checks(result: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in result["checks"] if c["valid"] is False}


def assert_passed(rc: int, result: dict, out: str) -> None:
    assert rc == 0 and result["outcome"] == "passed", f"expected PASS:\n{failing_checks(result)}\n{out[-4000:]}"
    assert failing_checks(result) == {}
    assert result["metrics"]["failover_s"] is not None


def assert_caught(rc: int, result: dict, out: str, check: str, *says: str) -> str:
    assert rc != 0, f"the suite passed a broken failover:\n{out[-3000:]}"
    assert result["outcome"] == "failed", result
    bad = failing_checks(result)
    assert check in bad, f"expected check {check} to catch it; failing checks: {bad}"
    for text in says:
        assert text in bad[check], f"{text!r} not in the {check} failure:\n{bad[check]}"
    return bad[check]


# -- a handler configured only by environment variables, client at import ------------------------------

def test_env_only_handler_passes_the_surge(tmp_path):
    rc, results, out = run_suite(tmp_path, ENV_ONLY, "surge_fails_over")
    assert_passed(rc, results["surge_fails_over"], out)


def test_env_only_handler_missing_variable_fails_with_its_own_log_line(tmp_path):
    config = ENV_ONLY.replace('HOSTED_ZONE_ID = "{hosted_zone_id}"\n', "")
    rc, results, out = run_suite(tmp_path, config, "surge_fails_over")
    # Lambda counted the invocation as a success (it returned); only the effect shows the failure
    detail = assert_caught(rc, results["surge_fails_over"], out, "dns_failover",
                           "missing environment variable(s): HOSTED_ZONE_ID", '"statusCode": 500', "error payload")
    assert "[ERROR]" in detail  # the handler's logging line, in Lambda's log format


# -- weighted records ------------------------------------------------------------------------------------

def test_weighted_handler_passes_the_surge(tmp_path):
    rc, results, out = run_suite(tmp_path, WEIGHTED, "surge_fails_over")
    assert_passed(rc, results["surge_fails_over"], out)


def test_weighted_handler_that_leaves_weights_unchanged_fails(tmp_path):
    config = WEIGHTED.replace('handler = "weighted_handler:handler"', 'handler = "tests.byo.broken_handlers:weights_unchanged"') \
        .replace(f'code_dir = "{EXAMPLES}"\n', "")
    rc, results, out = run_suite(tmp_path, config, "surge_fails_over")
    assert_caught(rc, results["surge_fails_over"], out, "dns_failover", "us-east-1", "failover done: weights")


def test_weighted_handler_with_a_wrong_set_identifier_fails(tmp_path):
    config = WEIGHTED.replace('PRIMARY_SET_ID = "{set_identifier:us-east-1}"', 'PRIMARY_SET_ID = "us-east-1"')
    rc, results, out = run_suite(tmp_path, config, "surge_fails_over")
    # the UPSERT created a new weighted record "us-east-1" of weight 0 and left "east" at 100:
    # Route 53 answers both regions
    assert_caught(rc, results["surge_fails_over"], out, "dns_failover", "weights now us-east-1=0, west=100")


def test_weighted_handler_that_shifts_weights_in_two_calls_fails_on_the_intermediate_answer(tmp_path):
    """The weighted move as two ChangeResourceRecordSets calls (primary weight 0, then secondary weight
    100): Route 53 applies each batch on its own, so between the calls every weight is 0 and both
    regions are answered. The DNS server publishes each batch as its own state; dns_moved_once names
    that answer and how long it lasted (dns_failover itself passes: the answer ends on us-west-2)."""
    from gameday.assertions.dns_timeline import dns_states
    from gameday.runlog import read_events

    config = WEIGHTED.replace('handler = "weighted_handler:handler"',
                              'handler = "tests.byo.broken_handlers:weights_in_two_calls"') \
        .replace(f'code_dir = "{EXAMPLES}"\n', "")
    rc, results, out = run_suite(tmp_path, config, "surge_fails_over")
    assert_caught(rc, results["surge_fails_over"], out, "dns_moved_once",
                  "[127.0.1.1, 127.0.2.1] (us-east-1, us-west-2) for", "one ChangeBatch")
    events = read_events(tmp_path / "run" / "env" / "events.jsonl").records
    both = [e for e in events if e["kind"] == "dns_change" and e["new"] == ["127.0.1.1", "127.0.2.1"]]
    assert both and both[0]["source"] == "change" and both[0]["comment"] == "failover 1/2: primary weight 0"
    states = dns_states(events, name="api.gameday.test")
    lasted = next(s.lasted_s() for s in states if s.since == both[0]["time"])
    print(f"intermediate state (both regions) lasted {lasted * 1000:.1f} ms")


# -- failover routing with health checks, no function -----------------------------------------------------

def test_failover_routing_fails_over_on_health_checks_without_a_function(tmp_path):
    rc, results, out = run_suite(tmp_path, FAILOVER_ROUTING, "surge_fails_over or region_blackhole")
    assert_passed(rc, results["region_blackhole_fails_over"], out)
    checks = {c["name"] for c in results["region_blackhole_fails_over"]["checks"]}
    assert "health_check_fails" in checks and "lambda_invoked" not in checks
    surge = results["surge_fails_over"]
    assert surge["outcome"] == "skipped" and "health checks do not fail over on load" in (surge["message"] or "")


def test_failover_routing_with_tcp_health_checks_misses_a_hung_region(tmp_path):
    rc, results, out = run_suite(tmp_path, FAILOVER_ROUTING.replace('routing = "failover"',
                                                                    'routing = "failover"\nhealth_check_type = "TCP"'),
                                 "region_blackhole")
    assert_caught(rc, results["region_blackhole_fails_over"], out, "health_check_fails",
                  "still healthy", "TCP connection established")
