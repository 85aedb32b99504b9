"""The local Lambda service: SNS (moto, over http on loopback) -> Lambda's SNS event -> a handler
in a worker process with the Lambda environment; async-invocation retries, timeouts; and the
reference failover handler against Route 53 in moto, through the router's API faults.

Test handlers live in a temporary code directory (failover.code_dir + handler), as a user's
own function would, and write what they received to files the test reads back.
"""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

from gameday.assertions.eventually import eventually
from gameday.environments.local.alarms import alarm_notification
from gameday.environments.local.lambda_runner import FUNCTION_NAME, MEMORY_SIZE_MB, LambdaRunner
from gameday.environments.local.router import AwsRouter
from gameday.aws import LOCAL_ACCOUNT_ID
from gameday.clock import FakeClock
from gameday.config import GamedayConfig
from tests.support import alive, provisioned_context

RETRY_DELAYS_S = (0.2, 0.2)
PROBE_TIMEOUT_S = 1.5
# cold start (interpreter + boto3 import, ~1 s on a busy 2-core machine) + SNS hop + scheduling
MARGIN_S = 5.0

PROBE_HANDLER = textwrap.dedent('''
    """A Lambda handler written as for real Lambda: plain boto3 client at import time."""
    import json
    import os
    import time

    import boto3

    route53 = boto3.client("route53")
    OUT = os.environ["PROBE_DIR"]


    def _mode(event):
        if "mode" in event:
            return event["mode"], event.get("key", "")
        try:
            msg = json.loads(event["Records"][0]["Sns"]["Message"])
        except (KeyError, IndexError, TypeError, ValueError):
            return "ignore", ""
        return (msg.get("mode", "ignore"), msg.get("key", "")) if isinstance(msg, dict) else ("ignore", "")


    def _count(key):
        path = os.path.join(OUT, f"attempts-{key}")
        with open(path, "a") as f:
            f.write("x")
        with open(path) as f:
            return len(f.read())


    def handler(event, context):
        started = time.time()
        mode, key = _mode(event)
        if mode == "dump":
            zones = [z["Name"] for z in route53.list_hosted_zones()["HostedZones"]]
            out = {"started": started, "event": event, "zones": zones,
                   "env": {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "_HANDLER", "LAMBDA_"))},
                   "context": {"function_name": context.function_name,
                               "memory_limit_in_mb": context.memory_limit_in_mb,
                               "aws_request_id": context.aws_request_id,
                               "invoked_function_arn": context.invoked_function_arn,
                               "remaining_ms": context.get_remaining_time_in_millis()}}
            with open(os.path.join(OUT, f"dump-{key}.json"), "w") as f:
                json.dump(out, f)
            return {"dumped": key}
        n = _count(key) if key else 0
        if mode == "raise":
            raise ValueError(f"boom on attempt {n}")
        if mode == "fail_once" and n == 1:
            raise RuntimeError("transient failure")
        if mode == "timeout_once" and n == 1:
            print("sleeping past the timeout")
            time.sleep(60)
        return {"mode": mode, "attempt": n}
''')


def _config(**failover) -> GamedayConfig:
    return GamedayConfig.model_validate({
        "profiles": {"local": {"lambda_retry_delays_s": list(RETRY_DELAYS_S)}},
        "failover": failover,
    })


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    code_dir = tmp_path_factory.mktemp("probe-code")
    (code_dir / "gd_probe.py").write_text(PROBE_HANDLER)
    out_dir = tmp_path_factory.mktemp("probe-out")
    # reserved concurrency 1: one execution environment, so a test can tell a fresh one from a warm one
    cfg = _config(handler="gd_probe:handler", code_dir=str(code_dir), timeout_s=PROBE_TIMEOUT_S,
                  environment={"PROBE_DIR": str(out_dir)}, reserved_concurrency=1)
    with provisioned_context(cfg) as ctx:
        router = AwsRouter(ctx).start()  # sets ctx.router_url: the Lambda's AWS_ENDPOINT_URL
        try:
            yield ctx, router, out_dir
        finally:
            router.stop()


@pytest.fixture(scope="module")
def probe(env):
    ctx, router, out_dir = env
    runner = LambdaRunner(ctx).start()
    try:
        yield ctx, runner, out_dir
    finally:
        runner.stop()


def _records(runner, request_id=None, message_id=None):
    return [r for r in runner.invocations()
            if (request_id is None or r["request_id"] == request_id)
            and (message_id is None or r["message_id"] == message_id)]


def _fail(msg):
    raise AssertionError(msg)


def _wait_file(path, deadline_s, what):
    def check():
        assert path.exists(), f"{path.name} not written yet"
        return json.loads(path.read_text())
    return eventually(check, deadline_s=deadline_s, what=what)[0]


