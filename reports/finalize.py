"""Turning a finished run directory into its reports: summary.json (the contract), timeline.jsonl
and report.html. `gameday run` calls this after pytest; `gameday report <run-dir>` calls it again
on stored data alone, with no environment, and reaches the same verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gameday.reports.html import render_report, share_plotlyjs, write_report
from gameday.reports.recheck import recheck_run
from gameday.reports.rundata import load_run
from gameday.reports.summary import build_summary, write_summary
from gameday.reports.timeline import build_timeline, write_timeline


def finalize_run(run_dir: Path | str, **meta: Any) -> Path:
    """Write summary.json, timeline.jsonl and report.html into run_dir; return report.html's path.
    Raises reports.rundata.ReportError (one line naming the file) on a corrupted or partial run."""
    run = load_run(run_dir)
    recheck = recheck_run(run)
    summary = build_summary(run, recheck, **meta)
    write_summary(summary, run.dir)
    write_timeline(build_timeline(run), run.dir)
    plotly_src = share_plotlyjs(run.dir)   # one copy beside the run directories, not 4.6 MB in every report
    return write_report(render_report(run, summary, recheck, plotly_src), run.dir)
