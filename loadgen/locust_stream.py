"""Locust's side of the streamed history (loadgen/history_stream.py) and of the clock offsets
(loadgen/clock_offset.py): the message handlers the locustfile registers, the master's pinger
and the master's end of a run. Imported by the locustfile only (it imports gevent).

Whether a worker streams (--gameday-history-stream): "on" always; "off" never (the worker writes
its part file into the master's run directory, which it must then share); "auto" (default)
streams unless the worker sees the master's run directory itself, proven by a marker file with
a token the master put there for this run (a same-path directory on another host does not count).
"""

from __future__ import annotations

import copy
import logging
import secrets
import time
from pathlib import Path

import gevent
from locust.runners import STATE_MISSING

from gameday.loadgen import clock_offset as clock
from gameday.loadgen import history_stream as hs

log = logging.getLogger("gameday.load")
MARKER = ".gameday-history-token"
MODES = ("auto", "on", "off")
FIRST_ROUND_S = 0.2        # how often the pinger looks for workers it has not measured yet

OFFSETS: dict[str, clock.OffsetEstimator] = {}     # on the master: by Locust node id
LOCUST_COUNTS: dict[str, int] = {}                 # on the master: Locust's requests per node, this run
_collector: hs.StreamCollector | None = None


def add_options(parser) -> None:
    parser.add_argument("--gameday-history-stream", type=str, default="auto", choices=MODES,
                        help="workers send their history to the master (on), write it into the master's run "
                             "directory (off), or stream unless they share that directory (auto)",
                        env_var="GAMEDAY_LOAD_HISTORY_STREAM")


# -- worker --------------------------------------------------------------------------------------

def streaming(opts) -> bool:
    """Should this worker stream its history (see the module's doc)?"""
    mode = getattr(opts, "gameday_history_stream", "auto") or "auto"
    if mode != "auto":
        return mode == "on"
    token = getattr(opts, "gameday_stream_token", None)
    try:
        return not token or (Path(opts.gameday_history_dir) / MARKER).read_text().strip() != token
    except (OSError, TypeError):
        return True


def without_files(opts):
    """The options with the history file off: the worker's LoadContext then opens none."""
    o = copy.copy(opts)
    o.record_history = "false"
    return o


def writer_for(runner, worker: str, run: str) -> hs.StreamWriter:
    return hs.StreamWriter(worker, runner.send_message, run=run)


def on_ping(environment, msg, **_kw) -> None:
    received = clock.wall()
    environment.runner.send_message(hs.PONG, hs.pong(msg.data, received))


# -- master --------------------------------------------------------------------------------------

def master_init(runner, environment) -> None:
    """Handlers, Locust's per-worker request counts, and the pinger, on the master."""
    runner.register_message(hs.MESSAGE, _on_history)
    runner.register_message(hs.PONG, _on_pong)
    environment.events.worker_report.add_listener(_on_worker_report)
    environment.parsed_options.gameday_stream_token = secrets.token_hex(8)
    gevent.spawn(_pinger, runner)


def master_start(opts) -> None:
    """A run starts: a new collector for its directory, the marker that local workers find."""
    global _collector
    LOCUST_COUNTS.clear()
    directory, run = getattr(opts, "gameday_history_dir", None), getattr(opts, "gameday_run", None)
    _collector = hs.StreamCollector(directory, run, offsets=OFFSETS, locust_counts=LOCUST_COUNTS) \
        if directory and run else None
    if _collector is not None:
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
            (Path(directory) / MARKER).write_text(opts.gameday_stream_token)
        except OSError as e:
            log.warning("gameday load: cannot mark the run directory for local workers (%s): they will stream", e)


def _on_history(environment, msg, **_kw) -> None:
    if _collector is not None:
        _collector.on_message(msg.node_id, msg.data or {})


def _on_pong(environment, msg, **_kw) -> None:
    received = time.time()
    try:
        hs.record_pong(OFFSETS, msg.node_id, msg.data, received)
    except (KeyError, TypeError, ValueError) as e:
        log.warning("gameday load: bad clock answer from %s: %s", msg.node_id, e)


def _on_worker_report(client_id, data, **_kw) -> None:
    total = (data or {}).get("stats_total") or {}
    LOCUST_COUNTS[client_id] = LOCUST_COUNTS.get(client_id, 0) + int(total.get("num_requests") or 0)


def _live_nodes(runner) -> set[str]:
    return {c.id for c in runner.clients.values() if c.state != STATE_MISSING}


def _pinger(runner) -> None:
    """Measure each connected worker at once when it appears, then every PING_INTERVAL_S."""
    last: dict[str, float] = {}
    while True:
        now = time.monotonic()
        for node in _live_nodes(runner):
            if now - last.get(node, -1e9) >= clock.PING_INTERVAL_S:
                last[node] = now
                gevent.spawn(_ping_round, runner, node)
        gevent.sleep(FIRST_ROUND_S)


def _ping_round(runner, node: str) -> None:
    for probe in range(clock.PINGS_PER_ROUND):
        runner.send_message(hs.PING, {"t0": time.time(), "probe": probe}, client_id=node)
        gevent.sleep(0.02)


def master_finish(runner, wait_s: float) -> dict | None:
    """The run ended: wait (at most wait_s) for every live worker's close, then write the merged
    history and history_completeness.json. None when no worker streamed."""
    c = _collector
    if c is None or not c.ledgers:
        return None
    deadline = time.monotonic() + wait_s
    while c.pending(_live_nodes(runner)) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    report = c.finalize()
    for worker, acc in report["workers"].items():
        if not acc["complete"]:
            log.warning("gameday load: history of %s is incomplete: %d entries missing%s", worker, acc["missing"],
                        " (estimated: it never closed)" if acc["estimated"] else "")
    told = {w: (a["entries_received"], a["clock_offset_s"], a["offset_uncertainty_s"]) for w, a in report["workers"].items()}
    log.info("gameday load: streamed history (entries, clock offset, uncertainty): %s", told)
    return report
