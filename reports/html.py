"""report.html: one offline page (no network) that explains a run to someone who was not there:
the verdict, a card per scenario (detection / failover / RTO / RPO next to the profile's floor and
the scenario's budgets), a timeline chart per scenario, the checks, and links to the logs and
Locust's own report.

plotly.js (~4.6 MB) is not inlined: one copy, named by its version, sits in the folder holding the
run directories (reports/runs/plotly-<version>.min.js) and every report links it relatively, so 30
nightly runs share one script instead of carrying 30. A page whose script is missing says so
visibly, with the command that writes it again.

The HTML is in Jinja2 templates (reports/templates/, autoescaped); this module gathers what they show
and draws the charts. Every band of the timeline's events panel (alarm states, the DNS answer, Route 53
health) is one BandKind drawn by state_bands/draw_band; the tasks panel (RUNNING ECS tasks per region, when
they change) is replayed from the `ecs` events; fault windows are shaded over every panel."""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import jinja2
import plotly.graph_objects as go
from markupsafe import Markup
from plotly.offline import get_plotlyjs, get_plotlyjs_version
from plotly.subplots import make_subplots

from gameday.reports.recheck import RunRecheck
from gameday.reports.rundata import OUTCOMES, Run, Scenario, iso, parse_time
from gameday.reports.timeline import client_buckets, quantile

# Regions get blue/orange/purple/...; red, green and grey are kept for states (ALARM, OK, no data).
REGION_COLORS = ["#1F77B4", "#FF7F0E", "#9467BD", "#8C564B", "#E377C2", "#17BECF", "#BCBD22", "#7F7F7F"]
STATE_COLORS = {"OK": "#2CA02C", "ALARM": "#D62728", "INSUFFICIENT_DATA": "#9E9E9E"}
FAULT_FILL = "rgba(214, 39, 40, 0.13)"
FAULT_OPEN_FILL = "rgba(214, 39, 40, 0.30)"   # a fault never rolled back: darker, and labelled so
CHART_PAD_S = 2.0
BAND_WIDTH = 14
HEALTH_COLORS = {"healthy": "#2CA02C", "unhealthy": "#D62728"}

# The version is in the name: after a plotly upgrade, old reports keep the script they were drawn with.
PLOTLY_JS_NAME = f"plotly-{get_plotlyjs_version()}.min.js"


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
    """A complete offline page around `body` (HTML the caller rendered and escaped): CSS inlined, plotly.js
    linked at `plotly_src` (relative, no CDN: CI artifacts are opened days later, offline). `rerender` is the
    command that writes the script again, shown if it is missing ({dir}: the page's folder, {page}: the
    page, filled in by the browser)."""
    return _TEMPLATES.get_template("page.html.j2").render(title=title, body=Markup(body), plotly_src=plotly_src,
                                                          rerender=rerender)


def fig_html(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def esc(v: Any) -> str:
    return html.escape(str(v))


def fmt_s(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f} s"


def clock(ts: float | None) -> str:
    return "—" if ts is None else iso(ts)[11:23]


# The pages' HTML lives in templates/: page.html.j2 the frame (CSS, the plotly.js link and its missing-script
# box), report.html.j2 the run, scenario.html.j2 a scenario's card, macros.html.j2 the pieces they share.
# Autoescaping is on for every template: scenario names, messages, check details and file names are the
# run's data, never markup; only the plotly figures and a caller's pre-rendered body come in as Markup.
_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                autoescape=True, trim_blocks=True, lstrip_blocks=True,
                                undefined=jinja2.StrictUndefined)
_TEMPLATES.filters.update(fmt_s=fmt_s, clock=clock)


# -- the timeline chart -------------------------------------------------------------------------------------

def _at(e: dict) -> float:
    """When an environment event or a fault journal step happened: the run log's `time` (wall epoch seconds,
    gameday/runlog.py), which reports/rundata.py's Run carries for both, old runs migrated."""
    return e["time"]


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
        if not (s.started <= _at(j) <= end):
            continue
        key = str(j["fault"].get("id") or sorted(j["fault"].items()))
        if j["action"] == "injected":
            target = j["fault"].get("target", "")
            open_[key] = {"kind": str(j["fault"].get("kind", "?")), "target": target if isinstance(target, str) else str(target),
                          "injected": _at(j), "rolled_back": None, "rollback_failed": False}
            out.append(open_[key])
        elif j["action"] in ("rolled_back", "rollback_failed") and key in open_:
            if j["action"] == "rolled_back":
                open_[key]["rolled_back"] = _at(j)
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


