"""gameday's locustfile: regional surge users and DNS-following users against a running gameday
environment, every operation recorded in a Jepsen-style history.

    gameday up                                   # in one terminal
    gameday load                                 # web UI on http://127.0.0.1:8089 (= python -m gameday.loadgen)
    gameday load --headless --surge-region us-east-1 --surge-rate 1.5x --hold 20s
    locust -f loadgen/locustfile.py ...          # the same, from a checkout of gameday

It finds the environment through the state file `gameday up` writes (--gameday-state PATH, or
$GAMEDAY_STATE, default .gameday/local.json). Options are in loadgen/plan.py (OPTIONS). With the
web UI, the "Chaos" tab (chaos_ui.py) injects and rolls back faults; off loopback the web UI
needs a token and refuses to start without one. Usage, distributed runs and exit codes:
docs/load.md; the Chaos tab: docs/web-ui.md.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
import sys
import time

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from gameday.state import NoEnvironment
from gameday.loadgen import context as lctx
from gameday.loadgen import chaos_ui, history
from gameday.loadgen import locust_stream as stream
from gameday.loadgen.clock_offset import wall
from gameday.loadgen.plan import OPTIONS, LoadInputError
from gameday.loadgen.shapes import GamedayShape  # noqa: F401 - Locust finds the shape and the users here
from gameday.loadgen.users import FollowerUser, RegionalUser  # noqa: F401

log = logging.getLogger("gameday.load")
ROLE_CLASS = {"dns": FollowerUser, "regional": RegionalUser}
MERGE_WAIT_S = 10.0     # how long the master waits for the workers to close their history files

_checked = False                      # the options are checked once, at the first parse
_current: lctx.LoadContext | None = None
_master_run: dict = {}                # on the master: the run being merged
_env = None                           # this process's Locust environment


# -- options -----------------------------------------------------------------------------------------------

@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    for o in OPTIONS:
        parser.add_argument(o.flag, type=str, default=o.default, help=o.help, include_in_web_ui=o.web,
                            env_var="GAMEDAY_LOAD_" + o.dest.upper())
    stream.add_options(parser)
    # loopback unless told otherwise: this is a harness for a local rehearsal
    parser.set_defaults(web_host="127.0.0.1", master_bind_host="127.0.0.1")
    original = parser.parse_args

    def parse_and_check(*args, **kwargs):
        global _checked
        opts = original(*args, **kwargs)
        if not _checked and not getattr(opts, "worker", False) and _is_a_run(opts):
            _checked = True
            try:
                lctx.plan_from(opts)
                chaos_ui.check_binding(opts)
            except LoadInputError as e:
                _die(str(e), 2)
            except NoEnvironment as e:
                _die(str(e), 1)
        return opts

    parser.parse_args = parse_and_check


def _is_a_run(opts) -> bool:
    return not any(getattr(opts, k, False) for k in ("list_commands", "show_task_ratio", "show_task_ratio_json"))


def _die(message: str, code: int) -> None:
    sys.stderr.write(f"gameday load: error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


# -- process set-up -----------------------------------------------------------------------------------------

@events.init.add_listener
def _init(environment, runner, **_kw) -> None:
    global _env
    _env = environment
    opts = environment.parsed_options
    if not isinstance(runner, WorkerRunner):
        if not opts.stop_timeout:
            # users finish their in-flight request when the run stops (so it is counted and recorded)
            try:
                timeout = lctx.plan_from(opts)[0].request_timeout_s
            except (LoadInputError, NoEnvironment):
                timeout = 2.0
            environment.stop_timeout = math.ceil(timeout) + 1
        # SIGUSR1: end the run gracefully (drain, flush, report), as at the end of the shape
        gevent.signal_handler(signal.SIGUSR1, _request_stop)
    if environment.web_ui is not None and not isinstance(runner, WorkerRunner):
        _register_chaos_tab(environment)
    if isinstance(runner, WorkerRunner):
        runner.register_message("gameday_flush", _on_flush)
        runner.register_message(stream.hs.PING, stream.on_ping)
    if isinstance(runner, MasterRunner):
        runner.register_message("gameday_flushed", _on_flushed)
        stream.master_init(runner, environment)
        _await_workers(runner, opts)


def _await_workers(runner, opts) -> None:
    """Headless master: wait here, in 20 ms steps, for the expected workers. Locust's own wait that
    follows polls once a second, and the worker started beside the master is always a few
    milliseconds late for its first look: every run would start a second later than it can.
    Bounded by --expect-workers-max-wait; past it, Locust's own loop reports the missing workers."""
    if not opts.headless or not opts.expect_workers:
        return
    deadline = time.monotonic() + (opts.expect_workers_max_wait or 30)
    while len(runner.clients.ready) < opts.expect_workers and time.monotonic() < deadline:
        gevent.sleep(0.02)


