"""Issue 20's proof: the whole built-in suite on `--env aws`, against the stand-in account
(`gameday up --aws-config`), judged from AWS's own signals; the same run with broken failover
functions FAILS naming the check; the harness's Route 53 calls stay within their budget.

Each case is what a user runs, as subprocesses: `gameday up -c light.toml --aws-config X` (the
account, at tests/support.py's LIGHT_LOAD), then `gameday run --env aws -c X`. Nothing of the
local environment is read by the run: it sees only the AWS APIs at X's endpoint and the DNS
server X names (the scenario bands come from DescribeAlarmHistory, the function's CloudWatch
Logs and the zone's DNS answers: environments/aws/signals*.py).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gameday import procs
from gameday.assertions.eventually import eventually
from tests.support import LIGHT_LOAD, VERDICT_LOAD

REPO = Path(__file__).resolve().parents[1]
START_DEADLINE_S = 90.0     # environments/local's START_TIMEOUT_S: moto, provisioning, tasks
pytestmark = [pytest.mark.needs_env, pytest.mark.slow]
XDIST_SPREAD = True         # each test is its own account and run (tests/scheduling.py)
# what AWS cannot do to a real account, and what the stand-in account was not given (FIS API faults
# fail EC2 calls only): the scenarios that need them skip, saying so
EXPECTED_SKIPS = {"control_plane_region_lost": "cannot block control plane",
                  "route53_throttled_lambda_retries": "cannot api fault",
                  "healthy_region_alarm_noise": "cannot fail responses"}
# where each timeline kind comes from on --env aws (signals.py's sources)
AWS_SOURCES = {"alarm": "cloudwatch:DescribeAlarmHistory", "lambda_invocation": "logs:FilterLogEvents",
               "dns_change": "dns:"}


@contextlib.contextmanager
def stand_in_account(tmp: Path, *up_args: str, config: str = "", load: str = LIGHT_LOAD):
    """`gameday up --aws-config`: yields the written config's path while the account runs. `load`:
    tests/support.py's LIGHT_LOAD (the whole suite) or VERDICT_LOAD (one verdict: its alarms' 2 s
    Period is what the aws environment reads from the stack)."""
    local_cfg, aws_cfg, state, log = tmp / "local.toml", tmp / "aws.toml", tmp / "state.json", tmp / "up.log"
    local_cfg.write_text(load + config)
    proc = procs.spawn([sys.executable, "-m", "gameday.cli", "up", "-c", str(local_cfg), "--run-dir", str(tmp / "up"),
                        "--state-file", str(state), "--aws-config", str(aws_cfg), *up_args],
                       log_path=log, cwd=REPO, env={"PYTHONUNBUFFERED": "1"})   # REPO: tests.mutants imports
    try:
        def written():
            assert proc.poll() is None, f"gameday up exited with {proc.returncode}:\n{log.read_text()[-2000:]}"
            assert aws_cfg.exists(), "no aws config yet"

        eventually(written, deadline_s=START_DEADLINE_S, what="gameday up --aws-config", interval_s=0.1)
        yield aws_cfg
    finally:
        procs.terminate(proc, grace_s=20)


def run_on_aws(tmp: Path, aws_cfg: Path, *args: str) -> tuple[int, Path, str]:
    run_dir = tmp / "run"
    proc = subprocess.run([sys.executable, "-m", "gameday.cli", "run", "--env", "aws", "-c", str(aws_cfg),
                           "--run-dir", str(run_dir), *args], cwd=tmp, capture_output=True, text=True, timeout=900)
    return proc.returncode, run_dir, proc.stdout + proc.stderr


def results(run_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (run_dir / "scenarios").glob("*/result.json")}


def test_the_whole_suite_passes_on_the_stand_in_account(tmp_path):
    with stand_in_account(tmp_path) as aws_cfg:
        rc, run_dir, out = run_on_aws(tmp_path, aws_cfg)
    res = results(run_dir)
    outcomes = {n: r["outcome"] for n, r in res.items()}
    assert rc == 0, f"gameday run --env aws failed: {outcomes}\n{out[-4000:]}"
    assert len(res) == 10, sorted(res)
    for name, r in res.items():
        if name in EXPECTED_SKIPS:
            assert r["outcome"] == "skipped" and EXPECTED_SKIPS[name] in (r["message"] or ""), (name, r["message"])
        else:
            assert r["outcome"] == "passed", (name, r["outcome"], r["message"])
    # the report's bands come from AWS's APIs: each kind carries the API it was read from
    timeline = [json.loads(line) for line in (run_dir / "timeline.jsonl").read_text().splitlines()]
    for kind, api in AWS_SOURCES.items():
        got = {e.get("event_source") for e in timeline if e["kind"] == kind}
        assert got and all(str(s).startswith(api) for s in got), (kind, got)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env"] == "aws" and summary["passed"] is True
    surge = next(s for s in summary["scenarios"] if s["name"] == "surge_fails_over")
    assert surge["metrics"]["detection_s"] and surge["metrics"]["failover_s"], surge
    suites = ET.parse(run_dir / "junit.xml").getroot()
    assert sum(int(s.get("skipped", 0)) for s in suites.iter("testsuite")) == len(EXPECTED_SKIPS)
    html = (run_dir / "report.html").read_text()
    assert "cloudwatch:DescribeAlarmHistory" in html and "logs:FilterLogEvents" in html
    # the harness's Route 53 calls over the whole suite stayed within aws.route53_calls_per_s
    calls = json.loads((run_dir / "env" / "api_calls.json").read_text())
    budget = calls["route53_budget"]
    assert calls["route53"]["busiest_second"] <= budget["rate_per_s"] + budget["burst"], calls["route53"]
    assert calls["route53"]["per_min"] <= 60 * budget["rate_per_s"], calls["route53"]


@pytest.mark.parametrize("handler, caught_by, says", [
    ("does_nothing", "dns_failover", "hold no line of its own"),  # it runs (its CloudWatch Logs say so); DNS stays
    ("points_at_failing_region", "dns_failover", "us-east-1"),  # the record rewritten to the wrong region
    ("too_slow", "lambda_invoked", "Timedout"),                 # killed at its timeout, every retry
])
def test_a_broken_failover_function_fails_the_suite_on_aws(tmp_path, handler, caught_by, says):
    with stand_in_account(tmp_path, "--failover-handler", f"tests.mutants:{handler}", load=VERDICT_LOAD) as aws_cfg:
        rc, run_dir, out = run_on_aws(tmp_path, aws_cfg, "-k", "surge_fails_over")
    r = results(run_dir)["surge_fails_over"]
    assert rc != 0 and r["outcome"] == "failed", f"passed on --env aws with {handler}:\n{out[-3000:]}"
    bad = {c["name"]: c["detail"] for c in r["checks"] if c["valid"] is False}
    assert caught_by in bad and says in bad[caught_by], bad


def _variant(aws_cfg: Path, name: str, section: str, **over) -> Path:
    """The written config with keys of one [aws...] section changed (tomllib + the account's writer)."""
    import tomllib

    from gameday.environments.local.aws_account import to_toml

    data = tomllib.loads(aws_cfg.read_text())
    node = data
    for part in section.split("."):
        node = node.setdefault(part, {})
    node.update(over)
    p = aws_cfg.with_name(f"{name}.toml")
    p.write_text(to_toml(data))
    return p


def test_failover_routing_and_a_guardrail_cap_on_the_stand_in_account(tmp_path):
    """route53.routing = failover (no function: Route 53's health checks move the answer) runs on
    --env aws, judged from GetHealthCheckStatus; the same stack with guardrails.max_rps under the
    scenario's load skips it naming the cap, and never errors."""
    routing = "[route53]\nrouting = \"failover\"\n[failover]\nfailback = \"automatic\"\n"
    with stand_in_account(tmp_path, config=routing, load=VERDICT_LOAD) as aws_cfg:
        rc, run_dir, out = run_on_aws(tmp_path, aws_cfg, "-k", "region_blackhole_fails_over")
        capped = _variant(aws_cfg, "capped", "aws.guardrails", max_rps=5.0)
        (tmp_path / "capped").mkdir()
        rc2, run_dir2, out2 = run_on_aws(tmp_path / "capped", capped, "-k", "region_blackhole_fails_over")
    r = results(run_dir)["region_blackhole_fails_over"]
    assert rc == 0 and r["outcome"] == "passed", f"{r['outcome']}: {r['message']}\n{out[-3000:]}"
    health = [json.loads(line) for line in (run_dir / "env" / "events.jsonl").read_text().splitlines()
              if '"route53_health"' in line]
    assert any(e["healthy"] is False and e["source"] == "route53:GetHealthCheckStatus" for e in health), health
    r2 = results(run_dir2)["region_blackhole_fails_over"]
    assert rc2 == 0 and r2["outcome"] == "skipped", f"{r2['outcome']}: {r2['message']}\n{out2[-3000:]}"
    assert "guardrail max_rps" in r2["message"] and "the cap is 5" in r2["message"], r2["message"]


def test_ecs_task_events_come_from_describe_tasks(tmp_path):
    """The `ecs` source (environments/aws/signals_ecs.py): a task stopped with StopTask is told as
    task_stopped with ECS's stoppedAt and reason, its replacement as task_running; the tasks that
    ran before the environment started are not told (twin: they exist and are RUNNING)."""
    import time

    import boto3

    from gameday.assertions.eventually import eventually as wait
    from gameday.aws import LOCAL_CREDENTIALS
    from gameday.config import load_config
    from gameday.environments.aws import AwsEnvironment

    with stand_in_account(tmp_path) as aws_cfg:
        env = AwsEnvironment(load_config(aws_cfg), tmp_path / "run").start(preflight=False).follow_signals()
        try:
            t = env.targets["us-east-1"]
            ecs = boto3.client("ecs", region_name="us-east-1", endpoint_url=env.config.aws.endpoint_url,
                               **LOCAL_CREDENTIALS)
            before = ecs.list_tasks(cluster=t.cluster, desiredStatus="RUNNING")["taskArns"]
            assert len(before) >= 2
            victim, stopped_wall = before[0], time.time()
            ecs.stop_task(cluster=t.cluster, task=victim, reason="gameday test: stop one")

            def told():
                evs = [e for e in env.events(kind="ecs") if e.get("region") == "us-east-1"]
                stop = [e for e in evs if e["action"] == "task_stopped" and e["task"] == victim.rsplit("/", 1)[-1]]
                assert stop and stop[0]["reason"] == "gameday test: stop one", evs
                assert stop[0]["source"] == "ecs:DescribeTasks" and stop[0]["time"] >= stopped_wall - 1.0
                ran = [e for e in evs if e["action"] == "task_running"]
                assert ran and all(e["task"] not in {a.rsplit("/", 1)[-1] for a in before} for e in ran), evs
                return evs

            wait(told, deadline_s=env.profile.task_provisioning_s + 4 * env.profile.period_s,
                 what="ecs events from DescribeTasks", interval_s=0.2)
        finally:
            env.stop()