@dataclass(frozen=True)
class BandKind:
    """One kind of state band in the chart's events panel (alarm states, the DNS answer, Route 53 health):
    which events make it, the row each event belongs to, the state it sets, the state before the first
    change, and how a state is coloured and named in the legend."""
    event: str                                   # the timeline event kind
    row: Callable[[dict], str]                   # the row's label, from an event
    state: Callable[[dict], str]                 # the state an event sets
    before: Callable[[dict], str | None]         # the state before a row's first event (from that event)
    color: Callable[[str], str]
    legend: Callable[[str], str]


def _short_alarm(e: dict) -> str:
    name = str(e.get("alarm", "?")).removeprefix("gameday-")
    region = e.get("region")
    return f"alarm {name}" if not region or str(region) in name else f"alarm {name} ({region})"


def _regions_of(ips: Any, region_of_ip: dict[str, str]) -> str:
    ips = ips if isinstance(ips, list) else [ips]
    names = [region_of_ip.get(str(ip), str(ip)) for ip in ips if ip is not None]
    return ", ".join(names) if names else "(no answer)"


def band_kinds(region_of_ip: dict[str, str], region_color: dict[str, str]) -> list[BandKind]:
    """The state bands, in the order their rows are drawn: alarms, DNS answers (coloured by the region the
    answer points at), Route 53 health checks (failover routing; only changes are emitted, so a check is
    healthy until its first change says otherwise)."""
    return [
        BandKind("alarm", _short_alarm, lambda e: str(e.get("new")),
                 lambda e: str(e.get("old")) if e.get("old") else None,
                 lambda st: STATE_COLORS.get(st, "#777"), lambda st: f"alarm {st}"),
        BandKind("dns_change", lambda e: "DNS " + str(e.get("name", "?")).rstrip("."),
                 lambda e: _regions_of(e.get("new"), region_of_ip),
                 lambda e: _regions_of(e.get("old"), region_of_ip) if e.get("old") else None,
                 lambda st: region_color.get(st, "#555"), lambda st: f"DNS → {st}"),
        BandKind("route53_health", lambda e: f"R53 health {e.get('region', '?')}",
                 lambda e: "healthy" if e.get("healthy") else "unhealthy",
                 lambda e: "healthy" if not e.get("healthy") else None,
                 lambda st: HEALTH_COLORS.get(st, "#777"), lambda st: f"health check {st}"),
    ]


def draw_band(kind: BandKind, row: str, segs: list[tuple[float, float, str]], w: Window,
              shown: set[str]) -> list[go.Scatter]:
    """A band: one thick line per state (None-separated segments) that hovers with its state; a legend
    entry the first time a state name appears in the chart (`shown` carries that across bands)."""
    by_state: dict[str, tuple[list, list, list]] = {}
    for a, b, st in segs:
        xs, ys, tx = by_state.setdefault(st, ([], [], []))
        label = f"{row}: {kind.legend(st)}<br>{w.x(a):+.2f} s .. {w.x(b):+.2f} s"
        xs += [w.x(a), w.x(b), None]
        ys += [row, row, None]
        tx += [label, label, None]
    traces = []
    for st, (xs, ys, tx) in by_state.items():
        legend = kind.legend(st)
        first = legend not in shown
        shown.add(legend)
        traces.append(go.Scatter(x=xs, y=ys, mode="lines", line={"width": BAND_WIDTH, "color": kind.color(st)},
                                 name=legend, legendgroup=legend, showlegend=first, text=tx, hoverinfo="text"))
    return traces


