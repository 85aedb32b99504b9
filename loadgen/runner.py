"""Run gameday's Locust load from pytest (or any Python program), without importing Locust:
Locust always runs as child processes (one standalone Locust for one local worker, the default;
else a headless master and N workers), started
with gameday.procs.spawn so they die with their parent, against an environment given by its
endpoints dict or its state file. Everything (Locust's statistics and report, each worker's
history, the merged history.jsonl, the processes' logs) goes into one output directory.
`load_fixture` is the body of the `load` fixture (docs/scenarios.md).

Bad input raises LoadInputError, one line, before any process starts. The output files and an
example: docs/load.md, "The runner".
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterator

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from gameday import procs, state
from gameday.net import free_port
from gameday.loadgen import history as hist
from gameday.loadgen.context import check_targets
from gameday.loadgen.plan import LoadInputError, LoadPlan, build_plan, to_argv

__all__ = ["LoadRunner", "LoadFactory", "LoadInputError", "LoadRunError", "start_load", "load_fixture",
           "join_pending_reports", "open_park", "close_park"]

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


class LoadRunError(RuntimeError):
    """Locust did not start or stopped unexpectedly; the message quotes its log."""


def _tail(path: Path, n: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no log at {path})"


def _seconds(x) -> str | None:
    if x is None:
        return None
    return f"{x:g}" if isinstance(x, (int, float)) else str(x)


class LoadRunner:
    def __init__(self, out_dir: Path | str, *, endpoints: dict | None = None, state_file: Path | str | None = None,
                 workers: int = 1, shape: str = "constant", surge_region: str | None = None,
                 surge_rate: float | str = 0, region_mix: dict | str | None = None,
                 follower_rate: float | str = 0, op_mix: dict | str | None = None,
                 surge_op_mix: dict | str | None = None,
                 surge_at_s: float | str = 0, ramp_up_s: float | str = 0, hold_s: float | str = 10,
                 ramp_down_s: float | str = 0, duration_s: float | str = 0, max_requests: int = 0,
                 request_timeout_s: float = 2.0, per_user_rps: float = 2, record_history: bool = True,
                 stop_timeout_s: float | None = None, start_timeout_s: float = 30.0,
                 extra_args: tuple[str, ...] = (), remote_workers: bool = False, bind_host: str = "127.0.0.1",
                 master_port: int | None = None, standalone: bool | None = None):
        if not isinstance(workers, int) or workers < 1:
            raise LoadInputError(f"workers: need at least 1 Locust worker (got {workers!r})")
        self.out_dir = Path(out_dir).resolve()
        self.workers_wanted = workers
        # remote: only the master starts here, bound to bind_host; `workers` Locust workers started
        # elsewhere (`gameday load --worker --master-host H`) connect and stream their history
        self.remote_workers = remote_workers
        self.bind_host = bind_host
        self.master_port = master_port
        # one local worker: Locust standalone (its LocalRunner, the locustfile's "local" process),
        # one process that runs the users itself: the same shape, history, statistics and reports
        # as a master with one worker, without a second process importing Locust and gevent
        # (~1.5 s of CPU a run) nor their messages. `master` is that process; `workers` is empty.
        # standalone=False: a master and its one worker all the same (benchmarks/bench_locust_processes.py)
        can_stand_alone = not remote_workers and workers == 1
        if standalone and not can_stand_alone:
            raise LoadInputError("standalone: Locust runs alone only with one local worker "
                                 f"(workers={workers}, remote_workers={remote_workers})")
        self.standalone = can_stand_alone if standalone is None else standalone
        self.start_timeout_s = start_timeout_s
        self.extra_args = tuple(extra_args)
        try:
            self.endpoints = dict(endpoints) if endpoints is not None else state.read_state(state_file)
        except state.NoEnvironment as e:
            raise LoadInputError(str(e)) from None
        self._state_file = None if endpoints is not None else state.state_path(state_file).resolve()
        self.values = {
            "shape": shape, "surge_region": surge_region or "", "surge_rate": surge_rate,
            "region_mix": region_mix or "", "follower_rate": follower_rate,
            "op_mix": op_mix if op_mix is not None else None,
            "surge_op_mix": surge_op_mix if surge_op_mix is not None else None,
            "surge_at": _seconds(surge_at_s), "ramp_up": _seconds(ramp_up_s), "hold": _seconds(hold_s),
            "ramp_down": _seconds(ramp_down_s), "duration": _seconds(duration_s), "max_requests": max_requests,
            "request_timeout": _seconds(request_timeout_s), "per_user_rps": per_user_rps,
            "record_history": record_history, "history_dir": str(self.out_dir),
        }
        self.values = {k: v for k, v in self.values.items() if v is not None}
        argv_values = {k: (",".join(f"{a}={b}" for a, b in v.items()) if isinstance(v, dict) else v)
                       for k, v in self.values.items()}
        # validate now: a bad option or target is one clear exception, and nothing has started yet
        check_targets(self.endpoints)
        self.plan: LoadPlan = build_plan(argv_values, self.endpoints)
        self.stop_timeout_s = stop_timeout_s if stop_timeout_s is not None else int(self.plan.request_timeout_s) + 1
        self._argv_values = argv_values
        self.master: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._returncodes: dict[str, int | None] = {}
        self._reaper: threading.Thread | None = None
        self.started_at: float | None = None      # wall time the processes were started
        self._started = False
        self._stopped = False
        self._tail = hist.HistoryTail(self.out_dir)
        self._times: dict[str | None, list[float]] = defaultdict(list)   # served_by -> completion times
        # every entry the tail has read, by time: history() while the load runs reads only what is
        # new (a scenario's end_load asks every 0.25 s; re-reading ~4,000 entries cost ~17 ms a time)
        self._live: list[dict] = []

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> "LoadRunner":
        if self._started:
            return self
        self._started = True
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self._state_file is None:
            state_file = self.out_dir / "endpoints.json"
            state.write_state(self.endpoints, state_file)
        else:
            state_file = self._state_file
        common = ["-f", str(LOCUSTFILE), "--gameday-state", str(state_file), "--loglevel", "INFO"]
        run_argv = ["--csv", str(self.out_dir / "locust"), "--html", str(self.out_dir / "locust.html"),
                    "--stop-timeout", f"{self.stop_timeout_s:g}", "--exit-code-on-error", "0", "--only-summary",
                    *to_argv(self._argv_values), *self.extra_args]
        if self.standalone:
            master_argv = common + ["--headless", *run_argv]
        else:
            port = self.master_port or free_port()
            self.master_port = port
            stream = ("--gameday-history-stream", "on") if self.remote_workers else ()
            master_argv = common + [
                "--headless", "--master", "--master-bind-host", self.bind_host, "--master-bind-port", str(port),
                *stream, "--expect-workers", str(self.workers_wanted),
                "--expect-workers-max-wait", f"{self.start_timeout_s:g}", *run_argv]
        env = {"PYTHONUNBUFFERED": "1"}
        self.started_at = time.time()
        try:
            self.master = _locust(master_argv, self.out_dir / "master.log", env)
            for i in range(0 if self.remote_workers or self.standalone else self.workers_wanted):
                worker = common + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
                self.workers.append(_locust(worker, self.out_dir / f"worker-{i}.log", env))
            self._wait_running()
        except BaseException:
            self._kill_all()
            raise
        return self

    def _wait_running(self) -> None:
        """Until every worker has started the run (its history file exists), or the master says why not."""
        deadline = time.monotonic() + self.start_timeout_s
        log = self.out_dir / "master.log"
        while time.monotonic() < deadline:
            if self.master.poll() is not None:
                raise LoadRunError(f"Locust master exited with code {self.master.returncode} while starting"
                                   f"{self._arrivals(log)}; last lines of {log}:\n{_tail(log)}")
            dead = [i for i, w in enumerate(self.workers) if w.poll() is not None]
            if dead:
                wl = self.out_dir / f"worker-{dead[0]}.log"
                raise LoadRunError(f"Locust worker {dead[0]} exited with code {self.workers[dead[0]].returncode} "
                                   f"while starting; last lines of {wl}:\n{_tail(wl)}")
            if self.plan.record_history:
                if len(hist.part_files(self.out_dir)) >= self.workers_wanted:
                    return
            elif "gameday load: run " in _read(log):
                return
            time.sleep(0.05)   # polling child processes' progress, not waiting for a condition under test
        raise LoadRunError(f"Locust did not start the run within {self.start_timeout_s:g}s{self._arrivals(log)}; "
                           f"last lines of {log}:\n{_tail(log)}")

    def _arrivals(self, log: Path) -> str:
        """For remote workers: how many of the expected ones had connected (Locust's own count)."""
        if not self.remote_workers:
            return ""
        counts = re.findall(r"(\d+) workers connected", _read(log))
        arrived = int(counts[-1]) if counts else 0
        return (f" ({arrived} of {self.workers_wanted} remote workers arrived at "
                f"{self.bind_host}:{self.master_port})")

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait for the run to end by itself (the shape's duration), then finish up like stop()."""
        limit = timeout_s if timeout_s is not None else self.plan.duration_s + self.stop_timeout_s + 30
        if self.master is not None:
            try:
                self.master.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                pass
        self.stop()
        return self.returncodes.get("master")

    def stop(self, timeout_s: float | None = None) -> None:
        """End the run gracefully (users finish their request, workers report and close their
        history) and merge the history. Idempotent. Returns as soon as every worker has closed its
        history file: Locust's master still writes its own report (CSV, HTML) for a second or two,
        and a background thread reaps the processes meanwhile (join() waits for that; the load
        fixture joins at the end of the scenario, so the report overlaps the data checks)."""
        if self._stopped:
            return
        self._stopped = True
        m = self.master
        limit = timeout_s if timeout_s is not None else self.stop_timeout_s + 20
        if m is not None and m.poll() is None:
            # SIGUSR1: the locustfile's handler drains like the shape's own end; it is installed
            # once the run started, which start() waited for
            try:
                os.kill(m.pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass
            if self.plan.record_history and self._history_closed(limit):
                self._reaper = threading.Thread(target=self._reap, args=(limit,), name="locust-reaper", daemon=True)
                self._reaper.start()
                self._merge_history()
                return
        self._reap(limit)
        self._merge_history()

    def _history_closed(self, limit_s: float) -> bool:
        """Until every worker closed its history file (or died), or the master ended without that."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if not hist.pending_parts(self.out_dir):
                return True
            if self.master.poll() is not None:
                return False
            time.sleep(0.02)   # polling child processes' progress, not waiting for a condition under test
        return False

    def _reap(self, limit_s: float) -> None:
        """Wait for the master to quit (SIGINT, then terminate, past limit_s), then the workers."""
        m = self.master
        try:
            if m is not None and m.poll() is None:
                try:
                    m.wait(timeout=limit_s)
                except subprocess.TimeoutExpired:
                    try:
                        os.kill(m.pid, signal.SIGINT)   # Locust's Ctrl-C: quit, still writing its report
                        m.wait(timeout=10)
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        procs.terminate(m, grace_s=3)
            deadline = time.monotonic() + 10
            for w in self.workers:
                try:
                    w.wait(timeout=max(0.1, deadline - time.monotonic()))   # they quit when the master tells them
                except subprocess.TimeoutExpired:
                    procs.terminate(w, grace_s=3)
        finally:
            self._kill_all()
            self._returncodes = {"master": m.returncode if m else None,
                                 **{f"worker-{i}": w.returncode for i, w in enumerate(self.workers)}}

    def _merge_history(self) -> None:
        if self.plan.record_history and hist.part_files(self.out_dir):
            hist.merge(self.out_dir)

    def join(self, timeout_s: float | None = None) -> None:
        """Wait until every Locust process of a stopped run has exited (its report written)."""
        if self._reaper is not None:
            self._reaper.join(timeout_s)

    @property
    def returncodes(self) -> dict[str, int | None]:
        """Exit codes of the master and workers ({} before stop()); waits for them to exit."""
        self.join()
        return self._returncodes

    def _kill_all(self) -> None:
        for p in [self.master, *self.workers]:
            procs.terminate(p, grace_s=2)

    def __enter__(self) -> "LoadRunner":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.join()

    # -- chaos on the load generator itself ------------------------------------------------------------------
    def kill_worker(self, index: int) -> int:
        """SIGKILL one worker (no clean-up, no last report); returns its pid."""
        w = self.workers[index]
        pid = w.pid
        procs.kill_now(w)
        return pid

    @property
    def running(self) -> bool:
        return self.master is not None and self.master.poll() is None

    # -- what the run did, measured from the history as it grows ------------------------------------------------
    def _poll(self) -> None:
        new = self._tail.poll()
        for e in new:
            if e.get("type") in ("ok", "fail", "info"):
                self._times[e.get("served_by")].append(e["time"])
        if new:
            self._live.extend(new)
            self._live.sort(key=lambda e: e.get("time", 0.0))   # stable; nearly sorted already: linear

    def rate(self, region: str, window_s: float = 1.0) -> float:
        """Requests/s answered by `region` over the last window_s (completions in the history)."""
        self._poll()
        since = time.time() - window_s
        times = self._times.get(region, [])
        n = 0
        for t in reversed(times):
            if t < since:
                break
            n += 1
        return n / window_s

    def wait_rate(self, region: str, rps: float, deadline_s: float, window_s: float = 1.0) -> float:
        """Wait until `region` answers at least `rps` requests/s (over window_s); return the seconds it took.
        TimeoutError names the best rate seen."""
        self._require_history("wait_rate")
        t0 = time.monotonic()
        best = [0.0]

        def check() -> None:
            r = self.rate(region, window_s)
            best[0] = max(best[0], r)
            assert r >= rps, f"{region} answers {r:.1f} requests/s"

        try:
            for attempt in Retrying(stop=stop_after_delay(deadline_s), wait=wait_fixed(0.1),
                                    retry=retry_if_exception_type(AssertionError), reraise=False):
                with attempt:
                    check()
        except RetryError:
            raise TimeoutError(f"{region} did not reach {rps:g} requests/s within {deadline_s:g}s "
                               f"(best {best[0]:.1f}/s over {window_s:g}s windows)") from None
        return time.monotonic() - t0

    def requests_by_region(self) -> dict[str, int]:
        """Completed requests per region that answered them ("unanswered": no answer at all)."""
        self._require_history("requests_by_region")
        self._poll()
        return {(r if r is not None else "unanswered"): len(ts) for r, ts in self._times.items()}

    def history(self) -> list[dict]:
        """Every history entry, ordered by time (the merged file after stop(), the live files before)."""
        self._require_history("history")
        merged = self.out_dir / hist.MERGED_NAME
        if self._stopped and merged.exists():
            return hist.read_entries(merged)[0]
        self._poll()
        return list(self._live)

    def stats(self) -> dict:
        """Locust's totals from its CSV: {"requests", "failures", "by_name": {name: {...}}}."""
        self.join()   # the master writes the CSV as it quits
        path = self.out_dir / "locust_stats.csv"
        if not path.exists():
            raise LoadRunError(f"{path}: missing (did Locust run?)")
        by_name, total = {}, None
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rec = {"type": row["Type"], "requests": int(row["Request Count"]),
                       "failures": int(row["Failure Count"]), "median_ms": _num(row["Median Response Time"]),
                       "avg_ms": _num(row["Average Response Time"]), "max_ms": _num(row["Max Response Time"]),
                       "rps": _num(row["Requests/s"])}
                if row["Name"] == "Aggregated":
                    total = rec
                else:
                    by_name[row["Name"]] = rec
        total = total or {"requests": 0, "failures": 0}
        return {"requests": total["requests"], "failures": total["failures"], "total": total, "by_name": by_name}

    def part_files(self) -> list[Path]:
        return hist.part_files(self.out_dir)

    def _require_history(self, what: str) -> None:
        if not self.plan.record_history:
            raise LoadRunError(f"{what}() reads the history, and this run records none (record_history=False)")


def _num(x: str):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _endpoints_of(target) -> tuple[dict | None, Path | None]:
    if isinstance(target, dict):
        return target, None
    if isinstance(target, (str, Path)):
        return None, Path(target)
    ep = getattr(target, "endpoints", None)
    if isinstance(ep, dict) and ep:
        return ep, None
    raise LoadInputError(f"cannot find the endpoints of {target!r}: give an environment, an endpoints dict or a state file")


def start_load(target, out_dir: Path | str, **options) -> LoadRunner:
    """Start a load run against `target` (an Environment with .endpoints, an endpoints dict, or a
    state file path) writing into out_dir; returns the started LoadRunner (use it as a context manager)."""
    endpoints, state_file = _endpoints_of(target)
    run = LoadRunner(out_dir, endpoints=endpoints, state_file=state_file, **options)
    # an environment with load caps (aws: guardrails.max_rps) refuses a plan over them before it starts
    check_load = getattr(target, "check_load", None)
    if check_load is not None:
        check_load(run.plan)
    return run.start()


class LocustPark:
    """Locust processes started ahead of their runs (loadgen/parked.py): a run takes parked ones
    for its master and workers, and the park starts their replacements at once, so their imports
    (~1 s of a 2-core machine per process) overlap whatever comes before the next run (the end of
    a scenario, the environment settling) instead of delaying its load. Only while open (the
    pytest plugin opens it for a session's scenarios); otherwise every run spawns its own.
    `total`: how many processes the session's runs will take at most (the plugin counts its
    scenarios with a load); past it no replacement is started: a parked process nobody takes has
    spent its imports for nothing."""

    def __init__(self, size: int = 1, total: int | None = None):
        self.size = size
        self.total = total
        self.spawned = 0
        self.parked: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._fill()

    def _fill(self) -> None:
        while len(self.parked) < self.size and (self.total is None or self.spawned < self.total):
            self.parked.append(procs.spawn([procs.python(), "-m", "gameday.loadgen.parked"], stdin=subprocess.PIPE,
                                           env={"PYTHONUNBUFFERED": "1"}))
            self.spawned += 1

    def launch(self, argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen | None:
        """`locust <argv>` in a parked process (None when none is alive: the caller spawns)."""
        with self._lock:
            while self.parked:
                proc = self.parked.pop(0)
                command = {"argv": argv, "log": str(log_path), "env": {**os.environ, **env}, "cwd": os.getcwd()}
                try:
                    proc.stdin.write((json.dumps(command) + "\n").encode())
                    proc.stdin.close()
                except (BrokenPipeError, ValueError):   # it died parked: its replacement is spawned below
                    procs.terminate(proc)
                    continue
                self._fill()
                return proc
            self._fill()
            return None

    def close(self) -> None:
        with self._lock:
            for proc in self.parked:
                try:
                    proc.stdin.close()   # end of input: a parked process exits by itself
                except (BrokenPipeError, ValueError):
                    pass
            for proc in self.parked:
                procs.terminate(proc, grace_s=2)
            self.parked.clear()


_PARK: LocustPark | None = None


def open_park(size: int = 1, total: int | None = None) -> None:
    """Keep `size` Locust processes parked for the runs of this process (default: the one a run
    with one local worker takes: LoadRunner.standalone), `total` at most (None: no limit);
    close_park() ends them."""
    global _PARK
    if _PARK is None:
        _PARK = LocustPark(size, total)


def close_park() -> None:
    global _PARK
    park, _PARK = _PARK, None
    if park is not None:
        park.close()


def _locust(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen:
    """`python -m locust <argv>`, in a parked process when the park has one."""
    park = _PARK
    if park is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        proc = park.launch(argv, log_path, env)
        if proc is not None:
            return proc
    return procs.spawn([procs.python(), "-m", "locust", *argv], log_path=log_path, env=env)


_REPORTS_PENDING: list["LoadRunner"] = []   # stopped runs whose Locust master may still write its report


def join_pending_reports(timeout_s: float | None = None) -> None:
    """Wait until every run a LoadFactory closed with join=False has its Locust processes exited
    (their CSV and HTML reports written)."""
    while _REPORTS_PENDING:
        _REPORTS_PENDING.pop().join(timeout_s)


def remote_options(target) -> dict:
    """The LoadRunner options a config's `[load] workers = "remote"` asks for (none when local)."""
    spec = getattr(getattr(target, "config", None), "load", None)
    if spec is None or spec.workers != "remote":
        return {}
    return {"remote_workers": True, "workers": spec.expect_workers, "bind_host": spec.bind_host,
            "master_port": spec.master_port, "start_timeout_s": spec.wait_s}


class LoadFactory:
    """What a `load` fixture hands a scenario: start(**options) -> a started LoadRunner writing into
    the scenario's directory (the first load) or <dir>/load-<n> (more loads). close() stops every
    load it started and merges all their histories into <dir>/history.jsonl."""

    def __init__(self, target, out_dir: Path | str):
        self.target = target
        self.out_dir = Path(out_dir)
        self.runs: list[LoadRunner] = []

    def start(self, **options) -> LoadRunner:
        n = len(self.runs) + 1
        d = self.out_dir if n == 1 else self.out_dir / f"load-{n}"
        run = start_load(self.target, d, **{**remote_options(self.target), **options})
        self.runs.append(run)
        return run

    def close(self, join: bool = True) -> None:
        """Stop every run and merge their histories; with join=False, return before Locust's
        masters have written their own reports (~1 s of CSV and HTML after the history is closed):
        join_pending_reports() waits for them later."""
        errors = []
        for r in self.runs:
            try:
                r.stop()
            except Exception as e:  # noqa: BLE001 - stop every run, then report
                errors.append(e)
        if join:
            for r in self.runs:
                r.join()
        else:
            _REPORTS_PENDING.extend(self.runs)
        if len(self.runs) > 1:
            parts = [p for r in self.runs for p in hist.part_files(r.out_dir)]
            hist.merge_files(parts, self.out_dir / hist.MERGED_NAME)
        if errors:
            raise errors[0]

    def __enter__(self) -> "LoadFactory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_fixture(env, out_dir: Path | str, *, join: bool = True) -> Iterator[LoadFactory]:
    """Body of a pytest fixture: `yield from load_fixture(env, scenario_dir)`. join=False: the
    fixture's end does not wait for Locust's reports (see LoadFactory.close)."""
    factory = LoadFactory(env, out_dir)
    try:
        yield factory
    finally:
        factory.close(join=join)
