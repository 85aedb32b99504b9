"""The ECS service scheduler's rules (environments/local/ecs_model.py) against ECS's documented
behaviour, on model time: `now` is a number the test passes, so minutes of scheduling take
microseconds and come out the same every run. The real processes, moto and events are
tests/test_ecs.py's.

Pages (Amazon ECS Developer Guide unless said otherwise):
- "Amazon ECS services": the service scheduler keeps the desired count, replacing stopped tasks.
- "Example Amazon ECS task placement strategies" (spread on attribute:ecs.availability-zone) and
  "Update Amazon ECS service parameters" (placement: the AZ with the fewest running tasks of the service;
  stopping: the AZ with the most): tasks spread over AZs, a lost AZ's tasks are replaced in the rest.
- "Amazon ECS task networking for the Fargate launch type", UpdateService (networkConfiguration) and
  "Deploy Amazon ECS services by replacing tasks" (minimumHealthyPercent 100, maximumPercent 200):
  tasks go only to the AZs of the service's subnets; a subnet taken out has its AZ's tasks replaced
  in the others, replacements first, as a rolling deployment does.
- "Amazon ECS task lifecycle": PROVISIONING -> PENDING -> RUNNING.
- "Amazon ECS service throttle logic": tasks going PENDING -> STOPPED make the time between launch
  attempts grow; tasks stopped after RUNNING do not; a new deployment clears it.
- Application Auto Scaling, "How target tracking scaling for Application Auto Scaling works" and
  TargetTrackingScalingPolicyConfiguration (ScaleOutCooldown: only a larger scale-out during it;
  ScaleInCooldown: blocks scale-in, not scale-out; scale in conservatively).
"""

from __future__ import annotations

import math

import pytest

from gameday.environments.local.ecs_model import (
    LAUNCH_BACKOFF_BASE_S, LAUNCH_BACKOFF_MAX_S, PENDING, PROVISIONING, REASON_API, REASON_AZ, REASON_EXITED,
    REASON_NOT_LISTENING, REASON_SCALE_IN, RUNNING, SCALE_IN_WINDOW_PERIODS, Launch, MarkRunning, ServiceModel,
    ServicePolicy, SetDesired, StopTask, Unplaceable,
)

AZS = ["r-1a", "r-1b", "r-1c"]
PERIOD = 5.0
PROVISIONING_S = 2.0
T0 = 1000.0


def model(*, min_tasks=2, max_tasks=4, target=0.0, azs=AZS[:2], provisioning_s=PROVISIONING_S) -> ServiceModel:
    return ServiceModel(ServicePolicy(min_tasks=min_tasks, max_tasks=max_tasks, target_requests_per_task_s=target,
                                      period_s=PERIOD, provisioning_s=provisioning_s), list(azs))


def add_tasks(m: ServiceModel, spec: list[tuple[str, bool]], now: float = T0) -> list[str]:
    """Tasks t0, t1, ... in the given AZs, launched 1 s apart before `now`, RUNNING when asked."""
    ids = []
    for i, (az, running) in enumerate(spec):
        tid = f"t{i}"
        m.launched(tid, az, now - len(spec) + i, 0.0)
        if running:
            m.listening(tid, now)
        ids.append(tid)
    m.ticks = max(m.ticks, 1)   # past the start: launches are replacements
    return ids


def of(decisions, kind):
    return [d for d in decisions if isinstance(d, kind)]


# -- desired count: the service scheduler keeps it, within min/max (Application Auto Scaling's capacity) ------