def state_bands(kind: BandKind, events: list[dict], w: Window, shown: set[str]) -> tuple[list[str], list[go.Scatter]]:
    """(rows, traces) of one band kind over the window. All of the run's events are read: the state when the
    window opens comes from the transitions before it."""
    changes: dict[str, list[tuple[float, str]]] = {}
    before: dict[str, str | None] = {}
    for e in events:
        if e["kind"] == kind.event:
            row = kind.row(e)
            changes.setdefault(row, []).append((_at(e), kind.state(e)))
            before.setdefault(row, kind.before(e))
    rows, traces = [], []
    for row in sorted(changes):
        segs = _segments(changes[row], before[row], w)
        if segs:
            rows.append(row)
            traces += draw_band(kind, row, segs, w, shown)
    return rows, traces


def _task_action(e: dict) -> str | None:
    a = str(e.get("action", ""))
    return a.removeprefix("task_") if a in ("task_stopped", "task_started") else None


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


def _task_hover(e: dict) -> str:
    return f"task {_task_action(e)} {e.get('region', '')} {e.get('az', '')}<br>{e.get('task', '')}<br>{esc(e.get('reason', ''))}"


LAMBDA_MARKS = {"ok": ("circle", "#2CA02C"), "error": ("x", "#D62728"), "timeout": ("x", "#FF7F0E")}
TASK_MARKS = {"stopped": ("triangle-down", "#D62728"), "started": ("triangle-up", "#2CA02C")}


def marks(row: str, groups: dict[str, list[dict]], style: dict[str, tuple[str, str]], w: Window, *,
          name: Callable[[str], str], hover: Callable[[dict], str], marker: dict) -> list[go.Scatter]:
    """Point events on one row of the events panel, one trace per group (a Lambda outcome, a task action)."""
    traces = []
    for group, es in groups.items():
        sym, col = style.get(group, ("diamond", "#555"))
        traces.append(go.Scatter(x=[w.x(_at(e)) for e in es], y=[row] * len(es), mode="markers",
                                 marker={"symbol": sym, "color": col, **marker}, name=name(group),
                                 text=[hover(e) for e in es], hoverinfo="text"))
    return traces


def point_rows(ev: list[dict], w: Window) -> tuple[list[str], list[go.Scatter]]:
    """The Lambda's invocations by outcome, and ECS task stops and starts (environments/local/ecs.py also emits
    kind "ecs" for scaling and AZ changes, which are not task lifecycle marks)."""
    rows, traces = [], []
    lam = [e for e in ev if e["kind"] == "lambda_invocation"]
    if lam:
        rows.append("Lambda")
        by_outcome = {o: [e for e in lam if str(e.get("outcome")) == o] for o in sorted({str(e.get("outcome")) for e in lam})}
        traces += marks("Lambda", by_outcome, LAMBDA_MARKS, w, name=lambda o: f"Lambda {o}", hover=_lambda_hover,
                        marker={"size": 13, "line": {"width": 1, "color": "#222"}})
    tasks = [e for e in ev if e["kind"] == "ecs" and _task_action(e) in TASK_MARKS]
    if tasks:
        rows.append("ECS tasks")
        by_action = {a: es for a in TASK_MARKS if (es := [e for e in tasks if _task_action(e) == a])}
        traces += marks("ECS tasks", by_action, TASK_MARKS, w, name=lambda a: f"task {a}", hover=_task_hover,
                        marker={"size": 10})
    return rows, traces


def task_counts(events: list[dict]) -> dict[str, list[tuple[float, int]]]:
    """RUNNING ECS tasks per region over the run, as (time, count) at each change, from the `ecs`
    events (task_running adds a task, task_stopped removes it; a task stopped before it ran never counted)."""
    running: dict[str, set] = {}
    out: dict[str, list[tuple[float, int]]] = {}
    for e in events:
        action = e.get("action") if e["kind"] == "ecs" else None
        if action not in ("task_running", "task_stopped") or not e.get("region"):
            continue
        tasks = running.setdefault(str(e["region"]), set())
        before = len(tasks)
        (tasks.add if action == "task_running" else tasks.discard)(e.get("task"))
        if len(tasks) != before:
            out.setdefault(str(e["region"]), []).append((_at(e), len(tasks)))
    return out