def _register_chaos_tab(environment) -> None:
    """The web UI's Chaos tab (loadgen/chaos_ui.py), against the environment the options name."""
    try:
        endpoints = lctx.endpoints_from(environment.parsed_options)
    except NoEnvironment as e:
        _die(str(e), 1)
    try:
        chaos_ui.register(environment, environment.web_ui, endpoints)
    except (OSError, LoadInputError) as e:   # the journal directory, a bad --chaos-* value
        _die(f"Chaos tab: {e}", 2)


def _request_stop() -> None:
    log.info("gameday load: stop requested: draining")
    shape = getattr(_env, "shape_class", None)   # Locust's name: it holds the shape instance
    if isinstance(shape, GamedayShape) and _env.runner is not None:
        # not in the signal callback: it waits. end_now sets the flag itself, with nothing in
        # between: set here, the shape's loop could see it first and end by its own tick
        gevent.spawn(shape.end_now, _env.runner)
    else:
        GamedayShape.stop_requested = True


def _on_flush(environment, msg, **_kw) -> None:
    """Worker: report statistics now (the run is ending), then say so; both messages travel in
    order on the same connection, so the master has the statistics when it reads the answer."""
    runner = environment.runner
    runner._send_stats()  # noqa: SLF001 - Locust's own report, sent now instead of at the next interval
    w = _current.writer if _current is not None else None
    if w is not None:
        w.flush()   # the history file holds every completion counted in the answer
    runner.send_message("gameday_flushed", {"completions": w.completions if w else None})


def _on_flushed(environment, msg, **_kw) -> None:
    lctx.FLUSHED[msg.node_id] = msg.data or {}


# -- a run ------------------------------------------------------------------------------------------------

@events.test_start.add_listener
def _test_start(environment, **_kw) -> None:
    global _current
    runner = environment.runner
    opts = environment.parsed_options
    if isinstance(runner, MasterRunner):
        _master_run.clear()
        _master_run.update(run=getattr(opts, "gameday_run", None), dir=getattr(opts, "gameday_history_dir", None))
        stream.master_start(opts)
        return
    if _current is not None:
        _close_current()
    planned = None
    if isinstance(runner, WorkerRunner):
        worker, n, index = f"w{runner.worker_index}", int(getattr(opts, "expect_workers", 1) or 1), runner.worker_index
        # the spawn message sets the worker's target before its users start
        planned = (lambda role: runner.target_user_classes_count.get(ROLE_CLASS[role].__name__, 0))
    else:
        worker, n, index = "local", 1, 0
    streamed = isinstance(runner, WorkerRunner) and stream.streaming(opts)
    try:
        ctx = lctx.create(stream.without_files(opts) if streamed else opts, worker=worker, n_processes=n,
                          process_index=index, planned=planned)
    except (LoadInputError, NoEnvironment, AttributeError, ValueError) as e:
        log.error("gameday load: cannot start the run on %s: %s", worker, e)
        environment.gameday = None
        return
    if streamed and lctx.plan_from(opts, ctx.endpoints)[0].record_history:
        ctx.writer = stream.writer_for(runner, worker, ctx.run)
    if isinstance(runner, WorkerRunner):
        # the worker's own account of its part: what a run with a silent worker is diagnosed by
        log.info("gameday load: %s starts run %s, history %s", worker, ctx.run,
                 "off" if ctx.writer is None else "streamed to the master" if streamed else f"in {ctx.writer.path}")
    for cls in (FollowerUser, RegionalUser):
        cls.network_timeout = cls.connection_timeout = ctx.plan.request_timeout_s
    environment.gameday = _current = ctx
    if ctx.writer is not None:
        gevent.spawn(_flush_history, ctx)