@pytest.mark.parametrize("live,api_desired,launches,stops,set_to", [
    (2, 2, 0, 0, None),          # steady: nothing to do
    (1, 2, 1, 0, None),          # a task stopped: one replacement
    (0, 2, 2, 0, None),          # all gone: all replaced
    (3, 2, 0, 1, None),          # one too many: one stopped
    (2, 3, 1, 0, None),          # update_service(desiredCount=3) within max
    (2, 9, 2, 0, 4),             # above max_tasks: clamped to 4, written back
    (2, 0, 0, 0, 2),             # below min_tasks: clamped to 2, nothing stops
    (2, None, 0, 2, None),       # the service was deleted: its tasks drain
])
def test_the_scheduler_matches_the_desired_count_within_min_and_max(live, api_desired, launches, stops, set_to):
    m = model()
    add_tasks(m, [(AZS[i % 2], True) for i in range(live)])
    m.desired = live   # what the last tick kept
    out = m.tick(T0, api_desired=api_desired)
    assert len(of(out, Launch)) == launches
    assert len(of(out, StopTask)) == stops
    assert [d.new for d in of(out, SetDesired)] == ([set_to] if set_to is not None else [])
    if set_to is not None:
        assert of(out, SetDesired)[0].old == api_desired
    assert m.desired == (0 if api_desired is None else min(max(api_desired, 2), 4))
    assert len(m.tasks) == live - stops   # the model applied its own stops


def test_stopped_and_exited_tasks_are_recorded_and_replaced():
    m = model()
    add_tasks(m, [(AZS[0], True), (AZS[1], True), (AZS[0], True)])
    out = m.tick(T0, exited={"t0": 137}, api_stopped={"t1": "gameday test", "t2": ""}, api_desired=3)
    stops = {d.task_id: d for d in of(out, StopTask)}
    # an exited process is already gone: stop it in ECS only; an API-stopped one: SIGTERM only
    assert (stops["t0"].reason, stops["t0"].kill, stops["t0"].api) == (f"{REASON_EXITED} (exit code 137)", "none", True)
    assert (stops["t1"].reason, stops["t1"].kill, stops["t1"].api) == ("gameday test", "term", False)
    assert stops["t2"].reason == REASON_API   # no stoppedReason given
    assert len(of(out, Launch)) == 3 and not m.tasks
    # a task id the model no longer holds is ignored, not stopped twice
    assert of(m.tick(T0 + 1, exited={"t0": 1}, api_desired=3), StopTask) == []


# -- placement: spread over the available AZs -------------------------------------------------------------------

@pytest.mark.parametrize("azs,existing,unavailable,desired,expected", [
    (AZS, [], [], 4, ["r-1a", "r-1b", "r-1c", "r-1a"]),                    # round the AZs, AZ order on ties
    (AZS, ["r-1a", "r-1a", "r-1c"], [], 5, ["r-1b", "r-1b"]),               # the emptiest AZ first
    (AZS, ["r-1b"], [], 3, ["r-1a", "r-1c"]),
    (AZS, [], ["r-1a"], 4, ["r-1b", "r-1c", "r-1b", "r-1c"]),               # never a lost AZ
    (AZS[:2], ["r-1b"], ["r-1a"], 3, ["r-1b", "r-1b"]),                     # all into what is left
])
def test_new_tasks_spread_over_available_azs(azs, existing, unavailable, desired, expected):
    m = model(azs=azs, max_tasks=6, min_tasks=1)
    add_tasks(m, [(az, True) for az in existing])
    for az in unavailable:
        m.set_az_available(az, False, T0)
    out = m.tick(T0, api_desired=desired)
    assert [d.az for d in of(out, Launch)] == expected


def test_with_no_available_az_the_service_is_unplaceable_once():
    m = model()
    add_tasks(m, [])
    for az in AZS[:2]:
        m.set_az_available(az, False, T0)
    first = m.tick(T0, api_desired=2)
    assert of(first, Launch) == [] and [d.missing for d in of(first, Unplaceable)] == [2]
    assert m.tick(T0 + 1, api_desired=2) == []          # said once, not every tick
    m.set_az_available(AZS[0], True, T0 + 2)
    assert [d.az for d in m.tick(T0 + 2, api_desired=2)] == [AZS[0], AZS[0]]


