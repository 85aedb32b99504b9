"""report.html: one offline page (no network) that explains a run to someone who was not there:
the verdict, a card per scenario (detection / failover / RTO / RPO next to the profile's floor and
the scenario's budgets), a timeline chart per scenario, the checks, and links to the logs and
Locust's own report.

plotly.js (~4.6 MB) is not inlined: one copy, named by its version, sits in the folder holding the
run directories (reports/runs/plotly-<version>.min.js) and every report links it relatively, so 30
nightly runs share one script instead of carrying 30. A page whose script is missing says so
visibly, with the command that writes it again."""

from __future__ import annotations

import html
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs, get_plotlyjs_version
from plotly.subplots import make_subplots

from gameday.reports.recheck import RunRecheck
from gameday.reports.rundata import Run, Scenario, iso, parse_time
from gameday.reports.timeline import client_buckets

# Regions get blue/orange/purple/...; red, green and grey are kept for states (ALARM, OK, no data).
REGION_COLORS = ["#1F77B4", "#FF7F0E", "#9467BD", "#8C564B", "#E377C2", "#17BECF", "#BCBD22", "#7F7F7F"]
STATE_COLORS = {"OK": "#2CA02C", "ALARM": "#D62728", "INSUFFICIENT_DATA": "#9E9E9E"}
FAULT_FILL = "rgba(214, 39, 40, 0.13)"
FAULT_OPEN_FILL = "rgba(214, 39, 40, 0.30)"   # a fault never rolled back: darker, and labelled so
CHART_PAD_S = 2.0
BAND_WIDTH = 14
HEALTH_COLORS = {"healthy": "#2CA02C", "unhealthy": "#D62728"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f4f6f9}
main{max-width:1280px;margin:0 auto;padding:16px 20px 40px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:0} h3{font-size:15px;margin:18px 0 6px}
.verdict{border-radius:8px;padding:16px 20px;color:#fff;margin-bottom:14px}
.verdict.pass{background:#1e7b34}.verdict.fail{background:#b3261e}
.verdict .big{font-size:28px;font-weight:700;letter-spacing:.5px}
.verdict .meta{opacity:.92;margin-top:4px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:14px 18px;margin:14px 0}
.card.failed,.card.error{border-left:6px solid #b3261e}.card.passed{border-left:6px solid #1e7b34}
.card.skipped{border-left:6px solid #9e9e9e}
.badge{display:inline-block;border-radius:4px;padding:1px 8px;font-weight:600;font-size:12px;color:#fff;vertical-align:middle}
.badge.passed{background:#1e7b34}.badge.failed,.badge.error{background:#b3261e}.badge.skipped{background:#757575}
.metrics{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:10px;margin:12px 0}
.metric{background:#f7f8fb;border-radius:6px;padding:8px 12px}
.metric .label{font-size:12px;color:#5a6272;text-transform:uppercase;letter-spacing:.4px}
.metric .value{font-size:22px;font-weight:700}
.metric .ref{font-size:12px;color:#5a6272}
.over{color:#b3261e;font-weight:700}.within{color:#1e7b34}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e3e6ec;vertical-align:top}
th{background:#f0f2f6}
td.detail{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
td.v-true,td.v-false,td.v-unknown{white-space:nowrap}
.v-true{color:#1e7b34;font-weight:700}.v-false{color:#b3261e;font-weight:700}.v-unknown{color:#a15c00;font-weight:700}
pre.message{background:#fff4f3;border:1px solid #f1c9c5;padding:8px;white-space:pre-wrap;max-height:240px;overflow:auto}
.warn{background:#fff8e1;border:1px solid #f3d98b;border-radius:6px;padding:8px 12px;margin:8px 0}
.links a{margin-right:14px}
.muted{color:#5a6272}
.chart{min-height:200px}
"""


# The version is in the name: after a plotly upgrade, old reports keep the script they were drawn with.
PLOTLY_JS_NAME = f"plotly-{get_plotlyjs_version()}.min.js"

# Scripts in <head> block parsing, so when the body starts plotly.js has either run or failed (missing,
# cut short): the check needs no onerror hook and also catches a file that loaded but did not define Plotly.
MISSING_JS = """(function () {
  if (typeof window.Plotly !== "undefined") return;
  var box = document.getElementById("plotly-missing");
  var src = new URL(box.dataset.src, document.baseURI);
  var here = decodeURIComponent(new URL(".", location.href).pathname).replace(/\\/$/, "");
  var page = decodeURIComponent(location.pathname);
  box.querySelector(".missing-path").textContent = decodeURIComponent(src.pathname);
  box.querySelector(".rerender").textContent = box.dataset.rerender.replace("{dir}", here).replace("{page}", page);
  box.hidden = false;
})();"""


def ensure_plotlyjs(folder: Path | str) -> Path:
    """plotly.js in `folder` as PLOTLY_JS_NAME, written only when missing or not whole (atomically: two
    runs finishing at once, or one killed mid-write, never leave a cut-short script); returns its path."""
    folder = Path(folder)
    path = folder / PLOTLY_JS_NAME
    script = get_plotlyjs().encode("utf-8")
    try:
        if path.stat().st_size == len(script):
            return path
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{PLOTLY_JS_NAME}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(script)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def share_plotlyjs(run_dir: Path | str) -> str:
    """Put plotly.js where run_dir's report.html finds it and return the page's relative src: beside the run
    directory (reports/runs/<id> -> reports/runs/, one copy for every run; a --run-dir elsewhere or a
    downloaded artifact -> its own parent), or, if that folder is not writable, inside the run directory."""
    run_dir = Path(run_dir).absolute()
    try:
        ensure_plotlyjs(run_dir.parent)
        return f"../{PLOTLY_JS_NAME}"
    except OSError:
        ensure_plotlyjs(run_dir)
        return PLOTLY_JS_NAME


def plotlyjs_src(page_path: Path | str, script: Path | str) -> str:
    """The script's address relative to the page (what <script src> needs so the folder can move)."""
    rel = os.path.relpath(Path(script).absolute(), Path(page_path).absolute().parent)
    return quote(Path(rel).as_posix())


def page(title: str, body: str, plotly_src: str, rerender: str) -> str:
    """A complete offline page: CSS inlined, plotly.js linked at `plotly_src` (relative, no CDN: CI artifacts
    are opened days later, offline). `rerender` is the command that writes the script again, shown if it
    is missing ({dir}: the page's folder, {page}: the page, filled in by the browser)."""
    missing = (f"<div id=\"plotly-missing\" class=\"warn\" hidden data-src=\"{esc(plotly_src)}\" "
               f"data-rerender=\"{esc(rerender)}\"><b>⚠ charts not drawn: plotly.js missing at "
               f"<code class=\"missing-path\">{esc(plotly_src)}</code></b>; run <code class=\"rerender\">"
               f"{esc(rerender)}</code> to re-render this page (it writes the script again).</div>"
               f"<script>{MISSING_JS}</script>"
               f"<noscript><div class=\"warn\">the charts need JavaScript</div></noscript>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style>"
            f"<script charset=\"utf-8\" src=\"{esc(plotly_src)}\"></script></head>"
            f"<body><main>{missing}{body}</main></body></html>\n")


def fig_html(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def esc(v: Any) -> str:
    return html.escape(str(v))


def fmt_s(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} s"


def clock(ts: float | None) -> str:
    return "—" if ts is None else iso(ts)[11:23]


# -- the timeline chart -------------------------------------------------------------------------------------

@dataclass
class Window:
    t0: float      # x = 0 (the scenario's start)
    start: float
    end: float

    def x(self, ts: float) -> float:
        return round(ts - self.t0, 4)

    def __contains__(self, ts: float) -> bool:
        return self.start <= ts <= self.end


def scenario_window(s: Scenario, faults: list[dict]) -> Window | None:
    times = [t for t in (s.started, s.finished) if t is not None]
    if s.history:
        times += [s.history[0].time, s.history[-1].time]
    for f in faults:
        times += [t for t in (f["injected"], f["rolled_back"]) if t is not None]
    if not times:
        return None
    t0 = s.started if s.started is not None else min(times)
    return Window(t0, min(times) - CHART_PAD_S, max(times) + CHART_PAD_S)


def scenario_faults(run: Run, s: Scenario, summary_faults: list[dict]) -> list[dict]:
    """Fault windows: the scenario's own record, else what the journal says happened in its time."""
    out = [{"kind": f["kind"], "target": f["target"], "injected": parse_time(f["injected_at"], ""),
            "rolled_back": parse_time(f["rolled_back_at"], "") if f["rolled_back_at"] else None,
            "rollback_failed": False} for f in summary_faults]
    if out or s.started is None:
        return out
    end = s.finished if s.finished is not None else math.inf
    open_: dict[str, dict] = {}
    for j in run.journal:
        if not (s.started <= j["ts"] <= end):
            continue
        key = str(j["fault"].get("id") or sorted(j["fault"].items()))
        if j["event"] == "injected":
            target = j["fault"].get("target", "")
            open_[key] = {"kind": str(j["fault"].get("kind", "?")), "target": target if isinstance(target, str) else str(target),
                          "injected": j["ts"], "rolled_back": None, "rollback_failed": False}
            out.append(open_[key])
        elif j["event"] in ("rolled_back", "rollback_failed") and key in open_:
            if j["event"] == "rolled_back":
                open_[key]["rolled_back"] = j["ts"]
            else:
                open_[key]["rollback_failed"] = True
    return out


def _segments(changes: list[tuple[float, str]], initial: str | None, w: Window) -> list[tuple[float, float, str]]:
    """[(start, end, state)] over the window from a sorted list of (ts, new state)."""
    segs: list[tuple[float, float, str]] = []
    state, since = initial, w.start
    for ts, new in changes:
        if ts < w.start:
            state = new
            continue
        if ts > w.end:
            break
        if state is not None and ts > since:
            segs.append((since, ts, state))
        state, since = new, max(ts, w.start)
    if state is not None and w.end > since:
        segs.append((since, w.end, state))
    return segs


def _band_traces(row_label: str, segs: list[tuple[float, float, str]], colors: dict[str, str], w: Window,
                 name_of=lambda st: st, shown: set | None = None) -> list[go.Scatter]:
    """One thick line per state (None-separated segments): a band that hovers with its state."""
    by_state: dict[str, tuple[list, list, list]] = {}
    for a, b, st in segs:
        xs, ys, tx = by_state.setdefault(st, ([], [], []))
        label = f"{row_label}: {name_of(st)}<br>{w.x(a):+.2f} s .. {w.x(b):+.2f} s"
        xs += [w.x(a), w.x(b), None]
        ys += [row_label, row_label, None]
        tx += [label, label, None]
    traces = []
    for st, (xs, ys, tx) in by_state.items():
        legend = name_of(st)
        first = shown is not None and legend not in shown
        if shown is not None:
            shown.add(legend)
        traces.append(go.Scatter(x=xs, y=ys, mode="lines", line={"width": BAND_WIDTH, "color": colors.get(st, "#777")},
                                 name=legend, legendgroup=legend, showlegend=first, text=tx, hoverinfo="text"))
    return traces


def _short_alarm(e: dict) -> str:
    name = str(e.get("alarm", "?")).removeprefix("gameday-")
    region = e.get("region")
    return f"alarm {name}" if not region or str(region) in name else f"alarm {name} ({region})"


def timeline_figure(run: Run, s: Scenario, faults: list[dict], w: Window) -> go.Figure:
    regions = list(run.regions)
    buckets = client_buckets(s.history or [])
    for b in buckets:
        if b["region"] not in regions:
            regions.append(b["region"])
    color = {r: REGION_COLORS[i % len(REGION_COLORS)] for i, r in enumerate(regions)}
    ev = [e for e in run.events if w.start <= e["ts"] <= w.end]
    lag = [e for e in ev if e["kind"] == "replication_lag" and isinstance(e.get("lag_s"), (int, float))]

    rows = ["requests", "latency"] + (["lag"] if lag else []) + ["events"]
    titles = {"requests": "client requests/s by region (errors: fail + info)", "latency": "latency p50 / p99 (s)",
              "lag": "replication lag (s)", "events": "alarms · Route 53 answer · Lambda · ECS tasks"}
    heights = {"requests": 0.34, "latency": 0.24, "lag": 0.14, "events": 0.28}
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        subplot_titles=[titles[r] for r in rows], row_heights=[heights[r] for r in rows])
    row = {r: i + 1 for i, r in enumerate(rows)}

    # requests/s and errors/s per bucket
    by_region: dict[str, list[dict]] = {}
    for b in buckets:
        by_region.setdefault(b["region"], []).append(b)
    err: dict[float, int] = {}
    for r, bs in by_region.items():
        fig.add_trace(go.Scatter(x=[w.x(b["ts"]) for b in bs], y=[b["requests"] / b["bucket_s"] for b in bs],
                                 mode="lines", name=f"{r} req/s", legendgroup=r, line={"color": color[r], "width": 2},
                                 hovertemplate=f"{r}: %{{y:.0f}} req/s at %{{x:+.0f}} s<extra></extra>"),
                      row=row["requests"], col=1)
        for b in bs:
            err[b["ts"]] = err.get(b["ts"], 0) + b["fail"] + b["info"]
        fig.add_trace(go.Scatter(x=[w.x(b["ts"]) for b in bs if b["p50_s"] is not None],
                                 y=[b["p50_s"] for b in bs if b["p50_s"] is not None], mode="lines",
                                 name=f"{r} p50", legendgroup=r, showlegend=False, line={"color": color[r], "width": 1.5},
                                 hovertemplate=f"{r} p50 %{{y:.3f}} s<extra></extra>"), row=row["latency"], col=1)
        fig.add_trace(go.Scatter(x=[w.x(b["ts"]) for b in bs if b["p99_s"] is not None],
                                 y=[b["p99_s"] for b in bs if b["p99_s"] is not None], mode="lines",
                                 name=f"{r} p99", legendgroup=r, showlegend=False,
                                 line={"color": color[r], "width": 1.5, "dash": "dot"},
                                 hovertemplate=f"{r} p99 %{{y:.3f}} s<extra></extra>"), row=row["latency"], col=1)
    if err:
        xs = sorted(err)
        bucket_s = buckets[0]["bucket_s"]
        fig.add_trace(go.Scatter(x=[w.x(t) for t in xs], y=[err[t] / bucket_s for t in xs], mode="lines",
                                 name="errors/s", line={"color": "#D62728", "width": 1.5, "dash": "dash"},
                                 fill="tozeroy", fillcolor="rgba(214,39,40,0.15)",
                                 hovertemplate="errors %{y:.0f}/s at %{x:+.0f} s<extra></extra>"),
                      row=row["requests"], col=1)

    if lag:
        fig.add_trace(go.Scatter(x=[w.x(e["ts"]) for e in lag], y=[e["lag_s"] for e in lag], mode="lines+markers",
                                 marker={"size": 4}, name="replication lag", line={"color": "#17BECF"},
                                 text=[f"{e.get('direction', '')} pending {e.get('pending', '?')}" for e in lag],
                                 hovertemplate="lag %{y:.2f} s %{text}<extra></extra>"), row=row["lag"], col=1)

    # the event bands
    categories: list[str] = []
    shown: set[str] = set()
    band_traces: list[go.Scatter] = []
    alarm_changes: dict[str, list[tuple[float, str]]] = {}
    alarm_initial: dict[str, str | None] = {}
    for e in run.events:  # whole run: the state before the window comes from earlier transitions
        if e["kind"] != "alarm":
            continue
        label = _short_alarm(e)
        alarm_changes.setdefault(label, []).append((e["ts"], str(e.get("new"))))
        alarm_initial.setdefault(label, str(e.get("old")) if e.get("old") else None)
    for label in sorted(alarm_changes):
        segs = _segments(alarm_changes[label], alarm_initial[label], w)
        if segs:
            categories.append(label)
            band_traces += _band_traces(label, segs, STATE_COLORS, w, name_of=lambda st: f"alarm {st}", shown=shown)

    region_of_ip = run.region_of_ip
    dns: dict[str, list[tuple[float, str]]] = {}
    dns_initial: dict[str, str | None] = {}
    for e in run.events:
        if e["kind"] != "dns_change":
            continue
        label = "DNS " + str(e.get("name", "?")).rstrip(".")
        dns.setdefault(label, []).append((e["ts"], _regions_of(e.get("new"), region_of_ip)))
        dns_initial.setdefault(label, _regions_of(e.get("old"), region_of_ip) if e.get("old") else None)
    for label in sorted(dns):
        segs = _segments(dns[label], dns_initial[label], w)
        if segs:
            categories.append(label)
            dns_colors = {st: color.get(st, "#555") for _, _, st in segs}
            band_traces += _band_traces(label, segs, dns_colors, w, name_of=lambda st: f"DNS → {st}", shown=shown)

    # Route 53 health checks (failover routing): one band per region, healthy / unhealthy
    health: dict[str, list[tuple[float, str]]] = {}
    for e in run.events:
        if e["kind"] == "route53_health":
            state = "healthy" if e.get("healthy") else "unhealthy"
            health.setdefault(f"R53 health {e.get('region', '?')}", []).append((e["ts"], state))
    for label in sorted(health):
        # a check is healthy until its first change says otherwise (changes are all that is emitted)
        first = health[label][0][1]
        segs = _segments(health[label], "healthy" if first == "unhealthy" else None, w)
        if segs:
            categories.append(label)
            band_traces += _band_traces(label, segs, HEALTH_COLORS, w, name_of=lambda st: f"health check {st}",
                                        shown=shown)

    lam = [e for e in ev if e["kind"] == "lambda_invocation"]
    if lam:
        categories.append("Lambda")
        style = {"ok": ("circle", "#2CA02C"), "error": ("x", "#D62728"), "timeout": ("x", "#FF7F0E")}
        for outcome in sorted({str(e.get("outcome")) for e in lam}):
            es = [e for e in lam if str(e.get("outcome")) == outcome]
            sym, col = style.get(outcome, ("diamond", "#555"))
            band_traces.append(go.Scatter(
                x=[w.x(e["ts"]) for e in es], y=["Lambda"] * len(es), mode="markers",
                marker={"symbol": sym, "size": 13, "color": col, "line": {"width": 1, "color": "#222"}},
                name=f"Lambda {outcome}", text=[_lambda_hover(e) for e in es], hoverinfo="text"))
    # environments/local/ecs.py emits kind "ecs" with action task_stopped / task_started (and others:
    # scaled, az_unavailable, ... which are not task lifecycle marks)
    tasks = [e for e in ev if e["kind"] == "ecs" and _task_action(e) in ("stopped", "started")]
    if tasks:
        categories.append("ECS tasks")
        for action, sym, col in (("stopped", "triangle-down", "#D62728"), ("started", "triangle-up", "#2CA02C")):
            es = [e for e in tasks if _task_action(e) == action]
            if es:
                band_traces.append(go.Scatter(
                    x=[w.x(e["ts"]) for e in es], y=["ECS tasks"] * len(es), mode="markers",
                    marker={"symbol": sym, "size": 10, "color": col}, name=f"task {action}",
                    text=[f"task {action} {e.get('region', '')} {e.get('az', '')}<br>{e.get('task', '')}<br>"
                          f"{esc(e.get('reason', ''))}" for e in es], hoverinfo="text"))
    for t in band_traces:
        fig.add_trace(t, row=row["events"], col=1)
    if not categories:
        categories = ["(no environment events)"]
        fig.add_trace(go.Scatter(x=[0], y=categories, mode="markers", marker={"opacity": 0}, showlegend=False,
                                 hoverinfo="skip"), row=row["events"], col=1)
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(reversed(categories)),
                     row=row["events"], col=1, automargin=True)

    # fault windows: one shape over every row (x in data, y in paper coordinates)
    for f in faults:
        x0 = w.x(max(f["injected"], w.start))
        x1 = w.x(f["rolled_back"]) if f["rolled_back"] is not None else w.x(w.end)
        never = f["rolled_back"] is None
        fig.add_shape(type="rect", xref="x", yref="paper", x0=x0, x1=x1, y0=0, y1=1, layer="below",
                      fillcolor=FAULT_OPEN_FILL if never else FAULT_FILL, line={"width": 0},
                      name=f"fault {f['kind']}")
        label = f"{f['kind']} {f['target']}".strip() + (" — NOT ROLLED BACK" if never else "") \
            + (" — rollback failed" if f["rollback_failed"] else "")
        # above the plotting area (the top margin leaves room), not over the first subplot's title
        fig.add_annotation(x=x0, y=1.0, yshift=22, xref="x", yref="paper", yanchor="bottom", xanchor="left", showarrow=False,
                           text=f"⚡ {esc(label)}", font={"size": 11, "color": "#9b1c1c"}, bgcolor="rgba(255,255,255,.8)")

    n_cat = len(categories)
    height = 430 + (110 if lag else 0) + 26 * n_cat
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 60 + (24 if faults else 0), "b": 40}, hovermode="closest",
                      template="plotly_white", legend={"orientation": "h", "y": -0.08, "x": 0, "font": {"size": 11}},
                      font={"size": 12})
    fig.update_yaxes(rangemode="tozero", row=row["requests"], col=1, title_text="req/s")
    fig.update_yaxes(rangemode="tozero", row=row["latency"], col=1, title_text="s")
    if lag:
        fig.update_yaxes(rangemode="tozero", row=row["lag"], col=1, title_text="s")
    fig.update_xaxes(range=[w.x(w.start), w.x(w.end)], showgrid=True, zeroline=True, zerolinecolor="#bbb")
    fig.update_xaxes(title_text=f"seconds since the scenario started ({clock(w.t0)} UTC)", row=len(rows), col=1)
    return fig


def _task_action(e: dict) -> str | None:
    a = str(e.get("action", ""))
    return a.removeprefix("task_") if a in ("task_stopped", "task_started") else None


def _regions_of(ips: Any, region_of_ip: dict[str, str]) -> str:
    ips = ips if isinstance(ips, list) else [ips]
    names = [region_of_ip.get(str(ip), str(ip)) for ip in ips if ip is not None]
    return ", ".join(names) if names else "(no answer)"


def _lambda_hover(e: dict) -> str:
    bits = [f"Lambda {e.get('outcome')} attempt {e.get('attempt', '?')}",
            f"duration {e.get('duration_s', '?')} s" + (" (cold start)" if e.get("cold_start") else "")]
    if e.get("alarm"):
        bits.append(f"alarm {e.get('alarm')} ({e.get('region', '')})")
    if e.get("error"):
        bits.append(f"error: {str(e['error'])[:200]}")
    if e.get("result") is not None:
        bits.append(f"result: {str(e['result'])[:200]}")
    return "<br>".join(esc(b) for b in bits)


# -- the cards ----------------------------------------------------------------------------------------------

def _budget(budgets: dict, key: str) -> float | None:
    b = budgets.get(key)
    if isinstance(b, dict):
        b = b.get("max", b.get("le"))
    return float(b) if isinstance(b, (int, float)) and not isinstance(b, bool) else None


def _metric_box(label: str, value: str, refs: Iterable[str]) -> str:
    r = "<br>".join(refs)
    return (f"<div class=\"metric\"><div class=\"label\">{esc(label)}</div>"
            f"<div class=\"value\">{value}</div><div class=\"ref\">{r}</div></div>")


def _budget_ref(v: float | None, budget: float | None, unit: str = " s") -> str:
    if budget is None:
        return "no budget set"
    if v is None:
        return f"budget ≤ {budget:g}{unit}"
    cls, word = ("over", "OVER budget") if v > budget else ("within", "within budget")
    return f"budget ≤ {budget:g}{unit}: <span class=\"{cls}\">{word}</span>"


def metric_cards(sm: dict, budgets: dict, profile: dict, max_lag: float | None) -> str:
    m = sm["metrics"]
    n_period = profile["evaluation_periods"] * profile["period_s"]
    boxes = [
        _metric_box("detection", fmt_s(m["detection_s"]),
                    [f"floor {n_period:g} s ({profile['evaluation_periods']} × {profile['period_s']:g} s period)",
                     _budget_ref(m["detection_s"], _budget(budgets, "detection_s"))]),
        _metric_box("failover", fmt_s(m["failover_s"]),
                    [f"floor {profile['floor_s']:g} s (alarm + TTL {profile['dns_ttl_s']:g} s)"
                     + (f"; overhead {m['failover_s'] - profile['floor_s']:+.2f} s" if m["failover_s"] is not None else ""),
                     _budget_ref(m["failover_s"], _budget(budgets, "failover_s"))]),
        _metric_box("RTO (clients recovered)", fmt_s(m["rto_s"]),
                    [f"floor {profile['floor_s']:g} s", _budget_ref(m["rto_s"], _budget(budgets, "rto_s"))]),
        _metric_box("RPO (acknowledged writes lost)",
                    f"<span class=\"{'over' if m['lost_acked_writes'] else ''}\">{m['lost_acked_writes']}</span>"
                    f" <span class=\"muted\" style=\"font-size:14px\">of {m['acked_writes']}</span>",
                    [f"divergent keys {m['divergent_keys']}; converged in {fmt_s(m['convergence_s'])}",
                     f"max replication lag {fmt_s(max_lag)}",
                     _budget_ref(m["lost_acked_writes"], _budget(budgets, "lost_acked_writes"), "")]),
        _metric_box("client load", f"{m['requests']:,}",
                    [f"error rate {m['error_rate'] * 100:.2f} %",
                     _budget_ref(m["error_rate"], _budget(budgets, "error_rate"), "")]),
    ]
    return f"<div class=\"metrics\">{''.join(boxes)}</div>"


def checks_table(checks: list[dict]) -> str:
    if not checks:
        return "<p class=\"muted\">no checks recorded</p>"
    rows = []
    for c in checks:
        v = c["valid"]
        cls, txt = {True: ("v-true", "✔ valid"), False: ("v-false", "✘ invalid")}.get(v, ("v-unknown", "? unknown"))
        rows.append(f"<tr><td>{esc(c['name'])}</td><td class=\"{cls}\">{txt}</td>"
                    f"<td class=\"detail\">{esc(c.get('detail', ''))}</td><td class=\"muted\">{esc(c.get('source', ''))}</td></tr>")
    return ("<table class=\"checks\"><thead><tr><th>check</th><th>result</th><th>detail</th><th>source</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _link(run: Run, p: Path, label: str | None = None) -> str:
    rel = p.relative_to(run.dir).as_posix()
    return f"<a href=\"{quote(rel)}\">{esc(label or rel)}</a>"


def scenario_card(run: Run, s: Scenario, sm: dict, rc, profile: dict, idx: int) -> str:
    faults = scenario_faults(run, s, sm["faults"])
    w = scenario_window(s, faults)
    chart = ""
    max_lag = None
    if w is not None:
        lags = [e["lag_s"] for e in run.events if e["kind"] == "replication_lag" and w.start <= e["ts"] <= w.end
                and isinstance(e.get("lag_s"), (int, float))]
        max_lag = max(lags) if lags else None
        if s.result["outcome"] != "skipped" or s.history:
            chart = f"<div class=\"chart\" data-scenario=\"{esc(s.name)}\">{fig_html(timeline_figure(run, s, faults, w), f'chart-{idx}')}</div>"
    outcome = sm["outcome"]
    recorded_note = "" if rc.recorded_outcome == outcome else \
        f" <span class=\"over\">(recorded {esc(rc.recorded_outcome)}; re-check failed it)</span>"
    msg = s.result.get("message")
    fault_rows = "".join(
        f"<tr><td>{esc(f['kind'])}</td><td>{esc(f['target'])}</td><td>{clock(f['injected'])}</td>"
        f"<td>{clock(f['rolled_back']) if f['rolled_back'] else '<span class=over>never</span>'}</td>"
        f"<td>{fmt_s(f['rolled_back'] - f['injected']) if f['rolled_back'] else '—'}</td></tr>" for f in faults)
    files = [p for p in sorted(s.dir.rglob("*")) if p.is_file()]
    first = [p for p in files if p.name in ("locust.html", "locust_stats.csv")]
    links = " ".join(_link(run, p, p.name) for p in first + [p for p in files if p not in first])
    return f"""
<section class="card {esc(outcome)}" id="scenario-{idx}">
  <h2>{esc(s.name)} <span class="badge {esc(outcome)}">{esc(outcome.upper())}</span>{recorded_note}</h2>
  <div class="muted">{clock(s.started)} → {clock(s.finished)} UTC
    {f"({s.finished - s.started:.1f} s)" if s.started is not None and s.finished is not None else ""}</div>
  {f'<pre class="message">{esc(msg)}</pre>' if msg else ''}
  {metric_cards(sm, s.result.get('budgets') or {}, profile, max_lag)}
  {('<h3>faults</h3><table><thead><tr><th>fault</th><th>target</th><th>injected (UTC)</th><th>rolled back</th>'
    '<th>window</th></tr></thead><tbody>' + fault_rows + '</tbody></table>') if faults else ''}
  {('<h3>timeline</h3>' + chart) if chart else ''}
  <h3>checks</h3>
  {checks_table(rc.checks)}
  {f'<p class="muted">re-check: {esc(rc.not_rechecked)}</p>' if rc.not_rechecked else ''}
  <p class="links"><b>files:</b> {links or '<span class=muted>none</span>'}</p>
</section>"""


def junit_counts(run: Run) -> str | None:
    p = run.dir / "junit.xml"
    if not p.exists():
        return None
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as e:
        run.warnings.append(f"junit.xml: not valid XML ({e}); not summarised")
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    tot = {k: sum(int(s.get(k, 0) or 0) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    return f"JUnit: {tot['tests']} tests, {tot['failures']} failures, {tot['errors']} errors, {tot['skipped']} skipped"


def render_report(run: Run, summary: dict, recheck: RunRecheck, plotly_src: str = f"../{PLOTLY_JS_NAME}") -> str:
    """The page; plotly_src: where it finds plotly.js, relative to the run directory (see share_plotlyjs)."""
    sms = {sm["name"]: sm for sm in summary["scenarios"]}
    counts = {k: sum(1 for sm in summary["scenarios"] if sm["outcome"] == k) for k in ("passed", "failed", "error", "skipped")}
    prof = summary["profile"]
    dur = parse_time(summary["finished_at"], "") - parse_time(summary["started_at"], "")
    agree = ("re-checked from stored data (" + esc(recheck.checker_source) + "): "
             + ("same verdict" if recheck.agrees else "<b>differs from the recorded result</b>"))
    junit = junit_counts(run)
    cards = "".join(scenario_card(run, s, sms[s.name], recheck.scenarios[s.name], prof, i)
                    for i, s in enumerate(run.scenarios))
    overview = "".join(
        f"<tr><td><a href=\"#scenario-{i}\">{esc(s.name)}</a></td>"
        f"<td><span class=\"badge {esc(sms[s.name]['outcome'])}\">{esc(sms[s.name]['outcome'])}</span></td>"
        f"<td>{fmt_s(sms[s.name]['metrics']['detection_s'])}</td><td>{fmt_s(sms[s.name]['metrics']['failover_s'])}</td>"
        f"<td>{fmt_s(sms[s.name]['metrics']['rto_s'])}</td><td>{sms[s.name]['metrics']['lost_acked_writes']}</td>"
        f"<td>{sms[s.name]['metrics']['error_rate'] * 100:.2f} %</td></tr>" for i, s in enumerate(run.scenarios))
    run_files = [run.dir / n for n in ("summary.json", "timeline.jsonl", "junit.xml", "journal.jsonl",
                                       "env/events.jsonl", "env/config.json")]
    logs = sorted({p for pat in ("logs/**/*", "env/logs/**/*", "env/*.log") for p in run.files(pat)})
    disagreements = "".join(f"<li>{esc(d)}</li>" for d in recheck.disagreements)
    warnings = "".join(f"<div class=\"warn\">⚠ {esc(w)}</div>" for w in run.warnings)
    body = f"""
<div class="verdict {'pass' if summary['passed'] else 'fail'}" id="verdict">
  <div class="big">{'PASSED' if summary['passed'] else 'FAILED'}</div>
  <div class="meta">run {esc(summary['run_id'])} · env {esc(summary['env'])} · {esc(summary['started_at'])} → {esc(summary['finished_at'])} ({dur:.0f} s)</div>
  <div class="meta">{counts['passed']} passed · {counts['failed']} failed · {counts['error']} error · {counts['skipped']} skipped
    {('· ' + esc(junit)) if junit else ''}</div>
  <div class="meta">profile: period {prof['period_s']:g} s × {prof['evaluation_periods']} evaluation periods, DNS TTL {prof['dns_ttl_s']:g} s → failover floor {prof['floor_s']:g} s · {agree}</div>
</div>
{('<div class="warn"><b>re-check disagrees with the recorded run:</b><ul>' + disagreements + '</ul></div>') if disagreements else ''}
{warnings}
<section class="card"><h2>scenarios</h2>
<table><thead><tr><th>scenario</th><th>outcome</th><th>detection</th><th>failover</th><th>RTO</th><th>lost acked writes</th><th>error rate</th></tr></thead>
<tbody>{overview}</tbody></table></section>
{cards}
<section class="card links"><h2>files</h2>
<p><b>run:</b> {' '.join(_link(run, p) for p in run_files if p.exists())}</p>
<p><b>logs:</b> {' '.join(_link(run, p) for p in logs) or '<span class=muted>none</span>'}</p>
</section>"""
    return page(f"gameday {summary['run_id']}: {'PASSED' if summary['passed'] else 'FAILED'}", body,
                plotly_src, "gameday report {dir}")


def write_report(text: str, run_dir: Path) -> Path:
    path = Path(run_dir) / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
