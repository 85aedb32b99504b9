"""`lambda_invocation` events from the failover function's CloudWatch Logs (environments/aws/signals_lambda.py).

1. The parser, a pure function, over real-shaped log lines (Lambda developer guide's formats, the
   Python runtime's [ERROR] event and logging format): ok, an uncaught error with its traceback, a
   timeout, a cold start, a runtime exit, a retry keeping its request id, two invocations'
   lines interleaved in two streams, the JSON log format, an invocation whose REPORT is not in yet;
   the source's incremental reads against moto's CloudWatch Logs (in-process).
2. Against a running stand-in account (`gameday up --aws-config`, as tests/test_aws_account.py):
   an alarm notification published to a region's topic through the endpoint invokes the function;
   the aws environment's timeline (AwsEnvironment.follow_signals) gets the attempt with its REPORT's
   duration and the alarm the handler logged, and assertions.failover.lambda_invoked passes on it.
   Twins: the alias pointed at a broken version (tests/mutants.py raises / too_slow, published
   through the Lambda API as a broken deploy would be) gives error / timeout attempts quoting the
   function's own lines, retries counted by request id, and lambda_invoked FAILS naming them.
`pytest -s` prints the delay from an invocation's start to its event and the FilterLogEvents calls/min.
"""

from __future__ import annotations

import json
import re
import sys
import time

import boto3
import pytest
import requests
from moto import mock_aws

from gameday import procs
from gameday.assertions.deadlines import HARNESS_MARGIN_S
from gameday.assertions.eventually import NotWithinDeadline, eventually
from gameday.assertions.failover import lambda_invoked
from gameday.aws import LOCAL_CREDENTIALS
from gameday.config import load_config
from gameday.environments.aws import AwsEnvironment
from gameday.environments.aws.signals_lambda import NAME, LambdaLogSource, interval_for, parse_invocations
from gameday.environments.local.alarms import alarm_notification
from gameday.scenarios.baseline import never_evaluated
from tests.test_aws_account import REPO, START_DEADLINE_S

RID = "8f5c7e8e-1c1d-4f3a-9f3e-0c6b1a2d3e4f"
RID2 = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
STREAM_A = "2026/12/04/[1]0123456789abcdef0123456789abcdef"
STREAM_B = "2026/12/04/[1]fedcba9876543210fedcba9876543210"
T0 = 1_796_356_800.0    # 2026-12-04T04:00:00Z
ALARM_ARN = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:gameday-request-count-us-east-1"
TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:gameday-alarms"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(round(t % 1 * 1000)):03d}Z"


def _info(t: float, rid: str, msg: str) -> str:
    return f"[INFO]\t{_iso(t)}\t{rid}\t{msg}\n"


def _report(rid: str, ms: float, *extra: str) -> str:
    return "\t".join([f"REPORT RequestId: {rid}", f"Duration: {ms:.2f} ms", f"Billed Duration: {int(ms) + 1} ms",
                      "Memory Size: 128 MB", "Max Memory Used: 78 MB", *extra]) + "\t\n"


NOTIFICATION = "alarm notification: " + json.dumps({
    "AlarmName": "gameday-request-count-us-east-1", "NewStateValue": "ALARM", "OldStateValue": "OK",
    "region": "us-east-1", "MessageId": "m-1", "TopicArn": TOPIC_ARN})
TRACEBACK = ("[ERROR] RuntimeError: failover handler crashed: KeyError 'GAMEDAY_TARGET_REGION'\n"
             "Traceback (most recent call last):\n"
             "  File \"/var/task/mutants.py\", line 77, in raises\n"
             "    raise RuntimeError(\"failover handler crashed: KeyError 'GAMEDAY_TARGET_REGION'\")\n")


def _attempt(stream: str, t: float, rid: str, body: list[str], report: str, *, version: str = "1") -> list[tuple]:
    """One attempt's lines in a stream, 10 ms apart from t."""
    lines = [f"START RequestId: {rid} Version: {version}\n", *body, f"END RequestId: {rid}\n", report]
    return [(stream, t + i * 0.01, line) for i, line in enumerate(lines)]


