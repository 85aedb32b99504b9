"""The local Lambda service for the failover function: SNS -> Lambda made real without Docker
(moto does not run Lambda functions without it). Each region's topic is subscribed to the
function's alias with protocol `lambda` (provision.py); moto delivers those notifications to
this runner's endpoint (moto_fix_sns: the runner tells every region's moto where it serves the
function), so deleting a subscription really stops the function being invoked. Each notification
becomes Lambda's SNS event and runs as an asynchronous invocation in a warm worker process
(lambda_worker.py) whose environment is the Lambda environment, so a handler written for real
Lambda runs unchanged; Lambda's timeout, retries and concurrency apply. Every attempt is a
`lambda_invocation` event on the timeline (a cold start also emits `lambda_init`).

The version that runs is the function's, as moto holds it: the subscription's qualifier (the
alias) -> its version -> that version's Handler and Environment; an execution environment runs
one version, so after UpdateAlias (or UpdateFunctionConfiguration of $LATEST when that is what
is invoked) the next invocation starts a new environment with the new handler, while one in
flight finishes on the old. The runner learns of such changes from the router
(ctx.after_aws_call). Each invocation's log lines (START, the handler's output, END, REPORT)
go to CloudWatch Logs /aws/lambda/<function> (lambda_logs.py).

The rules (the event queue, retries and throttles, which environment takes an event, warm reuse
vs cold start, provisioned environments, discards) are lambda_model.py's, on `ctx.clock`; this
file keeps the processes, the SNS endpoint, the threads and the records.

How each of Lambda's behaviours is modelled, the handler forms and the placeholders of the
function's environment variables: docs/local-environment.md, "SNS -> Lambda: the Lambda runner".
"""

from __future__ import annotations

import json
import logging
import math
import platform
import queue
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from gameday.environments.local import lambda_model as model
from gameday.environments.local.context import AwsCall, LocalContext
from gameday.environments.local.lambda_logs import LogShipper, log_group_name, log_stream_name
from gameday.environments.local.lambda_model import INIT_ON_DEMAND, INIT_PROVISIONED  # noqa: F401 - public names
from gameday import procs
from gameday.aws import LOCAL_ACCOUNT_ID, LOCAL_CREDENTIALS, moto_admin
from gameday.config import PLACEHOLDER_RE, ConfigError
from gameday.httpfwd import LoopbackServer, QuietHandler

log = logging.getLogger("gameday.lambda")

WORKER_PATH = Path(__file__).resolve().with_name("lambda_worker.py")
FUNCTION_NAME = "gameday-failover"   # the default of aws.lambda_name (the runner uses the config's)
LAMBDA_ALIAS = "live"                 # the alias the topics invoke (provision.LAMBDA_ALIAS)
# Lambda API calls that change which handler an invocation runs (the router tells the runner)
CODE_CHANGING_OPERATIONS = ("UpdateAlias", "CreateAlias", "DeleteAlias", "UpdateFunctionConfiguration")
MEMORY_SIZE_MB = 128
# Lambda's init phase may take up to 10 s before the invocation itself starts.
INIT_TIMEOUT_S = 10.0
RESULT_MAX_CHARS = 4000
LOG_MAX_LINES = 200
LOG_LINE_MAX_CHARS = 2000
# Execution environments at most when no reserved concurrency is configured (Lambda's account
# default is 1,000). Two cores: each cold start imports boto3 (~2.6 s of CPU under a surge), and
# with 4 a burst of OK notifications cold-started extra environments mid-surge and starved the
# clients being measured; 2 keeps the overlap a handler must survive without that.
UNRESERVED_CONCURRENCY = 2
# Keys Lambda sets itself and refuses in a function's configuration (plus the endpoint URL,
# which is how the local environment reaches its AWS).
RESERVED_ENV_KEYS = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "TZ", "AWS_ENDPOINT_URL",
})


class LambdaRunnerStopped(RuntimeError):
    pass


# -- SNS -> Lambda event ------------------------------------------------------------------------
def sns_event(notification: dict, subscription_arn: str) -> dict:
    """Lambda's SNS event for one HTTP-delivered notification. The HTTP form spells
    SigningCertURL/UnsubscribeURL; Lambda's event spells them SigningCertUrl/UnsubscribeUrl and
    always carries Subject (null when the publisher gave none) and MessageAttributes."""
    topic_arn = notification["TopicArn"]
    region = topic_arn.split(":")[3]
    return {"Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": subscription_arn,
        "Sns": {
            "Type": notification.get("Type", "Notification"),
            "MessageId": notification["MessageId"],
            "TopicArn": topic_arn,
            "Subject": notification.get("Subject"),
            "Message": notification["Message"],
            "Timestamp": notification["Timestamp"],
            "SignatureVersion": notification.get("SignatureVersion", "1"),
            "Signature": notification.get("Signature", ""),
            "SigningCertUrl": notification.get("SigningCertURL", notification.get("SigningCertUrl", "")),
            "UnsubscribeUrl": f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={subscription_arn}",
            "MessageAttributes": notification.get("MessageAttributes") or {},
        },
    }]}


def alarm_of(message: str) -> dict | None:
    """AlarmName/NewStateValue/OldStateValue when the SNS message is a CloudWatch alarm notification."""
    try:
        m = json.loads(message)
    except (TypeError, ValueError):
        return None
    if isinstance(m, dict) and "AlarmName" in m and "NewStateValue" in m:
        return {"AlarmName": m["AlarmName"], "NewStateValue": m["NewStateValue"],
                "OldStateValue": m.get("OldStateValue")}
    return None


# -- the worker process, seen from the runner -------------------------------------------------------
@dataclass(frozen=True)
class FunctionCode:
    """What one version of the function runs. An execution environment runs one: an invocation of
    another (an alias moved, $LATEST reconfigured) gets a new environment, as in Lambda."""
    version: str                               # "$LATEST", "1", ...
    handler: str                               # _HANDLER, as Lambda spells it (module.function)
    code_dir: str
    variables: tuple[tuple[str, str], ...] = ()   # the version's own Environment.Variables


class _Lines(list):
    """An invocation's log lines, each with the time it was written (its CloudWatch Logs event's
    timestamp): append(line, ts=None) stamps it now unless told."""

    def __init__(self, clock, lines=()):
        super().__init__()
        self.clock = clock
        self.stamps: list[float] = []
        self.extend(lines)

    def append(self, line, ts: float | None = None) -> None:
        super().append(line)
        self.stamps.append(self.clock.time() if ts is None else ts)

    def extend(self, lines) -> None:
        for line in lines:
            self.append(line)