def task_traces(events: list[dict], w: Window, color: dict[str, str]) -> list[go.Scatter]:
    """The tasks panel: RUNNING tasks per region as steps over the window, and target tracking's scaling
    decisions (`ecs` scaled events) as marks; nothing when no region's count changes in the window and
    nothing scaled (a flat line says nothing the card does not)."""
    counts = task_counts(events)
    scaled = [e for e in events if e["kind"] == "ecs" and e.get("action") == "scaled" and _at(e) in w]
    if not scaled and not any(w.start <= ts <= w.end for pts in counts.values() for ts, _ in pts):
        return []
    traces = []
    for region, pts in sorted(counts.items()):
        start = [n for ts, n in pts if ts < w.start][-1:] or [0]
        inside = [(ts, n) for ts, n in pts if w.start <= ts <= w.end]
        xs = [w.x(w.start)] + [w.x(ts) for ts, _ in inside] + [w.x(w.end)]
        ys = start + [n for _, n in inside] + [inside[-1][1] if inside else start[0]]
        traces.append(go.Scatter(x=xs, y=ys, mode="lines", line_shape="hv", name=f"{region} tasks",
                                 legendgroup=region, line={"color": color.get(region, "#555"), "width": 2},
                                 hovertemplate=f"{region}: %{{y}} tasks RUNNING at %{{x:+.1f}} s<extra></extra>"))
    if scaled:
        traces.append(go.Scatter(x=[w.x(_at(e)) for e in scaled], y=[e.get("new") for e in scaled], mode="markers",
                                 marker={"symbol": "star", "size": 11, "color": "#333"}, name="desired count set",
                                 text=[esc(f"{e.get('region')}: desired {e.get('old')} → {e.get('new')}: "
                                           f"{e.get('reason', '')}") for e in scaled], hoverinfo="text"))
    return traces


def _events_panel(fig: go.Figure, run: Run, ev: list[dict], w: Window, region_color: dict[str, str], row: int) -> int:
    """The bands and marks of the events panel; returns how many rows it has."""
    rows: list[str] = []
    traces: list[go.Scatter] = []
    shown: set[str] = set()
    for kind in band_kinds(run.region_of_ip, region_color):
        kind_rows, kind_traces = state_bands(kind, run.events, w, shown)
        rows += kind_rows
        traces += kind_traces
    point_labels, point_traces = point_rows(ev, w)
    rows += point_labels
    for t in traces + point_traces:
        fig.add_trace(t, row=row, col=1)
    if not rows:
        rows = ["(no environment events)"]
        fig.add_trace(go.Scatter(x=[0], y=rows, mode="markers", marker={"opacity": 0}, showlegend=False,
                                 hoverinfo="skip"), row=row, col=1)
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(reversed(rows)),
                     row=row, col=1, automargin=True)
    return len(rows)


def _client_traces(fig: go.Figure, buckets: list[dict], color: dict[str, str], w: Window, row: dict[str, int]) -> None:
    """Requests/s per region and errors/s (fail + info, all regions) in the first panel, p50/p99 in the second."""
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
        for q, dash in (("p50", None), ("p99", "dot")):
            pts = [b for b in bs if b[f"{q}_s"] is not None]
            fig.add_trace(go.Scatter(x=[w.x(b["ts"]) for b in pts], y=[b[f"{q}_s"] for b in pts], mode="lines",
                                     name=f"{r} {q}", legendgroup=r, showlegend=False,
                                     line={"color": color[r], "width": 1.5, **({"dash": dash} if dash else {})},
                                     hovertemplate=f"{r} {q} %{{y:.3f}} s<extra></extra>"), row=row["latency"], col=1)
    if err:
        xs = sorted(err)
        bucket_s = buckets[0]["bucket_s"]
        fig.add_trace(go.Scatter(x=[w.x(t) for t in xs], y=[err[t] / bucket_s for t in xs], mode="lines",
                                 name="errors/s", line={"color": "#D62728", "width": 1.5, "dash": "dash"},
                                 fill="tozeroy", fillcolor="rgba(214,39,40,0.15)",
                                 hovertemplate="errors %{y:.0f}/s at %{x:+.0f} s<extra></extra>"),
                      row=row["requests"], col=1)


