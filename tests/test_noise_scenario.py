"""The healthy_region_alarm_noise scenario (scenarios/test_noise.py): its check on synthetic
timelines (pure, fast), then the real main job, `gameday run -k test_healthy_region_alarm_noise`,
as a subprocess with its own local environment at tests/support.py's VERDICT_LOAD: the reference
failover function passes (failback automatic here; manual, the seed's, in tests/test_main_job.py), and each broken function of
tests/mutants.py that reacts to the healthy region's alarms FAILS it, with the check
stays_on_healthy_region naming the notification it reacted to.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gameday.config import load_config
from gameday.scenarios.test_noise import (NOISE_SHARE, cause_of, noise_rate, stays_on_healthy_region,
                                          without_injected_errors)
from tests.support import VERDICT_LOAD

REPO = Path(__file__).resolve().parents[1]
XDIST_SPREAD = True   # each suite run is its own `gameday run`: pytest-xdist may run them apart (tests/scheduling.py)
SCENARIO = "healthy_region_alarm_noise"
EAST, WEST = "127.0.1.1", "127.0.2.1"
T0 = 1_800_000_000.0


# -- the check, on synthetic timelines ---------------------------------------------------------------------------

def _dns(*changes: tuple[float, list[str]]) -> list[dict]:
    return [{"kind": "dns_change", "name": "api.gameday.test", "time": T0 + t, "new": answer} for t, answer in changes]


def _invocation(start: float, alarm: str, state: str, region: str = "us-west-2", end: float | None = None) -> dict:
    return {"kind": "lambda_invocation", "time": T0 + (end if end is not None else start + 0.05),
            "start_ts": T0 + start, "end_ts": T0 + (end if end is not None else start + 0.05), "attempt": 1,
            "outcome": "ok", "region": region, "result": {"moved": 1},
            "alarm": {"AlarmName": alarm, "NewStateValue": state}}


def _check(dns: list[dict], invocations: list[dict], alarms: list[dict] = (), until: float = 60.0) -> dict:
    named = {EAST: "us-east-1", WEST: "us-west-2"}
    return stays_on_healthy_region(dns, invocations, name="api.gameday.test", healthy=[WEST], region="us-west-2",
                                   since_wall=T0 + 1.0, until_wall=T0 + until, alarms=alarms,
                                   named=lambda a: ", ".join(named.get(x, "?") for x in a))


BASE = [(0.0, [EAST]), (5.0, [WEST])]   # provisioned on us-east-1, failed over at +5 s


def test_staying_on_the_healthy_region_through_the_noise_is_valid():
    r = _check(_dns(*BASE), [_invocation(4.9, "hh-us-east-1", "ALARM", "us-east-1"),
                             _invocation(20.0, "5xx-us-west-2", "ALARM"), _invocation(26.0, "5xx-us-west-2", "OK")])
    assert r["valid"] is True and "only" in r["detail"], r


def test_a_move_back_names_the_invocation_and_the_notification_it_handled():
    alarms = [{"kind": "alarm", "alarm": "5xx-us-west-2", "new": "OK", "time": T0 + 25.9, "region": "us-west-2"}]
    r = _check(_dns(*BASE, (26.02, [EAST])), [_invocation(4.9, "hh-us-east-1", "ALARM", "us-east-1"),
                                              _invocation(20.0, "5xx-us-west-2", "ALARM"),
                                              _invocation(26.0, "5xx-us-west-2", "OK")], alarms)
    assert r["valid"] is False
    assert "5xx-us-west-2 (us-west-2) OK at" in r["detail"] and "[127.0.1.1] (us-east-1) for 34.0s" in r["detail"], r
    assert "21.0s after the failover" in r["detail"]


def test_an_intermediate_answer_after_the_failover_is_a_move_away_too():
    r = _check(_dns(*BASE, (20.01, [EAST, WEST]), (20.3, [WEST])), [_invocation(20.0, "5xx-us-west-2", "ALARM",
                                                                                 end=20.4)])
    assert r["valid"] is False and "5xx-us-west-2 (us-west-2) ALARM" in r["detail"] and "for 0.3s" in r["detail"], r


def test_no_failover_at_all_or_a_change_by_another_hand_is_invalid():
    assert _check(_dns((0.0, [EAST])), [])["valid"] is False
    r = _check(_dns(*BASE, (30.0, [EAST])), [_invocation(4.9, "hh-us-east-1", "ALARM", "us-east-1")], until=40.0)
    # the last invocation started before the change, long over: still named, as the latest before it
    assert r["valid"] is False and "hh-us-east-1" in r["detail"]
    assert "no failover-function invocation" in _check(_dns(*BASE, (30.0, [EAST])), [])["detail"]


def test_cause_prefers_the_invocation_running_at_the_change():
    early, running = _invocation(10.0, "a", "OK", end=10.1), _invocation(11.0, "b", "OK", end=12.0)
    assert cause_of(T0 + 11.5, [early, running]) is running
    assert cause_of(T0 + 9.0, [early, running]) is None


def test_only_the_faults_own_answers_are_left_out_of_the_history():
    def op(i, typ, t, status=None, served="us-west-2"):
        return [{"type": "invoke", "id": i, "process": "w1", "time": T0 + t - 0.01},
                {"type": typ, "id": i, "process": "w1", "time": T0 + t, "status": status, "served_by": served}]
    history = (op(1, "info", 10.0, 500) + op(2, "fail", 11.0, 500) + op(3, "ok", 11.5, 200)
               + op(4, "fail", 12.0, 503) + op(5, "fail", 30.0, 500) + op(6, "fail", 11.0, 500, "us-east-1"))
    kept, left_out = without_injected_errors(history, region="us-west-2", status=500, window=(T0 + 9.0, T0 + 20.0))
    assert left_out == 2 and sorted({e["id"] for e in kept}) == [3, 4, 5, 6]


def test_the_noise_crosses_the_5xx_threshold_in_the_seed_and_light_configs():
    for cfg in (load_config(None), _light()):
        spec, period = cfg.alarms["target-5xx"], cfg.profile("local").period_s
        env = type("E", (), {"config": cfg, "profile": cfg.profile("local")})()
        per_period = (noise_rate(env) + 10.0) * period * NOISE_SHARE
        assert per_period >= 1.5 * spec.threshold, per_period


def _light():
    import tomllib

    return load_config(None, tomllib.loads(VERDICT_LOAD))


# -- the scenario, run for real with the reference and the broken functions -----------------------------------------

def run_scenario(tmp_path: Path, *args: str, config: str = "") -> tuple[int, dict, str]:
    run_dir = tmp_path / "run"
    cfg = tmp_path / "gameday.toml"
    cfg.write_text(VERDICT_LOAD + config)   # a fifth of the seed's rate, 2 s periods: see tests/support.py
    argv = [sys.executable, "-m", "gameday.cli", "run", "-k", "test_healthy_region_alarm_noise", "--run-dir",
            str(run_dir), "--config", str(cfg), *args]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    result_file = run_dir / "scenarios" / SCENARIO / "result.json"
    assert result_file.exists(), f"no result.json; gameday run said:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.returncode, json.loads(result_file.read_text()), proc.stdout + proc.stderr


def failing_checks(result: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in result["checks"] if c["valid"] is False}


@pytest.mark.needs_env
@pytest.mark.slow
# "manual" (the seed's policy) is tests/test_main_job.py's run, which checks the same check names
@pytest.mark.parametrize("failback", ["automatic"])
def test_the_reference_function_stays_on_the_healthy_region(tmp_path, failback):
    rc, result, out = run_scenario(tmp_path, config=f'\n[failover]\nfailback = "{failback}"\n')
    assert rc == 0 and result["outcome"] == "passed", f"{failing_checks(result)}\n{out[-3000:]}"
    checks = {c["name"]: c for c in result["checks"]}
    assert {"healthy_region_alarm_fires", "healthy_region_alarm_recovers", "function_reacted",
            "stays_on_healthy_region"} <= set(checks), sorted(checks)


@pytest.mark.needs_env
@pytest.mark.slow
@pytest.mark.parametrize("handler, notification", [
    ("fails_over_on_any_alarm", "(us-west-2) ALARM at"),   # moves away from the healthy region on its 5XX alarm
    ("fails_back_on_any_ok", "(us-west-2) OK at"),         # fails back to the dead home region on dst's OK
])
def test_a_function_reacting_to_the_healthy_regions_alarms_fails_it(tmp_path, handler, notification):
    rc, result, out = run_scenario(tmp_path, "--failover-handler", f"tests.mutants:{handler}")
    assert rc != 0 and result["outcome"] == "failed", f"passed with the broken handler {handler}:\n{out[-3000:]}"
    bad = failing_checks(result)
    assert "stays_on_healthy_region" in bad, f"expected stays_on_healthy_region to catch {handler}; failing: {bad}"
    detail = bad["stays_on_healthy_region"]
    assert "moved away from the healthy region us-west-2" in detail and "(us-east-1)" in detail, detail
    assert notification in detail and "gameday-" in detail, detail
    assert "stays_on_healthy_region" in (result["message"] or "") or "stays_on_healthy_region" in out


# -- the reference function's choice of a target region, against moto ---------------------------------------------

def _publish(ctx, region: str, key: str, new: str = "ALARM") -> str:
    from gameday.environments.local.alarms import alarm_notification

    name = ctx.provisioned.alarm_names[region][key]
    alarm = ctx.internal_client("cloudwatch", region).describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    subject, message = alarm_notification(alarm, region=region, old="OK" if new == "ALARM" else "ALARM", new=new,
                                          change_time=time.time(), reason="test notification")
    return ctx.internal_client("sns", region).publish(
        TopicArn=ctx.provisioned.topic_arns[region], Subject=subject, Message=message)["MessageId"]


@pytest.mark.needs_env
def test_the_reference_function_moves_only_to_a_region_whose_alarms_are_all_ok():
    # Catches a function that fails over into a region whose own alarm fires (the dead region, when
    # the healthy region alarms), or that moves away from a region the record does not point at.
    from gameday.environments.local.lambda_runner import LambdaRunner
    from gameday.environments.local.router import AwsRouter
    from tests.support import provisioned_context
    from tests.test_lambda_runner import MARGIN_S, _a_record, _config, _reset_record, _wait_record

    with provisioned_context(_config()) as ctx:
        router = AwsRouter(ctx).start()
        runner = LambdaRunner(ctx).start()
        deadline = ctx.config.failover.timeout_s + MARGIN_S
        east_cw, west_cw = (ctx.internal_client("cloudwatch", r) for r in ("us-east-1", "us-west-2"))
        try:
            _reset_record(ctx, "us-east-1")
            # every alarm OK, as the evaluator has them once it ran (a new alarm is INSUFFICIENT_DATA)
            for region, cw in (("us-east-1", east_cw), ("us-west-2", west_cw)):
                for name in ctx.provisioned.alarm_names[region].values():
                    cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="test: healthy")
            west_cw.set_alarm_state(AlarmName=ctx.provisioned.alarm_names["us-west-2"]["target-5xx"],
                                    StateValue="ALARM", StateReason="test: the other region is unhealthy too")
            recs = _wait_record(runner, _publish(ctx, "us-east-1", "healthy-hosts"), deadline)
            action = recs[-1]["result"]["actions"][0]
            assert action["action"] == "none" and "gameday-target-5xx-us-west-2" in action["reason"], action
            assert any("no other region is healthy" in line for line in recs[-1]["logs"]), recs[-1]["logs"]
            assert _a_record(ctx)[0] == ctx.lb_addresses["us-east-1"]

            west_cw.set_alarm_state(AlarmName=ctx.provisioned.alarm_names["us-west-2"]["target-5xx"],
                                    StateValue="OK", StateReason="test: recovered")
            recs = _wait_record(runner, _publish(ctx, "us-east-1", "healthy-hosts"), deadline)
            assert recs[-1]["result"]["actions"][0]["action"] == "moved", recs[-1]["result"]
            assert _a_record(ctx)[0] == ctx.lb_addresses["us-west-2"]

            # the healthy region's own alarm while us-east-1 is still down: nowhere better to go
            east_cw.set_alarm_state(AlarmName=ctx.provisioned.alarm_names["us-east-1"]["healthy-hosts"],
                                    StateValue="ALARM", StateReason="test: still down")
            recs = _wait_record(runner, _publish(ctx, "us-west-2", "target-5xx"), deadline)
            assert recs[-1]["result"]["actions"][0]["action"] == "none", recs[-1]["result"]
            assert _a_record(ctx)[0] == ctx.lb_addresses["us-west-2"]
        finally:
            runner.stop()
            router.stop()