def test_sns_delivers_the_real_lambda_sns_event(probe):
    # Catches a hand-made event that differs from what Lambda gives a handler for an SNS
    # trigger (key names SigningCertUrl/UnsubscribeUrl, Subject, MessageAttributes, the
    # subscription ARN), a notification that never reaches the runner, and a wrong context.
    ctx, runner, out_dir = probe
    region = "us-east-1"
    topic = ctx.provisioned.topic_arns[region]
    message = json.dumps({"mode": "dump", "key": "sns-shape"})
    t_publish = time.time()
    message_id = ctx.internal_client("sns", region).publish(TopicArn=topic, Subject="probe", Message=message)["MessageId"]
    dump = _wait_file(out_dir / "dump-sns-shape.json", MARGIN_S, "handler invoked by the SNS notification")
    print(f"SNS publish -> handler start: {dump['started'] - t_publish:.3f}s")

    event = dump["event"]
    assert list(event) == ["Records"] and len(event["Records"]) == 1
    rec = event["Records"][0]
    assert rec["EventSource"] == "aws:sns"
    assert rec["EventVersion"] == "1.0"
    assert rec["EventSubscriptionArn"] == runner.subscriptions[region]
    assert rec["EventSubscriptionArn"].startswith(topic + ":")
    sns = rec["Sns"]
    assert set(sns) == {"Type", "MessageId", "TopicArn", "Subject", "Message", "Timestamp", "SignatureVersion",
                        "Signature", "SigningCertUrl", "UnsubscribeUrl", "MessageAttributes"}
    assert sns["Type"] == "Notification"
    assert sns["MessageId"] == message_id
    assert sns["TopicArn"] == topic
    assert sns["Subject"] == "probe"
    assert sns["Message"] == message
    datetime.strptime(sns["Timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert sns["SignatureVersion"] in ("1", "2") and sns["Signature"]
    assert sns["SigningCertUrl"].startswith(f"https://sns.{region}.amazonaws.com/")
    assert sns["UnsubscribeUrl"].startswith(f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe")
    assert runner.subscriptions[region] in sns["UnsubscribeUrl"]
    assert sns["MessageAttributes"] == {}

    c = dump["context"]
    assert c["function_name"] == FUNCTION_NAME
    assert c["memory_limit_in_mb"] == str(MEMORY_SIZE_MB)  # a string in Lambda's Python runtime
    # invoked through the topic's subscription to the alias "live" (provision.py)
    assert c["invoked_function_arn"] == f"arn:aws:lambda:us-west-2:{LOCAL_ACCOUNT_ID}:function:{FUNCTION_NAME}:live"
    assert 0 < c["remaining_ms"] <= PROBE_TIMEOUT_S * 1000

    recs, _ = eventually(lambda: _records(runner, message_id=message_id) or _fail("no record yet"),
                         deadline_s=MARGIN_S, what="invocation recorded")
    r = recs[0]
    assert c["aws_request_id"] == r["request_id"]
    assert (r["outcome"], r["result"], r["region"], r["topic_arn"]) == ("ok", {"dumped": "sns-shape"}, region, topic)
    ev = [e for e in ctx.events.since(0, kind="lambda_invocation") if e["request_id"] == r["request_id"]]
    assert [e["outcome"] for e in ev] == ["ok"]


def test_lambda_environment_lets_a_plain_boto3_handler_work(env, monkeypatch):
    # Catches a worker without region/endpoint/credentials (boto3.client("route53") at import
    # time would fail the init phase or reach real AWS), and host SDK settings leaking in
    # (a host AWS_PROFILE outranks the function's credentials and breaks the client).
    ctx, router, out_dir = env
    monkeypatch.setenv("AWS_PROFILE", "host-profile-that-does-not-exist")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    runner = LambdaRunner(ctx).start()  # the worker process is spawned from this environment
    worker_pid = runner.status()["worker"]["pid"]
    try:
        monkeypatch.undo()
        init = [e for e in ctx.events.since(0, kind="lambda_init") if e["pid"] == worker_pid]
        assert init and init[-1]["ok"], f"init failed: {runner.status()['init_error']}"
        print(f"worker cold start (spawn -> handler imported): {init[-1]['init_s']:.3f}s "
              f"(import alone {init[-1]['import_ms']:.0f} ms)")
        rec = runner.invoke({"mode": "dump", "key": "env"}, wait_s=MARGIN_S + PROBE_TIMEOUT_S)
        assert rec["outcome"] == "ok", rec
    finally:
        runner.stop()
    assert not alive({worker_pid}), "stop() left the worker process running"
    dump = json.loads((out_dir / "dump-env.json").read_text())
    e = dump["env"]
    assert e["AWS_REGION"] == e["AWS_DEFAULT_REGION"] == "us-west-2"
    assert e["AWS_ENDPOINT_URL"] == ctx.router_url == router.url
    assert e["AWS_ACCESS_KEY_ID"] and e["AWS_SECRET_ACCESS_KEY"]
    assert e["AWS_LAMBDA_FUNCTION_NAME"] == FUNCTION_NAME
    assert e["_HANDLER"] == "gd_probe.handler"  # Lambda spells it module.function
    assert e["AWS_LAMBDA_INITIALIZATION_TYPE"] == "provisioned-concurrency"  # initialised by start()
    assert "AWS_PROFILE" not in e
    # the import-time client reached Route 53 (us-east-1's moto, through the router)
    assert dump["zones"] == [ctx.config.route53.zone + "."]


def _wait_attempts(runner, rid, n, deadline_s):
    def check():
        recs = _records(runner, request_id=rid)
        assert len(recs) >= n and not recs[-1]["will_retry"], \
            f"attempts so far: {[(r['attempt'], r['outcome'], r['will_retry']) for r in recs]}"
        return recs
    return eventually(check, deadline_s=deadline_s, what=f"{n} attempts of {rid}")[0]


def test_a_raising_handler_is_retried_twice_with_every_error_recorded(probe):
    # Catches: no async retries, the wrong number of them, delays not from the profile, a new
    # request id per retry, and errors that are lost (only the last one kept).
    ctx, runner, _ = probe
    rid = runner.invoke_async({"mode": "raise", "key": "raise"})
    recs = _wait_attempts(runner, rid, 3, 3 * PROBE_TIMEOUT_S + sum(RETRY_DELAYS_S) + MARGIN_S)
    assert [r["attempt"] for r in recs] == [1, 2, 3]
    assert [r["outcome"] for r in recs] == ["error"] * 3
    assert [r["error"] for r in recs] == [{"type": "ValueError", "message": f"boom on attempt {i}"} for i in (1, 2, 3)]
    assert [r["will_retry"] for r in recs] == [True, True, False]
    assert [r["retry_in_s"] for r in recs] == [*RETRY_DELAYS_S, None]
    for prev, nxt, delay in zip(recs, recs[1:], RETRY_DELAYS_S):
        assert nxt["start_ts"] - prev["end_ts"] >= delay - 0.01, "a retry ran before its delay"
    assert any("ValueError: boom on attempt 1" in line for line in recs[0]["logs"])
    timeline = [e for e in ctx.events.since(0, kind="lambda_invocation") if e["request_id"] == rid]
    assert [(e["attempt"], e["outcome"], e["error"]) for e in timeline] == [
        (i, "error", {"type": "ValueError", "message": f"boom on attempt {i}"}) for i in (1, 2, 3)]
    assert runner.status()["queued"] == 0


@pytest.mark.parametrize("knobs, condition", [
    ({"maximum_retry_attempts": 1}, "RetriesExhausted"),
    ({"maximum_event_age_s": 100}, "EventAgeExceeded"),   # the 2nd retry would run at age 180 s
])
def test_retries_and_discards_follow_the_injected_clock_and_the_config(env, knobs, condition):
    # AWS's own delays (60 s, 120 s) on a FakeClock: a retry runs only when the test moves the clock
    # past its delay, so the schedule takes a second of wall time. Catches an adapter that waits on
    # the machine's clock (the retry would come minutes later), a retry not delayed by 60 s, and
    # failover.maximum_retry_attempts / maximum_event_age_s not reaching the model (a third attempt,
    # no discard record, no lambda_discard event naming the event's region).
    ctx, _, _ = env
    spec = ctx.config.failover
    cfg = _config(handler=spec.handler, code_dir=spec.code_dir, timeout_s=PROBE_TIMEOUT_S,
                  environment=dict(spec.environment), reserved_concurrency=1, **knobs)
    aws_delays = ctx.profile.model_copy(update={"lambda_retry_delays_s": (60.0, 120.0)})
    clock = FakeClock()
    runner = LambdaRunner(dataclasses.replace(ctx, config=cfg, profile=aws_delays, clock=clock)).start()
    try:
        rid = runner.invoke_async({"mode": "raise", "key": f"fake-clock-{condition}"}, region="us-east-1")
        first, _ = eventually(lambda: _records(runner, request_id=rid) or _fail("no attempt yet"),
                              deadline_s=MARGIN_S, what="first attempt")
        assert [(r["attempt"], r["retry_in_s"]) for r in first] == [(1, 60.0)]
        assert runner.status()["queued"] == 1, "the retry is not waiting in the queue"
        clock.advance(60.0)
        recs = _wait_attempts(runner, rid, 2, MARGIN_S) if condition == "RetriesExhausted" else \
            eventually(lambda: _records(runner, request_id=rid)[1:] and _records(runner, request_id=rid) or
                       _fail("no second attempt yet"), deadline_s=MARGIN_S, what="second attempt")[0]
        assert recs[1]["end_ts"] - recs[0]["end_ts"] == pytest.approx(60.0, abs=0.01)
        if condition == "EventAgeExceeded":
            assert (recs[1]["will_retry"], recs[1]["retry_in_s"]) == (True, 120.0)
            clock.advance(120.0)
            eventually(lambda: runner.discarded() or _fail("not discarded yet"), deadline_s=MARGIN_S, what="discard")
        else:
            assert (recs[1]["will_retry"], recs[1]["discarded"]) == (False, condition)
        drops = [e for e in ctx.events.since(0, kind="lambda_discard") if e.get("request_id") == rid]
        assert [(e["condition"], e["approximate_invoke_count"]) for e in drops] == [(condition, 2)]
        assert drops[0]["function_arn"] and drops[0]["region"] == "us-east-1"   # which function, whose event
        assert [(r["attempt"], r["outcome"]) for r in _records(runner, request_id=rid)] == [(1, "error"), (2, "error")]
        assert [(d["request_id"], d["condition"], d["approximate_invoke_count"]) for d in runner.discarded()] == \
            [(rid, condition, 2)]
    finally:
        runner.stop()


def test_a_handler_past_its_timeout_is_stopped_and_recorded(probe):
    # Catches a runner that waits for a hung handler (no timeout), leaves its process running,
    # or records a timeout as a success or plain error; the retry needs a fresh environment.
    ctx, runner, _ = probe
    rid = runner.invoke_async({"mode": "timeout_once", "key": "timeout-once"})
    recs = _wait_attempts(runner, rid, 2, 2 * PROBE_TIMEOUT_S + RETRY_DELAYS_S[0] + MARGIN_S)
    first, second = recs
    assert first["outcome"] == "timeout"
    assert first["error"]["type"] == "Sandbox.Timedout"
    assert PROBE_TIMEOUT_S <= first["duration_s"] < PROBE_TIMEOUT_S + 1.0
    assert any("Task timed out after" in line for line in first["logs"])
    assert any("sleeping past the timeout" in line for line in first["logs"])
    assert not alive({first["worker_pid"]}), "the timed-out execution environment is still running"
    assert second["outcome"] == "ok" and second["cold_start"] and second["worker_pid"] != first["worker_pid"]


# -- the reference failover handler -------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(env):
    ctx, router, _ = env
    # the seed's function: sut.failover_lambda:handler from the repository, default timeout
    ref_ctx = dataclasses.replace(ctx, config=_config())
    # the healthy region's alarms OK, as the alarm evaluator has them once it ran (a new alarm is
    # INSUFFICIENT_DATA, and the reference function moves only to a region whose alarms are all OK)
    cw = ctx.internal_client("cloudwatch", "us-west-2")
    for name in ctx.provisioned.alarm_names["us-west-2"].values():
        cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="healthy")
    runner = LambdaRunner(ref_ctx).start()
    try:
        yield ref_ctx, router, runner
    finally:
        runner.stop()


def _a_record(ctx) -> tuple[str, int]:
    r53 = ctx.internal_client("route53", "us-east-1")
    for rr in r53.list_resource_record_sets(HostedZoneId=ctx.provisioned.hosted_zone_id)["ResourceRecordSets"]:
        if rr["Name"] == ctx.config.record_name and rr["Type"] == "A":
            return rr["ResourceRecords"][0]["Value"], rr["TTL"]
    raise AssertionError("A record missing")


def _reset_record(ctx, region):
    ctx.internal_client("route53", "us-east-1").change_resource_record_sets(
        HostedZoneId=ctx.provisioned.hosted_zone_id, ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": ctx.config.record_name, "Type": "A", "TTL": ctx.profile.dns_ttl_s,
            "ResourceRecords": [{"Value": ctx.lb_addresses[region]}]}}]})