def _events(*lines: tuple) -> list[dict]:
    return [{"logStreamName": s, "timestamp": int(round(t * 1000)), "message": m, "eventId": f"{s}-{i}",
             "ingestionTime": int(t * 1000) + 300} for i, (s, t, m) in enumerate(lines)]


OK = _attempt(STREAM_A, T0, RID, [_info(T0, RID, NOTIFICATION),
                                  _info(T0, RID, "failover: record api.gameday.test. moved from us-east-1 "
                                                 "(127.0.1.1) to us-west-2 (127.0.2.1) because gameday-request-count")],
              _report(RID, 45.67))
ERROR = _attempt(STREAM_A, T0, RID, [TRACEBACK], _report(RID, 3.21))
TIMEOUT = _attempt(STREAM_A, T0, RID, [f"{_iso(T0 + 5)} {RID} Task timed out after 5.00 seconds\n"],
                   _report(RID, 5003.52, "Status: timeout"))
COLD = [(STREAM_A, T0 - 0.9, "INIT_START Runtime Version: python:3.11.v40\tRuntime Version ARN: arn:aws:lambda:"
                             "us-east-1::runtime:0123\n"),
        (STREAM_A, T0 - 0.5, "loading failover config\n"),
        *_attempt(STREAM_A, T0, RID, [_info(T0, RID, "hello")], _report(RID, 12.5, "Init Duration: 812.34 ms"))]
EXITED = _attempt(STREAM_A, T0, RID, [f"RequestId: {RID} Error: Runtime exited with error: signal: killed\n"
                                      "Runtime.ExitError\n"],
                  _report(RID, 80.0, "Status: error", "Error Type: Runtime.ExitError"))
LOGGED_ERROR = _attempt(STREAM_A, T0, RID, [f"[ERROR]\t{_iso(T0)}\t{RID}\troute53 change_resource_record_sets failed; "
                                            f"handled\n"], _report(RID, 20.0))
SNS_EVENT = {"Records": [{"EventSource": "aws:sns", "Sns": {"MessageId": "m-9", "TopicArn": TOPIC_ARN, "Message": json.dumps(
    {"AlarmName": "gameday-request-count-us-east-1", "NewStateValue": "ALARM", "OldStateValue": "OK",
     "AlarmArn": ALARM_ARN, "Region": "US East (N. Virginia)"})}}]}
PRINTS_EVENT = _attempt(STREAM_A, T0, RID, [f"received {json.dumps(SNS_EVENT)}\n"], _report(RID, 9.0))
JSON_OK = _attempt(STREAM_A, T0, RID, [json.dumps({"timestamp": _iso(T0), "level": "INFO", "message": NOTIFICATION,
                                                   "logger": "failover", "requestId": RID})],
                  json.dumps({"time": _iso(T0), "type": "platform.report", "record": {
                      "requestId": RID, "status": "success", "metrics": {"durationMs": 45.67, "billedDurationMs": 46,
                                                                         "memorySizeMB": 128, "maxMemoryUsedMB": 78,
                                                                         "initDurationMs": 700.5}}}))
JSON_OK[0] = (STREAM_A, T0, json.dumps({"time": _iso(T0), "type": "platform.start", "record": {"requestId": RID, "version": "1"}}))
JSON_OK[-2] = (STREAM_A, T0 + 0.02, json.dumps({"time": _iso(T0), "type": "platform.runtimeDone",
                                                "record": {"requestId": RID, "status": "success"}}))
JSON_ERROR = [JSON_OK[0], (STREAM_A, T0 + 0.01, json.dumps({
    "timestamp": _iso(T0), "log_level": "ERROR", "errorMessage": "boom", "errorType": "KeyError", "requestId": RID,
    "stackTrace": ["  File \"/var/task/f.py\", line 3, in handler\n    raise KeyError('boom')\n"]})),
              (STREAM_A, T0 + 0.03, json.dumps({"time": _iso(T0), "type": "platform.report", "record": {
                  "requestId": RID, "status": "error", "metrics": {"durationMs": 3.5}}}))]
JSON_TIMEOUT = [JSON_OK[0], (STREAM_A, T0 + 5, json.dumps({"time": _iso(T0 + 5), "type": "platform.report", "record": {
    "requestId": RID, "status": "timeout", "metrics": {"durationMs": 5000.0}}}))]