def shade_faults(fig: go.Figure, faults: list[dict], w: Window) -> None:
    """Each fault's window: a shape over every panel (x in data, y in paper coordinates), darker when never
    rolled back, labelled above the plotting area (the top margin leaves room), not over a panel's title."""
    for f in faults:
        x0 = w.x(max(f["injected"], w.start))
        x1 = w.x(f["rolled_back"]) if f["rolled_back"] is not None else w.x(w.end)
        never = f["rolled_back"] is None
        fig.add_shape(type="rect", xref="x", yref="paper", x0=x0, x1=x1, y0=0, y1=1, layer="below",
                      fillcolor=FAULT_OPEN_FILL if never else FAULT_FILL, line={"width": 0},
                      name=f"fault {f['kind']}")
        label = f"{f['kind']} {f['target']}".strip() + (" — NOT ROLLED BACK" if never else "") \
            + (" — rollback failed" if f["rollback_failed"] else "")
        fig.add_annotation(x=x0, y=1.0, yshift=22, xref="x", yref="paper", yanchor="bottom", xanchor="left", showarrow=False,
                           text=f"⚡ {esc(label)}", font={"size": 11, "color": "#9b1c1c"}, bgcolor="rgba(255,255,255,.8)")


PANEL_TITLES = {"requests": "client requests/s by region (errors: fail + info)", "latency": "latency p50 / p99 (s)",
                "lag": "replication lag (s)", "tasks": "ECS tasks RUNNING by region (★ desired count set)",
                "events": "alarms · Route 53 answer · Lambda · ECS tasks"}
PANEL_HEIGHTS = {"requests": 0.34, "latency": 0.24, "lag": 0.14, "tasks": 0.14, "events": 0.28}   # relative


def timeline_figure(run: Run, s: Scenario, faults: list[dict], w: Window) -> go.Figure:
    """The scenario's timeline: client requests/s and errors, latency, replication lag (if any), the
    environment's events (state bands and point marks), and the fault windows over all of them."""
    regions = list(run.regions)
    buckets = client_buckets(s.history or [])
    regions += [r for r in dict.fromkeys(b["region"] for b in buckets) if r not in regions]
    color = {r: REGION_COLORS[i % len(REGION_COLORS)] for i, r in enumerate(regions)}
    ev = [e for e in run.events if w.start <= _at(e) <= w.end]
    lag = [e for e in ev if e["kind"] == "replication_lag" and isinstance(e.get("lag_s"), (int, float))]
    tasks = task_traces(run.events, w, color)
    panels = ["requests", "latency"] + (["lag"] if lag else []) + (["tasks"] if tasks else []) + ["events"]
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        subplot_titles=[PANEL_TITLES[p] for p in panels], row_heights=[PANEL_HEIGHTS[p] for p in panels])
    row = {p: i + 1 for i, p in enumerate(panels)}
    _client_traces(fig, buckets, color, w, row)
    if lag:
        fig.add_trace(go.Scatter(x=[w.x(_at(e)) for e in lag], y=[e["lag_s"] for e in lag], mode="lines+markers",
                                 marker={"size": 4}, name="replication lag", line={"color": "#17BECF"},
                                 text=[f"{e.get('direction', '')} pending {e.get('pending', '?')}" for e in lag],
                                 hovertemplate="lag %{y:.2f} s %{text}<extra></extra>"), row=row["lag"], col=1)
        fig.update_yaxes(rangemode="tozero", row=row["lag"], col=1, title_text="s")
    for t in tasks:
        fig.add_trace(t, row=row["tasks"], col=1)
    if tasks:
        fig.update_yaxes(rangemode="tozero", dtick=1, row=row["tasks"], col=1, title_text="tasks")
    n_event_rows = _events_panel(fig, run, ev, w, color, row["events"])
    shade_faults(fig, faults, w)
    fig.update_layout(height=430 + (110 if lag else 0) + (110 if tasks else 0) + 26 * n_event_rows, hovermode="closest", template="plotly_white",
                      margin={"l": 10, "r": 10, "t": 60 + (24 if faults else 0), "b": 40}, font={"size": 12},
                      legend={"orientation": "h", "y": -0.08, "x": 0, "font": {"size": 11}})
    fig.update_yaxes(rangemode="tozero", row=row["requests"], col=1, title_text="req/s")
    fig.update_yaxes(rangemode="tozero", row=row["latency"], col=1, title_text="s")
    fig.update_xaxes(range=[w.x(w.start), w.x(w.end)], showgrid=True, zeroline=True, zerolinecolor="#bbb")
    fig.update_xaxes(title_text=f"seconds since the scenario started ({clock(w.t0)} UTC)", row=len(panels), col=1)
    return fig