def test_losing_an_az_stops_its_tasks_at_once_and_replaces_them_elsewhere_without_moving_back():
    m = model()
    add_tasks(m, [(AZS[0], True), (AZS[1], True)])
    changed, out = m.set_az_available(AZS[0], False, T0)
    assert changed and out == [StopTask("t0", AZS[0], REASON_AZ.format(az=AZS[0]), "kill", True)]
    assert m.set_az_available(AZS[0], False, T0) == (False, [])   # already lost: nothing more
    assert [d.az for d in of(m.tick(T0, api_desired=2), Launch)] == [AZS[1]]
    m.launched("r1", AZS[1], T0, PROVISIONING_S)
    # a task whose launch raced with the loss goes with its AZ
    assert [d.reason for d in m.launched("late", AZS[0], T0, 0.0)] == [REASON_AZ.format(az=AZS[0])]
    # the AZ returns: running tasks stay where they are ...
    assert m.set_az_available(AZS[0], True, T0 + 1) == (True, [])
    assert of(m.tick(T0 + 1, api_desired=2), StopTask) == []
    # ... and the next placement fills the emptiest AZ
    out = m.tick(T0 + 2, api_stopped={"t1": "rebalance"}, api_desired=2)
    assert [d.az for d in of(out, Launch)] == [AZS[0]]


# -- the service's subnets: placement only in their AZs, tasks outside replaced as a deployment does ---------------

A, B, C = AZS
DEPLOYMENT_STOP = REASON_SCALE_IN.format(deployment="")


@pytest.mark.parametrize("spec,lost,subnet_azs,launches,stopped,unplaceable", [
    ([(A, True), (B, True)], [], None, [], [], False),                 # every subnet: nothing moves
    ([(A, True), (B, True)], [], {A, B, C}, [], [], False),            # a subnet added: nothing moves either
    ([(A, True), (B, True)], [], {B}, [B], [], False),                 # A taken out: the replacement first ...
    ([(A, True), (B, True), (B, True)], [], {B}, [], ["t0"], False),   # ... it runs: A's task stops
    ([(A, False), (B, True)], [], {B}, [B], ["t0"], False),            # not running yet: stops at once
    ([(A, True), (A, True)], [], {C}, [C, C], [], False),              # both replaced, none stops before
    ([(A, True), (A, True), (C, True)], [], {C}, [C], ["t0"], False),  # one replacement runs: one stops ...
    ([(A, True), (A, True), (C, True), (C, False)], [], {C}, [], ["t0"], False),   # ... the oldest, not two
    ([(A, True), (B, True)], [], set(), [], [], True),                 # no AZ left: the old tasks stay
    ([(B, True)], [A], {A, B}, [B], [], False),                        # a lost AZ is not placeable ...
    ([(A, True)], [B], {B}, [], [], True),                             # ... even when it is the subnets' only AZ
])
def test_tasks_go_only_to_the_service_subnets_azs(spec, lost, subnet_azs, launches, stopped, unplaceable):
    m = model(azs=AZS, max_tasks=6)
    add_tasks(m, spec)
    for az in lost:
        m.set_az_available(az, False, T0)
    m.desired = 2
    out = m.tick(T0, api_desired=2, service_azs=subnet_azs)
    assert [d.az for d in of(out, Launch)] == launches
    assert [d.task_id for d in of(out, StopTask)] == stopped
    assert all(d.reason == DEPLOYMENT_STOP and d.kill == "term" and d.api for d in of(out, StopTask))
    assert bool(of(out, Unplaceable)) == unplaceable


