"""`gameday plan`: what a run would do on the aws environment (scenarios, their faults and
targets, the load), checked against the guardrails' caps. Changes nothing.

The suite's scenarios are imperative pytest tests, so their faults and load are described
here, next to the caps they are judged by; tests/test_aws_env.py fails when a scenario is
added to scenarios/ without an entry here.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

from gameday.faults import block_region, fail_responses, lose_az, pause_replication, stop_tasks
from gameday.faults import api_fault as make_api_fault
from gameday.config import GamedayConfig

FOLLOWER_RPS = 10.0      # scenarios/steps.py
SURGE_FACTOR = 1.5       # scenarios/steps.py: "1.5x" the alarm threshold per period
NOISE_SHARE, NOISE_OVERSHOOT = 0.5, 1.6   # scenarios/test_noise.py
ABSORB_SHARE = 0.8       # scenarios/test_capacity.py: the whole load at 80% of the threshold, following DNS

EXIT_OK, EXIT_PREFLIGHT, EXIT_OVER_CAP = 0, 1, 2


@dataclass
class PlannedScenario:
    name: str
    faults: list = field(default_factory=list)
    load_rps: dict[str, float] = field(default_factory=dict)   # region (or "followers") -> requests/s
    verdicts: list[str] = field(default_factory=list)          # one line per cap exceeded
    skips: list[str] = field(default_factory=list)             # faults this environment cannot do

    @property
    def total_rps(self) -> float:
        return round(sum(self.load_rps.values()), 2)


def _threshold_rps(cfg: GamedayConfig) -> float:
    alarm = cfg.alarms.get("request-count")
    return alarm.threshold / cfg.profile("aws").period_s if alarm else 0.0


def scenario_catalogue(cfg: GamedayConfig) -> dict[str, tuple[list, dict[str, float]]]:
    """name -> (faults, load) of every scenario in scenarios/, as its test injects them."""
    src = cfg.initial_region
    dst = next(r for r in cfg.regions if r != src)
    surge = {f"surge {src}": round(SURGE_FACTOR * _threshold_rps(cfg), 2), "followers": FOLLOWER_RPS}
    follow = {"followers": FOLLOWER_RPS}
    return {
        "surge_fails_over": ([], surge),
        "region_blackhole_fails_over": ([block_region(src, data_plane=True, mode="hang")], follow),
        "all_tasks_stopped_fails_over": ([stop_tasks(src, all=True)], follow),
        "route53_throttled_lambda_retries": (
            [make_api_fault("route53", "us-east-1", effect="throttle", operation="ChangeResourceRecordSets", limit=3)], surge),
        "control_plane_region_lost": ([block_region("us-east-1", data_plane=True, control_plane=True, mode="hang")]
                                      if "us-east-1" in cfg.regions else [], follow),
        "task_loss_is_absorbed": ([stop_tasks(src, count=1), lose_az(src, cfg.service.azs[0])], follow),
        "replication_paused_during_failover": ([pause_replication(src, dst)], surge),
        "failback_after_heal": ([block_region(src, data_plane=True, mode="hang")], follow),
        "healthy_region_alarm_noise": ([block_region(src, data_plane=True, mode="hang"),
                                        fail_responses(dst, share=NOISE_SHARE)], {**follow, f"pings {dst}": _noise_rps(cfg)}),
        "surviving_region_absorbs_load": ([block_region(src, data_plane=True, mode="hang")],
                                          {"followers (the whole load)": round(ABSORB_SHARE * _threshold_rps(cfg), 2)}),
    }


def _noise_rps(cfg: GamedayConfig) -> float:
    """scenarios/test_noise.noise_rate on the aws profile: pings so that NOISE_SHARE of the healthy
    region's requests cross the target-5xx threshold NOISE_OVERSHOOT times per period."""
    alarm = cfg.alarms.get("target-5xx")
    if alarm is None:
        return 0.0
    return round(max(1.0, NOISE_OVERSHOOT * alarm.threshold / cfg.profile("aws").period_s / NOISE_SHARE - FOLLOWER_RPS), 2)