def _publish_alarm(ctx, region="us-east-1") -> str:
    """The notification the alarm evaluator publishes when the region's request-count alarm fires."""
    name = ctx.provisioned.alarm_names[region]["request-count"]
    alarm = ctx.internal_client("cloudwatch", region).describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    subject, message = alarm_notification(alarm, region=region, old="OK", new="ALARM", change_time=time.time(),
                                          reason="Threshold Crossed: 1 out of the last 1 datapoints [812.0] was "
                                                 "greater than the threshold (500.0)")
    return ctx.internal_client("sns", region).publish(
        TopicArn=ctx.provisioned.topic_arns[region], Subject=subject, Message=message)["MessageId"]


def _wait_record(runner, message_id, deadline_s):
    def check():
        recs = _records(runner, message_id=message_id)
        assert recs and not recs[-1]["will_retry"], f"records so far: {recs}"
        return recs
    return eventually(check, deadline_s=deadline_s, what=f"failover invocation for {message_id}")[0]


def test_reference_handler_moves_the_record_and_is_idempotent(reference):
    # Catches a handler that does not parse CloudWatch's message, picks the wrong region, writes
    # the wrong address/TTL, or fails (or flips back) on SNS's at-least-once second delivery.
    ctx, _, runner = reference
    _reset_record(ctx, "us-east-1")
    assert _a_record(ctx)[0] == ctx.lb_addresses["us-east-1"]
    deadline = ctx.config.failover.timeout_s + MARGIN_S

    first = _wait_record(runner, _publish_alarm(ctx), deadline)
    assert [r["outcome"] for r in first] == ["ok"], first[-1]["error"]
    action = first[0]["result"]["actions"][0]
    assert (action["action"], action["from"], action["to"]) == ("moved", "us-east-1", "us-west-2")
    assert first[0]["alarm"]["NewStateValue"] == "ALARM"
    assert _a_record(ctx) == (ctx.lb_addresses["us-west-2"], ctx.profile.dns_ttl_s)

    second = _wait_record(runner, _publish_alarm(ctx), deadline)
    assert [r["outcome"] for r in second] == ["ok"], second[-1]["error"]
    assert second[0]["result"]["moved"] == 0
    assert second[0]["result"]["actions"][0]["action"] == "none"
    assert _a_record(ctx) == (ctx.lb_addresses["us-west-2"], ctx.profile.dns_ttl_s)