# -- the page -----------------------------------------------------------------------------------------------

def _budget(budgets: dict, key: str) -> float | None:
    b = budgets.get(key)
    if isinstance(b, dict):
        b = b.get("max", b.get("le"))
    return float(b) if isinstance(b, (int, float)) and not isinstance(b, bool) else None


def _budget_ref(v: float | None, budget: float | None, unit: str = " s") -> str | dict:
    """What a metric box says about its budget: text, or text and a within/over verdict (macros.html.j2's ref)."""
    if budget is None:
        return "no budget set"
    if v is None:
        return f"budget ≤ {budget:g}{unit}"
    cls, word = ("over", "OVER budget") if v > budget else ("within", "within budget")
    return {"text": f"budget ≤ {budget:g}{unit}: ", "cls": cls, "word": word}


def _box(label: str, value: str, refs: list, of: Any = None, cls: str = "") -> dict:
    """A metric box (macros.html.j2's metric): `of` is shown after the value ("1 of 620"), with the value in `cls`."""
    return {"label": label, "value": value, "refs": refs, "of": of, "cls": cls}


def metric_boxes(sm: dict, budgets: dict, profile: dict, max_lag: float | None) -> list[dict]:
    """Detection, failover, RTO, RPO and load, each next to the profile's floor and the scenario's budget."""
    m = sm["metrics"]
    n_period = profile["evaluation_periods"] * profile["period_s"]
    overhead = f"; overhead {m['failover_s'] - profile['floor_s']:+.2f} s" if m["failover_s"] is not None else ""
    return [
        _box("detection", fmt_s(m["detection_s"]),
             [f"floor {n_period:g} s ({profile['evaluation_periods']} × {profile['period_s']:g} s period)",
              _budget_ref(m["detection_s"], _budget(budgets, "detection_s"))]),
        _box("failover", fmt_s(m["failover_s"]),
             [f"floor {profile['floor_s']:g} s (alarm + TTL {profile['dns_ttl_s']:g} s){overhead}",
              _budget_ref(m["failover_s"], _budget(budgets, "failover_s"))]),
        _box("RTO (clients recovered)", fmt_s(m["rto_s"]),
             [f"floor {profile['floor_s']:g} s", _budget_ref(m["rto_s"], _budget(budgets, "rto_s"))]),
        _box("RPO (acknowledged writes lost)", m["lost_acked_writes"],
             [f"divergent keys {m['divergent_keys']}; converged in {fmt_s(m['convergence_s'])}",
              f"max replication lag {fmt_s(max_lag)}",
              _budget_ref(m["lost_acked_writes"], _budget(budgets, "lost_acked_writes"), "")],
             of=m["acked_writes"], cls="over" if m["lost_acked_writes"] else ""),
        _box("client load", f"{m['requests']:,}",
             [f"error rate {m['error_rate'] * 100:.2f} %", _budget_ref(m["error_rate"], _budget(budgets, "error_rate"), "")]),
    ]


CHECK_RESULTS = {True: ("v-true", "✔ valid"), False: ("v-false", "✘ invalid")}


def check_rows(checks: list[dict]) -> list[dict]:
    """The checks table's rows (macros.html.j2's checks_table)."""
    rows = []
    for c in checks:
        cls, result = CHECK_RESULTS.get(c["valid"], ("v-unknown", "? unknown"))
        rows.append({"name": c["name"], "cls": cls, "result": result, "detail": c.get("detail", ""),
                     "source": c.get("source", "")})
    return rows


def _link(run: Run, p: Path, label: str | None = None) -> dict:
    rel = p.relative_to(run.dir).as_posix()
    return {"href": quote(rel), "label": label or rel}


def _max_lag(run: Run, w: Window) -> float | None:
    lags = [e["lag_s"] for e in run.events if e["kind"] == "replication_lag" and w.start <= _at(e) <= w.end
            and isinstance(e.get("lag_s"), (int, float))]
    return max(lags) if lags else None