RETRY = (_attempt(STREAM_A, T0, RID, [TRACEBACK], _report(RID, 3.0))
         + _attempt(STREAM_B, T0 + 60, RID, [_info(T0 + 60, RID, "second try")], _report(RID, 40.0)))
# two invocations at once, in two execution environments: their lines alternate in time
INTERLEAVED = sorted(_attempt(STREAM_A, T0, RID, [_info(T0, RID, "a1"), _info(T0, RID, "a2")], _report(RID, 30.0))
                     + _attempt(STREAM_B, T0 + 0.005, RID2, [TRACEBACK], _report(RID2, 20.0)), key=lambda x: x[1])


@pytest.mark.parametrize("lines, expected", [
    (OK, [{"request_id": RID, "attempt": 1, "outcome": "ok", "duration_s": 0.0457, "cold_start": False,
           "init_s": None, "error": None, "version": "1", "log_stream": STREAM_A, "region": "us-east-1",
           "alarm": {"AlarmName": "gameday-request-count-us-east-1", "NewStateValue": "ALARM", "OldStateValue": "OK"},
           "message_id": "m-1", "topic_arn": TOPIC_ARN, "invocation_type": "Event", "time": T0, "start_ts": T0,
           "end_ts": T0 + 0.03}]),
    (ERROR, [{"outcome": "error", "duration_s": 0.0032, "alarm": None, "region": None,
              "error": {"type": "RuntimeError", "message": "failover handler crashed: KeyError 'GAMEDAY_TARGET_REGION'"},
              "logs": [TRACEBACK.rstrip("\n")]}]),
    (TIMEOUT, [{"outcome": "timeout", "duration_s": 5.0035,
                "error": {"type": "Sandbox.Timedout", "message": "Task timed out after 5.00 seconds"}}]),
    (COLD, [{"outcome": "ok", "cold_start": True, "init_s": 0.8123, "logs": ["loading failover config", _info(T0, RID, "hello").rstrip("\n")]}]),
    (EXITED, [{"outcome": "error", "error": {"type": "Runtime.ExitError",
                                             "message": "Runtime exited with error: signal: killed"}}]),
    (LOGGED_ERROR, [{"outcome": "ok", "error": None}]),
    (PRINTS_EVENT, [{"region": "us-east-1", "message_id": "m-9", "alarm": {
        "AlarmName": "gameday-request-count-us-east-1", "NewStateValue": "ALARM", "OldStateValue": "OK"}}]),
    (RETRY, [{"request_id": RID, "attempt": 1, "outcome": "error", "log_stream": STREAM_A},
             {"request_id": RID, "attempt": 2, "outcome": "ok", "log_stream": STREAM_B, "logs": [
                 _info(T0 + 60, RID, "second try").rstrip("\n")]}]),
    (INTERLEAVED, [{"request_id": RID, "outcome": "ok", "log_stream": STREAM_A,
                    "logs": [_info(T0, RID, "a1").rstrip("\n"), _info(T0, RID, "a2").rstrip("\n")]},
                   {"request_id": RID2, "attempt": 1, "outcome": "error", "log_stream": STREAM_B,
                    "logs": [TRACEBACK.rstrip("\n")]}]),
    (JSON_OK, [{"outcome": "ok", "duration_s": 0.0457, "cold_start": True, "init_s": 0.7005, "version": "1",
                "region": "us-east-1", "message_id": "m-1", "end_ts": T0 + 0.02}]),
    (JSON_ERROR, [{"outcome": "error", "duration_s": 0.0035, "error": {"type": "KeyError", "message": "boom"}}]),
    (JSON_TIMEOUT, [{"outcome": "timeout", "duration_s": 5.0, "error": {
        "type": "Sandbox.Timedout", "message": "Task timed out (REPORT Status: timeout)"}}]),
], ids=["ok", "error-traceback", "timeout", "cold-start", "runtime-exit", "handler-logged-error", "sns-event-printed",
        "retry-same-request-id", "interleaved-streams", "json-format-ok", "json-format-error", "json-format-timeout"])