def test_reference_handler_retries_route53_throttling_within_its_timeout(reference):
    # Catches a handler that gives up on the first Throttling (Lambda's async retry would then be
    # the only retry, a minute later in AWS) or retries past its own timeout.
    ctx, router, runner = reference
    _reset_record(ctx, "us-east-1")
    rule = router.add_fault(kind="throttle", service="route53")
    try:
        message_id = _publish_alarm(ctx)

        def throttled_twice():
            matched = [r["matched"] for r in router.status()["api_faults"] if r["id"] == rule["id"]]
            assert matched and matched[0] >= 2, f"throttled calls so far: {matched}"
        eventually(throttled_twice, deadline_s=MARGIN_S, what="handler's Route 53 calls throttled twice")
    finally:
        router.remove_fault(rule["id"])  # the throttling burst ends
    recs = _wait_record(runner, message_id, ctx.config.failover.timeout_s + MARGIN_S)
    assert [(r["attempt"], r["outcome"]) for r in recs] == [(1, "ok")], recs[-1]["error"]
    assert recs[0]["duration_s"] < ctx.config.failover.timeout_s
    assert recs[0]["result"]["moved"] == 1
    assert sum("Throttling" in line for line in recs[0]["logs"]) >= 2, recs[0]["logs"]
    assert _a_record(ctx)[0] == ctx.lb_addresses["us-west-2"]