def scenario_card(run: Run, s: Scenario, sm: dict, rc, profile: dict, idx: int) -> dict:
    """What scenario.html.j2 shows of one scenario: its verdict (and the recorded one, if the re-check
    changed it), metrics, faults, chart, checks and files (Locust's report first)."""
    faults = scenario_faults(run, s, sm["faults"])
    w = scenario_window(s, faults)
    chart, max_lag = None, None
    if w is not None:
        max_lag = _max_lag(run, w)
        if s.result["outcome"] != "skipped" or s.history:
            chart = Markup(fig_html(timeline_figure(run, s, faults, w), f"chart-{idx}"))
    files = [p for p in sorted(s.dir.rglob("*")) if p.is_file()]
    first = [p for p in files if p.name in ("locust.html", "locust_stats.csv")]
    return {"idx": idx, "name": s.name, "outcome": sm["outcome"], "recorded_outcome": rc.recorded_outcome,
            "m": sm["metrics"], "started": s.started, "finished": s.finished,
            "took_s": s.finished - s.started if s.started is not None and s.finished is not None else None,
            "message": s.result.get("message"), "faults": faults, "chart": chart,
            "metrics": metric_boxes(sm, s.result.get("budgets") or {}, profile, max_lag),
            "checks": check_rows(rc.checks), "not_rechecked": rc.not_rechecked, "history": sm.get("history"),
            "files": [_link(run, p, p.name) for p in first + [p for p in files if p not in first]]}


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


def signal_sources(run: Run) -> list[dict]:
    """Where the environment's events came from, per kind and source API (--env aws reads AWS's own
    APIs: environments/aws/signals.py): how many, and how long after the change they were read.
    Empty when no event names a source (the local environments emit their events themselves)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for e in run.events:
        src = e.get("source")
        if isinstance(src, str) and ":" in src and "delay_s" in e:
            groups.setdefault((str(e.get("kind")), src), []).append(float(e.get("delay_s") or 0.0))
    return [{"kind": k, "api": api, "count": len(d), "median_delay_s": quantile(sorted(d), 0.5), "max_delay_s": max(d)}
            for (k, api), d in sorted(groups.items())]


def api_calls(run: Run) -> dict | None:
    """RUN_DIR/env/api_calls.json (--env aws): the harness's own AWS requests per service."""
    p = run.dir / "env" / "api_calls.json"
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        run.warnings.append(f"env/api_calls.json: unreadable ({e}); not shown")
        return None


RUN_FILES = ("summary.json", "timeline.jsonl", "junit.xml", "journal.jsonl", "env/events.jsonl", "env/config.json")
LOG_FILES = ("logs/**/*", "env/logs/**/*", "env/*.log")


def render_report(run: Run, summary: dict, recheck: RunRecheck, plotly_src: str = f"../{PLOTLY_JS_NAME}") -> str:
    """The page; plotly_src: where it finds plotly.js, relative to the run directory (see share_plotlyjs)."""
    sms = {sm["name"]: sm for sm in summary["scenarios"]}
    junit = junit_counts(run)   # before the warnings are shown: it may add one
    cards = [scenario_card(run, s, sms[s.name], recheck.scenarios[s.name], summary["profile"], i)
             for i, s in enumerate(run.scenarios)]
    verdict = "PASSED" if summary["passed"] else "FAILED"
    return _TEMPLATES.get_template("report.html.j2").render(
        title=f"gameday {summary['run_id']}: {verdict}", plotly_src=plotly_src, rerender="gameday report {dir}",
        s=summary, p=summary["profile"], passed=summary["passed"], recheck=recheck, junit=junit,
        counts={k: sum(1 for sm in summary["scenarios"] if sm["outcome"] == k) for k in OUTCOMES},
        duration_s=parse_time(summary["finished_at"], "") - parse_time(summary["started_at"], ""),
        warnings=run.warnings, cards=cards, sources=signal_sources(run), api_calls=api_calls(run),
        run_files=[_link(run, run.dir / n) for n in RUN_FILES if (run.dir / n).exists()],
        logs=[_link(run, p) for p in sorted({p for pat in LOG_FILES for p in run.files(pat)})])


def write_report(text: str, run_dir: Path) -> Path:
    path = Path(run_dir) / "report.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