def test_each_attempt_is_one_event_with_lambdas_fields(lines, expected):
    done, pending = parse_invocations(_events(*lines))
    assert pending == []
    assert len(done) == len(expected), done
    for got, want in zip(done, expected):
        assert got["kind"] == "lambda_invocation"
        assert {k: got[k] for k in want} == {k: pytest.approx(v) if isinstance(v, float) else v
                                             for k, v in want.items()}, got


def test_an_attempt_without_its_report_waits_and_a_retry_counts_on():
    # Catches an attempt emitted before Lambda finished logging it (no duration, no outcome yet),
    # lines lost between two reads, and a retry read in a later poll counted as attempt 1 again.
    events = _events(*ERROR)
    done, pending = parse_invocations(events[:2])
    assert done == [] and [e["message"] for e in pending] == [ERROR[0][2].rstrip("\n"), TRACEBACK.rstrip("\n")]
    done, pending = parse_invocations(pending + events[2:])
    assert pending == [] and [(d["outcome"], d["attempt"], d["error"]["type"]) for d in done] == [
        ("error", 1, "RuntimeError")]
    (retry,), _ = parse_invocations(_events(*_attempt(STREAM_B, T0 + 60, RID, [], _report(RID, 7.0))), {RID: 1})
    assert (retry["attempt"], retry["outcome"]) == (2, "ok")


def test_the_source_reads_incrementally_across_streams_without_repeats():
    # Catches a source that repeats an attempt on every read, one that misses lines delivered late
    # with an older timestamp than lines it already read, and one that loses an attempt whose
    # REPORT arrives in a later read. moto in-process (a real CloudWatch Logs backend, no server).
    with mock_aws():
        logs = boto3.client("logs", region_name="us-west-2")
        group = "/aws/lambda/gameday-failover"
        logs.create_log_group(logGroupName=group)
        now = time.time()
        src = LambdaLogSource(logs, group, function_timeout_s=5.0, interval_s=1.0, clock=lambda: now, since=now - 1)
        a = _attempt(STREAM_A, now - 3, RID, [_info(now, RID, "a")], _report(RID, 30.0))
        b = _attempt(STREAM_B, now - 2, RID2, [TRACEBACK], _report(RID2, 20.0))
        _put(logs, group, a[:2])
        assert src.poll() == []                                    # START in, REPORT not yet
        _put(logs, group, b)
        assert [(e["request_id"], e["outcome"]) for e in src.poll()] == [(RID2, "error")]
        _put(logs, group, a[2:])                                   # delivered late, older than b's lines
        (got,) = src.poll()
        assert (got["request_id"], got["time"], got["logs"]) == (RID, pytest.approx(now - 3, abs=1e-3),
                                                                  [_info(now, RID, "a").rstrip("\n")])
        assert src.poll() == [] and src.calls == 4


def _put(logs, group: str, lines: list[tuple]) -> None:
    for stream in {s for s, _, _ in lines}:
        try:
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
            {"timestamp": int(round(t * 1000)), "message": m} for s, t, m in lines if s == stream])


def test_the_interval_keeps_filter_log_events_far_under_its_quota():
    # FilterLogEvents: 5 requests/s per account and Region. Catches a poll faster than 1/s.
    assert interval_for(1) == 1.0 and interval_for(5) == 1.0 and interval_for(60) == 5.0


# -- 2. against a running stand-in account -------------------------------------------------------------------

@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """`gameday up --aws-config` (a subprocess, as a user runs it), and the aws environment built
    from the config it wrote, following AWS's signals."""
    tmp = tmp_path_factory.mktemp("stand-in")
    state_file, config, log = tmp / "state.json", tmp / "aws.toml", tmp / "up.log"
    proc = procs.spawn([sys.executable, "-m", "gameday.cli", "up", "--run-dir", str(tmp / "run"),
                        "--state-file", str(state_file), "--aws-config", str(config)],
                       log_path=log, cwd=REPO, env={"PYTHONUNBUFFERED": "1"})
    env = None
    try:
        def written():
            assert proc.poll() is None, f"gameday up exited with {proc.returncode}:\n{log.read_text()[-2000:]}"
            assert config.exists() and state_file.exists(), "no aws config yet"

        eventually(written, deadline_s=START_DEADLINE_S, what="gameday up --aws-config", interval_s=0.1)
        env = AwsEnvironment(load_config(config)).start(preflight=False).follow_signals()
        control_url = json.loads(state_file.read_text())["control_url"]
        env.wait_settled = lambda: _settled(env, control_url)   # also after each test that changes the alias
        env.wait_settled()
        yield env
    finally:
        if env is not None:
            env.stop()
        procs.terminate(proc, grace_s=20)