def test_reference_handler_gives_up_before_its_timeout_when_route53_hangs(reference):
    # A black-holed Route 53 (the control plane hangs): the handler must stop retrying while it
    # still has time and raise, so Lambda records an error and retries the event, rather than
    # being killed at its timeout mid-call. Catches SDK retries hiding under the handler's own
    # (each attempt would then cost several read timeouts and overrun the budget it computes).
    ctx, router, runner = reference
    _reset_record(ctx, "us-east-1")
    timeout_s = ctx.config.failover.timeout_s
    rule = router.add_fault(kind="blackhole", service="route53")
    try:
        message_id = _publish_alarm(ctx)
        first, _ = eventually(lambda: _records(runner, message_id=message_id) or _fail("no attempt finished yet"),
                              deadline_s=timeout_s + MARGIN_S, what="first attempt against a hung Route 53")
    finally:
        router.remove_fault(rule["id"])
    assert first[0]["outcome"] == "error", first[0]
    assert first[0]["error"]["type"] in ("ReadTimeoutError", "ConnectTimeoutError"), first[0]["error"]
    # one hung call costs the handler's read timeout (2 s); a second one (an SDK retry under the
    # handler's own) takes it to >= 4 s, past what its out-of-time check budgets for
    assert first[0]["duration_s"] < 2 * 2.0 and first[0]["will_retry"], first[0]["duration_s"]
    # Lambda's async retry moves the record once Route 53 answers again
    recs = _wait_record(runner, message_id, len(RETRY_DELAYS_S) * (timeout_s + RETRY_DELAYS_S[-1]) + MARGIN_S)
    assert recs[-1]["outcome"] == "ok" and recs[-1]["result"]["moved"] == 1, recs[-1]
    assert _a_record(ctx)[0] == ctx.lb_addresses["us-west-2"]


# -- bring-your-own configuration: placeholders, file handlers, concurrency, OK notifications ----------------

