"""Re-running the data checkers from what a run stored (history.jsonl + replicas.json), with no
environment: `gameday report <run-dir>` must reach the verdict the run reached.

The checkers are the parts of assertions/protocol.py, composed by name (RECHECKED), over a
RunView of the stored scenario: the very checkers a live scenario runs. A part whose inputs the
run did not store is not re-run (the recorded check stands, and `not_rechecked` says why); a
part that crashes on the stored data is re-checked as `unknown`, with the traceback.

The verdict only ever gets stricter on re-check: a scenario recorded as failed stays failed
(its failure may come from something only the live run could see, such as an alarm deadline),
and a recorded pass becomes a failure when a re-run checker now says `valid: false`.
Disagreements between the recorded and the re-checked results are listed, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from gameday.assertions.checkers import on_incomplete_history
from gameday.assertions.protocol import Checker, DivergentKeys, LostAckedWrites, RunView, compose
from gameday.loadgen.history_stream import history_gaps, read_completeness
from gameday.reports.rundata import Run, Scenario

# The checks a stored run can be re-judged by: the ones needing only history.jsonl and replicas.json
# (error budget windows, fault times and the healthy region are the live scenario's choices).
RECHECKED: dict[str, Checker] = {"lost_acked_writes": LostAckedWrites(), "divergent_keys": DivergentKeys()}
CHECKER_SOURCE = "gameday.assertions.checkers"
_STORED_AS = {"history": "history.jsonl", "replicas": "replicas.json"}


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


def run_view(s: Scenario) -> RunView:
    """The stored scenario as checkers read it, with the RPO budget it was judged by
    (budgets.lost_acked_writes = n, or {"max": n})."""
    history = None
    if s.raw_history is not None:
        s.history  # validates every entry, so a bad line is named (ReportError) before a checker trips on it
        history = s.raw_history.records
    b = (s.result.get("budgets") or {}).get("lost_acked_writes")
    if isinstance(b, dict):
        b = b.get("max", b.get("le"))
    allowed = int(b) if isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0 else 0
    return RunView(history=history, replicas=s.replicas, lost_writes_allowed=allowed)


def recheck_scenario(s: Scenario, checkers: Mapping[str, Checker] = RECHECKED) -> ScenarioRecheck:
    recorded = s.result
    checks = [dict(c, source="recorded") for c in recorded.get("checks", [])]
    view = run_view(s)
    # a part declares the run's fields it needs (protocol._Part.needs); one without `needs` always runs
    missing = {n: view.missing(getattr(c, "needs", ())) for n, c in checkers.items()}
    runnable = {n: c for n, c in checkers.items() if not missing[n]}
    why_not = sorted({f"no {_STORED_AS.get(m, m)}" for ms in missing.values() for m in ms})
    results = compose(runnable).check(view).results.values() if runnable else []
    # the same rule as the run's: a pass judged on a history with entries that never reached the
    # master (a worker that died) is "unknown" (loadgen/history_stream.py's accounting)
    gaps = history_gaps(read_completeness(s.dir))
    rerun = [on_incomplete_history(r, gaps).as_dict() for r in results]

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
                           None if rerun else ("; ".join(why_not) or "no data checkers given"))


def recheck_run(run: Run) -> RunRecheck:
    return RunRecheck({s.name: recheck_scenario(s) for s in run.scenarios}, CHECKER_SOURCE)
