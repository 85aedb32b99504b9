"""What a load run will do, decided once from its options and the environment's endpoints. The
options are one table (`OPTIONS`): the locustfile registers them as Locust custom arguments and
the pytest-side runner turns keyword arguments into the same command line. `build_plan`
validates them and returns a `LoadPlan` (request streams, each a piecewise-linear rate over run
time), or raises `LoadInputError` whose message is one line for a human. It imports neither
Locust nor gevent: the runner (inside pytest) calls it before it starts any process.

Streams, rates ("150", "1.5x") and shapes (constant, ramp, surge): docs/load.md, "The plan".
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field

OP_KINDS = ("write", "read_own", "read_cross", "ping")
# ping: GET /health through the load balancer. The alarm counts every request the load balancer
# takes, and a surge (a retry storm, a bot) is not made of table writes only; pings let a small
# machine cross the alarm threshold while the writes that the data checks need keep flowing.
SHAPES = ("surge", "ramp", "constant")
ROLES = ("regional", "dns")
MAX_DURATION_S = 3600.0       # a run longer than an hour is a mistake on a rehearsal harness
MAX_TOTAL_RATE = 5000.0       # requests/s: far above what one machine serves; a typo guard


class LoadInputError(ValueError):
    """A bad load option (unknown region, negative rate, ...): str() is one line for a human."""


@dataclass(frozen=True)
class Option:
    flag: str                 # "--surge-rate"
    default: str
    help: str
    web: bool = True          # shown in Locust's web UI

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


# Every value is a string: the web UI sends strings, and "1.5x" or "20s" are not numbers.
OPTIONS: tuple[Option, ...] = (
    Option("--gameday-state", "", "state file of the running environment (default $GAMEDAY_STATE or .gameday/local.json)"),
    Option("--shape", "surge", "load shape: surge | ramp | constant"),
    Option("--surge-region", "", "region whose load balancer the surge users aim at (default: the first region)"),
    Option("--surge-rate", "1.5x", "surge rate: requests/s, or Nx = N times the alarm threshold per period"),
    Option("--region-mix", "", "steady regional load besides the surge, e.g. us-west-2=20,us-east-1=0.2x"),
    Option("--follower-rate", "10", "requests/s of DNS-following users (resolve the service name, honour the TTL)"),
    Option("--op-mix", "write=0.6,read_own=0.3,read_cross=0.1",
           "operation mix: write, read_own (read back from the region that took the write), read_cross (from another region)"),
    # 80% pings: the alarm counts every request, and a write through the whole local model costs
    # ~15 ms of CPU: 150 writes/s would saturate 2 cores and turn queueing into client timeouts
    Option("--surge-op-mix", "ping=0.8,write=0.2",
           "operation mix of the regional (surge) users: cheap GET /health pings cross the alarm, writes feed the "
           "data checks ('' = the same as --op-mix)"),
    Option("--surge-at", "5s", "surge shape: time before the surge starts"),
    Option("--ramp-up", "5s", "ramp-up time"),
    Option("--hold", "20s", "time at the full rate"),
    Option("--ramp-down", "5s", "ramp-down time"),
    Option("--duration", "0", "total run time (0 = the shape's own length); the run never lasts longer"),
    Option("--max-requests", "0", "hard cap on the run's requests (0 = 1.25 x the planned number + 100)"),
    Option("--request-timeout", "2s", "per-request connect and read timeout"),
    Option("--per-user-rps", "2", "requests/s one simulated user is planned for: users per role = peak rate / this (each user has 1/this seconds per request)"),
    Option("--history-dir", "", "where the operation history goes (default: <environment run dir>/load/<time>)"),
    Option("--record-history", "true", "record every operation (invoke + ok/fail/info) as JSON lines: true | false"),
    # the web UI's Chaos tab (loadgen/chaos_ui.py); not in the web form: they are decided at start
    Option("--chaos-token", "", "token guarding the web UI off loopback (Locust's login page, password = token; "
           "or 'Authorization: Bearer'); better given as $GAMEDAY_WEB_TOKEN", web=False),
    Option("--chaos-dir", "", "where the Chaos tab journals its faults (default: <environment run dir>/chaos/<time>)",
           web=False),
    Option("--chaos-rollback-on-stop", "false", "roll back the Chaos tab's faults when a test stops too, not only "
           "when Locust quits: true | false", web=False),
)
OPTION_BY_DEST = {o.dest: o for o in OPTIONS}


def defaults() -> dict[str, str]:
    return {o.dest: o.default for o in OPTIONS}


# -- parsing one value ------------------------------------------------------------------------------

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"


def parse_number(text, what: str, *, minimum: float = 0.0, allow_equal: bool = True) -> float:
    try:
        v = float(str(text).strip())
    except ValueError:
        raise LoadInputError(f"{what}: not a number: {text!r}") from None
    if not math.isfinite(v):
        raise LoadInputError(f"{what}: must be a finite number (got {text!r})")
    if v < minimum or (not allow_equal and v == minimum):
        rel = ">=" if allow_equal else ">"
        raise LoadInputError(f"{what}: must be {rel} {minimum:g} (got {text!r})")
    return v


def parse_rate(text, what: str, threshold_rps: float | None) -> float:
    """'150' -> 150 requests/s; '1.5x' -> 1.5 * threshold per period, in requests/s."""
    s = str(text).strip().lower()
    m = re.fullmatch(rf"({_NUM})\s*(x?)", s)
    if not m:
        raise LoadInputError(f"{what}: expected requests/s like 150 or a threshold multiple like 1.5x (got {text!r})")
    v = float(m.group(1))
    if not math.isfinite(v) or v < 0:
        raise LoadInputError(f"{what}: a rate must be >= 0 (got {text!r})")
    if m.group(2):
        if threshold_rps is None:
            raise LoadInputError(f"{what}: {text!r} is relative to the alarm threshold, but the environment "
                                 f"reports no request-count alarm threshold; give requests/s")
        v *= threshold_rps
    if v > MAX_TOTAL_RATE:
        raise LoadInputError(f"{what}: {v:g} requests/s is above the harness limit of {MAX_TOTAL_RATE:g}")
    return v


def parse_duration(text, what: str) -> float:
    """'20', '20s', '1.5m', '1m30s' -> seconds."""
    s = str(text).strip().lower()
    if re.fullmatch(_NUM, s):
        v = float(s)
    else:
        parts = re.fullmatch(rf"(?:({_NUM})m)?\s*(?:({_NUM})s)?", s)
        if not s or not parts or not any(parts.groups()):
            raise LoadInputError(f"{what}: expected seconds like 20, 20s, 1.5m or 1m30s (got {text!r})")
        v = float(parts.group(1) or 0) * 60 + float(parts.group(2) or 0)
    if not math.isfinite(v) or v < 0:
        raise LoadInputError(f"{what}: a duration must be >= 0 (got {text!r})")
    return v


def parse_pairs(text, what: str) -> list[tuple[str, str]]:
    """'a=1,b=2' -> [('a','1'), ('b','2')] (empty text -> [])."""
    out = []
    for part in str(text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise LoadInputError(f"{what}: expected name=value pairs separated by commas (got {part!r})")
        k, v = (x.strip() for x in part.split("=", 1))
        if not k:
            raise LoadInputError(f"{what}: a pair without a name: {part!r}")
        out.append((k, v))
    return out


def parse_bool(text, what: str) -> bool:
    s = str(text).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise LoadInputError(f"{what}: expected true or false (got {text!r})")


# -- rate over time ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Segment:
    t0: float
    t1: float
    r0: float   # requests/s at t0
    r1: float   # requests/s at t1 (linear in between)

    @property
    def area(self) -> float:
        return (self.r0 + self.r1) / 2 * (self.t1 - self.t0)


@dataclass(frozen=True)
class Stream:
    """One stream of requests: a rate that is piecewise linear in run time (0 outside segments)."""

    role: str                    # "regional" | "dns"
    region: str | None           # the region aimed at (regional), None for DNS followers
    segments: tuple[Segment, ...]
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _cum: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        segs = tuple(s for s in self.segments if s.t1 > s.t0 and (s.r0 > 0 or s.r1 > 0))
        object.__setattr__(self, "segments", segs)
        object.__setattr__(self, "_starts", tuple(s.t0 for s in segs))
        cum, c = [], 0.0
        for s in segs:
            cum.append(c)
            c += s.area
        cum.append(c)
        object.__setattr__(self, "_cum", tuple(cum))

    @property
    def label(self) -> str:
        return "dns" if self.role == "dns" else f"regional {self.region}"

    @property
    def total(self) -> float:
        return self._cum[-1]

    @property
    def peak(self) -> float:
        return max((max(s.r0, s.r1) for s in self.segments), default=0.0)

    def rate(self, t: float) -> float:
        i = bisect.bisect_right(self._starts, t) - 1
        if i < 0:
            return 0.0
        s = self.segments[i]
        if t >= s.t1:
            return 0.0
        return s.r0 + (s.r1 - s.r0) * (t - s.t0) / (s.t1 - s.t0)

    def count(self, t: float) -> float:
        """Requests due in [0, t) at the full rate."""
        i = bisect.bisect_right(self._starts, t) - 1
        if i < 0:
            return 0.0
        s = self.segments[i]
        if t >= s.t1:
            return self._cum[i + 1]
        tau = t - s.t0
        return self._cum[i] + s.r0 * tau + (s.r1 - s.r0) / (2 * (s.t1 - s.t0)) * tau * tau

    def time_of(self, n: float) -> float:
        """The run time at which count() reaches n (math.inf when the stream never does)."""
        if n > self._cum[-1] or not self.segments:
            return math.inf
        i = max(0, bisect.bisect_left(self._cum, n) - 1)
        i = min(i, len(self.segments) - 1)
        s = self.segments[i]
        c = max(0.0, n - self._cum[i])
        a = (s.r1 - s.r0) / (2 * (s.t1 - s.t0))
        b = s.r0
        disc = max(0.0, b * b + 4 * a * c)
        denom = b + math.sqrt(disc)
        tau = 2 * c / denom if denom > 0 else 0.0  # the stable root of a*tau^2 + b*tau = c
        return min(s.t0 + tau, s.t1)


# -- the plan -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadPlan:
    shape: str
    regions: tuple[str, ...]
    surge_region: str | None
    streams: tuple[Stream, ...]
    duration_s: float
    pools: dict[str, int]               # role -> number of simulated users
    op_mix: dict[str, float]            # op kind -> probability
    surge_op_mix: dict[str, float]      # the regional users' mix (default: op_mix)
    request_timeout_s: float
    max_requests: int
    per_user_rps: float
    record_history: bool
    history_dir: str                    # "" = decided by the master (environment run dir)
    threshold_rps: float | None         # requests/s that reach the alarm threshold in one period
    values: dict[str, str]              # the options as given (strings)

    def streams_for(self, role: str) -> tuple[Stream, ...]:
        return tuple(s for s in self.streams if s.role == role)

    def region_rate_at(self, region: str, t: float) -> float:
        return sum(s.rate(t) for s in self.streams if s.role == "regional" and s.region == region)

    @property
    def total_users(self) -> int:
        return sum(self.pools.values())

    def describe(self) -> str:
        parts = [f"shape {self.shape}, {self.duration_s:g}s"]
        for s in self.streams:
            parts.append(f"{s.label} peak {s.peak:g}/s")
        parts.append(f"users {self.pools}, cap {self.max_requests} requests")
        return "; ".join(parts)


def parse_op_mix(text, what: str) -> dict[str, float]:
    ops: dict[str, float] = {}
    for name, w in parse_pairs(text, what):
        if name not in OP_KINDS:
            raise LoadInputError(f"{what}: unknown operation {name!r}; one of {', '.join(OP_KINDS)}")
        ops[name] = parse_number(w, f"{what} {name}")
    if sum(ops.values()) <= 0:
        raise LoadInputError(f"{what}: the weights add up to 0; give at least one operation a weight")
    total_w = sum(ops.values())
    return {k: ops.get(k, 0.0) / total_w for k in OP_KINDS}


@dataclass(frozen=True)
class _Timing:
    """The shape's times (seconds): when a surge starts, how long the rate ramps up, holds, ramps down."""
    surge_at: float
    ramp_up: float
    hold: float
    ramp_down: float

    def length(self, shape: str) -> float:
        if shape == "constant":
            return self.hold
        if shape == "ramp":
            return self.ramp_up + self.hold + self.ramp_down
        return self.surge_at + self.ramp_up + self.hold + self.ramp_down

    def envelope(self, start: float, rate: float) -> tuple[Segment, ...]:
        a, b = start, start + self.ramp_up
        c, d = b + self.hold, b + self.hold + self.ramp_down
        return (Segment(a, b, 0.0, rate), Segment(b, c, rate, rate), Segment(c, d, rate, 0.0))