def test_placeholders_in_the_environment_are_filled_with_the_environments_values(env):
    # Catches placeholders passed through literally, a wrong region's value, JSON braces taken for
    # placeholders, and an unknown placeholder or region accepted by the config.
    from gameday.config import ConfigError, load_config

    ctx, _, _ = env
    cfg = _config(environment={
        "ZONE": "{hosted_zone_id}", "NAME": "{record_name}", "TYPE": "{record_type}", "TTL": "{record_ttl}",
        "WEST": "{lb_address:us-west-2}", "EAST_ID": "{set_identifier:us-east-1}", "TOPIC": "{topic_arn:us-east-1}",
        "REGIONS": "{regions}", "JSON": '{"primary": "{initial_region}"}', "ADDRS": "{region_addresses}"})
    e = LambdaRunner(dataclasses.replace(ctx, config=cfg)).lambda_environment()
    assert e["ZONE"] == ctx.provisioned.hosted_zone_id and e["NAME"] == "api.gameday.test."
    assert (e["TYPE"], e["TTL"], e["REGIONS"]) == ("A", str(ctx.profile.dns_ttl_s), "us-east-1,us-west-2")
    assert e["WEST"] == ctx.lb_addresses["us-west-2"] != ctx.lb_addresses["us-east-1"]
    assert e["EAST_ID"] == "us-east-1" and e["TOPIC"] == ctx.provisioned.topic_arns["us-east-1"]
    assert json.loads(e["JSON"]) == {"primary": "us-east-1"} and json.loads(e["ADDRS"]) == ctx.lb_addresses
    for bad, says in (("{lb_adress:us-west-2}", "unknown placeholder {lb_adress}"),
                      ("{lb_address:eu-west-9}", "needs one of regions"),
                      ("{record_name:us-east-1}", "takes no argument"),
                      ("{health_check_id:us-east-1}", "only with route53.routing = failover")):
        with pytest.raises(ConfigError, match=re.escape(says)) as err:
            load_config(None, {"failover": {"environment": {"X": bad}}})
        assert "failover.environment.X" in str(err.value) and "\n" not in str(err.value)


def test_a_handler_given_as_a_file_path_runs_from_its_directory(env, tmp_path):
    # Catches a file-path handler whose directory is not put on the import path, and _HANDLER not in
    # Lambda's module.function form; a missing file is a one-line config error.
    from gameday.config import ConfigError

    ctx, _, _ = env
    (tmp_path / "team_failover.py").write_text(textwrap.dedent('''
        import os
        import boto3
        route53 = boto3.client("route53")
        def lambda_handler(event, context):
            print("team handler running")
            return {"statusCode": 200, "handler": os.environ["_HANDLER"], "task_root": os.environ["LAMBDA_TASK_ROOT"],
                    "zones": len(route53.list_hosted_zones()["HostedZones"])}
    '''))
    cfg = _config(handler=f"{tmp_path}/team_failover.py:lambda_handler", reserved_concurrency=1)  # one process
    runner = LambdaRunner(dataclasses.replace(ctx, config=cfg)).start()
    try:
        rec = runner.invoke({"probe": True})
    finally:
        runner.stop()
    assert rec["outcome"] == "ok", rec
    assert rec["result"] == {"statusCode": 200, "handler": "team_failover.lambda_handler",
                             "task_root": str(tmp_path), "zones": 1}
    assert any("team handler running" in line for line in rec["logs"])
    with pytest.raises(ConfigError, match="no file"):
        LambdaRunner(dataclasses.replace(ctx, config=_config(handler=f"{tmp_path}/missing.py:handler")))


SLOW_HANDLER = '''
import time
def handler(event, context):
    started = time.time()
    time.sleep(event["sleep_s"])
    return {"started": started, "ended": time.time()}
'''


def test_unreserved_invocations_run_side_by_side_in_prewarmed_environments(env, tmp_path):
    # Real processes behind the model's rules (tests/test_lambda_model.py has reserved concurrency's
    # throttling and the routing table): catches start() not initialising the provisioned
    # environments (by default all of them, so a surge meets no cold start, issue 17 item 7), an
    # environment left to cold-start at its first invocation, as a second one did mid-surge when two
    # notifications overlapped, and invocations serialised although they have two environments.
    reserved = None
    ctx, _, _ = env
    (tmp_path / "slow.py").write_text(SLOW_HANDLER)
    sleep_s = 1.0  # both environments are warm: the two start within milliseconds of each other
    cfg = _config(handler="slow:handler", code_dir=str(tmp_path), timeout_s=sleep_s + 3, reserved_concurrency=reserved)
    runner = LambdaRunner(dataclasses.replace(ctx, config=cfg)).start()
    try:
        warm_at_start = [w["state"] for w in runner.status()["workers"]]
        rids = [runner.invoke_async({"sleep_s": sleep_s}) for _ in range(2)]
        recs = [_wait_attempts(runner, rid, 1, 2 * (sleep_s + 3) + MARGIN_S)[0] for rid in rids]
        status = runner.status()
    finally:
        runner.stop()
    (a, b) = sorted((r["result"]["started"], r["result"]["ended"]) for r in recs)
    overlap = a[1] > b[0]
    from gameday.environments.local.lambda_runner import UNRESERVED_CONCURRENCY

    assert status["concurrency"] == UNRESERVED_CONCURRENCY
    assert status["provisioned_concurrency"] == status["concurrency"]
    assert warm_at_start == ["warm"] * status["concurrency"], "start() left environments uninitialised"
    assert not any(r["cold_start"] for r in recs), [(r["cold_start"], r["init_s"]) for r in recs]
    assert overlap, f"unreserved concurrency, yet the second invocation waited for the first: {a} {b}"
    assert len({r["worker_pid"] for r in recs}) == 2  # two execution environments


