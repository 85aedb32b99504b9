"""Re-running the data checkers from what a run stored (history.jsonl + replicas.json), with no
environment: `gameday report <run-dir>` must reach the verdict the run reached.

The checkers themselves live in assertions/checkers.py (pure functions over histories and
replicas, each returning CheckResult(name, valid, detail, metrics)). `resolve_checkers()` is the
one place that binds them; `set_checkers()` points re-checking at other functions (tests,
or a team's own checker). Until assertions/checkers.py exists, a minimal built-in version of the
two data checks is used and says so in every detail it writes.

The verdict only ever gets stricter on re-check: a scenario recorded as failed stays failed
(its failure may come from something only the live run could see, such as an alarm deadline),
and a recorded pass becomes a failure when a re-run checker now says `valid: false`.
Disagreements between the recorded and the re-checked results are listed, never hidden.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from gameday.reports.rundata import Op, ReportError, Run, Scenario

# name -> function; the history checker is called (history, replicas), the replica checker (replicas)
HistoryChecker = Callable[[list[dict], dict], Any]
ReplicaChecker = Callable[[dict], Any]

_override: dict[str, Callable] | None = None


def set_checkers(lost_acked_writes: HistoryChecker | None = None, divergent_keys: ReplicaChecker | None = None) -> None:
    """Point re-checking at these functions (None for both: back to assertions.checkers / built-in)."""
    global _override
    if lost_acked_writes is None and divergent_keys is None:
        _override = None
    else:
        _override = {"lost_acked_writes": lost_acked_writes, "divergent_keys": divergent_keys}


def resolve_checkers() -> tuple[dict[str, Callable], str]:
    """The checker functions and where they come from ("gameday.assertions.checkers" or "built-in")."""
    if _override is not None:
        return {k: v for k, v in _override.items() if v is not None}, "override"
    try:
        from gameday.assertions import checkers as mod  # written by the assertions component
    except ImportError:
        return {"lost_acked_writes": builtin_lost_acked_writes, "divergent_keys": builtin_divergent_keys}, "built-in"
    found = {n: getattr(mod, n) for n in ("lost_acked_writes", "divergent_keys") if callable(getattr(mod, n, None))}
    if len(found) < 2:  # half-written module: fall back per function rather than crash
        found.setdefault("lost_acked_writes", builtin_lost_acked_writes)
        found.setdefault("divergent_keys", builtin_divergent_keys)
        return found, "gameday.assertions.checkers (+ built-in)"
    return found, "gameday.assertions.checkers"


# -- built-in data checks (used only while assertions/checkers.py is absent) -----------------------------

@dataclass
class CheckResult:
    name: str
    valid: bool | str
    detail: str
    metrics: dict = field(default_factory=dict)


def _ops(history: list[dict]) -> list[Op]:
    from gameday.reports.rundata import normalize_op
    return [normalize_op(e, f"history entry {i + 1}") for i, e in enumerate(history)]


def builtin_lost_acked_writes(history: list[dict], replicas: dict) -> CheckResult:
    """An acknowledged write is lost when some replica's final value for its key is neither that
    value nor the value of a write to the key that may have landed after it (acked or indeterminate
    `info`, finishing after this write was invoked). Writes are assumed to carry unique values per key."""
    ops = _ops(history)
    writes = defaultdict(list)  # key -> [(invoked_at, completed_at, type, value)]
    for o in ops:
        if o.op == "write" and o.type in ("ok", "info"):
            writes[_k(o.key)].append((o.time - (o.latency_s or 0.0), o.time, o.type, o.value))
    acked = lost = 0
    examples: list[str] = []
    for key, ws in writes.items():
        for invoked, _, typ, value in ws:
            if typ != "ok":
                continue
            acked += 1
            # any write not finished before this one started may legitimately be the final value
            later = {v for (_, done, _, v) in ws if done > invoked}
            for region, table in replicas.items():
                final = table.get(key)
                if final != value and final not in later:
                    lost += 1
                    if len(examples) < 5:
                        examples.append(f"{key}={value!r} (acked) but {region} has {final!r}")
                    break
    valid = lost == 0
    detail = (f"[built-in checker] {lost} of {acked} acknowledged writes lost"
              + (": " + "; ".join(examples) if examples else ""))
    return CheckResult("lost_acked_writes", valid, detail, {"acked_writes": acked, "lost_acked_writes": lost})


def builtin_divergent_keys(replicas: dict) -> CheckResult:
    """Keys whose final values differ between regions (replicas did not converge)."""
    keys = set()
    for table in replicas.values():
        keys.update(table)
    divergent = sorted((k for k in keys if len({repr(t.get(k)) for t in replicas.values()}) > 1), key=str)
    detail = f"[built-in checker] {len(divergent)} of {len(keys)} keys differ between {len(replicas)} regions"
    if divergent:
        detail += ": " + ", ".join(map(str, divergent[:5])) + (" ..." if len(divergent) > 5 else "")
    return CheckResult("divergent_keys", not divergent, detail, {"divergent_keys": len(divergent)})


def _k(key: Any) -> Any:
    return key if isinstance(key, (str, int)) else str(key)


# -- re-checking a run -----------------------------------------------------------------------------------

def _as_check(result: Any, fallback_name: str) -> dict:
    """Read a checker's CheckResult (dataclass, namedtuple or dict) into the summary's check shape."""
    get = (lambda k, d=None: result.get(k, d)) if isinstance(result, dict) else (lambda k, d=None: getattr(result, k, d))
    valid = get("valid")
    if valid not in (True, False, "unknown"):
        raise ReportError(f"checker {fallback_name} returned valid={valid!r}; expected true, false or \"unknown\"")
    metrics = get("metrics") or {}
    return {"name": str(get("name") or fallback_name), "valid": valid, "detail": str(get("detail") or ""),
            "metrics": dict(metrics) if isinstance(metrics, dict) else {}}


@dataclass
class ScenarioRecheck:
    name: str
    recorded_outcome: str
    outcome: str                       # after re-checking
    checks: list[dict]                 # recorded checks, with re-run ones replaced; each has "source"
    metrics: dict                      # metrics the re-run checkers measured
    disagreements: list[str]
    not_rechecked: str | None = None   # why nothing could be re-run


@dataclass
class RunRecheck:
    scenarios: dict[str, ScenarioRecheck]
    checker_source: str

    @property
    def disagreements(self) -> list[str]:
        return [f"{s.name}: {d}" for s in self.scenarios.values() for d in s.disagreements]

    @property
    def agrees(self) -> bool:
        return not self.disagreements


def recheck_scenario(s: Scenario, checkers: dict[str, Callable]) -> ScenarioRecheck:
    recorded = s.result
    checks = [dict(c, source="recorded") for c in recorded.get("checks", [])]
    rerun: list[dict] = []
    why_not: list[str] = []
    if s.replicas is not None:
        history_raw = s.raw_history.records if s.raw_history is not None else None
        if history_raw is not None:
            s.history  # validates every entry, so a bad line is named before a checker trips on it
            if "lost_acked_writes" in checkers:
                rerun.append(_run_checker(checkers["lost_acked_writes"], "lost_acked_writes", s,
                                          history_raw, s.replicas, **_rpo_kwargs(checkers["lost_acked_writes"], s)))
        else:
            why_not.append("no history.jsonl (lost acknowledged writes not re-checkable)")
        if "divergent_keys" in checkers:
            rerun.append(_run_checker(checkers["divergent_keys"], "divergent_keys", s, s.replicas))
    else:
        why_not.append("no replicas.json")

    disagreements: list[str] = []
    metrics: dict = {}
    for new in rerun:
        metrics.update(new.pop("metrics"))
        new["source"] = "re-checked"
        idx = next((i for i, c in enumerate(checks) if c["name"] == new["name"]), None)
        if idx is None:
            checks.append(new)
        else:
            if checks[idx]["valid"] != new["valid"]:
                disagreements.append(f"check {new['name']}: recorded valid={checks[idx]['valid']!r}, "
                                     f"re-checked valid={new['valid']!r}")
            checks[idx] = new
    for k in ("lost_acked_writes", "divergent_keys", "acked_writes"):
        rec = recorded.get("metrics", {}).get(k)
        if k in metrics and rec is not None and rec != metrics[k]:
            disagreements.append(f"metric {k}: recorded {rec}, re-checked {metrics[k]}")

    outcome = recorded["outcome"]
    if outcome == "passed" and any(c["valid"] is False for c in checks):
        outcome = "failed"
    if outcome != recorded["outcome"]:
        disagreements.append(f"outcome: recorded {recorded['outcome']}, re-checked {outcome}")
    elif outcome == "failed" and rerun and not any(c["valid"] is False for c in checks) \
            and any(c["valid"] is False for c in recorded.get("checks", [])):
        # recorded failure came only from data checks that now pass: say so (the verdict stays failed)
        disagreements.append("recorded failing data checks pass on re-check (verdict kept: failed)")
    return ScenarioRecheck(s.name, recorded["outcome"], outcome, checks, metrics, disagreements,
                           None if rerun else ("; ".join(why_not) or "no data checkers available"))


def _rpo_kwargs(fn: Callable, s: Scenario) -> dict:
    """A scenario with an RPO budget (budgets.lost_acked_writes = n, or {"max": n}) was judged with
    `allowed=n`; re-check it the same way when the checker takes `allowed` (assertions.checkers does)."""
    b = (s.result.get("budgets") or {}).get("lost_acked_writes")
    if isinstance(b, dict):
        b = b.get("max", b.get("le"))
    if not isinstance(b, (int, float)) or isinstance(b, bool) or b <= 0:
        return {}
    import inspect
    try:
        takes = "allowed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes = False
    return {"allowed": int(b)} if takes else {}


def _run_checker(fn: Callable, name: str, s: Scenario, *args: Any, **kwargs: Any) -> dict:
    try:
        return _as_check(fn(*args, **kwargs), name)
    except ReportError:
        raise
    except Exception as e:  # noqa: BLE001 - a checker crashing on stored data is a report on that data
        raise ReportError(f"{s.rel}: checker {name} failed on the stored data: {type(e).__name__}: {e}") from None


def recheck_run(run: Run) -> RunRecheck:
    checkers, source = resolve_checkers()
    return RunRecheck({s.name: recheck_scenario(s, checkers) for s in run.scenarios}, source)