def build_plan(values: dict, endpoints: dict) -> LoadPlan:
    """Validate the options (strings, or numbers) against the environment and plan the run."""
    v = {**defaults(), **{k: ("" if x is None else str(x)) for k, x in values.items() if k in OPTION_BY_DEST}}
    regions_map = endpoints.get("regions") or {}
    regions = tuple(regions_map)
    if not regions:
        raise LoadInputError("the environment's endpoints list no regions")

    def region(name: str, what: str) -> str:
        if name not in regions_map:
            raise LoadInputError(f"{what}: unknown region {name!r}; the environment has {', '.join(regions)}")
        return name

    threshold = endpoints.get("alarm_threshold")
    period = (endpoints.get("profile") or {}).get("period_s")
    threshold_rps = float(threshold) / float(period) if threshold and period else None

    shape = v["shape"].strip().lower()
    if shape not in SHAPES:
        raise LoadInputError(f"--shape: unknown shape {v['shape']!r}; one of {', '.join(SHAPES)}")

    surge_region = region(v["surge_region"].strip() or regions[0], "--surge-region")
    surge_rate = parse_rate(v["surge_rate"], "--surge-rate", threshold_rps)
    mix: dict[str, float] = {}
    for name, rate in parse_pairs(v["region_mix"], "--region-mix"):
        mix[region(name, "--region-mix")] = parse_rate(rate, f"--region-mix {name}", threshold_rps)
    follower_rate = parse_rate(v["follower_rate"], "--follower-rate", threshold_rps)

    op_mix = parse_op_mix(v["op_mix"], "--op-mix")
    surge_op_mix = parse_op_mix(v["surge_op_mix"], "--surge-op-mix") if v["surge_op_mix"].strip() else op_mix

    timing = _Timing(parse_duration(v["surge_at"], "--surge-at"), parse_duration(v["ramp_up"], "--ramp-up"),
                     parse_duration(v["hold"], "--hold"), parse_duration(v["ramp_down"], "--ramp-down"))
    duration = parse_duration(v["duration"], "--duration")
    request_timeout = parse_duration(v["request_timeout"], "--request-timeout")
    if request_timeout <= 0:
        raise LoadInputError(f"--request-timeout: must be > 0 (got {v['request_timeout']!r})")
    per_user = parse_number(v["per_user_rps"], "--per-user-rps", allow_equal=False)
    max_requests = parse_number(v["max_requests"], "--max-requests")
    if max_requests != int(max_requests):
        raise LoadInputError(f"--max-requests: must be a whole number (got {v['max_requests']!r})")
    record = parse_bool(v["record_history"], "--record-history")

    duration = _run_length(shape, timing, duration)
    streams = _regional_streams(shape, timing, duration, surge_region, surge_rate, mix,
                                surge_region_given=bool(v["surge_region"].strip()))
    if follower_rate > 0:
        streams.append(Stream("dns", None, (Segment(0.0, duration, follower_rate, follower_rate),)))
    # a surge region stream and a mix entry for the same region are two streams: both count
    if not streams:
        raise LoadInputError("nothing to do: every rate is 0 (give --surge-rate, --region-mix or --follower-rate)")
    peak_total = sum(s.peak for s in streams)
    if peak_total > MAX_TOTAL_RATE:
        raise LoadInputError(f"the planned peak of {peak_total:g} requests/s is above the harness limit of {MAX_TOTAL_RATE:g}")

    pools = {}
    for role in ROLES:
        peak = sum(s.peak for s in streams if s.role == role)
        if peak > 0:
            pools[role] = max(1, math.ceil(peak / per_user - 1e-9))
    expected = sum(s.total for s in streams)
    cap = int(max_requests) if max_requests > 0 else int(math.ceil(expected * 1.25)) + 100
    return LoadPlan(
        shape=shape, regions=regions, surge_region=surge_region, streams=tuple(streams), duration_s=duration,
        pools=pools, op_mix=op_mix, surge_op_mix=surge_op_mix, request_timeout_s=request_timeout, max_requests=cap, per_user_rps=per_user,
        record_history=record, history_dir=v["history_dir"].strip(), threshold_rps=threshold_rps, values=v,
    )