def test_subnets_taken_out_then_put_back_on_model_time():
    m = model(azs=AZS)
    add_tasks(m, [(A, True), (B, True)])
    m.desired = 2
    # UpdateService to B's subnet only: a replacement in B, provisioned first; A's task keeps serving
    out = m.tick(T0, api_desired=2, service_azs={B})
    assert [d.az for d in of(out, Launch)] == [B] and of(out, StopTask) == []
    m.launched("n1", B, T0, PROVISIONING_S)
    m.listening("n1", T0 + 0.5)
    assert of(m.tick(T0 + 1, api_desired=2, service_azs={B}), StopTask) == []   # still provisioning
    out = m.tick(T0 + PROVISIONING_S, api_desired=2, service_azs={B})
    assert [d.task_id for d in of(out, MarkRunning)] == ["n1"]
    assert [(d.task_id, d.az) for d in of(out, StopTask)] == [("t0", A)]
    assert {t.az for t in m.tasks.values()} == {B}
    # the subnets back: nothing moves back, the next placement fills the emptiest AZ
    assert m.tick(T0 + 3, api_desired=2, service_azs=None) == []
    out = m.tick(T0 + 4, api_stopped={"t1": "replaced"}, api_desired=2, service_azs={A, B, C})
    assert [d.az for d in of(out, Launch)] == [A]


# -- scale-in: which task stops -----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,victim", [
    ([(AZS[0], True), (AZS[0], True), (AZS[1], True)], "t1"),     # the fullest AZ, the newest there
    ([(AZS[0], True), (AZS[1], True), (AZS[1], True)], "t2"),
    ([(AZS[0], True), (AZS[0], False), (AZS[0], True)], "t1"),    # a task not yet running before a running one
    ([(AZS[1], False), (AZS[0], True), (AZS[0], True)], "t2"),    # but AZ balance comes first
])
def test_scale_in_keeps_the_azs_balanced(spec, victim):
    m = model(min_tasks=1)
    add_tasks(m, spec)
    m.deployment = "ecs-svc/1"
    out = m.tick(T0, api_desired=len(spec) - 1, deployment="ecs-svc/1")
    assert [(d.task_id, d.reason, d.kill, d.api) for d in of(out, StopTask)] == [
        (victim, REASON_SCALE_IN.format(deployment="ecs-svc/1"), "term", True)]


# -- lifecycle: PROVISIONING -> PENDING -> RUNNING, the start timeout ----------------------------------------------

def test_the_first_placements_are_the_start_and_not_provisioned():
    m = model()
    first = of(m.tick(T0, api_desired=2), Launch)
    assert [d.provisioning_s for d in first] == [0.0, 0.0]
    m.launched("a", AZS[0], T0, 0.0)
    assert m.tick(T0 + 1, api_desired=2) == [Launch(AZS[1], PROVISIONING_S)]   # a later launch is a replacement


@pytest.mark.parametrize("listens_at,running_at", [
    (0.1, PROVISIONING_S),        # ready long before: RUNNING exactly when provisioning ends
    (PROVISIONING_S + 0.3, PROVISIONING_S + 0.3),   # ready after: RUNNING when it listens
])
def test_a_replacement_runs_only_after_its_provisioning(listens_at, running_at):
    m = model()
    add_tasks(m, [(AZS[0], True)])
    m.launched("new", AZS[1], T0, PROVISIONING_S)
    assert m.phase("new", T0) == PROVISIONING
    assert m.phase("new", T0 + PROVISIONING_S - 1e-6) == PROVISIONING
    assert m.listening("new", T0 + listens_at) == ([] if listens_at < PROVISIONING_S else
                                                   [MarkRunning("new", AZS[1], running_at)])
    out = m.tick(T0 + running_at, api_desired=2)
    if listens_at < PROVISIONING_S:
        assert of(out, MarkRunning) == [MarkRunning("new", AZS[1], running_at)]
    assert m.phase("new", T0 + running_at) == RUNNING
    assert m.tasks["new"].running_after_s == pytest.approx(running_at)


def test_a_task_that_never_listens_is_pending_then_stopped_at_the_start_timeout():
    m = model()
    add_tasks(m, [(AZS[0], True)])
    m.launched("slow", AZS[1], T0, PROVISIONING_S)
    deadline = T0 + PROVISIONING_S + m.policy.start_timeout_s
    assert m.phase("slow", T0 + PROVISIONING_S) == PENDING
    assert of(m.tick(deadline - 0.01, api_desired=2), StopTask) == []
    out = m.tick(deadline, api_desired=2)
    assert [(d.task_id, d.kill, d.api) for d in of(out, StopTask)] == [("slow", "term", True)]
    assert of(out, StopTask)[0].reason == REASON_NOT_LISTENING.format(s=m.policy.start_timeout_s)
    assert m.failures == 1 and of(out, Launch) == []   # it failed to start: the next launch waits