def _settled(env, control_url: str) -> None:
    """Wait until the account's own traffic is over: CloudWatch has evaluated every alarm once (an
    alarm's first OK notifies the function, as AWS's OKActions do) and the function has no event
    queued or running (those notifications' attempts, retries included). A test's notification
    otherwise queues behind them: with the alias on a broken version, their retries run it too, and
    six 5 s timeouts on two environments delayed the too_slow twin's own attempt past its deadline."""
    def quiet():
        unevaluated = []
        for region in env.config.regions:
            alarms = {a["AlarmName"]: a for a in _client(env, "cloudwatch", region).describe_alarms()["MetricAlarms"]}
            unevaluated += never_evaluated(alarms, set(alarms))
        assert not unevaluated, f"alarms not evaluated yet: {unevaluated}"
        fn = requests.get(f"{control_url}/status", timeout=5).json()["lambda"]
        assert fn["queued"] == 0 and not fn["in_flight_all"], \
            f"the function still has {fn['queued']} events queued, {fn['in_flight_all']} running"
    # one alarm period to the first evaluation, then each notification's attempt and its retries
    p = env.profile
    deadline = p.period_s + (1 + len(p.lambda_retry_delays_s)) * (env.config.failover.timeout_s + HARNESS_MARGIN_S) \
        + sum(p.lambda_retry_delays_s)
    eventually(quiet, deadline_s=deadline, what="the stand-in account settled", interval_s=0.2)


def _client(env, service: str, region: str):
    """A customer's boto3 client on the account's endpoint."""
    return boto3.client(service, region_name=region, endpoint_url=env.config.aws.endpoint_url, **LOCAL_CREDENTIALS)


def _notify(env, region: str, new: str = "ALARM") -> tuple[float, str]:
    """CloudWatch's notification of the region's request-count alarm moving to `new`, published to
    the region's topic: (time.monotonic() before it, the SNS message id)."""
    cw = _client(env, "cloudwatch", region)
    alarm = cw.describe_alarms(AlarmNames=[env.endpoints["alarm_names"][region]["request-count"]])["MetricAlarms"][0]
    subject, message = alarm_notification(alarm, region=region, old="OK", new=new, reason="test: a surge",
                                          change_time=time.time())
    started = time.monotonic()
    mid = _client(env, "sns", region).publish(TopicArn=env.targets[region].topic_arn, Subject=subject,
                                              Message=message)["MessageId"]
    return started, mid


def _broken_version(env, handler: str):
    """Point the alias `live` at a version running `handler` (a broken deploy), as the Lambda API does."""
    lam = _client(env, "lambda", env.config.failover.region)
    name, alias = env.config.aws.lambda_name, env.config.aws.lambda_alias
    lam.update_function_configuration(FunctionName=name, Handler=handler)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.update_alias(FunctionName=name, Name=alias, FunctionVersion=version)
    return lambda: lam.update_alias(FunctionName=name, Name=alias, FunctionVersion="1")


def _deadline_s(env) -> float:
    """An attempt's end -> its event: Lambda's log delivery, one poll interval, and the margin."""
    return env.config.failover.timeout_s + interval_for(env.profile.period_s) + HARNESS_MARGIN_S


def _invocation(env, started: float, deadline_s: float, **match) -> dict:
    since = time.time() - (time.monotonic() - started)

    def found():
        evs = [e for e in env.events(kind="lambda_invocation") if e["time"] >= since
               and all(e.get(k) == v for k, v in match.items())]
        assert evs, f"no lambda_invocation {match} yet; timeline has {len(env.events(kind='lambda_invocation'))}"
        return evs[0]
    # the wait covers the notification's delivery and the attempt's start too (seconds on 2 busy
    # cores beside other suites): twice the attempt-end -> event bound; delay_s is checked against the bound
    return eventually(found, deadline_s=2 * deadline_s, what=f"lambda_invocation {match}", interval_s=0.1)[0]