def build_plan(env, select: str | None = None) -> list[PlannedScenario]:
    """The plan, each scenario judged against the caps. `env` need not be started: without
    discovered targets the desired task counts come from the config."""
    from gameday.environments.aws.guardrails import GuardrailViolation, check_rps, check_task_caps, tasks_stopped_by
    from gameday.environments.base import CapabilityMissing

    cfg = env.config
    out: list[PlannedScenario] = []
    for name, (faults, load) in scenario_catalogue(cfg).items():
        if select and not fnmatch.fnmatch(name, f"*{select}*"):
            continue
        ps = PlannedScenario(name, list(faults), dict(load))
        try:
            check_rps(env, ps.total_rps, "the load")
        except GuardrailViolation as e:
            ps.verdicts.append(str(e))
        for f in faults:
            try:
                for cap in f.required_capabilities:
                    env.require(cap)
            except CapabilityMissing as e:
                ps.skips.append(f"{f.kind}: {e} (the scenario is skipped)")
                continue
            t = env.targets.get(getattr(f, "region", None)) if env.targets else None
            desired = (t.desired if t and t.desired else cfg.service.desired_tasks)
            try:
                if f.kind == "stop_tasks":
                    check_task_caps(env, f.region, tasks_stopped_by(f, desired, desired), desired, desired, "stop_tasks")
                elif f.kind == "lose_az":
                    # tasks spread evenly over the service's AZs: the lost AZ holds its share
                    n = math.ceil(desired / len(cfg.service.azs))
                    check_task_caps(env, f.region, n, desired, desired, f"lose_az {f.az}")
            except GuardrailViolation as e:
                ps.verdicts.append(str(e))
        out.append(ps)
    return out


def target_of(env, fault) -> str:
    """What on AWS a fault touches, as resource names (from discovery when the env is started)."""
    t = env.targets.get(getattr(fault, "region", "")) if env.targets else None
    k = fault.kind
    if k in ("stop_tasks", "lose_az"):
        return f"ECS service {t.service.rsplit('/', 1)[-1]}" if t and t.service else "ECS service (discovered at run)"
    if k == "block_region":
        how = env.backend("block_region")
        subnets = ", ".join(t.block_subnets) if t and t.block_subnets else "the service's and load balancer's subnets"
        return f"{'network ACLs of' if how == 'nacl' else 'FIS disrupt-connectivity on'} {subnets}"
    if k == "pause_replication":
        return f"FIS pause of global table {env.table} in {fault.source}"
    if k == "lambda_fault":
        return f"Lambda {env.config.aws.lambda_name} ({env.backend('lambda_fault')})"
    return fault.target


def render_plan(env, plan: list[PlannedScenario], problems: list | None = None) -> str:
    g = env.config.aws.guardrails
    lines = [f"gameday plan (aws): {len(plan)} scenario(s); nothing is changed by this command",
             f"account     {env.account_id or 'not checked (--offline)'} (allowed: {', '.join(env.config.aws.allowed_account_ids)})",
             f"caps        max_rps {g.max_rps:g}, max_tasks_stopped_per_region {g.max_tasks_stopped_per_region}, "
             f"max_fraction_of_service {g.max_fraction_of_service:.0%}, production tags "
             f"{'allowed' if g.allow_production_tags else 'refused'}",
             f"stop when   {', '.join(g.stop_condition_alarms) or 'no stop-condition alarms configured'} "
             f"(checked every {env.profile.period_s}s)"]
    for p in problems or []:
        lines.append(f"PREFLIGHT   {p}")
    for ps in plan:
        status = "OVER CAP" if ps.verdicts else "ok"
        load = ", ".join(f"{k} {v:g}/s" for k, v in ps.load_rps.items())
        lines.append(f"- {ps.name}: {status}; load {load} (total {ps.total_rps:g}/s)")
        for f in ps.faults:
            lines.append(f"    fault {f.kind} -> {target_of(env, f)}: {f.describe()}")
        for s in ps.skips:
            lines.append(f"    skip  {s}")
        for v in ps.verdicts:
            lines.append(f"    REFUSED {v}")
    return "\n".join(lines)


def plan_exit_code(plan: list[PlannedScenario], problems: list | None) -> int:
    if any(ps.verdicts for ps in plan):
        return EXIT_OVER_CAP
    return EXIT_PREFLIGHT if problems else EXIT_OK
