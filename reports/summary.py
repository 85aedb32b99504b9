"""summary.json: the contract CI and the reports read, exactly docs/architecture.md's shape, validated
against reports/summary.schema.json before it is written.

Built from the scenarios' result.json files (with the data checks re-run from stored data,
reports/recheck.py) plus the run's meta: run id, environment, start/finish, time profile.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from gameday.reports.recheck import RunRecheck
from gameday.reports.rundata import Op, ReportError, Run, Scenario, iso, parse_time

SCHEMA_PATH = Path(__file__).with_name("summary.schema.json")
TIME_METRICS = ("detection_s", "failover_s", "rto_s", "convergence_s")
COUNT_METRICS = ("acked_writes", "lost_acked_writes", "divergent_keys", "requests")


@lru_cache(maxsize=1)
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate_summary(summary: Any, where: str = "summary.json") -> None:
    """ReportError naming the first offending field, e.g. `summary.json: scenarios[0].metrics.rto_s: ...`."""
    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(summary), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        e = errors[0]
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".") or "(top level)"
        more = f" [+{len(errors) - 1} more]" if len(errors) > 1 else ""
        raise ReportError(f"{where}: {path}: {e.message}{more}")


def load_summary(path: Path) -> dict:
    from gameday.reports.rundata import read_json
    data = read_json(path, path.name)
    validate_summary(data, path.name)
    return data


# -- run meta ---------------------------------------------------------------------------------------------

def run_meta(run: Run, *, env: str | None = None, started_at: Any = None, finished_at: Any = None,
             profile: dict | None = None) -> dict:
    """run_id, env, started_at, finished_at, profile: given > run.json > what the run directory shows."""
    meta = run.meta
    env = env or meta.get("env") or (run.endpoints or {}).get("env")
    if not env:
        env = "local" if run.config is not None else "unknown"
        if run.config is None:
            run.warnings.append("environment kind unknown (no run.json or env/state.json)")
    profile = profile or meta.get("profile") or (run.endpoints or {}).get("profile")
    if not profile:
        profile = _profile_from_config(run, env)
    prof = {k: profile.get(k) for k in ("period_s", "evaluation_periods", "dns_ttl_s")}
    if any(v is None for v in prof.values()):
        raise ReportError(f"run profile incomplete: needs period_s, evaluation_periods, dns_ttl_s (got {profile})")
    prof["floor_s"] = profile.get("floor_s", prof["evaluation_periods"] * prof["period_s"] + prof["dns_ttl_s"])
    if profile.get("read_from"):   # --env aws: which of these the deployed stack itself said (stack_timing.py)
        prof["read_from"] = dict(profile["read_from"])

    times = [t for s in run.scenarios for t in (s.started, s.finished) if t is not None]
    times += [e["time"] for e in run.events[:1] + run.events[-1:]]
    start = parse_time(started_at, "started_at") if started_at is not None else (
        parse_time(meta["started_at"], "run.json: started_at") if meta.get("started_at") else (min(times) if times else None))
    end = parse_time(finished_at, "finished_at") if finished_at is not None else (
        parse_time(meta["finished_at"], "run.json: finished_at") if meta.get("finished_at") else (max(times) if times else None))
    if start is None or end is None:
        raise ReportError(f"{run.dir}: cannot tell when the run started (no scenario times, no events, no run.json)")
    return {"run_id": run.run_id, "env": env, "started_at": iso(start), "finished_at": iso(max(start, end)), "profile": prof}


def _profile_from_config(run: Run, env: str) -> dict:
    from gameday.config import ConfigError, GamedayConfig, load_config
    if run.config is not None:
        try:
            cfg = GamedayConfig.model_validate(run.config)
        except Exception as e:  # noqa: BLE001 - pydantic's message, phrased as one line
            raise ReportError(f"env/config.json: not a valid gameday config: {str(e).splitlines()[0]}") from None
    else:
        run.warnings.append("time profile: seed defaults (no run.json, env/state.json or env/config.json)")
        try:
            cfg = load_config(None)
        except ConfigError as e:
            raise ReportError(str(e)) from None
    p = cfg.profile(env if env != "unknown" else "local")
    return {"period_s": p.period_s, "evaluation_periods": p.evaluation_periods, "dns_ttl_s": p.dns_ttl_s, "floor_s": p.floor_s}


# -- scenarios --------------------------------------------------------------------------------------------

def history_counts(ops: list[Op] | None) -> dict:
    """Requests, error rate and acknowledged writes measured from a client history."""
    if not ops:
        return {}
    done = [o for o in ops if o.type != "invoke"]
    bad = sum(1 for o in done if o.type in ("fail", "info"))
    return {"requests": len(done), "error_rate": (bad / len(done)) if done else 0.0,
            "acked_writes": sum(1 for o in done if o.type == "ok" and o.op == "write")}


def _count(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, float) and not v.is_integer():
        return int(math.ceil(v))
    return int(v)


def scenario_summary(s: Scenario, recheck: RunRecheck, warnings: list[str]) -> dict:
    res = s.result
    rc = recheck.scenarios[s.name]
    stored = res.get("metrics", {}) or {}
    measured = history_counts(s.history)
    metrics: dict[str, Any] = {k: stored.get(k) for k in TIME_METRICS}
    for k in COUNT_METRICS:
        v = rc.metrics.get(k, stored.get(k, measured.get(k)))
        metrics[k] = _count(v)
    er = stored.get("error_rate", measured.get("error_rate", 0.0))
    metrics["error_rate"] = min(1.0, max(0.0, float(er or 0.0)))
    for k in TIME_METRICS:
        if metrics[k] is not None and metrics[k] < 0:
            warnings.append(f"{s.rel}/result.json: metrics.{k} is negative ({metrics[k]}); reported as null")
            metrics[k] = None

    faults = []
    for i, f in enumerate(res.get("faults", [])):
        if f.get("injected_at") is None:
            warnings.append(f"{s.rel}/result.json: faults[{i}] ({f['kind']}) was never injected; not in summary")
            continue
        target = f.get("target", "")
        faults.append({
            "kind": f["kind"],
            "target": target if isinstance(target, str) else json.dumps(target, sort_keys=True),
            "injected_at": iso(parse_time(f["injected_at"], "")),
            "rolled_back_at": iso(parse_time(f["rolled_back_at"], "")) if f.get("rolled_back_at") is not None else None,
        })
    checks = [{"name": c["name"], "valid": c["valid"], "detail": str(c.get("detail") or "")} for c in rc.checks]
    out = {"name": s.name, "outcome": rc.outcome, "faults": faults, "metrics": metrics, "checks": checks}
    history = streamed_history(s.dir)
    if history is not None:
        out["history"] = history
    return out


def streamed_history(scenario_dir) -> dict | None:
    """Workers that streamed their history to the master (docs/scaling.md): whether it is complete,
    and per worker the entries missing and its clock offset; None when no worker streamed."""
    from gameday.loadgen.history_stream import read_completeness

    comp = read_completeness(scenario_dir)
    if not comp:
        return None
    keep = ("entries_received", "missing", "complete", "estimated", "clock_offset_s", "offset_uncertainty_s")
    return {"complete": bool(comp.get("complete")),
            "workers": {w: {k: a.get(k) for k in keep} for w, a in (comp.get("workers") or {}).items()}}


def build_summary(run: Run, recheck: RunRecheck, **meta: Any) -> dict:
    head = run_meta(run, **meta)
    scenarios = [scenario_summary(s, recheck, run.warnings) for s in run.scenarios]
    summary = {**head, "passed": all(s["outcome"] in ("passed", "skipped") for s in scenarios), "scenarios": scenarios}
    # reorder to the contract's key order (docs/architecture.md), for people reading the file
    order = ("run_id", "env", "started_at", "finished_at", "passed", "profile", "scenarios")
    summary = {k: summary[k] for k in order}
    validate_summary(summary)
    return summary


def write_summary(summary: dict, run_dir: Path) -> Path:
    validate_summary(summary)
    path = Path(run_dir) / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(path)  # readers (CI) never see half a summary
    return path