class _Worker:
    def __init__(self, proc: subprocess.Popen, clock, code: FunctionCode | None = None, log_stream: str = ""):
        self.proc = proc
        self.clock = clock
        self.code = code
        self.log_stream = log_stream          # its CloudWatch Logs stream (one per execution environment)
        self.spawned = clock.monotonic()
        self.messages: queue.Queue = queue.Queue()
        self.ready = False
        self.init_s: float | None = None      # spawn -> ready: interpreter start + handler import
        self.init_ms: float | None = None     # the handler module's import alone (worker-measured)
        self.invocations = 0
        self.pending_logs = _Lines(clock)     # lines logged outside an invocation (init, stray threads)
        self.reader = threading.Thread(target=self._read, name=f"lambda-worker-{proc.pid}", daemon=True)
        self.reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        try:
            for raw in self.proc.stdout:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, dict):
                    msg["ts"] = self.clock.time()   # when the line was written (a log event's timestamp)
                    self.messages.put(msg)
        except (OSError, ValueError):
            pass
        self.messages.put(None)  # EOF: the process is gone

    def next(self, deadline: float) -> dict | None | str:
        """The next message, None at EOF, or "timeout" once the clock's monotonic deadline passes."""
        while True:
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                return "timeout"
            try:
                # short real slices: under a FakeClock the deadline passes when a test advances it
                return self.messages.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue

    def send(self, msg: dict) -> None:
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        procs.kill_now(self.proc)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        self.reader.join(timeout=2)


@dataclass
class _Slot:
    """One execution environment's place: at most one invocation runs in it at a time (the model's
    SlotState says which); its thread runs the attempts the model starts there."""
    index: int
    worker: _Worker | None = None
    starts: queue.Queue = field(default_factory=queue.Queue)   # (job, model.Start) | None to stop


@dataclass
class _Job:
    request_id: str
    event: dict
    invocation_type: str                     # "Event" (async, retried) | "RequestResponse"
    received_ts: float
    attempt: int = 1
    region: str | None = None
    topic_arn: str | None = None
    message_id: str | None = None
    sns_timestamp: str | None = None
    alarm: dict | None = None
    qualifier: str | None = None             # the alias or version invoked (None: $LATEST)
    function_arn: str | None = None          # as invoked (the context's invoked_function_arn)
    code: FunctionCode | None = None         # what the current attempt runs
    log_stream: str | None = None            # the current attempt's environment's log stream
    future: Future | None = field(default=None, repr=False)


def _truncate_result(result):
    text = json.dumps(result, default=str)
    return result if len(text) <= RESULT_MAX_CHARS else text[:RESULT_MAX_CHARS] + "...(truncated)"


def _truncate_logs(lines: list[str]) -> list[str]:
    out = [ln if len(ln) <= LOG_LINE_MAX_CHARS else ln[:LOG_LINE_MAX_CHARS] + "...(truncated)"
           for ln in lines[:LOG_MAX_LINES]]
    if len(lines) > LOG_MAX_LINES:
        out.append(f"...({len(lines) - LOG_MAX_LINES} more lines)")
    return out


def shadowed_modules(code_dir: Path) -> list[str]:
    """Top-level modules or packages in `code_dir` that this process has already loaded from
    elsewhere (this process loads the same libraries as the task zygote: boto3, botocore, ...)."""
    out = []
    try:
        entries = list(code_dir.iterdir())
    except OSError:
        return ["(code directory unreadable)"]
    for entry in entries:
        name = entry.stem if entry.suffix == ".py" else entry.name if entry.is_dir() else ""
        module = sys.modules.get(name) if name.isidentifier() else None
        if module is None:
            continue
        loaded = getattr(module, "__file__", None)
        if loaded is None or not Path(loaded).resolve().is_relative_to(entry.resolve()):
            out.append(name)
    return sorted(out)