def test_without_provisioned_concurrency_the_first_invocation_cold_starts(env, tmp_path):
    # Catches environments initialised although none are provisioned (Lambda's on-demand cold start,
    # which a team may want to rehearse, would then never be seen), a cold start not recorded as
    # one (no init duration), a second invocation that pays the init again, the wrong
    # AWS_LAMBDA_INITIALIZATION_TYPE, and more provisioned than reserved concurrency accepted.
    from gameday.config import ConfigError

    ctx, _, out_dir = env
    spec = ctx.config.failover
    cfg = _config(handler=spec.handler, code_dir=spec.code_dir, timeout_s=PROBE_TIMEOUT_S,
                  environment=dict(spec.environment), reserved_concurrency=1, provisioned_concurrency=0)
    runner = LambdaRunner(dataclasses.replace(ctx, config=cfg)).start()
    try:
        workers_at_start = runner.status()["workers"]
        first = runner.invoke({"mode": "dump", "key": "on-demand"}, wait_s=MARGIN_S + PROBE_TIMEOUT_S)
        second = runner.invoke({"mode": "ignore"}, wait_s=MARGIN_S + PROBE_TIMEOUT_S)
    finally:
        runner.stop()
    assert workers_at_start == [], f"an environment was initialised before any event: {workers_at_start}"
    assert first["outcome"] == "ok" and first["cold_start"] and first["init_s"] > 0, first
    assert any("Init Duration" in line for line in first["logs"] if line.startswith("REPORT"))
    assert second["outcome"] == "ok" and not second["cold_start"] and second["worker_pid"] == first["worker_pid"]
    dump = json.loads((out_dir / "dump-on-demand.json").read_text())
    assert dump["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    init = [e for e in ctx.events.since(0, kind="lambda_init") if e["pid"] == first["worker_pid"]]
    assert [(e["trigger"], e["initialization_type"]) for e in init] == [("invoke", "on-demand")]
    too_many = _config(handler=spec.handler, code_dir=spec.code_dir, reserved_concurrency=1, provisioned_concurrency=2)
    with pytest.raises(ConfigError, match="cannot exceed failover.reserved_concurrency"):
        LambdaRunner(dataclasses.replace(ctx, config=too_many))


def test_ok_notifications_reach_the_function(probe):
    # Catches alarms provisioned without OK actions, and OK notifications dropped before the function
    # (handlers that fail back on OK could then never be rehearsed).
    ctx, runner, _ = probe
    region = "us-east-1"
    name = ctx.provisioned.alarm_names[region]["request-count"]
    alarm = ctx.internal_client("cloudwatch", region).describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    assert alarm["OKActions"] == [ctx.provisioned.topic_arns[region]]
    subject, message = alarm_notification(alarm, region=region, old="ALARM", new="OK", change_time=time.time(),
                                          reason="Threshold Crossed: 1 datapoint [12.0] was not greater than 500.0")
    mid = ctx.internal_client("sns", region).publish(TopicArn=alarm["OKActions"][0], Subject=subject,
                                                     Message=message)["MessageId"]
    recs, _ = eventually(lambda: _records(runner, message_id=mid) or _fail("not invoked"), deadline_s=MARGIN_S,
                         what="invocation for the OK notification")
    assert recs[0]["alarm"] == {"AlarmName": name, "NewStateValue": "OK", "OldStateValue": "ALARM"}


def _publish_ok(ctx, region="us-east-1", key="healthy-hosts") -> str:
    name = ctx.provisioned.alarm_names[region][key]
    alarm = ctx.internal_client("cloudwatch", region).describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
    subject, message = alarm_notification(alarm, region=region, old="ALARM", new="OK", change_time=time.time(),
                                          reason="Threshold Crossed: 1 datapoint [2.0] was not less than 1.0")
    return ctx.internal_client("sns", region).publish(
        TopicArn=ctx.provisioned.topic_arns[region], Subject=subject, Message=message)["MessageId"]


def test_reference_handler_fails_back_on_ok_only_when_automatic_and_the_region_is_all_ok(env):
    # Catches a failback on OK under the manual policy, a failback while another alarm of the home
    # region still fires, and no failback at all once every alarm of the home region is OK.
    ctx, _, _ = env
    cw = ctx.internal_client("cloudwatch", "us-east-1")
    names = ctx.provisioned.alarm_names["us-east-1"]
    for failback in ("manual", "automatic"):
        cfg = _config(failback=failback, reserved_concurrency=1)
        runner = LambdaRunner(dataclasses.replace(ctx, config=cfg)).start()
        try:
            for n in names.values():
                cw.set_alarm_state(AlarmName=n, StateValue="OK", StateReason="test")
            _reset_record(ctx, "us-west-2")   # failed over earlier
            if failback == "automatic":
                cw.set_alarm_state(AlarmName=names["request-count"], StateValue="ALARM", StateReason="still firing")
                _wait_record(runner, _publish_ok(ctx), MARGIN_S + 10)
                assert _a_record(ctx)[0] == ctx.lb_addresses["us-west-2"], "failed back while an alarm still fires"
                cw.set_alarm_state(AlarmName=names["request-count"], StateValue="OK", StateReason="recovered")
            recs = _wait_record(runner, _publish_ok(ctx), MARGIN_S + 10)
            assert recs[-1]["outcome"] == "ok", recs[-1]
        finally:
            runner.stop()
        expected = "us-east-1" if failback == "automatic" else "us-west-2"
        assert _a_record(ctx)[0] == ctx.lb_addresses[expected], f"failback={failback}: {recs[-1]['result']}"
    _reset_record(ctx, "us-east-1")


FORK_PROBE = '''
import os
import sys

import boto3

route53 = boto3.client("route53")


def handler(event, context):
    return {"pid": os.getpid(), "ppid": os.getppid(), "cwd": os.getcwd(), "path0": sys.path[0],
            "env": {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "_HANDLER", "LAMBDA_"))},
            "zones": len(route53.list_hosted_zones()["HostedZones"])}
'''


def test_provisioned_environments_fork_from_the_task_zygote_with_the_lambda_environment(env, tmp_path, monkeypatch):
    # Catches a forked execution environment that differs from a spawned one: the host's SDK settings
    # leaking in (AWS_PROFILE, set before the zygote starts, must be scrubbed), the zygote's working
    # directory or import path instead of the code directory, the protocol not reaching the runner.
    from gameday.environments.local.zygote import TaskZygote

    ctx, _, _ = env
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "fork_probe.py").write_text(FORK_PROBE)
    monkeypatch.setenv("AWS_PROFILE", "host-profile-that-does-not-exist")
    zygote = TaskZygote(tmp_path / "zygote.log").start()
    monkeypatch.undo()
    cfg = _config(handler="fork_probe:handler", code_dir=str(tmp_path / "code"), reserved_concurrency=1)
    runner = LambdaRunner(dataclasses.replace(ctx, config=cfg))
    runner.zygote = zygote
    try:
        runner.start()
        rec = runner.invoke({"probe": True}, wait_s=MARGIN_S + PROBE_TIMEOUT_S)
    finally:
        runner.stop()
        zygote.stop()
    assert rec["outcome"] == "ok", rec
    out = rec["result"]
    assert out["ppid"] == zygote.proc.pid, "the provisioned environment was not forked from the zygote"
    assert out["cwd"] == out["path0"] == out["env"]["LAMBDA_TASK_ROOT"] == str(tmp_path / "code")
    assert out["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "provisioned-concurrency"
    assert out["env"]["AWS_ENDPOINT_URL"] == ctx.router_url and "AWS_PROFILE" not in out["env"]
    assert out["zones"] == 1
    assert not alive({out["pid"]}), "stop() left the forked worker running"


def test_a_code_directory_bundling_its_own_sdk_gets_fresh_processes(env, tmp_path):
    # Catches forking a function that bundles its own boto3 (or any module the zygote has loaded):
    # it would run the zygote's copy instead of its own.
    from gameday.environments.local.lambda_runner import shadowed_modules

    (tmp_path / "boto3").mkdir()
    (tmp_path / "boto3" / "__init__.py").write_text("")
    (tmp_path / "team_handler.py").write_text("def handler(event, context):\n    return 1\n")
    assert shadowed_modules(tmp_path) == ["boto3"]
    (tmp_path / "boto3" / "__init__.py").unlink()
    (tmp_path / "boto3").rmdir()
    assert shadowed_modules(tmp_path) == []
    assert shadowed_modules(Path(__file__).resolve().parents[1]) == [], "the checkout's own gameday is not a copy"