# -- the service throttle logic -------------------------------------------------------------------------------------

@pytest.mark.parametrize("failures,delay", [
    (1, LAUNCH_BACKOFF_BASE_S), (2, 2 * LAUNCH_BACKOFF_BASE_S), (3, 4 * LAUNCH_BACKOFF_BASE_S),
    (4, 8 * LAUNCH_BACKOFF_BASE_S), (5, 16 * LAUNCH_BACKOFF_BASE_S), (6, LAUNCH_BACKOFF_MAX_S),
    (12, LAUNCH_BACKOFF_MAX_S),
])
def test_tasks_failing_to_start_space_out_launches_growing_to_a_cap(failures, delay):
    m = model()
    add_tasks(m, [(AZS[0], True)])
    now = T0
    for i in range(failures):
        m.launched(f"f{i}", AZS[1], now, 0.0)
        m.tick(now, exited={f"f{i}": 1}, api_desired=1)    # PENDING -> STOPPED
    assert m.backoff_s(now) == pytest.approx(delay)
    assert of(m.tick(now + delay - 0.001, api_desired=2), Launch) == []
    assert of(m.tick(now + delay, api_desired=2), Launch) == [Launch(AZS[1], PROVISIONING_S)]


@pytest.mark.parametrize("how,throttled", [
    ("exits while PENDING", True),
    ("spawn fails", True),
    ("exits after RUNNING", False),          # stopped after RUNNING: no throttle
    ("stopped through the API while PENDING", False),
    ("lost with its AZ while PENDING", False),
])
def test_only_tasks_that_fail_to_start_throttle_launches(how, throttled):
    m = model()
    add_tasks(m, [(AZS[0], True)])
    if how != "spawn fails":
        m.launched("x", AZS[1], T0, 0.0)
    if how == "exits while PENDING":
        m.tick(T0, exited={"x": 1}, api_desired=1)
    elif how == "spawn fails":
        m.launch_failed(T0)   # run_task placed it, its process never started
    elif how == "exits after RUNNING":
        m.listening("x", T0)
        m.tick(T0, exited={"x": 1}, api_desired=1)
    elif how.startswith("stopped through the API"):
        m.tick(T0, api_stopped={"x": "user"}, api_desired=1)
    else:
        m.set_az_available(AZS[1], False, T0)
    assert (m.backoff_s(T0) > 0) is throttled
    assert bool(of(m.tick(T0, api_desired=2), Launch)) is not throttled


def test_a_running_task_or_a_new_deployment_ends_the_throttling():
    m = model()
    add_tasks(m, [(AZS[0], True)])
    for i in range(3):
        m.launched(f"f{i}", AZS[1], T0, 0.0)
        m.tick(T0, exited={f"f{i}": 1}, api_desired=1, deployment="ecs-svc/1")
    assert m.failures == 3
    m.launched("ok", AZS[1], T0 + 10, 0.0)
    m.listening("ok", T0 + 10)
    assert m.failures == 0
    m.launched("f9", AZS[1], T0 + 20, 0.0)
    m.tick(T0 + 20, exited={"f9": 1}, api_desired=3, deployment="ecs-svc/1")
    assert m.backoff_s(T0 + 20) == pytest.approx(LAUNCH_BACKOFF_BASE_S)   # counting starts again
    out = m.tick(T0 + 20, api_desired=3, deployment="ecs-svc/2")           # update_service(forceNewDeployment)
    assert m.backoff_s(T0 + 20) == 0 and of(out, Launch)


# -- target tracking on requests per task ---------------------------------------------------------------------------

