"""The load shape Locust runs: the plan's rates over time (loadgen.plan: surge | ramp | constant,
chosen with --shape and parameterised by --surge-rate, --ramp-up, --hold, --ramp-down,
--surge-at, --duration), turned into Locust's terms.

Rates are not set through user counts: each role gets a fixed pool of users for the whole run
(plan.pools, at --per-user-rps each), spawned at once, and the users pace their requests by the
plan's schedule (loadgen.pacing), so a rate is exact whatever the response times and ramps
are smooth instead of stepping one user at a time. The shape
  1. plans the run from the current options (the web UI may have changed them) and hands the
     workers what they need (run id, start time, endpoints, history directory);
  2. holds the pools until the plan's duration or the request cap is reached, or a stop is
     asked for (SIGUSR1, from loadgen.runner);
  3. drains: users stop after their in-flight request, then every worker is asked to report
     its statistics now (message gameday_flush) and the shape waits for the answers, so that
     Locust's totals include every request before the run ends;
  4. ends the run (None).
"""

from __future__ import annotations

import logging
import time

import gevent
from locust import LoadTestShape
from locust.runners import STATE_MISSING, MasterRunner

from gameday.state import NoEnvironment
from gameday.loadgen import context
from gameday.loadgen.plan import LoadInputError

log = logging.getLogger("gameday.load")

DRAIN_EXTRA_S = 5.0     # beyond stop_timeout, for users to stop and workers to report
END_GRACE_S = 0.5       # the drain starts this long after the last slot was due: a busy worker may run late
FLUSH_TIMEOUT_S = 5.0


class GamedayShape(LoadTestShape):
    stop_requested = False     # set by the SIGUSR1 handler (loadgen.locustfile)

    def __init__(self):
        super().__init__()
        self._reset()

    def _reset(self) -> None:
        self.finished = False      # set when the run stops (test_stop): the next start plans anew
        self.plan = None
        self.t0 = None
        self.classes = []
        self.total = 0
        self.ending = False
        self.ended_on_request = False   # end_now is ending the run: the ticks leave it alone
        GamedayShape.stop_requested = False

    def reset_time(self):
        super().reset_time()
        # Locust also resets the time when the master starts the run (after our first tick has
        # planned it): that must not plan the run a second time
        if self.plan is None or self.finished:
            self._reset()

    def tick(self):
        runner = self.runner
        env = runner.environment
        if self.ended_on_request:
            return runner.shape_last_tick   # the same answer: Locust changes nothing meanwhile
        if self.plan is None:
            try:
                self.plan = context.prepare_run(env.parsed_options, distributed=isinstance(runner, MasterRunner))
            except (LoadInputError, NoEnvironment) as e:
                log.error("gameday load: %s", e)
                return None
            by_role = {getattr(c, "role", None): c for c in env.user_classes}
            missing = set(self.plan.pools) - set(by_role)
            if missing:
                log.error("gameday load: no user class for role(s) %s", ", ".join(sorted(missing)))
                return None
            self.classes = [by_role[r] for r in self.plan.pools]
            for c in env.user_classes:
                c.fixed_count = self.plan.pools.get(getattr(c, "role", None), 0)
            self.total = sum(self.plan.pools.values())
            self.t0 = float(env.parsed_options.gameday_t0)
            log.info("gameday load: run %s: %s; history in %s", env.parsed_options.gameday_run,
                     self.plan.describe(), env.parsed_options.gameday_history_dir if self.plan.record_history else "(off)")
        if not self.ending:
            over_cap = runner.stats.total.num_requests >= self.plan.max_requests
            if over_cap:
                log.warning("gameday load: the request cap (%d) is reached: ending the run", self.plan.max_requests)
            if time.time() - self.t0 < self.plan.duration_s + END_GRACE_S and not over_cap \
                    and not GamedayShape.stop_requested:
                return self.total, max(1, self.total), self.classes
            self._end_users(runner)
        self._drain(runner)
        return None

    def _end_users(self, runner) -> None:
        """Every user stops after its in-flight request: what a tick returning 0 users makes Locust
        do, done here so that the drain follows at once rather than at the next tick (Locust ticks
        a shape once a second: an end over two ticks cost every run 1-2 s)."""
        self.ending = True
        runner.start(user_count=0, spawn_rate=max(1, self.total), user_classes=self.classes)

    def end_now(self, runner) -> None:
        """A stop asked for (SIGUSR1, in its own greenlet): end the run now, as the shape's own end
        does (users stop, drain, then quit), instead of at the next tick up to a second later.
        Before the run is planned, or while it already ends, the flag alone does it."""
        GamedayShape.stop_requested = True
        loop = getattr(runner, "shape_greenlet", None)
        if self.plan is None or self.ending or loop is None:
            return
        self.ended_on_request = True
        self._end_users(runner)
        self._drain(runner)
        log.info("gameday load: shape ended on request")
        # only now: a headless Locust ends the run as soon as its shape loop ends (its main joins
        # the loop, then quits), which would cut the drain short
        loop.kill(block=True)
        runner.shape_greenlet = None
        runner.shape_last_tick = None
        opts = runner.environment.parsed_options
        if opts is None or not opts.headless:
            runner.stop()   # the web UI's run: nobody joins the loop

    def _drain(self, runner) -> None:
        """Wait (bounded) until no user runs, then until every live worker has reported its stats."""
        deadline = time.monotonic() + runner.environment.stop_timeout + DRAIN_EXTRA_S
        while runner.user_count > 0 and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if not isinstance(runner, MasterRunner):
            return
        live = {c.id for c in runner.clients.values() if c.state != STATE_MISSING}
        flushed = context.FLUSHED
        flushed.clear()
        runner.send_message("gameday_flush")
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while not live <= set(flushed) and time.monotonic() < deadline:
            gevent.sleep(0.02)
        if not live <= set(flushed):
            log.warning("gameday load: workers %s did not report before the end", sorted(live - set(flushed)))