def _run_length(shape: str, timing: _Timing, duration: float) -> float:
    """The run's length: the shape's own (--duration 0), or a --duration at least that long."""
    shape_len = timing.length(shape)
    if duration == 0:
        duration = shape_len
    elif duration < shape_len - 1e-9:
        raise LoadInputError(f"--duration: {duration:g}s is shorter than the {shape} shape ({shape_len:g}s); "
                             f"leave it 0 to run the shape's length")
    if duration <= 0:
        raise LoadInputError("the run would last 0s: give --hold or --duration")
    if duration > MAX_DURATION_S:
        raise LoadInputError(f"--duration: {duration:g}s is longer than the harness limit of {MAX_DURATION_S:g}s")
    return duration


def _regional_streams(shape: str, timing: _Timing, duration: float, surge_region: str, surge_rate: float,
                      mix: dict[str, float], *, surge_region_given: bool) -> list[Stream]:
    streams: list[Stream] = []
    if shape == "surge":
        if surge_rate > 0:
            streams.append(Stream("regional", surge_region, timing.envelope(timing.surge_at, surge_rate)))
        for r, rate in mix.items():
            if rate > 0:
                streams.append(Stream("regional", r, (Segment(0.0, duration, rate, rate),)))
        return streams
    # ramp / constant: the surge region is one more entry of the mix (the mix wins if both name it)
    targets = dict(mix)
    if surge_rate > 0 and surge_region_given:
        targets.setdefault(surge_region, surge_rate)
    elif surge_rate > 0 and not mix:
        targets[surge_region] = surge_rate
    for r, rate in targets.items():
        if rate <= 0:
            continue
        segs = timing.envelope(0.0, rate) if shape == "ramp" else (Segment(0.0, duration, rate, rate),)
        streams.append(Stream("regional", r, segs))
    return streams


def to_argv(values: dict) -> list[str]:
    """Keyword options (dest names, any printable value) -> Locust command-line arguments."""
    argv: list[str] = []
    for k, x in values.items():
        if x is None:
            continue
        if k not in OPTION_BY_DEST:
            raise LoadInputError(f"unknown load option {k!r}; known: {', '.join(sorted(OPTION_BY_DEST))}")
        if isinstance(x, bool):
            x = "true" if x else "false"
        elif isinstance(x, dict):
            x = ",".join(f"{a}={b}" for a, b in x.items())
        argv += [OPTION_BY_DEST[k].flag, str(x)]
    return argv