def _flush_history(ctx) -> None:
    """Write the buffered history out while no request comes to do it (the writer flushes on its
    own when entries arrive): a killed worker loses at most ~FLUSH_S + this period of entries."""
    while _current is ctx:
        ctx.writer.flush_if_due()
        gevent.sleep(history.FLUSH_S / 4)


@events.request.add_listener
def _on_request(context=None, response_time=None, exception=None, **_kw) -> None:
    """Locust just counted a request: record its completion (only gameday operations carry an op)."""
    op = context.get("gameday") if context else None
    ctx = _current
    if op is None or ctx is None or ctx.writer is None:
        return
    entry = {k: v for k, v in op.items() if k != "outcome"}
    entry["type"] = op.get("outcome") or history.classify(op.get("kind", "write"), 0, False, exception)[0]
    if "error" not in entry:
        entry["error"] = f"{type(exception).__name__}: {exception}" if exception else None
    entry["latency_s"] = None if response_time is None else round(response_time / 1000.0, 6)
    entry["time"] = wall()
    entry["mono"] = time.monotonic()
    ctx.writer.complete(entry)


@events.test_stop.add_listener
def _test_stop(environment, **_kw) -> None:
    runner = environment.runner
    if environment.shape_class is not None:
        environment.shape_class.finished = True
    if isinstance(runner, MasterRunner):
        # merged once the workers have closed their files (they do when they stop or quit)
        if _master_run.get("dir") and _master_run.get("run"):
            _master_run["merge"] = gevent.spawn(_merge, _master_run["dir"], _master_run["run"])
        return
    ctx = _close_current()
    if ctx is not None and ctx.writer is not None and not isinstance(runner, WorkerRunner):
        n = history.merge(ctx.writer.path.parent, run=ctx.run)
        log.info("gameday load: history: %d entries in %s", n, ctx.writer.path.parent / history.MERGED_NAME)


def _close_current():
    global _current
    ctx, _current = _current, None
    if ctx is None:
        return None
    summary = ctx.close()
    for role, p in summary["pacing"].items():
        if p["skipped"]:
            log.warning("gameday load: %s users fell behind the plan: %d request slots skipped "
                        "(more users: raise the pool with a lower --per-user-rps)", role, p["skipped"])
    if summary["dropped"]:
        log.info("gameday load: %d claimed request slots were not sent: the run stopped first", summary["dropped"])
    if summary.get("abandoned"):
        log.info("gameday load: %d requests were in flight when their users were stopped: recorded as info "
                 "(outcome unknown)", summary["abandoned"])
    if summary["capped"]:
        log.warning("gameday load: this process reached its request cap (%d)", ctx.max_slots)
    return ctx


def _merge(directory: str, run: str) -> None:
    # the streamed parts first: the master writes them, and closes them once their workers closed
    stream.master_finish(_env.runner, MERGE_WAIT_S)
    n = history.merge_when_closed(directory, run, MERGE_WAIT_S)
    if n is not None:
        log.info("gameday load: history: %d entries in %s", n, os.path.join(directory, history.MERGED_NAME))


@events.quit.add_listener
def _quit(**_kw) -> None:
    env = _env
    if env is None:
        return
    merging = _master_run.get("merge")
    if merging is not None:
        merging.join(timeout=2 * MERGE_WAIT_S + 2)   # the streamed parts, then the files
    if not isinstance(env.runner, WorkerRunner):
        _write_final_csv(env)


def _write_final_csv(env) -> None:
    """Locust rewrites <prefix>_stats.csv every second and not after the last report: write the
    final table with Locust's own writer, into a new file that replaces the old one atomically."""
    prefix = getattr(env.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    path = prefix + "_stats.csv"
    tmp = path + ".final.tmp"
    with open(tmp, "w", newline="") as f:
        StatsCSV(env, PERCENTILES_TO_REPORT).requests_csv(csv.writer(f))
    os.replace(tmp, path)
