"""Live progress: each scenario's story told as it happens, from the run's own data.

The story comes from what the report reads, not from a second bookkeeping:
  RUN_DIR/env/events.jsonl          the environment's timeline (alarm, lambda_invocation, dns_change,
                                    fault, load, scenario, ...)
  <scenario dir>/history.*.jsonl    the clients' operations, as each Locust worker writes them
and, at the end, the scenario's record (its checks and outcome: result.json).

  story(events, ops, setting)   the pure part: timeline events + client operations -> story lines
  Story                         the same, fed incrementally (what the follower uses)
  verdict_lines(result)         a scenario's checks and verdict line, from its result.json shape
  Follower                      a daemon thread in the pytest process that tails those files during a
                                scenario, tells the story and (on a terminal) keeps a live status line
  Output                        where the lines go: a duplicate of the terminal's stdout taken before
                                pytest captures output, so lines appear while a test runs

Modes: "story" (default), "verbose" (every timeline event, and the clients' per-second counts),
"quiet" (nothing here: `gameday run --quiet` prints its verdict table only).
The live status line (elapsed, requests/s by region, errors, DNS answer) is drawn only on a
terminal and never when CI=true; elsewhere only whole lines are printed, no control characters.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

from gameday.tail import JsonlTail

MODES = ("story", "quiet", "verbose")
POLL_S = 0.5          # how often the follower reads the files (and redraws the live line)
HOLDBACK_S = 0.5      # lines are told in time order: records younger than this wait for the other files
FOLLOW_SHARE = 0.5    # "clients following": more than this share of the DNS followers' requests in a second
CLEAR_LINE = "\r\x1b[2K"

_COMPARISON = {"GreaterThanThreshold": ">", "GreaterThanOrEqualToThreshold": ">=", "LessThanThreshold": "<",
               "LessThanOrEqualToThreshold": "<=", "LessThanLowerOrGreaterThanUpperThreshold": "outside",
               "LessThanLowerThreshold": "<", "GreaterThanUpperThreshold": ">"}


@dataclass(frozen=True)
class Setting:
    """What the story needs to know about the environment (no I/O: built once per scenario)."""
    started: float                                   # the scenario's start (epoch s): times are told from it
    regions_by_address: dict[str, str] = field(default_factory=dict)
    initial_answer: tuple[str, ...] = ()             # the DNS answer at the baseline
    period_s: float = 0.0
    alarms: dict[str, tuple[str, str, float]] = field(default_factory=dict)   # key -> (metric, comparison, threshold)

    @classmethod
    def from_env(cls, env, started: float) -> "Setting":
        cfg = env.config
        ep = getattr(env, "endpoints", None) or {}
        by_addr = {v.get("lb_address"): r for r, v in (ep.get("regions") or {}).items() if v.get("lb_address")}
        initial = next((a for a, r in by_addr.items() if r == cfg.initial_region), None)
        return cls(started=started, regions_by_address=by_addr, initial_answer=(initial,) if initial else (),
                   period_s=float(env.profile.period_s),
                   alarms={k: (a.metric, a.comparison, float(a.threshold)) for k, a in cfg.alarms.items() if a.enabled})

    def region(self, address: str) -> str:
        return self.regions_by_address.get(address, address)

    def answer(self, addresses: Iterable[str] | None) -> str:
        addrs = list(addresses or [])
        if not addrs:
            return "nothing (no record)"
        return ", ".join(f"{self.region(a)} ({a})" if a in self.regions_by_address else a for a in addrs)


@dataclass(frozen=True)
class StoryLine:
    ts: float
    text: str
    kind: str          # the step: load, fault, threshold, alarm, lambda, health, dns, follow, clients, event, baseline

    def render(self, started: float) -> str:
        return f"  {_offset(self.ts - started):>8}  {self.text}"


def _offset(dt: float) -> str:
    return f"+{max(0.0, dt):.1f}s"


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(", ", ": "))
    text = " ".join(text.split())    # one line, whatever the handler returned
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _alarm_key(name: str, region: str | None) -> str:
    key = name.removeprefix("gameday-")
    return key.removesuffix("-" + region) if region else key


class Story:
    """Turns timeline events and client operations, fed in time order, into story lines.
    feed_event(e) / feed_op(op) return the lines they complete; so does advance(ts) (a second of
    client operations is told once a later record shows it is over)."""

    def __init__(self, setting: Setting, mode: str = "story"):
        self.s = setting
        self.verbose = mode == "verbose"
        self.dns = list(setting.initial_answer)
        self.alarm_state: dict[str, str] = {}
        self.errors = 0
        self.requests = 0
        self.last_second: dict[str, int] = {}           # served_by -> completions in the last whole second
        self._bucket: int | None = None                 # the second being counted
        self._last_end: float | None = None             # the end of the last second counted
        self._by_region: Counter = Counter()            # this second: completions by the region that answered
        self._followers: Counter = Counter()            # this second: DNS followers' completions by region
        self._fails = 0
        self._period: dict[str, tuple[int, int]] = {}   # region -> (period index, completions answered)
        self._crossed: set[str] = set()
        self._follow_target: str | None = None          # the region DNS moved to, until clients are seen there

    # -- feeding ---------------------------------------------------------------------------------------
    def advance(self, ts: float) -> list[StoryLine]:
        """Close the second(s) of client operations that ended before ts."""
        out: list[StoryLine] = []
        if self._bucket is not None and ts >= self._bucket + 1:
            out += self._close_second()
        elif self._bucket is None and self._last_end is not None and ts >= self._last_end + 1:
            self.last_second = {}   # a whole second without a completion: nothing answered
        return out

    def feed_op(self, op: dict) -> list[StoryLine]:
        if op.get("type") not in ("ok", "fail", "info"):
            return []
        ts = float(op.get("time") or 0.0)
        if ts < self.s.started:
            return []
        out = self.advance(ts)
        second = int(math.floor(ts))
        if self._bucket is None or second > self._bucket:
            self._bucket = second
        region = op.get("served_by") or "unanswered"
        self.requests += 1
        self._by_region[region] += 1
        if op.get("type") != "ok":
            self.errors += 1
            self._fails += 1
        if op.get("role") == "dns":
            self._followers[region] += 1
        out += self._count_period(region, ts)
        return out

    def feed_event(self, e: dict) -> list[StoryLine]:
        ts = float(e.get("time") or 0.0)
        if ts < self.s.started:
            return []
        out = self.advance(ts)
        told = self._tell(e, ts)
        if told is not None:
            out.append(told)
        elif self.verbose:
            out.append(StoryLine(ts, _generic(e), "event"))
        return out

    # -- the steps -------------------------------------------------------------------------------------
    def _tell(self, e: dict, ts: float) -> StoryLine | None:
        kind = e.get("kind")
        if kind == "load" and e.get("action") == "started":
            return StoryLine(ts, f"load started: {e.get('rates') or e.get('describe') or 'Locust running'}", "load")
        if kind == "fault":
            what = f"{e.get('fault_kind')} {e.get('target')}".strip()
            desc = e.get("description")
            desc = f" ({desc})" if desc and desc != what else ""
            if e.get("action") == "inject":
                return StoryLine(ts, f"fault injected: {what}{desc}" if e.get("ok", True) else
                                 f"fault injection FAILED: {what}: {e.get('error')}", "fault")
            if e.get("action") == "rollback":
                return StoryLine(ts, f"fault rolled back: {what}" if e.get("ok", True) else
                                 f"fault rollback FAILED: {what}: {e.get('error')}", "fault")
            return None
        if kind == "alarm":
            name, region = str(e.get("alarm")), e.get("region")
            self.alarm_state[name] = str(e.get("new"))
            if "ALARM" not in (e.get("old"), e.get("new")):
                return None   # INSUFFICIENT_DATA <-> OK: bookkeeping of the alarm, not the story
            key = _alarm_key(name, region)
            value = e.get("value")
            spec = self.s.alarms.get(key)
            why = ""
            if isinstance(value, (int, float)):
                why = f" ({value:g}" + (f" {_COMPARISON.get(spec[1], spec[1])} {spec[2]:g}" if spec and e.get("new") == "ALARM"
                                        else "") + ")"
            return StoryLine(ts, f"alarm {key} {region}: {e.get('old')} -> {e.get('new')}{why}", "alarm")
        if kind == "lambda_invocation":
            # the SNS message's alarm (AlarmName, NewStateValue), or just its name
            alarm = e.get("alarm") if isinstance(e.get("alarm"), dict) else {"AlarmName": e.get("alarm")}
            name = alarm.get("AlarmName")
            state = alarm.get("NewStateValue") or self.alarm_state.get(str(name))
            if e.get("outcome") == "ok" and name and state != "ALARM":
                return None   # told of an OK transition (CloudWatch's OK action): not the failover
            region = e.get("region")
            about = f" for {_alarm_key(str(name), region)} {region}" if name else ""
            text = f"Lambda invoked{about}: {e.get('outcome')} in {float(e.get('duration_s') or 0):.2f}s"
            if e.get("attempt", 1) and int(e.get("attempt") or 1) > 1:
                text += f" (attempt {e.get('attempt')})"
            if e.get("outcome") != "ok":
                err = e.get("error") or {}
                text += f": {err.get('type') or 'error'}: {_short(err.get('message') or '', 160)}" if isinstance(err, dict) \
                    else f": {_short(err, 160)}"
                if e.get("will_retry"):
                    text += f"; retry in {e.get('retry_in_s')}s"
            elif e.get("result") is not None:
                text += f", returned {_short(e.get('result'))}"
            return StoryLine(ts, text, "lambda")
        if kind == "route53_health":
            # failover routing: Route 53's own health checks move the answer (no alarm, no function)
            return StoryLine(ts, f"Route 53 health check {e.get('region')}: "
                                 f"{'healthy' if e.get('healthy') else 'unhealthy'}"
                                 + (f" ({_short(e.get('reason'), 120)})" if e.get("reason") else ""), "health")
        if kind == "dns_change":
            old, new = list(e.get("old") or []), list(e.get("new") or [])
            self.dns = new
            regions = {self.s.region(a) for a in new}
            self._follow_target = next(iter(regions)) if len(regions) == 1 else None
            return StoryLine(ts, f"DNS answer changed: {self.s.answer(old)} -> {self.s.answer(new)}", "dns")
        return None

    def _count_period(self, region: str, ts: float) -> list[StoryLine]:
        """Requests answered by a region in the current alarm period, as the clients count them: the
        moment a RequestCount alarm's threshold is crossed (CloudWatch decides at the period's end)."""
        if not self.s.period_s or region in self._crossed:
            return []
        idx = int(ts // self.s.period_s)
        cur, n = self._period.get(region, (idx, 0))
        n = n + 1 if cur == idx else 1
        self._period[region] = (idx, n)
        for key, (metric, comparison, threshold) in self.s.alarms.items():
            if metric != "RequestCount" or comparison not in ("GreaterThanThreshold", "GreaterThanOrEqualToThreshold"):
                continue
            if n > threshold or (comparison == "GreaterThanOrEqualToThreshold" and n >= threshold):
                self._crossed.add(region)
                start = idx * self.s.period_s
                return [StoryLine(ts, f"threshold crossed: {region} answered {n} requests in the {self.s.period_s:g}s "
                                      f"period from {_offset(start - self.s.started)} ({key} alarm: "
                                      f"{_COMPARISON[comparison]} {threshold:g} per period)", "threshold")]
        return []

    def _close_second(self) -> list[StoryLine]:
        out: list[StoryLine] = []
        end = float(self._bucket + 1)
        self._last_end = end
        self.last_second = dict(self._by_region)
        if self.verbose and self._by_region:
            parts = ", ".join(f"{r} {n}" for r, n in sorted(self._by_region.items()))
            out.append(StoryLine(end, f"clients, last second: {parts} answered; {self._fails} failed or unknown",
                                 "clients"))
        target = self._follow_target
        total = sum(self._followers.values())
        if target is not None and total:
            share = self._followers[target] / total
            if share > FOLLOW_SHARE:
                self._follow_target = None
                out.append(StoryLine(end, f"clients following: {self._followers[target]} of {total} DNS followers' "
                                          f"requests in the last second answered by {target} ({share:.0%})", "follow"))
        self._bucket = None
        self._by_region.clear()
        self._followers.clear()
        self._fails = 0
        return out

    def finish(self, ts: float) -> list[StoryLine]:
        """The end of the scenario: the last second of operations is over."""
        return self.advance(ts if self._bucket is None else max(ts, self._bucket + 1))

    # -- the live line ---------------------------------------------------------------------------------
    def status_text(self, now: float) -> str:
        rates = ", ".join(f"{r} {n}/s" for r, n in sorted(self.last_second.items())) or "no requests"
        return (f"  [{_offset(now - self.s.started)}] {rates} | errors {self.errors} of {self.requests} | "
                f"DNS -> {', '.join(self.s.region(a) for a in self.dns) or '?'}")


def _generic(e: dict) -> str:
    """A timeline event as one line (verbose mode): its kind, then its fields."""
    skip = {"seq", "time", "mono", "kind", "logs"}
    fields = " ".join(f"{k}={_short(v, 80)}" for k, v in e.items() if k not in skip and v not in (None, "", [], {}))
    return f"{e.get('kind')}: {fields}"


def story(events: Iterable[dict], ops: Iterable[dict], setting: Setting, mode: str = "story",
          until: float | None = None) -> list[StoryLine]:
    """The whole story of a scenario from its timeline events and client operations (any order)."""
    tagged = [(float(e.get("time") or 0.0), 0, e) for e in events] + \
             [(float(o.get("time") or 0.0), 1, o) for o in ops if o.get("type") in ("ok", "fail", "info")]
    tagged.sort(key=lambda x: (x[0], x[1]))
    st = Story(setting, mode)
    out: list[StoryLine] = []
    for ts, src, rec in tagged:
        if until is not None and ts > until:
            break
        out += st.feed_event(rec) if src == 0 else st.feed_op(rec)
    out += st.finish(until if until is not None else (tagged[-1][0] if tagged else setting.started))
    return out


def verdict_lines(result: dict, started: float | None = None, finished: float | None = None) -> list[str]:
    """A scenario's checks (each with its verdict; a failed one with its reason) and its verdict line,
    from a result.json-shaped dict (scenarios/recorder.py)."""
    out = []
    for c in result.get("checks") or []:
        v = c.get("valid")
        word = "ok" if v is True else "FAILED" if v is False else "unknown"
        detail = " ".join(str(c.get("detail") or "").split())
        out.append(f"  check {c.get('name')}: {word}" + (f": {_short(detail, 400)}" if detail else ""))
    outcome = str(result.get("outcome") or "error")
    took = f" in {finished - started:.1f}s" if started is not None and finished is not None else ""
    m = result.get("metrics") or {}
    parts = [f"{label} {m[k]:.1f}s" for k, label in (("detection_s", "detection"), ("failover_s", "failover"),
                                                       ("rto_s", "rto")) if isinstance(m.get(k), (int, float))]
    if m.get("acked_writes"):
        parts.append(f"lost {m.get('lost_acked_writes') or 0}/{m['acked_writes']} acknowledged writes")
    line = f"  {result.get('name')}: {outcome.upper()}{took}" + (f" ({', '.join(parts)})" if parts else "")
    if outcome in ("failed", "error") and result.get("message"):
        line += f": {_short(str(result['message']).splitlines()[0], 300)}"
    if outcome == "skipped" and result.get("message"):
        line += f": {_short(str(result['message']), 300)}"
    return out + [line]


# -- output ------------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def live_line_wanted(stream: TextIO, environ: dict | None = None) -> bool:
    """The live status line only on a terminal, and never in CI (CI=true: logs keep whole lines)."""
    environ = os.environ if environ is None else environ
    if str(environ.get("CI", "")).strip().lower() in ("true", "1", "yes"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Output:
    """Whole story lines, and on a terminal one status line below them that is redrawn in place.
    Thread-safe; lines never carry control characters (a handler's return value could)."""

    def __init__(self, stream: TextIO, live: bool | None = None):
        self.stream = stream
        self.live = live_line_wanted(stream) if live is None else live
        self._lock = threading.Lock()
        self._status_shown = False

    @classmethod
    def terminal(cls) -> "Output":
        """A duplicate of file descriptor 1, taken now (before pytest captures it: call at configure)."""
        fd = os.dup(sys.stdout.fileno())
        return cls(os.fdopen(fd, "w", buffering=1, encoding=sys.stdout.encoding or "utf-8", errors="replace"))

    def lines(self, lines: Iterable[str]) -> None:
        text = "".join(_CONTROL.sub(" ", ln) + "\n" for ln in lines)
        if not text:
            return
        with self._lock:
            if self._status_shown:
                text = CLEAR_LINE + text
                self._status_shown = False
            self._write(text)

    def status(self, text: str) -> None:
        if not self.live:
            return
        with self._lock:
            self._write(CLEAR_LINE + _CONTROL.sub(" ", text))
            self._status_shown = True

    def clear_status(self) -> None:
        with self._lock:
            if self._status_shown:
                self._write(CLEAR_LINE)
                self._status_shown = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass   # the terminal went away: the run goes on, its data is in the run directory

    def close(self) -> None:
        self.clear_status()
        try:
            self.stream.close()
        except OSError:
            pass


# -- following the files during a scenario ------------------------------------------------------------------

class ScenarioTail(JsonlTail):
    """A JsonlTail that can start at the files' current ends (what was there before the scenario)."""

    def skip_to_end(self) -> None:
        for p in self.files():
            try:
                self._offsets[p] = p.stat().st_size
            except OSError:
                pass


class Follower:
    """Tells one scenario's story while it runs: a daemon thread that reads the environment's timeline
    and the scenario's client histories every POLL_S, feeds the Story in time order (holding back the
    last HOLDBACK_S, so that lines from the two sources come out in order) and writes to `out`.
    stop() tells what is left; the thread's own CPU time is kept in cpu_s."""

    def __init__(self, out: Output, setting: Setting, events_file: Path, scenario_dir: Path, *, mode: str = "story",
                 poll_s: float = POLL_S, holdback_s: float = HOLDBACK_S):
        self.out = out
        self.setting = setting
        self.story = Story(setting, mode)
        self.poll_s = poll_s
        self.holdback_s = holdback_s
        self.events = ScenarioTail(Path(events_file).parent, (Path(events_file).name,))
        self.ops = ScenarioTail(Path(scenario_dir), ("history.*.jsonl", "load-*/history.*.jsonl"),
                             exclude=("history.jsonl",), skip=b'"type":"invoke"')
        self._pending: list[tuple[float, int, int, dict]] = []
        self._n = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cpu_s = 0.0
        self.told: list[StoryLine] = []
        self.paused = False                  # no more live line (pytest writes its outcome line now)
        self._lock = threading.Lock()        # the thread and stop()/Progress.end() both step

    def start(self, first_line: str | None = None) -> "Follower":
        if first_line:
            self._tell([StoryLine(time.time(), first_line, "baseline")])
        self._thread = threading.Thread(target=self._run, name="gameday-progress", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.poll_s):
                self.step(time.time())
        except Exception as e:  # noqa: BLE001 - the story is a convenience: the scenario runs on without it
            self.out.lines([f"  (live progress stopped: {type(e).__name__}: {e})"])

    def step(self, now: float, *, final: bool = False) -> None:
        with self._lock:
            t0 = time.thread_time()
            try:
                self._step(now, final)
            finally:
                self.cpu_s += time.thread_time() - t0   # whichever thread stepped: the cost of the story

    def _step(self, now: float, final: bool) -> None:
        for e in self.events.poll():
            self._push(float(e.get("time") or 0.0), 0, e)
        for o in self.ops.poll():
            self._push(float(o.get("time") or 0.0), 1, o)
        self._pending.sort(key=lambda x: (x[0], x[1], x[2]))
        horizon = math.inf if final else now - self.holdback_s
        ready = [p for p in self._pending if p[0] <= horizon]
        self._pending = self._pending[len(ready):]
        lines: list[StoryLine] = []
        for ts, src, _, rec in ready:
            lines += self.story.feed_event(rec) if src == 0 else self.story.feed_op(rec)
        lines += self.story.finish(now) if final else self.story.advance(horizon)
        self._tell(lines)
        if not final and not self.paused:
            self.out.status(self.story.status_text(now))

    def _push(self, ts: float, src: int, rec: dict) -> None:
        self._n += 1
        self._pending.append((ts, src, self._n, rec))

    def _tell(self, lines: list[StoryLine]) -> None:
        if self.paused:
            # after the verdict only what the teardown does to the system is told (a fault rolled back)
            lines = [ln for ln in lines if ln.kind == "fault"]
        self.told += lines
        self.out.lines(ln.render(self.setting.started) for ln in lines)

    def cpu_time(self) -> float:
        """CPU seconds spent reading the files, telling the story and drawing the live line."""
        with self._lock:
            return self.cpu_s

    def stop(self) -> None:
        """Stop the thread and tell the rest of the story (idempotent)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        self.step(time.time(), final=True)
        if not self.paused:
            self.out.clear_status()


class Progress:
    """The pytest plugin's side: one per session (made at configure time, before output is captured),
    one Follower per scenario."""

    def __init__(self, mode: str, out: Output | None):
        self.mode = mode
        self.out = out
        self.current: Follower | None = None
        self._ended = False

    @classmethod
    def configure(cls, value: str | None) -> "Progress":
        mode = mode_of(value)
        out = None
        if mode != "quiet":
            try:
                out = Output.terminal()
            except (OSError, ValueError, AttributeError):   # no real stdout (an in-process pytest run): no story
                out = None
        return cls(mode, out)

    def begin(self, env, rec, run_dir: Path, reporter=None) -> None:
        """The scenario is at its baseline: start telling its story."""
        if self.out is None:
            return
        try:
            self._begin(env, rec, run_dir, reporter)
        except Exception as e:  # noqa: BLE001 - the story is a convenience: the scenario runs without it
            self.current = None
            self.out.lines([f"  (no live progress: {type(e).__name__}: {e})"])

    def _begin(self, env, rec, run_dir: Path, reporter) -> None:
        setting = Setting.from_env(env, rec.started)
        if reporter is not None and getattr(reporter, "currentfspath", None):
            # pytest left its test line open ("path::test "): end it, and have it printed again with
            # the outcome (it writes through its own, captured, stream: only its state is touched)
            self.out.lines([""])
            reporter.currentfspath = None
        self.current = Follower(self.out, setting, events_file(run_dir), rec.dir, mode=self.mode)
        self.current.events.skip_to_end()   # what happened before (the baseline's restoration) is not this story
        self._ended = False
        self.current.start("at baseline" + (f", DNS answers {setting.answer(setting.initial_answer)}"
                                            if setting.initial_answer else ""))

    def end(self, rec, outcome: str, message: str | None) -> None:
        """The scenario's body is over: the rest of its story, its checks and its verdict line, before
        pytest prints its own outcome."""
        f = self.current
        if f is None or self._ended:
            return
        self._ended = True
        f.step(time.time(), final=True)
        f.out.clear_status()
        f.paused = True
        result = {"name": rec.name, "outcome": outcome, "checks": rec.checks, "metrics": rec.metrics,
                  "message": None if any(c.get("valid") is False for c in rec.checks) else message}
        self.out.lines(verdict_lines(result, rec.started, time.time()))
        if self.mode == "verbose":
            self.out.lines([f"  (telling this story took {f.cpu_time():.2f}s of CPU)"])

    def close(self) -> None:
        """The scenario's teardown is over (load stopped, faults rolled back): tell what it did."""
        f, self.current = self.current, None
        if f is not None:
            f.stop()


def events_file(run_dir: Path) -> Path:
    """Where the environment writes its timeline (reports/rundata.py reads it there)."""
    return Path(run_dir) / "env" / "events.jsonl"


def load_rates(plan) -> str:
    """A load plan's streams as the story's 'load started' says them: 'regional us-east-1 150/s, dns 10/s'."""
    parts = [f"{s.label} {s.peak:g}/s" for s in getattr(plan, "streams", ())]
    return ", ".join(parts) or getattr(plan, "shape", "load")


def announce_loads(factory, env) -> None:
    """Put each load's start on the environment's timeline (kind "load"), as the nemesis puts its
    faults there: the story (and anyone reading the timeline) sees when the load ran and at what rates."""
    start = factory.start

    def start_and_announce(**options):
        run = start(**options)
        try:
            env.control("POST", "/events", {"kind": "load", "action": "started", "rates": load_rates(run.plan),
                                            "users": run.plan.total_users, "dir": str(run.out_dir)})
        except Exception:  # noqa: BLE001 - a timeline gap must not stop the scenario
            pass
        return run

    factory.start = start_and_announce


def mode_of(value: str | None) -> str:
    v = (value or "story").strip().lower()
    if v not in MODES:
        raise ValueError(f"gameday progress must be one of {', '.join(MODES)}, got {value!r}")
    return v

