"""The pure rules behind --env aws's end-to-end run (issue 20), table-driven, no AWS and no clock:
- which alarm action an invocation whose logs name no alarm answered (assertions/failover.py);
- Route 53's health verdict from its checkers' reports (> 18% healthy: healthy);
- the profile read from the stack (stack_timing.stack_profile/stack_config);
- the busiest second of the harness's Route 53 requests (api_calls.ApiCallCounter);
- why a scenario is skipped on aws (the environment's require()).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from gameday.assertions.failover import attribute_by_time
from gameday.config import load_config
from gameday.environments.aws.api_calls import ApiCallCounter
from gameday.environments.aws.signals_route53_health import verdict
from gameday.environments.aws.stack_timing import stack_config, stack_profile


def _action(t, region, new="ALARM"):
    return {"time": t, "region": region, "alarm": f"a-{region}", "new": new}


def _inv(t, **kw):
    return {"time": t, "start_ts": t, "region": None, "alarm": None, **kw}


@pytest.mark.parametrize("actions, invocation, region", [
    ([_action(100.0, "us-east-1")], _inv(100.4), "us-east-1"),                 # delivered after its action
    ([_action(100.0, "us-east-1")], _inv(100.8), "us-east-1"),
    ([_action(100.0, "us-east-1")], _inv(99.5), "us-east-1"),                  # log clock 0.5 s behind
    ([_action(100.0, "us-east-1")], _inv(98.0), None),                         # before any action: unknown
    ([_action(90.0, "us-east-1"), _action(100.0, "us-west-2")], _inv(100.5), "us-west-2"),   # the latest one
    ([_action(100.0, "us-east-1"), _action(100.3, "us-west-2")], _inv(100.5), None),          # too close to tell
])
def test_an_invocation_that_names_no_alarm_is_attributed_to_the_last_action(actions, invocation, region):
    out = attribute_by_time([invocation], actions)[0]
    assert out["region"] == region
    assert ("attributed" in out) == (region is not None)


def test_an_invocation_that_names_its_alarm_keeps_it():
    named = _inv(100.5, region="us-west-2", alarm={"AlarmName": "x", "NewStateValue": "ALARM"})
    assert attribute_by_time([named], [_action(100.0, "us-east-1")])[0]["region"] == "us-west-2"


def _obs(*statuses, t=1000.0):
    return [{"StatusReport": {"Status": s, "CheckedTime": datetime.fromtimestamp(t + i, tz=timezone.utc)}}
            for i, s in enumerate(statuses)]


@pytest.mark.parametrize("statuses, healthy", [
    (("Success: HTTP 200",) * 3, True),
    (("Failure: HTTP 503",) * 3, False),
    (("Success: HTTP 200",) + ("Failure: HTTP 503",) * 4, True),     # 1 of 5 = 20% > 18%: healthy
    (("Success: HTTP 200",) + ("Failure: HTTP 503",) * 5, False),    # 1 of 6 = 16.7%: unhealthy
    ((), None),                                                       # no checker reported yet
])
def test_route53_calls_an_endpoint_healthy_when_more_than_18_percent_of_checkers_do(statuses, healthy):
    got, at, failing = verdict(_obs(*statuses))
    assert got is healthy
    if statuses:
        assert at == 1000.0 + len(statuses) - 1          # the newest report's time
        assert (failing is None) == all(s.startswith("Success") for s in statuses)


def test_the_stack_profile_takes_what_the_stack_says_and_keeps_the_rest():
    cfg = load_config(None)
    base = cfg.profile("aws")
    p = stack_profile(base, {"period_s": 30, "evaluation_periods": 3, "datapoints_to_alarm": 2, "dns_ttl_s": 20,
                             "timeout_s": 9.0})
    assert (p.period_s, p.evaluation_periods, p.datapoints_to_alarm, p.dns_ttl_s) == (30, 3, 2, 20)
    assert p.dns_propagation_s == base.dns_propagation_s == 60         # AWS's documented delay stays
    assert p.floor_s == 3 * 30 + 20
    assert stack_config(cfg, {"timeout_s": 9.0}).failover.timeout_s == 9.0
    assert stack_config(cfg, {}) is cfg


def test_the_busiest_second_is_a_sliding_window():
    c = ApiCallCounter(clock=lambda: 0.0)
    assert c.busiest_second([0.0, 0.5, 0.99, 1.0, 1.5, 3.0]) == 3
    assert c.busiest_second([0.0, 0.9, 1.05, 1.8]) == 3                 # 0.9, 1.05, 1.8 within one second
    assert c.busiest_second([]) == 0


def test_an_event_name_is_counted_per_service_and_operation():
    c = ApiCallCounter(clock=lambda: 0.0)
    c._before_send(event_name="before-send.route53.ListResourceRecordSets")
    c._before_send(event_name="before-send.route53.GetHealthCheckStatus")
    c._before_send(event_name="before-send.cloudwatch.DescribeAlarmHistory")
    s = c.summary()
    assert s["by_service"]["route53"]["calls"] == 2 and s["route53"]["busiest_second"] == 2
    assert s["by_operation"]["cloudwatch:DescribeAlarmHistory"] == 1


@pytest.mark.parametrize("aws, capability, says", [
    ({}, "block_control_plane", "no AWS fault blocks one service's control plane"),
    ({}, "fail_responses", "needs the local load balancer's proxy"),
    ({}, "pause_replication", "set aws.fis_role_arn"),
    ({"fis_role_arn": "arn:aws:iam::123456789012:role/fis"}, "api_fault", "aws.fis_api_fault_role_arns"),
])
def test_a_scenario_aws_cannot_run_is_told_why(aws, capability, says):
    from gameday.config import GamedayConfig
    from gameday.environments.aws import AwsEnvironment
    from gameday.environments.base import CapabilityMissing

    cfg = GamedayConfig.model_validate({"aws": {"allowed_account_ids": ["123456789012"], **aws}})
    with pytest.raises(CapabilityMissing, match=says):
        AwsEnvironment(cfg).require(capability)


def test_a_capability_aws_has_is_not_refused():
    from gameday.config import GamedayConfig
    from gameday.environments.aws import AwsEnvironment

    cfg = GamedayConfig.model_validate({"aws": {"allowed_account_ids": ["123456789012"],
                                                "fis_role_arn": "arn:aws:iam::123456789012:role/fis"}})
    AwsEnvironment(cfg).require("pause_replication")


def test_a_state_file_from_another_pid_namespace_is_not_judged_by_its_pid(tmp_path):
    """A Locust master in a container reads the state file `gameday up` wrote on the host: the
    pid means nothing there; on the writer's own host a dead pid still says the environment is gone."""
    import json

    from gameday import state

    p = state.write_state({"env": "local", "pid": 2 ** 22 + 7}, tmp_path / "s.json")   # no such process
    with pytest.raises(state.NoEnvironment, match="is not running"):
        state.read_state(p)
    data = json.loads(p.read_text())
    p.write_text(json.dumps({**data, "pid_namespace": "another-host/pid:[1]"}))
    assert state.read_state(p)["env"] == "local"
