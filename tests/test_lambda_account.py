"""The failover function as an AWS account has it, driven with plain boto3 against the router:
each region's topic invokes the function's alias through a `lambda` subscription (deleting it
stops the invocations), UpdateAlias changes the handler the next invocation runs, and every
invocation's log lines reach CloudWatch Logs /aws/lambda/<function> in AWS's formats.

Each behaviour has a twin with it switched off (the subscription deleted, the runner deaf to
UpdateAlias, no log shipping) that shows the check would fail.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
import uuid

import boto3
import pytest

from gameday.assertions.deadlines import HARNESS_MARGIN_S
from gameday.assertions.eventually import eventually
from gameday.aws import LOCAL_CREDENTIALS
from gameday.config import GamedayConfig
from gameday.environments.local.lambda_runner import INIT_TIMEOUT_S, LambdaRunner
from gameday.environments.local.router import AwsRouter
from tests.support import provisioned_context

TIMEOUT_S = 1.0
# a cold start (a new environment after the alias moved) + the function's timeout + SNS and scheduling
INVOKE_DEADLINE_S = INIT_TIMEOUT_S / 2 + TIMEOUT_S + HARNESS_MARGIN_S
LOGS_DEADLINE_S = HARNESS_MARGIN_S     # a PutLogEvents call after the invocation ends

PROBE = textwrap.dedent('''
    """Two handlers of one deployment package; each writes what it ran as, then logs and prints."""
    import json
    import logging
    import os
    import time

    logging.getLogger().setLevel(logging.INFO)
    OUT = os.environ["PROBE_DIR"]


    def _ran(name, event, context):
        started = time.time()
        msg = json.loads(event["Records"][0]["Sns"]["Message"])
        out = {"handler": name, "started": started, "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
               "mark": os.environ.get("MARK"), "stream": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"],
               "record": event["Records"][0], "invoked_function_arn": context.invoked_function_arn,
               "request_id": context.aws_request_id}
        path = os.path.join(OUT, f"ran-{msg['key']}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(out, f)
        os.replace(path + ".tmp", path)
        return msg


    def handler(event, context):
        msg = _ran("v1", event, context)
        print(f"print from v1 {msg['key']}")
        logging.info("logging from v1 %s", msg["key"])
        if msg.get("mode") == "raise":
            raise ValueError(f"boom {msg['key']}")
        if msg.get("mode") == "sleep":
            time.sleep(60)
        return {"handler": "v1"}


    def handler_v2(event, context):
        _ran("v2", event, context)
        return {"handler": "v2"}
''')


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    code_dir = tmp_path_factory.mktemp("code")
    (code_dir / "gd_account.py").write_text(PROBE)
    out_dir = tmp_path_factory.mktemp("out")
    cfg = GamedayConfig.model_validate({
        "profiles": {"local": {"lambda_retry_delays_s": [0.2]}},
        "failover": {"handler": "gd_account.handler", "code_dir": str(code_dir), "timeout_s": TIMEOUT_S,
                     "environment": {"PROBE_DIR": str(out_dir)}, "reserved_concurrency": 1,
                     "maximum_retry_attempts": 0}})
    with provisioned_context(cfg) as ctx:
        router = AwsRouter(ctx).start()   # ctx.router_url: the account's one endpoint
        runner = LambdaRunner(ctx).start()
        try:
            yield ctx, runner, out_dir
        finally:
            runner.stop()
            router.stop()


def _client(ctx, service, region):
    """A customer's plain boto3 client on the account's endpoint."""
    return boto3.client(service, region_name=region, endpoint_url=ctx.router_url, **LOCAL_CREDENTIALS)


def _publish(ctx, region, **message) -> str:
    key = message.setdefault("key", uuid.uuid4().hex[:8])
    _client(ctx, "sns", region).publish(TopicArn=ctx.provisioned.topic_arns[region], Message=json.dumps(message))
    return key


def _ran(out_dir, key, deadline_s=INVOKE_DEADLINE_S) -> dict:
    path = out_dir / f"ran-{key}.json"

    def check():
        assert path.exists(), f"the function did not run for {key} yet"
        return json.loads(path.read_text())
    return eventually(check, deadline_s=deadline_s, what=f"the function invoked for {key}")[0]


def _record(runner, request_id, deadline_s=INVOKE_DEADLINE_S) -> dict:
    def check():
        recs = [r for r in runner.invocations() if r["request_id"] == request_id]
        assert recs, f"no invocation record for {request_id} yet"
        return recs[-1]
    return eventually(check, deadline_s=deadline_s, what=f"the invocation record of {request_id}")[0]


def _lambda_subscriptions(ctx, region) -> list[dict]:
    subs = _client(ctx, "sns", region).list_subscriptions_by_topic(TopicArn=ctx.provisioned.topic_arns[region])
    return [s for s in subs["Subscriptions"] if s["Protocol"] == "lambda"]


# -- 1. topic -> function: the alias subscription is the only path ------------------------------------
def test_each_topic_invokes_the_alias_through_its_lambda_subscription(account):
    # Catches a topic wired to anything but the alias (what --env aws preflight checks), a delivery
    # that does not reach the runner across regions, and a hand-made event with the wrong subscription.
    ctx, runner, out_dir = account
    alias_arn = ctx.provisioned.lambda_alias_arn
    for region in ctx.config.regions:
        subs = _lambda_subscriptions(ctx, region)
        assert [s["Endpoint"] for s in subs] == [alias_arn], subs
        ran = _ran(out_dir, _publish(ctx, region))
        assert ran["record"]["EventSubscriptionArn"] == subs[0]["SubscriptionArn"]
        assert ran["record"]["Sns"]["TopicArn"] == ctx.provisioned.topic_arns[region]
        assert ran["invoked_function_arn"] == alias_arn
        assert (ran["handler"], ran["version"]) == ("v1", "1")


def test_deleting_the_subscription_stops_the_invocations(account):
    # The twin of the test above: with its subscription deleted through the API, a region's topic
    # invokes nothing (no other path to the function is left), while the other region's still does.
    ctx, runner, out_dir = account
    sns = _client(ctx, "sns", "us-east-1")
    (sub,) = _lambda_subscriptions(ctx, "us-east-1")
    sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])
    try:
        silent = _publish(ctx, "us-east-1")
        _ran(out_dir, _publish(ctx, "us-west-2"))   # published after: delivered after, ran after
        assert not (out_dir / f"ran-{silent}.json").exists(), "an unsubscribed topic still invoked the function"
        assert not [r for r in runner.invocations() if f"from v1 {silent}" in json.dumps(r.get("logs"))]
    finally:
        sns.subscribe(TopicArn=ctx.provisioned.topic_arns["us-east-1"], Protocol="lambda",
                      Endpoint=ctx.provisioned.lambda_alias_arn)
    _ran(out_dir, _publish(ctx, "us-east-1"))   # a subscription made through the API works as well


# -- 2. UpdateAlias changes the handler the next invocation runs ---------------------------------------
@pytest.fixture(scope="module")
def version_2(account):
    """Version 2 of the function: handler_v2, with a variable of its own ($LATEST keeps it too)."""
    ctx, _, _ = account
    lam = _client(ctx, "lambda", ctx.config.failover.region)
    name = ctx.config.aws.lambda_name
    lam.update_function_configuration(FunctionName=name, Handler="gd_account.handler_v2",
                                      Environment={"Variables": {"MARK": "two"}})
    return lam.publish_version(FunctionName=name)["Version"]


def _point_alias(ctx, version: str) -> float:
    lam = _client(ctx, "lambda", ctx.config.failover.region)
    lam.update_alias(FunctionName=ctx.config.aws.lambda_name, Name="live", FunctionVersion=version)
    return time.time()


def test_update_alias_makes_the_next_invocation_run_that_versions_handler(account, version_2):
    # Catches a runner that keeps running the handler it started with, one that follows $LATEST
    # instead of the alias, and a version's environment variables left out.
    ctx, runner, out_dir = account
    assert version_2 == "2"
    still = _ran(out_dir, _publish(ctx, "us-east-1"))
    assert (still["handler"], still["version"]) == ("v1", "1"), "$LATEST changed, not the alias: version 1 runs"
    try:
        switched_at = _point_alias(ctx, "2")
        ran = _ran(out_dir, _publish(ctx, "us-west-2"))
        assert (ran["handler"], ran["version"], ran["mark"]) == ("v2", "2", "two")
        assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[2\][0-9a-f]{32}", ran["stream"]), ran["stream"]
        rec = _record(runner, ran["request_id"])
        assert rec["cold_start"], "version 2 ran in version 1's execution environment"
        print(f"UpdateAlias returned -> the new handler running: {(ran['started'] - switched_at) * 1000:.0f} ms "
              f"(of which the new environment's init {rec['init_s'] * 1000:.0f} ms)")
    finally:
        _point_alias(ctx, "1")
    back = _ran(out_dir, _publish(ctx, "us-east-1"))
    assert (back["handler"], back["version"], back["mark"]) == ("v1", "1", None)


def test_without_the_alias_hook_the_old_handler_keeps_running(account, version_2):
    # The twin: the runner deaf to the router's UpdateAlias (follow_code_changes off) runs the old
    # handler after the switch, which is what the test above would catch.
    ctx, runner, out_dir = account
    _ran(out_dir, _publish(ctx, "us-east-1"))   # what the alias names now is what the runner runs
    runner.follow_code_changes = False
    try:
        _point_alias(ctx, "2")
        ran = _ran(out_dir, _publish(ctx, "us-east-1"))
        assert (ran["handler"], ran["version"]) == ("v1", "1")
    finally:
        _point_alias(ctx, "1")
        runner.follow_code_changes = True


# -- 3. the function's logs in CloudWatch Logs ---------------------------------------------------------
def _log_events(ctx, runner, pattern: str) -> list[dict]:
    logs = _client(ctx, "logs", ctx.config.failover.region)
    try:
        return logs.filter_log_events(logGroupName=f"/aws/lambda/{runner.function_name}",
                                      filterPattern=f'"{pattern}"')["events"]
    except logs.exceptions.ResourceNotFoundException:   # Lambda creates the group when it first logs
        return []


def _wait_log(ctx, runner, pattern: str) -> tuple[list[dict], float]:
    def check():
        events = _log_events(ctx, runner, pattern)
        assert events, f"no log event {pattern!r} yet"
        return events
    return eventually(check, deadline_s=LOGS_DEADLINE_S, what=f"log event {pattern!r}", interval_s=0.02)


REPORT_RE = (r"REPORT RequestId: {rid}\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\tMemory Size: 128 MB\t"
             r"Max Memory Used: \d+ MB(\tInit Duration: \d+\.\d\d ms)?{status}")


def test_each_invocation_logs_start_output_end_and_report_to_cloudwatch_logs(account):
    # Catches log lines that never reach CloudWatch Logs, lines in a stream not named like Lambda's
    # (one per execution environment), and START/END/REPORT lines not in AWS's formats.
    ctx, runner, out_dir = account
    key = _publish(ctx, "us-west-2")
    ran = _ran(out_dir, key)
    rid = ran["request_id"]
    rec = _record(runner, rid)
    (report,), _ = _wait_log(ctx, runner, f"REPORT RequestId: {rid}")
    print(f"invocation end -> REPORT visible in FilterLogEvents: {(time.time() - rec['end_ts']) * 1000:.0f} ms (upper bound)")
    assert re.fullmatch(REPORT_RE.format(rid=rid, status=""), report["message"]), report["message"]
    assert report["logStreamName"] == ran["stream"] == rec["log_stream"]
    lines = [e["message"] for e in _log_events(ctx, runner, rid) + _log_events(ctx, runner, f"from v1 {key}")
             if e["logStreamName"] == ran["stream"]]
    assert f"START RequestId: {rid} Version: 1" in lines
    assert f"print from v1 {key}" in lines
    assert any(re.fullmatch(rf"\[INFO\]\t\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\t{rid}\tlogging from v1 {key}", ln)
               for ln in lines), lines
    assert f"END RequestId: {rid}" in lines


def test_tracebacks_and_timeouts_are_logged_as_lambda_logs_them(account):
    # Catches an uncaught error logged without its traceback, and a timeout without Lambda's
    # "Task timed out" line and its REPORT's Status.
    ctx, runner, out_dir = account
    key = _publish(ctx, "us-west-2", mode="raise")
    _ran(out_dir, key)
    (error,), _ = _wait_log(ctx, runner, f"ValueError: boom {key}")
    assert error["message"].startswith(f"[ERROR] ValueError: boom {key}\nTraceback (most recent call last):")
    rid = _ran(out_dir, _publish(ctx, "us-west-2", mode="sleep"))["request_id"]
    _record(runner, rid, INVOKE_DEADLINE_S + TIMEOUT_S)
    (timed_out,), _ = _wait_log(ctx, runner, f"{rid} Task timed out after")
    assert re.fullmatch(rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z {rid} Task timed out after \d+\.\d\d seconds",
                        timed_out["message"]), timed_out["message"]
    (report,), _ = _wait_log(ctx, runner, f"REPORT RequestId: {rid}")
    assert re.fullmatch(REPORT_RE.format(rid=rid, status=r"\tStatus: timeout"), report["message"]), report["message"]


def test_without_shipping_no_report_reaches_cloudwatch_logs(account):
    # The twin: with the runner's shipping off, an invocation's REPORT never appears, which the tests
    # above would catch. The next shipped invocation's REPORT bounds the wait (one queue, in order).
    ctx, runner, out_dir = account
    runner.ship_logs = False
    try:
        silent = _ran(out_dir, _publish(ctx, "us-east-1"))["request_id"]
        _record(runner, silent)
    finally:
        runner.ship_logs = True
    shipped = _ran(out_dir, _publish(ctx, "us-east-1"))["request_id"]
    _record(runner, shipped)
    _wait_log(ctx, runner, f"REPORT RequestId: {shipped}")
    assert not _log_events(ctx, runner, f"REPORT RequestId: {silent}")


def test_an_alias_on_latest_follows_update_function_configuration(account, version_2):
    # Catches a runner that reads an alias's version once: with the alias on $LATEST, changing
    # $LATEST's Handler (UpdateFunctionConfiguration) changes what the next invocation runs.
    ctx, runner, out_dir = account
    lam = _client(ctx, "lambda", ctx.config.failover.region)
    name = ctx.config.aws.lambda_name
    try:
        _point_alias(ctx, "$LATEST")
        ran = _ran(out_dir, _publish(ctx, "us-west-2"))
        assert (ran["handler"], ran["version"], ran["mark"]) == ("v2", "$LATEST", "two")
        lam.update_function_configuration(FunctionName=name, Handler="gd_account.handler",
                                          Environment={"Variables": {"MARK": "three"}})
        ran = _ran(out_dir, _publish(ctx, "us-west-2"))
        assert (ran["handler"], ran["version"], ran["mark"]) == ("v1", "$LATEST", "three")
    finally:
        _point_alias(ctx, "1")