def _report_duration_s(env, request_id: str) -> float:
    logs = _client(env, "logs", env.config.failover.region)
    (report,) = [e for e in logs.filter_log_events(logGroupName=f"/aws/lambda/{env.config.aws.lambda_name}",
                                                   filterPattern=f'"REPORT RequestId: {request_id}"')["events"]]
    return float(re.search(r"\tDuration: ([\d.]+) ms", report["message"])[1]) / 1000


def test_an_invocation_reaches_the_timeline_with_its_report_and_alarm(stand_in):
    # Catches a source that never reads the logs, one that stamps the read time instead of the
    # START line's, a duration not the REPORT's, and an alarm the handler logged but not carried.
    env = stand_in
    started, mid = _notify(env, "us-east-1")
    took = lambda_invoked(env, started, outcome="ok", region="us-east-1")
    ev = _invocation(env, started, _deadline_s(env), message_id=mid)
    assert ev["source"] == NAME and ev["outcome"] == "ok" and ev["attempt"] == 1
    assert ev["alarm"]["NewStateValue"] == "ALARM" and ev["alarm"]["AlarmName"] == \
        env.endpoints["alarm_names"]["us-east-1"]["request-count"]
    assert ev["duration_s"] == pytest.approx(_report_duration_s(env, ev["request_id"]), abs=1e-4)
    assert ev["time"] == ev["start_ts"] and ev["start_ts"] <= ev["end_ts"] and ev["version"] == "1"
    assert any("alarm notification" in line for line in ev["logs"]), ev["logs"]
    src = next(s for s in env._signals.sources if s.name == NAME)
    counters = env._signals.status()[NAME]
    print(f"\nlambda_invocation: START -> on the timeline {ev['delay_s']:.2f} s (poll every {src.interval_s:g} s); "
          f"start -> invocation ended {took:.2f} s; FilterLogEvents {src.calls} calls in {counters['polls']} polls "
          f"= {60 / src.interval_s:.0f} calls/min")
    assert ev["delay_s"] <= _deadline_s(env)


@pytest.mark.parametrize("handler, outcome, error_type, quoted", [
    ("tests.mutants.raises", "error", "RuntimeError", "failover handler crashed: KeyError 'GAMEDAY_TARGET_REGION'"),
    ("tests.mutants.too_slow", "timeout", "Sandbox.Timedout", "Task timed out after"),
])
def test_a_broken_function_gives_failed_attempts_and_lambda_invoked_fails_naming_its_lines(
        stand_in, handler, outcome, error_type, quoted):
    # The twin: the same notification with the alias on a broken version. Catches a source that
    # reports every REPORT as ok, drops the runtime's error lines, or counts a retry as attempt 1.
    env = stand_in
    restore = _broken_version(env, handler)
    try:
        # a broken handler logs no notification (no message id to match): the account is quiet
        # (stand_in), so the first attempt that fails this way after the notification is its own
        started, _ = _notify(env, "us-east-1")
        first = _invocation(env, started, _deadline_s(env), outcome=outcome, attempt=1)
        assert first["error"]["type"] == error_type and quoted in json.dumps(first["logs"]), first
        retry_s = env.profile.lambda_retry_delays_s[0] + _deadline_s(env)
        retried = _invocation(env, started, retry_s, request_id=first["request_id"], attempt=2)
        assert retried["outcome"] == outcome
        with pytest.raises(NotWithinDeadline) as failed:
            lambda_invoked(env, started, deadline=0.5, outcome="ok")
        assert "none ok" in str(failed.value) and quoted in str(failed.value), str(failed.value)
        print(f"\n{outcome}: START -> on the timeline {first['delay_s']:.2f} s, retry {retried['delay_s']:.2f} s; "
              f"lambda_invoked says:\n{failed.value}")
    finally:
        restore()
        env.wait_settled()   # this notification's last retry ran out before the next test's notification
