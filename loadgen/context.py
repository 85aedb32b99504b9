"""What one Locust process (worker, or Locust alone) knows about the run while it runs: the plan,
the endpoints, when the run started, its pacers, its history file and its request budget.

The master decides the run (plan, start time, run id, history directory) and Locust hands those
to every worker with the spawn message (custom options travel in parsed_options); each worker
then builds its own LoadContext from them. No Locust or gevent import.
"""

from __future__ import annotations

import itertools
import json
import math
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from gameday import state
from gameday.net import AddressRefused, allowed_networks, check_address, env_kind_of
from gameday.loadgen.history import HistoryWriter, part_name
from gameday.loadgen.pacing import Pacer, Slot
from gameday.loadgen.plan import LoadInputError, LoadPlan, build_plan, defaults

RECENT_KEYS = 64   # acknowledged writes kept per region for cross-region reads
# run time 0 is this far after planning, so that the users are up before their first slot: a
# worker has to receive the spawn message and start them (slots more than a second late are skipped)
START_LEAD_S = {"local": 0.3, "distributed": 1.0}

# worker id -> what it answered to gameday_flush (filled on the master by loadgen.locustfile)
FLUSHED: dict[str, dict] = {}


@dataclass
class LoadContext:
    plan: LoadPlan
    endpoints: dict
    run: str                     # run id, shared by every process of the run
    worker: str                  # "local" or "w<index>"
    t0_mono: float               # run time 0 on this process's monotonic clock
    max_slots: int               # this process's share of the request cap
    phase: float = 0.0           # where this process's slots sit between other processes' slots
    writer: HistoryWriter | None = None
    members: dict[str, int] = field(default_factory=dict)
    pacers: dict[str, Pacer] = field(default_factory=dict)
    acked: dict[str, deque] = field(default_factory=dict)
    capped: bool = False
    dropped: int = 0             # slots claimed but not sent: their user was stopped first
    # users of a role this process was told to run (Locust's dispatch), when known: the share of
    # the role's slots does not then depend on how many users have started yet
    planned: Callable[[str], int] | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _users: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        regions = self.endpoints["regions"]
        # every address a region's load balancer answers on (a real ALB has one per AZ)
        self.region_of = {a: r for r, v in regions.items() for a in (v["lb_address"], *(v.get("addresses") or ()))}
        self.lb_url = {r: v["lb_url"] for r, v in regions.items()}
        self.lb_address = {r: v["lb_address"] for r, v in regions.items()}
        self.acked = {r: deque(maxlen=RECENT_KEYS) for r in regions}
        for role, pool in self.plan.pools.items():
            self.members.setdefault(role, 0)
            self.pacers[role] = Pacer(
                self.plan.streams_for(role), t0_mono=self.t0_mono, phase=self.phase,
                share=(lambda role=role, pool=pool: min(1.0, self.users_of(role) / pool)))

    # -- users ----------------------------------------------------------------------------------
    def users_of(self, role: str) -> int:
        planned = self.planned(role) if self.planned is not None else 0
        return planned or self.members.get(role, 0)

    def join(self, role: str) -> str:
        self.members[role] = self.members.get(role, 0) + 1
        return f"{self.worker}/{next(self._users)}"

    def leave(self, role: str) -> None:
        self.members[role] = max(0, self.members.get(role, 0) - 1)

    def claim(self, role: str) -> Slot | None:
        pacer = self.pacers.get(role)
        if pacer is None:
            return None
        if sum(p.claimed for p in self.pacers.values()) >= self.max_slots:
            self.capped = True
            return None
        return pacer.claim()

    def next_id(self) -> int:
        return next(self._ids)

    # -- end ------------------------------------------------------------------------------------
    def summary(self) -> dict:
        return {"pacing": {r: p.status() for r, p in self.pacers.items()}, "capped": self.capped,
                "dropped": self.dropped, "max_slots": self.max_slots}

    def close(self) -> dict:
        s = self.summary()
        if self.writer is not None:
            s["abandoned"] = self.writer.abandon_open()
            self.writer.close(s)
        return s


def endpoints_from(options) -> dict:
    """The environment's endpoints: handed over by the master (gameday_endpoints), else the state file."""
    given = getattr(options, "gameday_endpoints", None)
    if given:
        return json.loads(given) if isinstance(given, str) else given
    return state.read_state(getattr(options, "gameday_state", None) or None)


def check_targets(endpoints: dict) -> None:
    """Before any load starts: every address the users will send to (each region's load balancer,
    the DNS server the followers ask) must be one the environment may reach (gameday.net), else
    LoadInputError naming the address. The aws environment's real load balancers are not limited."""
    hosts = [("the DNS server", (endpoints.get("dns") or {}).get("host"))]
    for region, v in (endpoints.get("regions") or {}).items():
        hosts += [(f"{region}'s load balancer", v.get("lb_address")),
                  (f"{region}'s load balancer", urlsplit(v.get("lb_url") or "").hostname)]
    try:
        allowed = allowed_networks(env_kind_of(endpoints))
        if allowed is None:
            return
        for what, host in hosts:
            if host:
                check_address(host, allowed, what=f"load for {what}")
    except AddressRefused as e:
        raise LoadInputError(str(e)) from None


def option_values(options) -> dict[str, str]:
    return {k: getattr(options, k) for k in defaults() if getattr(options, k, None) is not None}


def plan_from(options, endpoints: dict | None = None) -> tuple[LoadPlan, dict]:
    ep = endpoints if endpoints is not None else endpoints_from(options)
    check_targets(ep)
    return build_plan(option_values(options), ep), ep


def prepare_run(options, *, distributed: bool = False) -> LoadPlan:
    """On the master (or Locust alone), as a run starts: plan it from the current options and the
    environment the state file names now, and put into the options what every worker needs
    (Locust sends custom options to the workers with the spawn message)."""
    ep = state.read_state(getattr(options, "gameday_state", None) or None)
    check_targets(ep)
    plan = build_plan(option_values(options), ep)
    run = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)
    if plan.history_dir:
        hdir = Path(plan.history_dir)
    elif ep.get("run_dir"):
        hdir = Path(ep["run_dir"]) / "load" / run
    else:
        hdir = Path("gameday-load") / run
    options.gameday_run = run
    options.gameday_t0 = time.time() + START_LEAD_S["distributed" if distributed else "local"]
    options.gameday_endpoints = json.dumps(ep)
    options.gameday_history_dir = str(hdir.resolve())
    if plan.record_history:
        hdir.mkdir(parents=True, exist_ok=True)
    return plan


def create(options, *, worker: str, n_processes: int, process_index: int,
           planned: Callable[[str], int] | None = None) -> LoadContext:
    """A process's LoadContext from the options the master distributed."""
    plan, ep = plan_from(options)
    run = options.gameday_run
    t0_wall = float(options.gameday_t0)
    t0_mono = time.monotonic() - (time.time() - t0_wall)
    n = max(1, n_processes)
    ctx = LoadContext(plan=plan, endpoints=ep, run=run, worker=worker, t0_mono=t0_mono,
                      max_slots=math.ceil(plan.max_requests / n), phase=(process_index % n) / n, planned=planned)
    if plan.record_history:
        d = Path(options.gameday_history_dir)
        ctx.writer = HistoryWriter(d / part_name(run, worker), worker)
    return ctx
