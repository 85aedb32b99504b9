"""What the `gameday` command prints, as pure functions: data in, text out.

gameday/cli.py parses arguments, validates them and orchestrates (starts the environment, runs pytest,
finalises the run); every table and line it shows a person is made here, so the output can be
tested with plain dicts, without running anything."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from gameday.config import GamedayConfig

# the longest check detail a verdict line repeats (the report and summary.json keep all of it)
DETAIL_CHARS = 300


def seconds(v: float | None) -> str:
    """A measured time for a verdict line: 12.3s, or - when it was not measured."""
    return "-" if v is None else f"{v:.1f}s"


def count(v: float | None) -> str:
    return "-" if v is None else str(int(v))


def tagged(command: str, message: str) -> str:
    """A progress line of a long-running command, named so that it stands out among pytest's own."""
    return f"[gameday {command}] {message}"


def error(message: str) -> str:
    return f"gameday: error: {message}"


def warning(message: str) -> str:
    return f"gameday: warning: {message}"


# -- gameday up ----------------------------------------------------------------------------------------------

def endpoints(ep: Mapping[str, Any], state_path: Path | str, locustfile: Path | str) -> str:
    """`gameday up`'s banner: where everything listens, the time profile, and how to send load."""
    prof = ep["profile"]
    lines = [f"gameday {ep['env']} environment is up ({ep['timings'].get('total', 0):.1f}s); Ctrl-C to stop",
             f"  service name    {ep['service_name']}  (DNS on {ep['dns']['host']}:{ep['dns']['port']}, "
             f"TTL {prof['dns_ttl_s']}s)"]
    lines += [f"  {r:<15} load balancer {v['lb_url']}" for r, v in ep["regions"].items()]
    lines += [f"  AWS endpoint    {ep['aws_endpoint']}   (export AWS_ENDPOINT_URL={ep['aws_endpoint']} "
              f"AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing)",
              f"  control API     {ep['control_url']}",
              f"  profile         period {prof['period_s']}s x {prof['evaluation_periods']}, "
              f"threshold {ep['alarm_threshold']:g}/period, failover floor {prof['floor_s']}s",
              f"  run directory   {ep['run_dir']}",
              f"  state file      {state_path}",
              f"  load            gameday load   (Locust's web UI; or locust -f {locustfile}: both find this "
              f"environment through {state_path})"]
    return "\n".join(lines)


def web_ui(host: str, port: int, log: Path | str) -> str:
    return f"  web UI          http://{host}:{port}/  (Chaos tab after Start; /chaos/ at any time; log {log})"


# -- gameday status ------------------------------------------------------------------------------------------

def _dns_answer(ep: Mapping[str, Any], st: Mapping[str, Any]) -> str:
    answers = st.get("dns", {}).get("answers", {})
    return ", ".join(answers.get(ep["record_name"], answers.get(ep["service_name"], []))) or "?"


def _region_line(region: str, st: Mapping[str, Any]) -> str:
    alarms = st.get("alarms", {}).get(region, {})
    states = "  ".join(f"{GamedayConfig.alarm_key(n, region)}={a.get('state', '?')}" for n, a in alarms.items())
    ecs = st.get("ecs", {}).get(region, {})
    lb = st.get("load_balancers", {}).get(region, {})
    blocked = f"  BLOCKED({lb['blocked']})" if lb.get("blocked") else ""
    return (f"{region:<12} tasks {ecs.get('running', '?')}/{ecs.get('desired', '?')} healthy {lb.get('healthy', '?')}"
            f"{blocked}  alarms: {states}")


def status(ep: Mapping[str, Any], st: Mapping[str, Any]) -> str:
    """`gameday status`: the DNS answer, then per region tasks, health, blocking and alarm states, then
    replication lag per direction. `ep`: the environment's endpoints; `st`: its control API's /status."""
    lines = [f"environment {st.get('env')}  run dir {st.get('run_dir')}",
             f"DNS  {ep['service_name']} -> {_dns_answer(ep, st)}"]
    lines += [_region_line(r, st) for r in ep["regions"]]
    for direction, v in st.get("replication", {}).items():
        if isinstance(v, dict):
            lines.append(f"replication {direction}: lag {v.get('lag_s', 0):.2f}s pending {v.get('pending', 0)}"
                         f"{' PAUSED' if v.get('paused') else ''}")
    return "\n".join(lines)


def status_refresh(body: str, stamp: str, interval: float, *, in_place: bool) -> str:
    """One refresh of `gameday status --watch`: on a terminal the screen is cleared and the block redrawn
    at the top; otherwise each refresh is a new block under a dated separator."""
    if in_place:
        return f"\x1b[H\x1b[2Jgameday status {stamp}, every {interval:g}s (Ctrl-C to stop)\n{body}\n"
    return f"-- gameday status {stamp}\n{body}\n\n"


def config_mismatch_warning(line: str) -> str:
    return warning(f"{line} (the running environment was started with another config)")


# -- gameday run / report ------------------------------------------------------------------------------------

def _scenario_line(sc: Mapping[str, Any]) -> str:
    m = sc["metrics"]
    return (f"  {sc['outcome']:<8} {sc['name']:<36} detection {seconds(m['detection_s']):>6}  failover "
            f"{seconds(m['failover_s']):>6}  rto {seconds(m['rto_s']):>6}  lost {m['lost_acked_writes']}/"
            f"{m['acked_writes']}  errors {m['error_rate'] * 100:.1f}%")


def verdict(summary: Mapping[str, Any]) -> str:
    """The run's verdict (summary.json) as a few lines: one per scenario with its measured times and data
    losses, and under it each invalid check with (the start of) its detail."""
    p = summary["profile"]
    lines = [f"gameday {summary['run_id']}: {'PASSED' if summary['passed'] else 'FAILED'}  "
             f"(period {p['period_s']}s x {p['evaluation_periods']}, TTL {p['dns_ttl_s']}s, floor {p['floor_s']}s)"]
    for sc in summary["scenarios"]:
        lines.append(_scenario_line(sc))
        lines += [f"           x {c['name']}: {c['detail'][:DETAIL_CHARS]}" for c in sc["checks"] if c["valid"] is False]
    return "\n".join(lines)


def run_started(run: Path | str, suite: str, paths: Iterable[str]) -> str:
    return tagged("run", f"run directory {run}; suite {suite}: {' '.join(paths)}")


def history_appended(n_lines: int, history: Path | str) -> str:
    return tagged("run", f"history: {n_lines} line(s) appended to {history}")


# -- gameday report --trend ----------------------------------------------------------------------------------

def trend_scenario(name: str, points: list) -> list[str]:
    """One scenario of `gameday report --trend`: its newest run's figures (`points`: reports.trend's
    points, oldest first), then each regression flagged on that run."""
    last = points[-1]
    m = last.metrics
    lines = [f"  {'REGRESSION' if last.regressions else 'ok':<10} {name:<36} {len(points):>3} runs  newest "
             f"{last.run_id}: failover {seconds(m['failover_s'])} rto {seconds(m['rto_s'])} "
             f"errors {(m['error_rate'] or 0) * 100:.1f}% lost {count(m['lost_acked_writes'])}"]
    return lines + [f"             x {r}" for r in last.regressions]


def trend(scenarios: Mapping[str, list]) -> str:
    """Every scenario of the trend (name -> points), by name."""
    return "\n".join(ln for name, pts in sorted(scenarios.items()) for ln in trend_scenario(name, pts))