def tracking(running: int, rate: float, *, watched_s: float = 10 * PERIOD, out_ago: float = math.inf,
             in_ago: float = math.inf, target: float = 5.0, min_tasks=2, max_tasks=4) -> ServiceModel:
    """A model with `running` RUNNING tasks that saw `rate` requests/s for the last `watched_s`
    seconds (one sample each 0.5 s, as the ticks make them), last scaled out/in so long ago."""
    m = model(target=target, min_tasks=min_tasks, max_tasks=max_tasks)
    add_tasks(m, [(AZS[i % 2], True) for i in range(running)])
    m.watching_since = None
    steps = int(watched_s / 0.5)
    for k in range(steps, -1, -1):
        m.add_requests(rate * 0.5 if k < steps else 0)   # a tick's requests (a mean, not a whole number)
        m.sample(T0 - k * 0.5)
    m.last_scale_out, m.last_scale_in = T0 - out_ago, T0 - in_ago
    return m


@pytest.mark.parametrize("running,desired,rate,kw,expected", [
    (2, 2, 40, {}, 4),                            # 20/s per task, target 5: ceil(40/5)=8, capped at max 4
    (2, 2, 12, {}, 3),                            # 6/s per task: ceil(12/5)=3
    (2, 2, 10, {}, None),                         # exactly at target: not above it
    (4, 4, 80, {}, None),                         # at max_tasks: nowhere to go
    (2, 3, 12, {"out_ago": 1}, None),             # scale-out cooldown: 3 needed, 3 already desired
    (2, 3, 20, {"out_ago": 1}, 4),                # ... but a larger scale-out happens in it
    (2, 2, 12, {"out_ago": PERIOD}, 3),           # cooldown over
    (2, 2, 12, {"in_ago": 1}, 3),                 # a scale-in cooldown does not delay a scale-out
    (2, 2, 40, {"watched_s": PERIOD - 0.5}, None),   # not watched a whole period yet
    (4, 4, 0, {}, 3),                             # quiet: one task fewer, not straight to min
    (3, 3, 9, {}, None),                          # 9/s on 2 tasks = 4.5, not below 90% of 5: stays
    (3, 3, 8, {}, 2),                             # 8/s on 2 tasks = 4 < 4.5: one fewer
    (2, 2, 0, {}, None),                          # never below min_tasks
    (4, 4, 0, {"in_ago": PERIOD}, None),          # scale-in cooldown (three periods)
    (4, 4, 0, {"out_ago": 2 * PERIOD}, None),     # the low window must measure the new capacity
    (4, 4, 0, {"watched_s": 2 * PERIOD}, None),   # the scale-in window is three periods long
    (2, 2, 40, {"target": 0}, None),              # no policy: target 0
    (0, 2, 40, {}, None),                         # no running task: no metric
])
def test_target_tracking_decisions(running, desired, rate, kw, expected):
    m = tracking(running, rate, **kw)
    got = m.target_tracking(T0, desired)
    assert (got[0] if got else None) == expected, got
    if expected is not None:
        assert "target tracking" in got[1]
        assert (m.last_scale_out if expected > desired else m.last_scale_in) == T0   # the cooldown starts now


def test_target_tracking_goes_through_the_desired_count_and_its_cooldown():
    m = tracking(2, 40)
    out = m.tick(T0, api_desired=2)
    assert [(d.old, d.new) for d in of(out, SetDesired)] == [(2, 4)] and len(of(out, Launch)) == 2
    assert m.desired == 4
    # the window the scale-in looks at starts after the scale-out: quiet for less than that, no scale-in
    for t in range(1, int(SCALE_IN_WINDOW_PERIODS * PERIOD * 2)):
        assert of(m.tick(T0 + t * 0.5, api_desired=4), SetDesired) == []
    assert [d.new for d in of(m.tick(T0 + SCALE_IN_WINDOW_PERIODS * PERIOD, api_desired=4), SetDesired)] == [3]