class LambdaRunner:
    def __init__(self, ctx: LocalContext):
        self.ctx = ctx
        spec = ctx.config.failover
        module, function, file_dir = spec.entry_point()
        self.handler = spec.handler
        self.lambda_handler = f"{module}.{function}"   # _HANDLER as Lambda spells it
        self.timeout_s = float(spec.timeout_s)
        self.region = spec.region
        self.retry_delays_s = tuple(float(d) for d in ctx.profile.lambda_retry_delays_s)
        if file_dir is not None and spec.code_dir:
            raise ConfigError("failover: give either a file path in handler or code_dir, not both")
        if spec.code_dir or file_dir is not None:
            given = spec.code_dir or file_dir
            code_dir = Path(given).expanduser().resolve()
            key = "failover.code_dir" if spec.code_dir else "failover.handler"
            if not code_dir.is_dir():
                raise ConfigError(f"{key}: {given!r} is not a directory (resolved to {code_dir})")
            if file_dir is not None and not (code_dir / f"{module}.py").is_file():
                raise ConfigError(f"failover.handler: {spec.handler!r}: no file {code_dir / (module + '.py')}")
        else:
            code_dir = Path.cwd()  # the team's repository: `mypkg.failover:handler` imports from it
        self.code_dir = code_dir
        # where provisioned environments fork from (the stack sets its task zygote: zygote.py), unless
        # the code directory brings its own copy of a module the zygote has loaded (a bundled boto3):
        # the function must import its own, so those environments start as fresh processes
        self.zygote = None
        self.shadowed = shadowed_modules(code_dir)
        # Reserved and provisioned concurrency (model.concurrency_for): by default every environment is
        # initialised by start(), before any event: one that cold-starts when a surge's notifications
        # overlap imports boto3 (~2.6 s of CPU) on a saturated 2-core machine, delays the failover and
        # starves the clients being measured (tests/test_byo_failover.py failed 1 run in 5 that way).
        try:
            self.concurrency, self.provisioned = model.concurrency_for(
                spec.reserved_concurrency, spec.provisioned_concurrency, UNRESERVED_CONCURRENCY)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.model = model.AsyncInvocationModel(self._async_spec())
        reserved = sorted(set(spec.environment) & RESERVED_ENV_KEYS)
        if reserved:
            raise ConfigError(f"failover.environment: reserved keys cannot be set (Lambda sets them): {', '.join(reserved)}")
        self.function_name = ctx.config.aws.lambda_name
        prov = ctx.provisioned
        self.function_arn = (prov.lambda_arn if prov is not None and prov.lambda_arn else
                             f"arn:aws:lambda:{self.region}:{LOCAL_ACCOUNT_ID}:function:{self.function_name}")
        # what the topics invoke, and so invoke()/invoke_async() too: the alias, once provisioned
        self.qualifier = LAMBDA_ALIAS if prov is not None and prov.lambda_alias_arn else None
        self._code_lock = threading.Lock()
        self._code: dict[str | None, FunctionCode] = {}    # qualifier -> what it runs (emptied on a change)
        # (Handler, Environment.Variables) of version 1, which provision.py deployed: it runs as the
        # config's own handler and environment, whatever form the config spells the handler in
        self._deployed: tuple[str, tuple] | None = None
        self.follow_code_changes = True   # False: UpdateAlias & co. no longer reach the runner (tests' twin)
        self.code_changes = 0
        self.last_code_change: dict | None = None
        self.ship_logs = True             # False: no CloudWatch Logs delivery (tests' twin)
        self.logs = LogShipper(ctx, self.region, self.function_name)

        self._cond = threading.Condition()     # guards the model, the jobs and the records
        self._jobs: dict[str, _Job] = {}        # queued or running, by request id
        self._records: list[dict] = []
        self._discarded: list[dict] = []
        self._slots = [_Slot(i) for i in range(self.concurrency)]
        self._init_error: dict | None = None
        self._started = False
        self._stopped = False
        self._stop = threading.Event()
        self._wake = threading.Event()          # the scheduler polls the model again
        self._dispatchers: list[threading.Thread] = []
        self._server: LoopbackServer | None = None
        self.subscriptions: dict[str, str] = {}   # region -> the topic's lambda subscription to this function
        self._registered: list[str] = []           # the moto servers told where this runner serves the function
        self.notifications = 0
        # A broken function, set by the lambda_fault fault (faults/lambda_fault.py) through the
        # control API: {"mode": "error" | "timeout" | "delay", "delay_s": float | None}, read per attempt.
        self.fault: dict | None = None

    def _async_spec(self) -> model.AsyncSpec:
        spec = self.ctx.config.failover
        retries = spec.maximum_retry_attempts
        if retries is None:
            retries = min(model.AWS_MAXIMUM_RETRY_ATTEMPTS, len(self.retry_delays_s))
        # the profile compresses Lambda's retry minutes; throttle backoff (1 s .. 5 min in AWS) by as much
        scale = (self.retry_delays_s[0] / model.AWS_RETRY_DELAYS_S[0]) if self.retry_delays_s else 1.0
        try:
            return model.AsyncSpec(
                concurrency=self.concurrency, provisioned=self.provisioned,
                retry_delays_s=self.retry_delays_s, maximum_retry_attempts=retries,
                maximum_event_age_s=spec.maximum_event_age_s or model.AWS_MAXIMUM_EVENT_AGE_S,
                throttle_first_s=model.AWS_THROTTLE_FIRST_S * scale, throttle_max_s=model.AWS_THROTTLE_MAX_S * scale)
        except ValueError as e:  # e.g. maximum_retry_attempts with no profile.lambda_retry_delays_s
            raise ConfigError(f"failover: {e}") from None

    # -- the Lambda environment --------------------------------------------------------------------
    def placeholder_values(self) -> dict[str, str]:
        """What {placeholder} in failover.environment stands for in this environment (docs/failover.md)."""
        ctx, cfg = self.ctx, self.ctx.config
        prov = ctx.provisioned
        values = {
            "hosted_zone_id": prov.hosted_zone_id if prov else "",
            "record_name": cfg.record_name, "record_type": cfg.route53.record_type,
            "record_ttl": str(ctx.profile.dns_ttl_s), "routing": cfg.route53.routing,
            "regions": ",".join(cfg.regions), "initial_region": cfg.initial_region,
            "region_addresses": json.dumps(ctx.lb_addresses),
        }
        for r in cfg.regions:
            values[f"set_identifier:{r}"] = cfg.set_identifier(r)
            values[f"lb_address:{r}"] = ctx.lb_addresses.get(r, "")
            values[f"topic_arn:{r}"] = (prov.topic_arns.get(r, "") if prov else "")
            values[f"health_check_id:{r}"] = (prov.health_check_ids.get(r, "") if prov else "")
        return values

    def function_environment(self) -> dict[str, str]:
        """failover.environment with its placeholders filled in (config validation already refused
        unknown ones; a value this environment lacks, e.g. an unprovisioned zone, is an error too)."""
        values = self.placeholder_values()
        out = {}
        for key, raw in self.ctx.config.failover.environment.items():
            def fill(m, key=key):
                token = m[1] + (f":{m[2]}" if m[2] is not None else "")
                if not values.get(token):
                    raise ConfigError(f"failover.environment.{key}: {{{token}}} has no value in this environment")
                return values[token]
            out[key] = PLACEHOLDER_RE.sub(fill, raw)
        return out

    def lambda_environment(self, initialization_type: str = INIT_ON_DEMAND, code: FunctionCode | None = None,
                           log_stream: str | None = None) -> dict[str, str]:
        ctx, cfg = self.ctx, self.ctx.config
        code = code or self.configured_code()
        env = {
            "_HANDLER": code.handler,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": ctx.router_url,
            "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
            "AWS_SESSION_TOKEN": "gameday-local-session-token",
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(MEMORY_SIZE_MB),
            "AWS_LAMBDA_FUNCTION_VERSION": code.version,
            "AWS_LAMBDA_INITIALIZATION_TYPE": initialization_type,
            "AWS_LAMBDA_LOG_GROUP_NAME": log_group_name(self.function_name),
            "AWS_LAMBDA_LOG_STREAM_NAME": log_stream or log_stream_name(code.version, ctx.clock.time()),
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{'.'.join(platform.python_version_tuple()[:2])}",
            "LAMBDA_TASK_ROOT": code.code_dir,
            "LAMBDA_RUNTIME_DIR": str(WORKER_PATH.parent),
            "TZ": ":UTC",
            "GAMEDAY_RECORD_NAME": cfg.record_name,
            "GAMEDAY_RECORD_TTL": str(ctx.profile.dns_ttl_s),
            "GAMEDAY_REGION_ADDRESSES": json.dumps(ctx.lb_addresses),
            "GAMEDAY_REGIONS": ",".join(cfg.regions),
            "GAMEDAY_FAILBACK": cfg.failover.failback,
            "GAMEDAY_HOME_REGION": cfg.initial_region,
        }
        if ctx.provisioned is not None:
            env["GAMEDAY_HOSTED_ZONE_ID"] = ctx.provisioned.hosted_zone_id
        env.update(self.function_environment())  # the function's own variables (reserved keys refused above)
        env.update((k, v) for k, v in code.variables if k not in RESERVED_ENV_KEYS)  # the version's, over them
        return env

    # -- which code an invocation runs ------------------------------------------------------------------
    def configured_code(self, version: str = "$LATEST") -> FunctionCode:
        """The handler and code directory of the config (failover.handler/code_dir)."""
        return FunctionCode(version=version, handler=self.lambda_handler, code_dir=str(self.code_dir))

    def code_for(self, qualifier: str | None) -> FunctionCode:
        """What an invocation of `qualifier` (alias, version, None = $LATEST) runs now: moto's
        configuration of the version it names, read again after each change the router reports.
        Without a function in moto (a bare context), the config's handler as $LATEST."""
        with self._code_lock:
            code = self._code.get(qualifier)
            if code is None:
                code = self._code[qualifier] = self._resolve(qualifier)
            return code

    def _resolve(self, qualifier: str | None) -> FunctionCode:
        if self.ctx.provisioned is None or not self.ctx.provisioned.lambda_arn:
            return self.configured_code()
        params = {"FunctionName": self.function_name, **({"Qualifier": qualifier} if qualifier else {})}
        try:
            cfg = self.ctx.internal_client("lambda", self.region).get_function_configuration(**params)
        except Exception as e:  # noqa: BLE001 - e.g. the alias was deleted: keep running what ran
            log.warning("failover Lambda %s: cannot resolve %s (%s); running the configured handler",
                        self.function_name, qualifier or "$LATEST", e)
            return self.configured_code()
        variables = tuple(sorted(((cfg.get("Environment") or {}).get("Variables") or {}).items()))
        deployed = (cfg.get("Handler", ""), variables)
        if self._deployed is None:
            self._deployed = deployed
        if deployed == self._deployed:
            return self.configured_code(cfg["Version"])
        return FunctionCode(version=cfg["Version"], handler=self._lambda_handler_of(deployed[0]),
                            code_dir=self._code_dir_of(deployed[0]), variables=variables)

    @staticmethod
    def _split_handler(handler: str) -> tuple[str, str, str | None]:
        """(module, function, file directory or None) of a Handler in any form the config accepts."""
        from gameday.config import FailoverSpec

        try:
            return FailoverSpec(handler=handler).entry_point()
        except Exception:  # noqa: BLE001 - Lambda's module.function, as Lambda itself splits it
            module, _, function = handler.rpartition(".")
            return module, function, None

    def _lambda_handler_of(self, handler: str) -> str:
        module, function, _ = self._split_handler(handler)
        return f"{module}.{function}"

    def _code_dir_of(self, handler: str) -> str:
        _, _, file_dir = self._split_handler(handler)
        return str(Path(file_dir).expanduser().resolve()) if file_dir else str(self.code_dir)

    def _on_function_change(self, call: AwsCall) -> None:
        """A customer's Lambda call changed an alias or $LATEST (the router, before the caller has the
        answer): what each qualifier runs is read again at the next invocation."""
        if not self.follow_code_changes or self._stopped or call.region != self.region:
            return
        _, _, rest = call.path.partition("/functions/")
        name = unquote(rest.split("/", 1)[0].split("?", 1)[0])
        if name.split(":function:")[-1].split(":")[0] != self.function_name:
            return
        with self._code_lock:
            self._code.clear()
            self.code_changes += 1
            self.last_code_change = {"operation": call.operation, "at": self.ctx.clock.time()}
        log.info("failover Lambda %s: %s; the next invocation reads its version again", self.function_name,
                 call.operation)

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        """Where moto delivers the topics' notifications to the function (moto_fix_sns)."""
        if self._server is None:
            raise RuntimeError("LambdaRunner is not started")
        return f"http://127.0.0.1:{self._server.port}/sns"

    def start(self) -> "LambdaRunner":
        if self._started:
            return self
        self._started = True
        self.function_environment()  # a placeholder without a value here is a config error, said now
        self.code_for("1")   # version 1 is what provision.py deployed: the config's handler and environment
        self._prewarm()
        threads = [threading.Thread(target=self._slot_loop, args=(s,), name=f"lambda-slot-{s.index}", daemon=True)
                   for s in self._slots]
        threads.append(threading.Thread(target=self._schedule_loop, name="lambda-scheduler", daemon=True))
        for t in threads:
            t.start()
        self._dispatchers.extend(threads)
        self._server = LoopbackServer("127.0.0.1", 0, self._http_handler()).start("lambda-sns-endpoint")
        for operation in CODE_CHANGING_OPERATIONS:
            self.ctx.after_aws_call("lambda", operation, self._on_function_change)
        self.logs.start()
        self._serve_subscriptions()
        return self

    def _serve_subscriptions(self) -> None:
        """Tell every region's moto that this runner takes the function's `lambda` deliveries, and
        note the topics' subscriptions to it (their ARNs are the events' EventSubscriptionArn)."""
        prov = self.ctx.provisioned
        if prov is None:
            return
        for region, url in self.ctx.moto_urls.items():
            moto_admin(url, "sns_lambda_endpoint", function_arn=self.function_arn, url=self.endpoint_url, add=True)
            self._registered.append(url)
        for region, topic_arn in prov.topic_arns.items():
            subs = self.ctx.internal_client("sns", region).list_subscriptions_by_topic(TopicArn=topic_arn)
            mine = [s["SubscriptionArn"] for s in subs["Subscriptions"]
                    if s["Protocol"] == "lambda" and self.function_arn in (s["Endpoint"], s["Endpoint"].rpartition(":")[0])]
            if mine:
                self.subscriptions[region] = mine[0]
            else:
                log.warning("topic %s does not invoke the failover Lambda %s: its alarms reach no function",
                            topic_arn, self.function_arn)

    def _prewarm(self) -> None:
        """The provisioned execution environments (model.prewarm), initialised side by side before
        the first event (the slot threads start after: only one thread may read a worker's messages)."""
        inits = self.model.prewarm()
        code = self.code_for(self.qualifier)   # what the topics' notifications run
        try:
            for init in inits:
                self._slots[init.slot].worker = self._spawn_worker(init.initialization_type, code)
            errors = [self._await_ready(self._slots[i.slot].worker, trigger="start", slot=self._slots[i.slot])
                      for i in inits]
        except LambdaRunnerStopped:
            return
        with self._cond:
            for init, error in zip(inits, errors):
                self.model.initialised(init.slot, ok=error is None, code=code)
        error = next((e for e in errors if e is not None), None)
        if error is not None:
            log.warning("failover Lambda %s failed to initialise: %s: %s", self.handler, error["type"], error["message"])

    def stop(self) -> None:
        with self._cond:
            if self._stopped or not self._started:
                self._stopped = True
                self._stop.set()
                return
            self._stopped = True
            self._stop.set()
            self._cond.notify_all()
        self._wake.set()
        for url in self._registered:
            try:  # so a later Publish does not POST to a closed port (the delivery is dropped instead)
                moto_admin(url, "sns_lambda_endpoint", function_arn=self.function_arn, url=self.endpoint_url, add=False)
            except Exception as e:  # noqa: BLE001 - moto may already be gone at teardown
                log.debug("sns_lambda_endpoint on %s: %s", url, e)
        self._registered.clear()
        if self._server is not None:
            self._server.stop()
        for slot in self._slots:
            slot.starts.put(None)
            self._kill_worker(slot)  # wakes a slot thread waiting on an invocation
        for t in self._dispatchers:
            t.join(timeout=10)
        for slot in self._slots:
            self._kill_worker(slot)
        with self._cond:
            pending = [self._jobs.pop(rid) for rid in self.model.drain() if rid in self._jobs]
        for job in pending:
            if job.future is not None and not job.future.done():
                job.future.set_exception(LambdaRunnerStopped("the Lambda runner stopped before this invocation ran"))
        self.logs.stop()   # what the last invocations logged still reaches CloudWatch Logs

    # -- public API ------------------------------------------------------------------------------------
    def invoke(self, event: dict, wait_s: float | None = None) -> dict:
        """A synchronous (RequestResponse) invocation, queued behind any in progress; no retries.
        Returns the attempt's record."""
        if not self._started or self._stopped:
            raise RuntimeError("LambdaRunner is not running")
        fut: Future = Future()
        self._enqueue(_Job(request_id=str(uuid.uuid4()), event=event, invocation_type=model.SYNC,
                           received_ts=self.ctx.clock.time(), future=fut, **self._invoked()))
        return fut.result(timeout=wait_s if wait_s is not None else INIT_TIMEOUT_S + self.timeout_s + 60)

    def invoke_async(self, event: dict, region: str | None = None) -> str:
        """An asynchronous (Event) invocation, retried like SNS-triggered ones. Returns the request id."""
        if not self._started or self._stopped:
            raise RuntimeError("LambdaRunner is not running")
        rid = str(uuid.uuid4())
        self._enqueue(_Job(request_id=rid, event=event, invocation_type=model.ASYNC, received_ts=self.ctx.clock.time(),
                           region=region, **self._invoked()))
        return rid

    def _invoked(self, function_arn: str | None = None) -> dict:
        """qualifier and function_arn of a _Job invoking `function_arn` (default: what the topics invoke)."""
        arn = function_arn or (f"{self.function_arn}:{self.qualifier}" if self.qualifier else self.function_arn)
        parts = arn.split(":")
        return {"qualifier": parts[7] if len(parts) == 8 else None, "function_arn": arn}

    def invocations(self) -> list[dict]:
        with self._cond:
            return [dict(r) for r in self._records]

    def discarded(self) -> list[dict]:
        """The events Lambda dropped (retries exhausted or too old), as their invocation records."""
        with self._cond:
            return [dict(r) for r in self._discarded]

    def status(self) -> dict:
        with self._cond:
            by_outcome: dict[str, int] = {}
            for r in self._records:
                by_outcome[r["outcome"]] = by_outcome.get(r["outcome"], 0) + 1
            workers = []
            for slot in self._slots:
                w = slot.worker
                if w is not None and w.proc.poll() is None:
                    workers.append({"slot": slot.index, "pid": w.pid, "state": "warm" if w.ready else "initializing",
                                    "invocations": w.invocations, "init_s": w.init_s})
            in_flight = self.model.in_flight()
            first = workers[0] if workers else None
            return {
                "handler": self.handler,
                "code_dir": str(self.code_dir),
                "function_arn": self.function_arn,
                "endpoint_url": f"http://127.0.0.1:{self._server.port}/sns" if self._server else None,
                "timeout_s": self.timeout_s,
                "retry_delays_s": list(self.retry_delays_s),
                "concurrency": self.concurrency,
                "provisioned_concurrency": self.provisioned,
                "reserved_concurrency": self.ctx.config.failover.reserved_concurrency,
                "worker": {"pid": first["pid"] if first else None, "state": first["state"] if first else "none",
                           "invocations": first["invocations"] if first else 0,
                           "init_s": first["init_s"] if first else None},
                "workers": workers,
                "init_error": self._init_error,
                "notifications": self.notifications,
                "queued": self.model.queued(),
                "in_flight": in_flight[0] if in_flight else None,
                "in_flight_all": in_flight,
                "discarded": len(self._discarded),
                "maximum_retry_attempts": self.model.spec.maximum_retry_attempts,
                "maximum_event_age_s": self.model.spec.maximum_event_age_s,
                "attempts": len(self._records),
                "by_outcome": by_outcome,
                "cold_starts": sum(1 for r in self._records if r.get("cold_start")),
                "subscriptions": dict(self.subscriptions),
                "qualifier": self.qualifier,
                "code": {q or "$LATEST": dataclasses.asdict(c) for q, c in dict(self._code).items()},
                "code_changes": self.code_changes,
                "last_code_change": self.last_code_change,
                "logs": self.logs.status(),
                "running": self._started and not self._stopped,
                "fault": self.fault,
            }

    # -- SNS endpoint ------------------------------------------------------------------------------------
    def _http_handler(self):
        runner = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                try:
                    body = json.loads(self.read_body() or b"null")
                except ValueError:
                    self.send_json(400, {"error": "body is not JSON"})
                    return
                if not isinstance(body, dict) or "Type" not in body:
                    self.send_json(400, {"error": "not an SNS message"})
                    return
                # answer SNS first: moto delivers from inside Publish, which waits for this reply
                self.send_json(200, {"ok": True})
                runner._on_sns(body)

        return Handler

    def _on_sns(self, body: dict) -> None:
        if body["Type"] != "Notification":
            # moto confirms http subscriptions itself; a confirmation request would need the
            # SubscribeURL, which is not on loopback
            log.info("ignoring SNS %s for %s", body["Type"], body.get("TopicArn"))
            return
        try:
            topic_arn = body["TopicArn"]
            # moto_fix_sns adds the subscription and the function ARN it invokes (alias included)
            event = sns_event(body, body["SubscriptionArn"])
            invoked = self._invoked(body["FunctionArn"])
        except (KeyError, IndexError, AttributeError) as e:
            log.warning("malformed SNS notification (missing %s): %.300s", e, body)
            return
        with self._cond:
            self.notifications += 1
        self._enqueue(_Job(request_id=str(uuid.uuid4()), event=event, invocation_type=model.ASYNC,
                           received_ts=self.ctx.clock.time(), region=topic_arn.split(":")[3], topic_arn=topic_arn,
                           message_id=body.get("MessageId"), sns_timestamp=body.get("Timestamp"),
                           alarm=alarm_of(body.get("Message", "")), **invoked))

    # -- scheduling: the model decides, the scheduler thread and the slot threads carry it out -------------
    def _enqueue(self, job: _Job) -> None:
        with self._cond:
            if self._stopped:
                if job.future is not None:
                    job.future.set_exception(LambdaRunnerStopped("the Lambda runner is stopped"))
                return
            self._jobs[job.request_id] = job
            self.model.enqueue(job.request_id, self.ctx.clock.monotonic(), job.invocation_type, job.qualifier)
        self._wake.set()

    def _schedule_loop(self) -> None:
        clock = self.ctx.clock
        while not self._stop.is_set():
            self._wake.clear()  # before polling: a wake-up during the poll is not lost
            with self._cond:
                qualifiers = self.model.qualifiers()
            # what each alias/version runs now (a moto call only after a change the router reported)
            codes = {q: self.code_for(q) for q in qualifiers}
            with self._cond:
                if self._stopped:
                    return
                decisions = self.model.poll(clock.monotonic(), codes)
                due = self.model.next_due()
                for d in decisions:
                    if isinstance(d, model.Start):
                        job = self._jobs[d.request_id]
                        job.attempt = d.attempt
                        self._slots[d.slot].starts.put((job, d))
                    elif isinstance(d, model.Discard):
                        self._discard(d)
            clock.wait(self._wake, None if due is None else due - clock.monotonic())

    def _discard(self, d: model.Discard) -> None:
        """Lambda drops the event (under the lock). Its record is kept (discarded(), status) and put on
        the timeline as a `lambda_discard` event (what an on-failure destination would receive)."""
        job = self._jobs.pop(d.request_id, None)
        record = {**d.record(), "function_arn": self.function_arn, "region": getattr(job, "region", None),
                  "message_id": getattr(job, "message_id", None), "alarm": getattr(job, "alarm", None)}
        self._discarded.append(record)
        log.info("lambda event %s discarded: %s after %d attempt(s), %.1f s old", d.request_id, d.condition,
                 d.approximate_invoke_count, d.age_s)
        # RetriesExhausted is also marked on the last attempt's record; both get the discard's own event
        self.ctx.events.emit("lambda_discard", **record)

    def _slot_loop(self, slot: _Slot) -> None:
        while True:
            item = slot.starts.get()
            if item is None or self._stopped:
                return
            job, start = item
            try:
                record = self._attempt(job, slot, start)
            except LambdaRunnerStopped as e:
                if job.future is not None and not job.future.done():
                    job.future.set_exception(e)
                return
            except Exception as e:  # noqa: BLE001 - one bad attempt must not stop the Lambda service
                log.exception("lambda attempt %s failed inside the runner", job.request_id)
                self._kill_worker(slot)
                with self._cond:
                    self._attempt_ended(job, model.CRASH)
                if job.future is not None and not job.future.done():
                    job.future.set_exception(e)
                continue
            if job.future is not None and not job.future.done():
                job.future.set_result(record)

    # -- one attempt ------------------------------------------------------------------------------------
    def _initialization_type(self, slot: _Slot) -> str:
        return self.model.initialization_type(slot.index)

    def _spawn_worker(self, initialization_type: str = INIT_ON_DEMAND, code: FunctionCode | None = None) -> _Worker:
        code = code or self.configured_code()
        with self._cond:
            if self._stopped:
                raise LambdaRunnerStopped("the Lambda runner is stopping")
            stream = log_stream_name(code.version, self.ctx.clock.time())
            env = self.lambda_environment(initialization_type, code, stream)
            env["GAMEDAY_LAMBDA_ENV_KEYS"] = ",".join(k for k in env if k.startswith(("AWS_", "BOTO")))
            log_path = self.ctx.logs_dir / "lambda-worker.log"
            if initialization_type == INIT_PROVISIONED and self.zygote is not None and self.zygote.running \
                    and not self.shadowed and code.code_dir == str(self.code_dir):
                # a provisioned environment initialises before any event, so how fast its init is
                # changes no measurement: it forks from the task zygote, whose boto3 and botocore
                # data are loaded already (~0.35 CPU-s less per environment at a cold start)
                proc = self.zygote.launch_connected(WORKER_PATH, env, log_path, cwd=code.code_dir,
                                                    name="lambda-worker", timeout_s=INIT_TIMEOUT_S)
            else:   # an on-demand cold start pays the whole init, as in Lambda
                proc = procs.spawn([procs.python(), "-P", str(WORKER_PATH)], log_path=log_path, env=env,
                                   cwd=code.code_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            return _Worker(proc, self.ctx.clock, code, stream)

    def _await_ready(self, w: _Worker, trigger: str, slot: _Slot) -> dict | None:
        """Wait for the worker's init phase. Returns None when ready, else the init error
        (the worker is then killed: the next invocation tries a fresh init, as Lambda does)."""
        deadline = w.spawned + INIT_TIMEOUT_S
        error = None
        while True:
            msg = w.next(deadline)
            if msg == "timeout":
                error = {"type": "Runtime.InitTimeout",
                         "message": f"init phase did not finish within {INIT_TIMEOUT_S:.0f} s"}
                break
            if msg is None:
                error = {"type": "Runtime.ExitError",
                         "message": f"Runtime exited during init with exit status {w.proc.wait()}"}
                break
            if msg["type"] == "log":
                w.pending_logs.append(msg["line"], msg.get("ts"))
            elif msg["type"] == "ready":
                w.ready = True
                w.init_ms = msg.get("init_ms")
                w.init_s = round(self.ctx.clock.monotonic() - w.spawned, 4)
                break
            elif msg["type"] == "init_error":
                error = {k: msg["error"].get(k) for k in ("type", "message")}
                break
        self.ctx.events.emit("lambda_init", trigger=trigger, initialization_type=self._initialization_type(slot),
                             ok=error is None, pid=w.pid,
                             init_s=round(self.ctx.clock.monotonic() - w.spawned, 4), import_ms=w.init_ms, error=error,
                             handler=w.code.handler if w.code else self.handler,
                             version=w.code.version if w.code else None)
        with self._cond:
            self._init_error = error
        if error is not None:
            w.pending_logs.append(f"INIT_REPORT Init Duration: {(self.ctx.clock.monotonic() - w.spawned) * 1000:.2f} ms"
                                  f"\tPhase: init\tStatus: error\tError Type: {error['type']}")
            w.kill()
            with self._cond:
                if slot.worker is w:
                    slot.worker = None
        return error

    def _kill_worker(self, slot: _Slot) -> None:
        with self._cond:
            w, slot.worker = slot.worker, None
        if w is not None:
            w.kill()

    # -- injected faults (lambda_fault) -----------------------------------------------------------------
    def set_fault(self, mode: str, delay_s: float | None = None) -> dict:
        if mode not in ("error", "timeout", "delay"):
            raise ValueError(f"lambda fault mode must be error, timeout or delay, got {mode!r}")
        if mode == "delay" and (delay_s is None or float(delay_s) <= 0):
            raise ValueError("lambda fault mode delay needs delay_s > 0")
        self.fault = {"mode": mode, "delay_s": float(delay_s) if delay_s is not None else None}
        self.ctx.events.emit("lambda_fault", action="set", **self.fault)
        return dict(self.fault)

    def clear_fault(self) -> dict:
        was, self.fault = self.fault, None
        if was is not None:
            self.ctx.events.emit("lambda_fault", action="clear")
        return {"cleared": was is not None}

    def _wait_unless_stopped(self, seconds: float) -> None:
        if self.ctx.clock.wait(self._stop, seconds):
            raise LambdaRunnerStopped("the Lambda runner stopped during an injected fault")

    def _injected_fault_attempt(self, job: _Job, slot: _Slot, start: model.Start) -> dict | None:
        """Apply an injected fault to this attempt: a finished record ("error": the attempt fails;
        "timeout": it runs the whole timeout and its execution environment is stopped, as Lambda
        does), or None to run the attempt normally (after "delay": it starts late)."""
        fault = self.fault
        if fault is None:
            return None
        if fault["mode"] == "delay":
            self._wait_unless_stopped(fault["delay_s"])
            return None
        rid = job.request_id
        version = job.code.version if job.code else "$LATEST"
        if fault["mode"] == "error":
            return self._finish(job, model.ERROR, duration_s=0.0, cold=False, init_s=None,
                                logs=[f"START RequestId: {rid} Version: {version}",
                                      f"RequestId: {rid} Error: gameday injected fault (lambda_fault error)",
                                      f"END RequestId: {rid}", _report(rid, 0.0, None)],
                                error={"type": "GamedayInjectedFault", "message": "lambda_fault: injected error"},
                                start_ts=self.ctx.clock.time())
        clock = self.ctx.clock
        t0, start_ts = clock.monotonic(), clock.time()
        self._wait_unless_stopped(self.timeout_s)
        elapsed = clock.monotonic() - t0
        self._kill_worker(slot)
        return self._finish(job, model.TIMEOUT, duration_s=elapsed, cold=False, init_s=None, start_ts=start_ts,
                            logs=[f"START RequestId: {rid} Version: {version}",
                                  f"{_iso(clock.time())} {rid} Task timed out after {elapsed:.2f} seconds",
                                  f"END RequestId: {rid}", _report(rid, elapsed * 1000, None, status="timeout")],
                            error={"type": "Sandbox.Timedout",
                                   "message": f"Task timed out after {self.timeout_s:.2f} seconds (lambda_fault timeout)"})

    def _attempt(self, job: _Job, slot: _Slot, start: model.Start) -> dict:
        job.code = start.code or self.code_for(job.qualifier)   # the version the alias named when it started
        w = slot.worker
        job.log_stream = w.log_stream if w is not None and w.code == job.code else None
        injected = self._injected_fault_attempt(job, slot, start)
        if injected is not None:
            return injected
        w, cold, init_s, logs, failed = self._ready_worker(job, slot, start)
        if failed is not None:
            return failed
        rid = job.request_id
        logs.append(f"START RequestId: {rid} Version: {job.code.version}")
        clock = self.ctx.clock
        deadline_ms = int(clock.time() * 1000 + self.timeout_s * 1000)
        t_send = clock.monotonic()
        deadline = t_send + self.timeout_s  # the timeout counts from the invoke phase, after any init
        try:
            w.send({"type": "invoke", "request_id": rid, "event": job.event, "deadline_ms": deadline_ms,
                    "invoked_function_arn": job.function_arn or self.function_arn})
        except (OSError, ValueError):
            pass  # a worker that died between invocations shows up as EOF below
        w.invocations += 1
        while True:
            msg = w.next(deadline)
            if msg == "timeout":
                return self._timed_out(job, slot, w, t_send, cold=cold, init_s=init_s, logs=logs)
            if msg is None:
                return self._exited(job, slot, w, t_send, cold=cold, init_s=init_s, logs=logs)
            if msg["type"] == "log":
                logs.append(msg["line"], msg.get("ts"))
                continue
            if msg["type"] == "result" and msg.get("request_id") == rid:
                break
        return self._answered(job, w, msg, t_send, cold=cold, init_s=init_s, logs=logs)

    def _ready_worker(self, job: _Job, slot: _Slot, start: model.Start
                      ) -> tuple[_Worker, bool, float | None, list[str], dict | None]:
        """The slot's worker, started and initialised if the model says cold (or its process died
        between invocations): (worker, cold, init_s, logs so far, the finished record when the init
        failed, else None)."""
        cold = False
        init_s = None
        w = slot.worker
        if start.cold or w is None or w.proc.poll() is not None or w.code != job.code:
            if w is not None:
                self._kill_worker(slot)
            # an on-demand environment's first invocation, any after a timeout or crash stopped one
            # (Lambda re-runs the init in the next invocation, provisioned or not), or one of another
            # version than the environment ran (the model's rule; w.code guards a race with a change)
            cold = True
            w = slot.worker = self._spawn_worker(start.initialization_type, job.code)
        job.log_stream = w.log_stream
        logs = _Lines(self.ctx.clock)
        if not w.ready:
            error = self._await_ready(w, trigger="invoke", slot=slot)
            logs.extend(w.pending_logs)
            if error is not None:
                return w, cold, init_s, logs, self._finish(job, model.INIT_ERROR, duration_s=0.0, cold=True, init_s=w.init_s,
                                                           error=error, logs=logs, worker_pid=w.pid)
            init_s = w.init_s
            w.pending_logs.clear()
        logs.extend(w.pending_logs)
        w.pending_logs.clear()
        return w, cold, init_s, logs, None

    def _timed_out(self, job: _Job, slot: _Slot, w: _Worker, t_send: float, *, cold: bool,
                   init_s: float | None, logs: list[str]) -> dict:
        rid = job.request_id
        clock = self.ctx.clock
        elapsed = clock.monotonic() - t_send
        max_memory_mb = _max_memory_mb(w.pid)
        self._kill_worker(slot)  # Lambda stops the execution environment at the timeout
        logs.append(f"{_iso(clock.time())} {rid} Task timed out after {elapsed:.2f} seconds")
        logs.append(f"END RequestId: {rid}")
        logs.append(_report(rid, elapsed * 1000, init_s, max_memory_mb, status="timeout"))
        return self._finish(job, model.TIMEOUT, duration_s=elapsed, cold=cold, init_s=init_s, logs=logs,
                            error={"type": "Sandbox.Timedout",
                                   "message": f"Task timed out after {self.timeout_s:.2f} seconds"},
                            start_ts=clock.time() - elapsed, worker_pid=w.pid)

    def _exited(self, job: _Job, slot: _Slot, w: _Worker, t_send: float, *, cold: bool,
                init_s: float | None, logs: list[str]) -> dict:
        rid = job.request_id
        elapsed = self.ctx.clock.monotonic() - t_send
        code = w.proc.wait()
        self._kill_worker(slot)
        if self._stopped:
            raise LambdaRunnerStopped("the Lambda runner stopped during the invocation")
        logs.append(f"RequestId: {rid} Error: Runtime exited with error: exit status {code}")
        logs.append(f"END RequestId: {rid}")
        logs.append(_report(rid, elapsed * 1000, init_s, status="error\tError Type: Runtime.ExitError"))
        return self._finish(job, model.CRASH, duration_s=elapsed, cold=cold, init_s=init_s, logs=logs,
                            error={"type": "Runtime.ExitError",
                                   "message": f"Runtime exited with error: exit status {code}"},
                            worker_pid=w.pid)

    def _answered(self, job: _Job, w: _Worker, msg: dict, t_send: float, *, cold: bool,
                  init_s: float | None, logs: list[str]) -> dict:
        rid = job.request_id
        round_trip_ms = (self.ctx.clock.monotonic() - t_send) * 1000
        duration_ms = float(msg.get("duration_ms") or 0.0)
        logs.append(f"END RequestId: {rid}")
        logs.append(_report(rid, duration_ms, init_s, msg.get("max_memory_mb", 0)))
        common = dict(duration_s=duration_ms / 1000, cold=cold, init_s=init_s, logs=logs,
                      start_ts=msg.get("started_at"), worker_pid=w.pid,
                      overhead_ms=round(round_trip_ms - duration_ms, 3))
        if msg.get("ok"):
            return self._finish(job, model.OK, result_value=msg.get("result"), **common)
        err = msg.get("error") or {}
        return self._finish(job, model.ERROR, error={"type": err.get("type"), "message": err.get("message")}, **common)

    def _attempt_ended(self, job: _Job, result: str) -> tuple[float | None, str | None]:
        """Tell the model (under the lock) how the attempt ended: (retry delay or None, the discard
        condition or None). A job that will not run again leaves the table."""
        decisions = self.model.finished(job.request_id, self.ctx.clock.monotonic(), result)
        retry = next((d for d in decisions if isinstance(d, model.Retry)), None)
        discard = next((d for d in decisions if isinstance(d, model.Discard)), None)
        if discard is not None:
            self._discard(discard)   # leaves the table too, after its region and alarm went into the record
        elif retry is None:
            self._jobs.pop(job.request_id, None)
        self._wake.set()
        return (retry.delay_s if retry is not None else None), (discard.condition if discard is not None else None)

    def _finish(self, job: _Job, result: str, *, duration_s: float, cold: bool, init_s: float | None,
                logs: list[str], error: dict | None = None, result_value=None, start_ts: float | None = None,
                worker_pid: int | None = None, overhead_ms: float | None = None) -> dict:
        """The attempt's record, on the timeline; `result` is what the attempt came to (model.OK,
        ERROR, TIMEOUT, CRASH, INIT_ERROR), the model says the outcome and what happens next."""
        outcome = model.outcome_of(result)
        record = {
            "request_id": job.request_id, "attempt": job.attempt, "invocation_type": job.invocation_type,
            "outcome": outcome, "duration_s": round(duration_s, 4), "cold_start": cold, "init_s": init_s,
            "error": error, "result": _truncate_result(result_value) if outcome == "ok" else None,
            "logs": _truncate_logs(logs), "alarm": job.alarm, "region": job.region, "topic_arn": job.topic_arn,
            "message_id": job.message_id, "sns_timestamp": job.sns_timestamp,
            "received_ts": round(job.received_ts, 4), "start_ts": round(start_ts, 4) if start_ts else None,
            "end_ts": round(self.ctx.clock.time(), 4), "overhead_ms": overhead_ms, "worker_pid": worker_pid,
            "version": job.code.version if job.code else None, "handler": job.code.handler if job.code else None,
            "log_stream": job.log_stream,
        }
        self._ship_logs(job, logs)
        with self._cond:  # one step: the retry cannot start before this record is on the timeline
            retry_in, discarded = self._attempt_ended(job, result)
            if self._stopped:
                retry_in = None
            record.update(will_retry=retry_in is not None, retry_in_s=retry_in)
            if discarded is not None:
                record["discarded"] = discarded
            ev = self.ctx.events.emit("lambda_invocation", **record)
            self._records.append(ev)
        if outcome != "ok":
            log.info("lambda %s attempt %d: %s %s%s", job.request_id, job.attempt, outcome,
                     (error or {}).get("type"), f"; retry in {retry_in:g}s" if retry_in is not None else "")
        return dict(ev)


    def _ship_logs(self, job: _Job, logs: list[str]) -> None:
        """The attempt's lines to its environment's CloudWatch Logs stream (queued: never waits)."""
        if not self.ship_logs:
            return
        now = self.ctx.clock.time()
        if job.log_stream is None:   # an attempt that ran in no environment (an injected fault)
            job.log_stream = log_stream_name(job.code.version if job.code else "$LATEST", now)
        stamps = logs.stamps if isinstance(logs, _Lines) else [now] * len(logs)
        self.logs.ship(job.log_stream, list(zip(stamps, logs)))


def _report(request_id: str, duration_ms: float, init_s: float | None, max_memory_mb: int | None = None,
            status: str | None = None) -> str:
    """Lambda's REPORT line. Billed Duration is rounded up to the millisecond and, for an on-demand
    cold start, includes the init phase (Lambda bills the init of managed runtimes since August 2025:
    the Python logging guide's example bills 147 ms for Duration 15.74 + Init Duration 130.49)."""
    init_ms = init_s * 1000 if init_s is not None else 0.0
    line = (f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Billed Duration: {max(1, math.ceil(duration_ms + init_ms))} ms\tMemory Size: {MEMORY_SIZE_MB} MB\t"
            f"Max Memory Used: {max_memory_mb or 0} MB")
    if init_s is not None:
        line += f"\tInit Duration: {init_ms:.2f} ms"
    if status:
        line += f"\tStatus: {status}"
    return line


def _max_memory_mb(pid: int) -> int | None:
    """The process's peak resident memory (Max Memory Used), from /proc while it still runs."""
    try:
        with open(f"/proc/{pid}/status") as f:
            hwm = next((ln for ln in f if ln.startswith("VmHWM:")), None)
        return int(hwm.split()[1]) // 1024 if hwm else None
    except (OSError, ValueError):
        return None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"
