"""Run history and trend: reports/history.jsonl gets one line per scenario per run (`gameday run`
appends it), and `gameday report --trend` charts failover, RTO, error rate and lost writes per
scenario over the runs in reports/trend.html, flagging regressions.

A regression is judged for each scenario's newest run against the previous runs of the same
scenario (at most BASELINE_RUNS of them):
  - failover_s, rto_s or error_rate more than 20% above their median over those runs
    (needs MIN_BASELINE earlier values, so two noisy runs cannot call a trend; error_rate also needs
    to be ERROR_RATE_MIN_DELTA above the median: 20% of a 0.1% error rate is noise, not a trend);
  - lost_acked_writes > 0 when every one of those runs lost none.
Every earlier point is judged the same way against its own predecessors, so the page shows where
a regression started; only the newest run of each scenario decides the command's exit code.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gameday.reports.rundata import OUTCOMES, ReportError, iso, parse_time, read_jsonl

HISTORY_PATH = Path("reports") / "history.jsonl"
TREND_PATH = Path("reports") / "trend.html"
BASELINE_RUNS = 7
MIN_BASELINE = 3
RATIO = 1.2
ERROR_RATE_MIN_DELTA = 0.005
RATIO_METRICS = ("failover_s", "rto_s", "error_rate")
HISTORY_METRICS = ("detection_s", "failover_s", "rto_s", "error_rate", "lost_acked_writes", "acked_writes",
                   "divergent_keys", "convergence_s", "requests")


# -- writing ---------------------------------------------------------------------------------------------

def git_commit(repo: Path | None = None) -> dict:
    """{"commit": sha|None, "dirty": bool|None} of the repository being rehearsed (the current directory's, a
    team's own): CI's GITHUB_SHA, else `git rev-parse HEAD` (None outside git)."""
    repo = Path.cwd() if repo is None else repo
    sha = os.environ.get("GITHUB_SHA") or None
    dirty = None
    try:
        if sha is None:
            sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                 timeout=5, check=True).stdout.strip() or None
        out = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
        dirty = bool(out.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"commit": sha, "dirty": dirty}


def history_lines(summary: dict, *, run_dir: Path | str | None = None, git: dict | None = None) -> list[dict]:
    """One line per scenario of a summary.json: what the trend needs, and where the run's data lives."""
    git = git if git is not None else git_commit()
    now = iso(time.time())
    out = []
    for sc in summary["scenarios"]:
        m = sc["metrics"]
        out.append({"run_id": summary["run_id"], "recorded_at": now, "started_at": summary["started_at"],
                    "finished_at": summary["finished_at"], "env": summary["env"], "git_commit": git.get("commit"),
                    "git_dirty": git.get("dirty"), "scenario": sc["name"], "outcome": sc["outcome"],
                    **{k: m.get(k) for k in HISTORY_METRICS},
                    "floor_s": summary["profile"]["floor_s"],
                    "failed_checks": [c["name"] for c in sc["checks"] if c["valid"] is False],
                    "run_dir": str(run_dir) if run_dir is not None else None})
    return out


def append_history(summary: dict, path: Path | str = HISTORY_PATH, *, run_dir: Path | str | None = None,
                   git: dict | None = None) -> list[dict]:
    """Append the run's lines to history.jsonl; lines already there for this run id and scenario are
    not written twice (a re-rendered run is still one run). Returns the lines written."""
    path = Path(path)
    have: set[tuple[str, str]] = set()
    if path.exists():
        have = {(r.get("run_id"), r.get("scenario")) for r in read_jsonl(path, str(path)).records}
    lines = [ln for ln in history_lines(summary, run_dir=run_dir, git=git) if (ln["run_id"], ln["scenario"]) not in have]
    if lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # two runs finishing at once append whole lines, one after the other
            _drop_cut_short_tail(fh)
            fh.write("".join(json.dumps(ln) + "\n" for ln in lines).encode())
    return lines


def _drop_cut_short_tail(fh) -> None:
    """A run killed while appending leaves half a line at the end: drop it (it is not a record, and
    appending after it would turn it into corruption in the middle of the file). A complete record
    that only lacks its newline gets one."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return
    fh.seek(max(0, size - 65536))
    tail = fh.read()
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    if cut < 0 and size > len(tail):
        raise ReportError(f"{fh.name}: last line longer than 64 KiB and unterminated; not a history file?")
    last = tail[cut + 1:]
    try:
        json.loads(last)
    except ValueError:
        fh.truncate(size - len(last))
    else:
        fh.write(b"\n")
    fh.seek(0, os.SEEK_END)


# -- reading ---------------------------------------------------------------------------------------------

@dataclass
class Point:
    run_id: str
    ts: float
    outcome: str
    commit: str | None
    metrics: dict[str, float | None]
    regressions: list[str] = field(default_factory=list)   # what this run regressed on, one phrase each


@dataclass
class Trend:
    path: Path
    scenarios: dict[str, list[Point]]          # oldest first
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[str]:
        """The newest run of each scenario: one line per regression."""
        return [f"{name}: {r} (run {pts[-1].run_id})" for name, pts in self.scenarios.items() for r in pts[-1].regressions]


def _num(v: Any, where: str, key: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ReportError(f"{where}: field {key!r} must be a non-negative number or null (got {v!r})")
    return float(v)


def load_history(path: Path | str = HISTORY_PATH) -> Trend:
    path = Path(path)
    if not path.exists():
        raise ReportError(f"{path}: missing (no run recorded yet: `gameday run` appends one line per scenario)")
    lines = read_jsonl(path, str(path))
    trend = Trend(path, {})
    if lines.truncated_tail:
        trend.warnings.append(f"{path}: last line was cut short (a run killed mid-write); ignored")
    seen: set[tuple[str, str]] = set()
    series: dict[tuple[str, str], list[Point]] = {}
    envs: set[str] = set()
    for i, rec in enumerate(lines.records, 1):
        where = f"{path}:{i}"
        for key in ("run_id", "scenario"):
            if not isinstance(rec.get(key), str) or not rec[key]:
                raise ReportError(f"{where}: missing field {key!r} (a string); not a gameday history line")
        if rec.get("outcome") not in OUTCOMES:
            raise ReportError(f"{where}: field 'outcome' must be one of {', '.join(OUTCOMES)} (got {rec.get('outcome')!r})")
        ts = parse_time(rec.get("started_at"), f"{where}: field 'started_at'")
        metrics = {k: _num(rec.get(k), where, k) for k in HISTORY_METRICS}
        if (rec["run_id"], rec["scenario"]) in seen:
            trend.warnings.append(f"{where}: run {rec['run_id']} / {rec['scenario']} appears twice; later line ignored")
            continue
        seen.add((rec["run_id"], rec["scenario"]))
        env = str(rec.get("env") or "local")
        envs.add(env)
        series.setdefault((rec["scenario"], env), []).append(
            Point(rec["run_id"], ts, rec["outcome"], rec.get("git_commit"), metrics))
    if not series:
        raise ReportError(f"{path}: no runs recorded yet (`gameday run` appends one line per scenario)")
    # a local run and a run against real AWS are different populations: never one baseline
    trend.scenarios = {(name if len(envs) == 1 else f"{name} [{env}]"): pts for (name, env), pts in series.items()}
    for pts in trend.scenarios.values():
        pts.sort(key=lambda p: p.ts)
        for i, p in enumerate(pts):
            p.regressions = [] if p.outcome == "skipped" else judge(p, previous_runs(pts, i))
    return trend


def previous_runs(pts: list[Point], i: int) -> list[Point]:
    """The baseline of pts[i]: up to BASELINE_RUNS earlier runs that ran (a skipped run measured nothing)."""
    return [q for q in pts[:i] if q.outcome != "skipped"][-BASELINE_RUNS:]


def baseline(metric: str, previous: list[Point]) -> float | None:
    """Median of the metric over the previous runs that measured it (None below MIN_BASELINE values)."""
    vals = [p.metrics[metric] for p in previous if p.metrics.get(metric) is not None]
    return statistics.median(vals) if len(vals) >= MIN_BASELINE else None


def threshold(metric: str, previous: list[Point]) -> float | None:
    med = baseline(metric, previous)
    if med is None:
        return None
    limit = med * RATIO
    if metric == "error_rate":
        limit = max(limit, med + ERROR_RATE_MIN_DELTA)
    return limit


def judge(p: Point, previous: list[Point]) -> list[str]:
    out = []
    for metric in RATIO_METRICS:
        v = p.metrics.get(metric)
        limit = threshold(metric, previous)
        if v is None or limit is None or v <= limit:
            continue
        med = baseline(metric, previous)
        n = sum(1 for q in previous if q.metrics.get(metric) is not None)
        if metric == "error_rate":
            out.append(f"error rate {v * 100:.2f}% > {limit * 100:.2f}% (median {med * 100:.2f}% of the previous {n} runs)")
        else:
            pct = (v / med - 1) * 100 if med else math.inf
            out.append(f"{metric} {v:.2f}s is {pct:.0f}% above the median {med:.2f}s of the previous {n} runs "
                       f"(limit {limit:.2f}s)")
    lost = p.metrics.get("lost_acked_writes")
    before = [q.metrics.get("lost_acked_writes") for q in previous if q.metrics.get("lost_acked_writes") is not None]
    if lost and before and all(b == 0 for b in before):
        out.append(f"lost {int(lost)} acknowledged write(s); the previous {len(before)} runs lost none")
    return out


# -- rendering -------------------------------------------------------------------------------------------

CHART_METRICS = (("failover_s", "failover (s)", 1.0), ("rto_s", "RTO (s)", 1.0),
                 ("error_rate", "error rate (%)", 100.0), ("lost_acked_writes", "lost acked writes", 1.0))
OUTCOME_COLORS = {"passed": "#1F77B4", "failed": "#D62728", "error": "#D62728", "skipped": "#9E9E9E"}


def trend_figure(name: str, pts: list[Point]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(CHART_METRICS), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[t for _, t, _ in CHART_METRICS])
    x = [iso(p.ts)[:19].replace("T", " ") for p in pts]
    legend_has_regression = False
    hover = [f"run {p.run_id}<br>{p.outcome}" + (f"<br>commit {p.commit[:10]}" if p.commit else "") for p in pts]
    for row, (metric, title, scale) in enumerate(CHART_METRICS, 1):
        y = [None if p.metrics.get(metric) is None else p.metrics[metric] * scale for p in pts]
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=title, showlegend=False, connectgaps=False,
            line={"color": "#1F77B4", "width": 2},
            marker={"size": 8, "color": [OUTCOME_COLORS.get(p.outcome, "#555") for p in pts],
                    "symbol": ["circle" if p.outcome == "passed" else "x" for p in pts]},
            text=hover, hovertemplate=f"{title}: %{{y:.3g}}<br>%{{text}}<extra></extra>"), row=row, col=1)
        if metric in RATIO_METRICS:
            limits = [threshold(metric, previous_runs(pts, i)) for i in range(len(pts))]
            fig.add_trace(go.Scatter(
                x=x, y=[None if v is None else v * scale for v in limits], mode="lines", showlegend=row == 1,
                name=f"regression limit ({RATIO:g} × median of previous {BASELINE_RUNS})", legendgroup="limit",
                line={"color": "#FF7F0E", "width": 1.5, "dash": "dash"},
                hovertemplate="limit %{y:.3g}<extra></extra>"), row=row, col=1)
        flagged = [i for i, p in enumerate(pts) if any(_about(r, metric) for r in p.regressions)]
        if flagged:
            legend_has_regression, first_regression = True, not legend_has_regression
            fig.add_trace(go.Scatter(
                x=[x[i] for i in flagged], y=[y[i] for i in flagged], mode="markers", name="regression",
                legendgroup="regression", showlegend=first_regression,
                marker={"size": 22, "color": "#D62728", "line": {"color": "#D62728", "width": 3},
                        "symbol": "circle-open"},
                text=["<br>".join(pts[i].regressions) for i in flagged],
                hovertemplate="REGRESSION<br>%{text}<extra></extra>"), row=row, col=1)
        fig.update_yaxes(rangemode="tozero", row=row, col=1)
    fig.update_layout(height=180 * len(CHART_METRICS) + 80, template="plotly_white", hovermode="closest",
                      margin={"l": 10, "r": 10, "t": 40, "b": 30},
                      legend={"orientation": "h", "y": -0.06, "x": 0, "font": {"size": 11}})
    fig.update_xaxes(type="category", row=len(CHART_METRICS), col=1, title_text="run start (UTC)")
    fig.update_xaxes(type="category")
    return fig


def _about(regression: str, metric: str) -> bool:
    return {"failover_s": regression.startswith("failover_s"), "rto_s": regression.startswith("rto_s"),
            "error_rate": regression.startswith("error rate"),
            "lost_acked_writes": regression.startswith("lost ")}[metric]


def render_trend(trend: Trend, plotly_src: str | None = None) -> str:
    """The trend page; plotly_src: where it finds plotly.js, relative to the page (write_trend decides and
    writes the script; default: beside the page)."""
    from gameday.reports.html import PLOTLY_JS_NAME, esc, fig_html, fmt_s, page

    regs = trend.regressions
    rows, cards = [], []
    for i, (name, pts) in enumerate(sorted(trend.scenarios.items())):
        last = pts[-1]
        prev = previous_runs(pts, len(pts) - 1)
        med = {m: baseline(m, prev) for m in RATIO_METRICS}
        status = ("<span class=\"badge failed\">REGRESSION</span>" if last.regressions
                  else "<span class=\"badge passed\">ok</span>")
        rows.append(
            f"<tr><td><a href=\"#trend-{i}\">{esc(name)}</a></td><td>{len(pts)}</td>"
            f"<td><span class=\"badge {esc(last.outcome)}\">{esc(last.outcome)}</span></td>"
            f"<td>{fmt_s(last.metrics['failover_s'])} <span class=muted>(median {fmt_s(med['failover_s'])})</span></td>"
            f"<td>{fmt_s(last.metrics['rto_s'])} <span class=muted>(median {fmt_s(med['rto_s'])})</span></td>"
            f"<td>{_pct(last.metrics['error_rate'])} <span class=muted>(median {_pct(med['error_rate'])})</span></td>"
            f"<td>{'—' if last.metrics['lost_acked_writes'] is None else int(last.metrics['lost_acked_writes'])}</td>"
            f"<td>{status}</td></tr>")
        flagged = "".join(f"<li>{esc(r)}</li>" for r in last.regressions)
        earlier = [(p.run_id, r) for p in pts[:-1] for r in p.regressions]
        cards.append(
            f"<section class=\"card {'failed' if last.regressions else 'passed'}\" id=\"trend-{i}\" data-scenario=\"{esc(name)}\">"
            f"<h2>{esc(name)} {status}</h2>"
            f"<div class=\"muted\">{len(pts)} runs, {esc(iso(pts[0].ts)[:16])} → {esc(iso(last.ts)[:16])} UTC; "
            f"newest run {esc(last.run_id)}{(' at ' + esc(last.commit[:10])) if last.commit else ''}</div>"
            + (f"<div class=\"warn regression\"><b>regression in the newest run:</b><ul>{flagged}</ul></div>" if flagged else "")
            + (f"<p class=\"muted\">earlier flagged runs: {esc('; '.join(f'{r} ({rid})' for rid, r in earlier[-5:]))}</p>"
               if earlier else "")
            + f"<div class=\"chart\">{fig_html(trend_figure(name, pts), f'trend-chart-{i}')}</div></section>")
    warnings = "".join(f"<div class=\"warn\">⚠ {esc(w)}</div>" for w in trend.warnings)
    n_runs = len({p.run_id for pts in trend.scenarios.values() for p in pts})
    head = (f"<div class=\"verdict {'fail' if regs else 'pass'}\" id=\"verdict\">"
            f"<div class=\"big\">{'REGRESSION' if regs else 'NO REGRESSION'}</div>"
            f"<div class=\"meta\">{n_runs} runs of {len(trend.scenarios)} scenarios from {esc(trend.path)}</div>"
            f"<div class=\"meta\">a regression: failover, RTO or error rate more than {(RATIO - 1) * 100:.0f}% above the "
            f"median of the previous {BASELINE_RUNS} runs of the scenario (at least {MIN_BASELINE} of them); "
            f"lost acknowledged writes when the previous runs lost none</div></div>")
    reg_list = ("<section class=\"card failed\" id=\"regressions\"><h2>regressions</h2><ul>"
                + "".join(f"<li>{esc(r)}</li>" for r in regs) + "</ul></section>") if regs else ""
    table = ("<section class=\"card\"><h2>scenarios (newest run)</h2><table><thead><tr><th>scenario</th><th>runs</th>"
             "<th>outcome</th><th>failover</th><th>RTO</th><th>error rate</th><th>lost acked writes</th><th>trend</th>"
             f"</tr></thead><tbody>{''.join(rows)}</tbody></table></section>")
    return page("gameday trend: " + ("REGRESSION" if regs else "no regression"), head + warnings + reg_list + table + "".join(cards),
                plotly_src or PLOTLY_JS_NAME, "gameday report --trend --out {page}")


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.2f} %"


def write_trend(trend: Trend, out: Path | str = TREND_PATH) -> Path:
    """trend.html at `out`, linking the plotly.js the run reports share when a runs/ folder is beside it
    (reports/trend.html -> reports/runs/plotly-<version>.min.js: one script per reports folder), else a
    copy beside the page (a trend written anywhere else still draws)."""
    from gameday.reports.html import ensure_plotlyjs, plotlyjs_src

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = out.parent / "runs"
    try:
        script = ensure_plotlyjs(runs if runs.is_dir() else out.parent)
    except OSError:   # runs/ not writable (and no whole copy in it): the page's own folder is
        script = ensure_plotlyjs(out.parent)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_trend(trend, plotlyjs_src(out, script)), encoding="utf-8")
    tmp.replace(out)
    return out
