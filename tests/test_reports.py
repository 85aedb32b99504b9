"""Reports (reports/): summary.json against its schema, re-checking a stored run, report.html in a
real headless browser, the run history and its trend with regressions, and clear one-line
errors for corrupted or partial run directories.

The data is a real run (tests/data/run-surge-blackhole.tar.gz: `gameday run -k "surge or
blackhole"`, both scenarios PASSED), extracted into a temporary directory for every test that
changes it. Failing variants are made from it the way real runs go wrong: an acknowledged write
missing from the replicas, a truncated line, a file that never got written.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from gameday.cli import app
from gameday.reports.finalize import finalize_run
from gameday.reports.html import PLOTLY_JS_NAME
from gameday.reports.recheck import recheck_run
from gameday.reports.rundata import ReportError, load_run
from gameday.reports.summary import load_summary, schema, validate_summary
from gameday.reports.trend import BASELINE_RUNS, append_history, history_lines, load_history, write_trend

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "run-surge-blackhole.tar.gz"
ARTIFACTS = Path(__file__).parent / "artifacts"   # git-ignored: screenshots for people to look at
RUN_NAME = "run2"
SURGE, BLACKHOLE = "surge_fails_over", "region_blackhole_fails_over"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def extract(dest: Path) -> Path:
    with tarfile.open(DATA) as tf:
        tf.extractall(dest, filter="data")
    return dest / RUN_NAME


@pytest.fixture
def stored_run(tmp_path: Path) -> Path:
    return extract(tmp_path)


@pytest.fixture(scope="module")
def rendered_run(tmp_path_factory) -> Path:
    run = extract(tmp_path_factory.mktemp("rendered"))
    started = time.perf_counter()
    finalize_run(run)
    print(f"finalize_run (summary + timeline + report.html) of the stored run: {time.perf_counter() - started:.2f}s")
    return run


def gameday(*args) -> "object":
    """`gameday ARGS` in this process (typer's runner): exit code, stdout and stderr apart."""
    return CliRunner().invoke(app, [str(a) for a in args])


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def write_jsonl(p: Path, records: list[dict]) -> None:
    p.write_text("".join(json.dumps(r) + "\n" for r in records))


# -- summary.json --------------------------------------------------------------------------------------------

def test_summary_json_follows_the_schema(rendered_run: Path):
    summary = json.loads((rendered_run / "summary.json").read_text())
    jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker()).validate(summary)
    assert load_summary(rendered_run / "summary.json") == summary
    # DESIGN.md's contract, with what this run really measured
    assert summary["env"] == "local" and summary["passed"] is True
    assert summary["profile"] == {"period_s": 5, "evaluation_periods": 1, "dns_ttl_s": 1, "floor_s": 6}
    by_name = {s["name"]: s for s in summary["scenarios"]}
    assert list(by_name) == [SURGE, BLACKHOLE]  # in the order they ran
    bh = by_name[BLACKHOLE]
    assert [(f["kind"], f["target"]) for f in bh["faults"]] == [("block_region", "us-east-1")]
    assert bh["faults"][0]["rolled_back_at"] > bh["faults"][0]["injected_at"]
    for s in summary["scenarios"]:
        m = s["metrics"]
        assert 0 < m["detection_s"] <= m["failover_s"] <= m["rto_s"], m
        assert m["acked_writes"] > 0 and m["lost_acked_writes"] == 0 and m["divergent_keys"] == 0
    assert by_name[SURGE]["metrics"]["error_rate"] == 0.0 and 0.1 < bh["metrics"]["error_rate"] < 0.25


BROKEN_SUMMARIES = {
    "no verdict": (lambda s: s.pop("passed"), r"\(top level\): 'passed' is a required property"),
    "unknown outcome": (lambda s: s["scenarios"][0].update(outcome="green"), r"scenarios\[0\]\.outcome: 'green'"),
    "negative RTO": (lambda s: s["scenarios"][1]["metrics"].update(rto_s=-1.0), r"scenarios\[1\]\.metrics\.rto_s"),
    "error rate over 1": (lambda s: s["scenarios"][0]["metrics"].update(error_rate=21.1), r"metrics\.error_rate"),
    "fractional count": (lambda s: s["scenarios"][0]["metrics"].update(lost_acked_writes=0.5),
                         r"metrics\.lost_acked_writes"),
    "metric missing": (lambda s: s["scenarios"][0]["metrics"].pop("failover_s"), r"'failover_s' is a required"),
    "time not ISO": (lambda s: s.update(started_at="yesterday"), r"started_at: 'yesterday'"),
    "time without offset": (lambda s: s.update(finished_at="2026-11-25T10:51:04"), r"finished_at"),
    "check verdict a string": (lambda s: s["scenarios"][0]["checks"][0].update(valid="yes"), r"checks\[0\]\.valid"),
    "field not in the contract": (lambda s: s["scenarios"][0].update(colour="red"), r"'colour' was unexpected"),
    "no scenarios": (lambda s: s.update(scenarios=[]), r"scenarios: \[\] should be non-empty"),
}


@pytest.mark.parametrize("case", list(BROKEN_SUMMARIES))
def test_a_broken_summary_is_rejected_naming_the_field(rendered_run: Path, case: str, tmp_path: Path):
    good = json.loads((rendered_run / "summary.json").read_text())
    broken = copy.deepcopy(good)
    mutate, message = BROKEN_SUMMARIES[case]
    mutate(broken)
    with pytest.raises(ReportError, match=message):
        validate_summary(broken)
    p = tmp_path / "summary.json"
    p.write_text(json.dumps(broken))
    with pytest.raises(ReportError, match=r"^summary\.json: "):
        load_summary(p)
    validate_summary(good)  # the mutation, not the fixture, is what was rejected


# -- re-checking a stored run --------------------------------------------------------------------------------

def test_recheck_from_the_stored_run_reaches_the_recorded_verdict(stored_run: Path):
    recorded = {d.name: json.loads((d / "result.json").read_text()) for d in (stored_run / "scenarios").iterdir()}
    recorded_summary = json.loads((stored_run / "summary.json").read_text())
    (stored_run / "summary.json").unlink()  # it must come back from the data alone

    r = gameday("report", stored_run)
    assert r.exit_code == 0, r.output
    assert re.search(rf"{RUN_NAME}: PASSED", r.stdout)
    summary = json.loads((stored_run / "summary.json").read_text())
    assert summary["passed"] is recorded_summary["passed"] is True
    for sc in summary["scenarios"]:
        rec = recorded[sc["name"]]
        assert sc["outcome"] == rec["outcome"] == "passed"
        assert {c["name"]: c["valid"] for c in sc["checks"]} == {c["name"]: c["valid"] for c in rec["checks"]}
        for k in ("acked_writes", "lost_acked_writes", "divergent_keys"):
            assert sc["metrics"][k] == rec["metrics"][k], k

    # and the data checks really were re-run on the stored history and replicas, by the real checkers
    rc = recheck_run(load_run(stored_run))
    assert rc.checker_source == "gameday.assertions.checkers" and rc.agrees, rc.disagreements
    for name in (SURGE, BLACKHOLE):
        sources = {c["name"]: c["source"] for c in rc.scenarios[name].checks}
        assert sources["lost_acked_writes"] == sources["divergent_keys"] == "re-checked"
        assert rc.scenarios[name].metrics["acked_writes"] == recorded[name]["metrics"]["acked_writes"] > 0


def _acked_write(run: Path, scenario: str) -> dict:
    hist = read_jsonl(run / "scenarios" / scenario / "history.jsonl")
    return next(e for e in hist if e["type"] == "ok" and e["op"] == "write")


def lose_write_in_replicas(run: Path) -> str:
    """An acknowledged write that never reached either replica (both regions agree: no divergence)."""
    w = _acked_write(run, SURGE)
    p = run / "scenarios" / SURGE / "replicas.json"
    replicas = json.loads(p.read_text())
    for table in replicas.values():
        del table[w["key"]]
    p.write_text(json.dumps(replicas))
    return w["key"]


def acked_write_never_stored(run: Path) -> str:
    """The client history holds one more acknowledged write, which no replica has."""
    p = run / "scenarios" / SURGE / "history.jsonl"
    hist = read_jsonl(p)
    w = _acked_write(run, SURGE)
    inv = next(e for e in hist if e["type"] == "invoke" and e["id"] == w["id"])
    key, t = "lost-key-1", hist[-1]["time"]
    new_inv = dict(inv, id="lost:1", key=key, value="lost#1", time=t + 0.01)
    new_ok = dict(w, id="lost:1", key=key, value="lost#1", time=t + 0.02)
    write_jsonl(p, hist + [new_inv, new_ok])
    return key


@pytest.mark.parametrize("lose", [lose_write_in_replicas, acked_write_never_stored])
def test_a_stored_run_with_a_lost_acked_write_rechecks_to_fail(stored_run: Path, lose):
    key = lose(stored_run)
    r = gameday("report", stored_run)
    assert r.exit_code == 1, r.output
    assert "FAILED" in r.stdout and "x lost_acked_writes" in r.stdout
    summary = json.loads((stored_run / "summary.json").read_text())
    assert summary["passed"] is False
    surge = next(s for s in summary["scenarios"] if s["name"] == SURGE)
    assert surge["outcome"] == "failed"
    assert surge["metrics"]["lost_acked_writes"] == 1
    lost = next(c for c in surge["checks"] if c["name"] == "lost_acked_writes")
    assert lost["valid"] is False and key in lost["detail"]
    bh = next(s for s in summary["scenarios"] if s["name"] == BLACKHOLE)
    assert bh["outcome"] == "passed"  # only the scenario whose data lost the write fails
    page = (stored_run / "report.html").read_text()
    assert "recorded passed; re-check failed it" in page and "re-check disagrees with the recorded run" in page


# -- report.html in a real browser ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(chromium_path):
    # chromium_path (tests/parts.py): the browser is installed when it can be, else the test is skipped
    from playwright import sync_api as playwright

    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


PIXELS_JS = """async ({png, box}) => {
  // decode the screenshot in the browser (no image library in Python) and count pixel colours
  const img = new Image(); img.src = 'data:image/png;base64,' + png; await img.decode();
  const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const count = (x0, y0, w, h) => {
    const d = g.getImageData(x0, y0, w, h).data; let pink = 0, white = 0, n = 0; const colours = new Set();
    for (let i = 0; i < d.length; i += 4) {
      const [r, gg, b] = [d[i], d[i + 1], d[i + 2]]; n++; colours.add((r << 16) | (gg << 8) | b);
      if (r >= 235 && r - gg >= 12 && r - b >= 12) pink++;
      if (r > 250 && gg > 250 && b > 250) white++;
    }
    return {pink: pink / n, white: white / n, colours: colours.size};
  };
  const w = Math.max(2, Math.floor(box.w));
  return {inside: count(Math.floor(box.x), Math.floor(box.y), w, Math.floor(box.h)),
          left: count(Math.max(0, Math.floor(box.x) - 40), Math.floor(box.y), 30, Math.floor(box.h)),
          whole: count(0, 0, img.width, img.height)};
}"""


def test_report_html_renders_charts_with_fault_shading_in_chromium(rendered_run: Path, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    try:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        started = time.perf_counter()
        page.goto((rendered_run / "report.html").as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2", timeout=30_000)
        load_s = time.perf_counter() - started
        # a run directory outside any reports folder (a --run-dir elsewhere, a downloaded artifact): the
        # shared script went beside it, and the page under 1 MB drew from it
        assert [p.name for p in rendered_run.parent.glob("plotly*.js")] == [PLOTLY_JS_NAME]
        _report_size(rendered_run)
        assert page.locator("#plotly-missing").is_hidden()

        # verdict, cards with floor and budgets, checks table, links to Locust's report and logs
        assert page.inner_text("#verdict .big") == "PASSED"
        card = page.locator(f"section.card[id^=scenario-]:has(h2:text('{BLACKHOLE}'))")
        text = card.inner_text()
        for needle in ("DETECTION", "FAILOVER", "RTO", "RPO", "floor 6 s", "budget ≤ 25 s", "block_region"):
            assert needle in text, needle
        assert card.locator("table.checks tr").count() == 1 + 11
        assert card.locator("a[href$='locust_stats.csv']").count() == 1
        assert page.locator("a[href^='env/logs/']").count() >= 3

        # every scenario's chart has its traces: requests/s per region, errors, p50/p99, alarm/DNS bands, Lambda
        for idx, name in ((0, SURGE), (1, BLACKHOLE)):
            traces = page.evaluate(f"document.getElementById('chart-{idx}').data.map(t => t.name)")
            for want in ("us-east-1 req/s", "us-west-2 req/s", "us-east-1 p50", "us-east-1 p99", "alarm OK",
                         "alarm ALARM", "DNS → us-east-1", "DNS → us-west-2", "Lambda ok"):
                assert want in traces, (name, want, traces)
        assert "errors/s" in page.evaluate("document.getElementById('chart-1').data.map(t => t.name)")

        # the fault window: a plotly shape rendered in the DOM, red-tinted, with real size
        shapes = page.locator("#chart-1 .shapelayer path")
        assert shapes.count() == 1, "one fault (block_region) -> one shaded window"
        fill = shapes.first.evaluate("p => getComputedStyle(p).fill || p.getAttribute('style')")
        assert "214, 39, 40" in fill, fill
        box = shapes.first.bounding_box()
        assert box and box["width"] > 50 and box["height"] > 300, box
        assert page.locator("#chart-0 .shapelayer path").count() == 0  # the surge has no fault
        assert any("block_region us-east-1" in t for t in page.locator("#chart-1 .annotation-text").all_text_contents())

        chart = page.locator("#chart-1")
        chart.scroll_into_view_if_needed()
        shot = chart.screenshot(path=str(ARTIFACTS / "report-blackhole-chart.png"))
        chart_box, box = chart.bounding_box(), shapes.first.bounding_box()   # after scrolling
        rel = {"x": box["x"] - chart_box["x"], "y": box["y"] - chart_box["y"], "w": box["width"], "h": box["height"]}
        px = page.evaluate(PIXELS_JS, {"png": base64.b64encode(shot).decode(), "box": rel})
        # inside the shaded window most pixels are the pale red of the fault fill; just left of it, none
        assert px["inside"]["pink"] > 0.4, px
        assert px["left"]["pink"] < 0.05, px
        assert px["whole"]["white"] < 0.97 and px["whole"]["colours"] > 50, px   # a drawn chart, not a blank box
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        assert not errors, errors
        print(f"report.html ({(rendered_run / 'report.html').stat().st_size / 1e6:.1f} MB) loaded and plotted "
              f"in {load_s:.2f}s")
    finally:
        page.close()


# -- plotly.js: one shared copy, not one per report ------------------------------------------------------------

REPORT_MAX_BYTES = 1_000_000
CHARTS_DRAWN = "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2"


def _open(browser, html: Path):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(html.as_uri())
    return page, errors


def _assert_draws(browser, html: Path) -> None:
    page, errors = _open(browser, html)
    try:
        page.wait_for_function(CHARTS_DRAWN, timeout=30_000)
        assert page.locator("#plotly-missing").is_hidden()
        assert not errors, errors
    finally:
        page.close()


def _report_size(run: Path) -> int:
    size = (run / "report.html").stat().st_size
    assert size <= REPORT_MAX_BYTES, f"{run / 'report.html'}: {size} bytes"
    return size


def load_history_of(tmp_path: Path, *runs: Path):
    hist = tmp_path / "reports" / "history.jsonl"
    for r in runs:
        append_history(json.loads((r / "summary.json").read_text()), hist, run_dir=r,
                       git={"commit": None, "dirty": None})
    return load_history(hist)


def test_runs_in_a_reports_folder_share_one_plotly_script(tmp_path: Path, browser):
    """Two runs under reports/runs/ (re-rendered by `gameday report`): one script beside them, each
    report under 1 MB and drawn by the browser from that script; the trend page uses the same copy."""
    runs = tmp_path / "reports" / "runs"
    runs.mkdir(parents=True)
    first = extract(tmp_path / "a").rename(runs / "20261201T000000Z-aaaa")
    second = extract(tmp_path / "b").rename(runs / "20261202T000000Z-bbbb")
    (runs / "latest").symlink_to(second.name)

    assert gameday("report", first).exit_code == 0
    script = runs / PLOTLY_JS_NAME
    written = script.stat()
    assert written.st_size > 3_000_000   # the whole library, not a stub
    assert gameday("report", runs / "latest").exit_code == 0   # the default argument's form: through the link
    assert script.stat().st_ino == written.st_ino and script.stat().st_mtime_ns == written.st_mtime_ns  # not rewritten
    trend = write_trend(load_history_of(tmp_path, first, second), tmp_path / "reports" / "trend.html")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("plotly*.js")) == \
        [f"reports/runs/{PLOTLY_JS_NAME}"]   # one copy for both runs and the trend
    sizes = [_report_size(r) for r in (first, second)]
    assert f'src="../{PLOTLY_JS_NAME}"' in (first / "report.html").read_text()
    assert f'src="runs/{PLOTLY_JS_NAME}"' in trend.read_text()
    print(f"report.html: {sizes[0]} bytes (plotly.js shared: {written.st_size} bytes, once per reports folder)")
    _assert_draws(browser, runs / "latest" / "report.html")   # the browser resolves ../ through the link
    _assert_draws(browser, trend)


@contextlib.contextmanager
def read_only(folder: Path):
    """No new files in folder: permission bits, or for root (who writes through them) the immutable attribute."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip(f"chattr +i not supported on {folder}'s file system")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_run_directory_whose_parent_is_read_only_carries_its_own_script(tmp_path: Path):
    run = extract(tmp_path / "mounted")
    with read_only(tmp_path / "mounted"):
        finalize_run(run)
    assert not (tmp_path / "mounted" / PLOTLY_JS_NAME).exists()
    assert (run / PLOTLY_JS_NAME).stat().st_size > 3_000_000
    assert f'src="{PLOTLY_JS_NAME}"' in (run / "report.html").read_text()
    _report_size(run)


def test_a_report_whose_script_is_missing_says_so_and_rerendering_fixes_it(stored_run: Path, browser):
    finalize_run(stored_run)
    script = stored_run.parent / PLOTLY_JS_NAME
    whole = script.read_bytes()
    # deleted, or an interrupted copy of the folder (the file is there but ends mid-way)
    for damage, fix in (("deleted", script.unlink), ("cut short", lambda: script.write_bytes(whole[: len(whole) // 2]))):
        fix()
        page, _ = _open(browser, stored_run / "report.html")
        try:
            box = page.locator("#plotly-missing")
            box.wait_for(state="visible", timeout=10_000)
            text = box.inner_text()
            assert f"plotly.js missing at {script}" in text, (damage, text)
            assert f"run gameday report {stored_run} to re-render" in text, (damage, text)
            assert page.locator(".main-svg").count() == 0
            assert page.inner_text("#verdict .big") == "PASSED"   # the rest of the page is still there
        finally:
            page.close()
    r = gameday("report", stored_run)
    assert r.exit_code == 0, r.output
    assert script.read_bytes() == whole
    _assert_draws(browser, stored_run / "report.html")


# -- history and trend ---------------------------------------------------------------------------------------

def _runs(summary: dict, failover: list[float], lost: list[int] | None = None,
          error_rate: list[float] | None = None) -> list[dict]:
    """History lines for len(failover) runs of the real run's scenarios, an hour apart, with the
    surge scenario's failover (and lost writes, error rate) as given; the rest as measured."""
    out = []
    for i, f in enumerate(failover):
        s = copy.deepcopy(summary)
        s["run_id"] = f"run-{i:02d}"
        s["started_at"] = f"2026-11-{10 + i // 24:02d}T{i % 24:02d}:00:00+00:00"
        surge = next(sc for sc in s["scenarios"] if sc["name"] == SURGE)
        surge["metrics"]["failover_s"] = f
        if lost is not None:
            surge["metrics"]["lost_acked_writes"] = lost[i]
        if error_rate is not None:
            surge["metrics"]["error_rate"] = error_rate[i]
        out += history_lines(s, run_dir=f"reports/runs/run-{i:02d}", git={"commit": f"{i:040x}", "dirty": False})
    return out


STEADY = [10.3, 11.7, 10.9, 10.5, 11.2, 10.8, 11.0, 10.6]   # the real runs' spread (two runs measured 10.3, 11.7)


@pytest.mark.parametrize("newest, flagged", [(14.9, True), (12.9, False), (None, False)])
def test_trend_flags_a_failover_regression_and_only_that(rendered_run: Path, tmp_path: Path, newest, flagged):
    summary = json.loads((rendered_run / "summary.json").read_text())
    hist = tmp_path / "history.jsonl"
    write_jsonl(hist, _runs(summary, STEADY + [newest]))
    out = tmp_path / "trend.html"
    r = gameday("report", "--trend", "--history", hist, "--out", out)
    median = sorted(STEADY[-BASELINE_RUNS:])[BASELINE_RUNS // 2]   # 10.9 s; the limit is 1.2 x = 13.08 s
    assert median == 10.9
    assert r.exit_code == (3 if flagged else 0), r.output
    surge_line = next(ln for ln in r.stdout.splitlines() if SURGE in ln)
    assert surge_line.split()[0] == ("REGRESSION" if flagged else "ok")
    bh_line = next(ln for ln in r.stdout.splitlines() if BLACKHOLE in ln)
    assert bh_line.split()[0] == "ok" and "9 runs" in bh_line
    page = out.read_text()
    assert ("failover_s 14.90s is 37% above the median 10.90s of the previous 7 runs" in r.stdout) is flagged
    assert ("<div class=\"big\">REGRESSION</div>" in page) is flagged
    assert ("failover_s 14.90s is 37% above the median" in page) is flagged


def test_trend_flags_lost_writes_after_clean_runs_but_not_tiny_error_noise(rendered_run: Path, tmp_path: Path):
    summary = json.loads((rendered_run / "summary.json").read_text())
    hist = tmp_path / "history.jsonl"
    # error rate 0.1% -> 0.2%: 2x the median, but 0.1 percentage point is noise, not a trend
    write_jsonl(hist, _runs(summary, STEADY + [11.0], lost=[0] * 8 + [2], error_rate=[0.001] * 8 + [0.002]))
    t = load_history(hist)
    assert t.regressions == [f"{SURGE}: lost 2 acknowledged write(s); the previous 7 runs lost none (run run-08)"]
    # lost writes already in the baseline: not a new regression (the run's own verdict fails it)
    write_jsonl(hist, _runs(summary, STEADY + [11.0], lost=[0, 0, 0, 0, 0, 0, 0, 1, 2]))
    assert load_history(hist).regressions == []
    # an error-rate jump that is more than noise is flagged
    write_jsonl(hist, _runs(summary, STEADY + [11.0], error_rate=[0.01] * 8 + [0.03]))
    assert [r.split(" (")[0] for r in load_history(hist).regressions] == [f"{SURGE}: error rate 3.00% > 1.50%"]
    # a skipped run measured nothing: its zeros are no baseline, and it is never a regression itself
    lines = _runs(summary, STEADY + [11.0], lost=[0] * 8 + [2])
    for ln in lines:
        if ln["scenario"] == SURGE and ln["run_id"] in ("run-02", "run-05", "run-06"):
            ln.update(outcome="skipped", failover_s=None, rto_s=None)
    write_jsonl(hist, lines)
    assert load_history(hist).regressions == [f"{SURGE}: lost 2 acknowledged write(s); the previous 5 runs lost none (run run-08)"]
    # two earlier runs are too few to call a trend
    write_jsonl(hist, _runs(summary, [10.0, 10.0, 30.0]))
    assert load_history(hist).regressions == []
    # runs against another environment are their own series, never the local runs' baseline
    aws = [dict(ln, env="aws", run_id="aws-" + ln["run_id"]) for ln in _runs(summary, [60.0] * 4)]
    write_jsonl(hist, _runs(summary, STEADY) + aws)
    t = load_history(hist)
    assert sorted(t.scenarios) == sorted(f"{n} [{e}]" for n in (SURGE, BLACKHOLE) for e in ("local", "aws"))
    assert t.regressions == []


def test_trend_page_marks_the_regression_in_chromium(rendered_run: Path, tmp_path: Path, browser):
    summary = json.loads((rendered_run / "summary.json").read_text())
    hist = tmp_path / "history.jsonl"
    write_jsonl(hist, _runs(summary, STEADY + [14.9]))
    out = write_trend(load_history(hist), tmp_path / "trend.html")   # no runs/ beside it: its own script copy
    assert (tmp_path / PLOTLY_JS_NAME).is_file()
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    try:
        page.goto(out.as_uri())
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2", timeout=30_000)
        assert page.inner_text("#verdict .big") == "REGRESSION"
        card = page.locator(f"section[data-scenario='{SURGE}']")
        assert "regression in the newest run" in card.inner_text()
        names = card.locator(".js-plotly-plot").evaluate("d => d.data.map(t => t.name)")
        assert "regression" in names and any(n.startswith("regression limit") for n in names)
        # the regression marker is drawn: one point, on the failover row, at 14.9 s
        marker = card.locator(".js-plotly-plot").evaluate(
            "d => d.data.filter(t => t.name === 'regression').map(t => [t.x.length, t.y[0], t.yaxis])")
        assert marker == [[1, 14.9, "y"]]
        assert card.locator(".scatterlayer .trace .points path").count() >= 9 * 4
        ok_card = page.locator(f"section[data-scenario='{BLACKHOLE}']")
        assert "regression" not in ok_card.locator("h2").inner_text().lower()
        page.screenshot(path=str(ARTIFACTS / "trend.png"), full_page=True)
    finally:
        page.close()


def test_each_run_appends_one_line_per_scenario_once(rendered_run: Path, tmp_path: Path):
    summary = json.loads((rendered_run / "summary.json").read_text())
    hist = tmp_path / "reports" / "history.jsonl"
    written = append_history(summary, hist, run_dir=rendered_run)
    assert [ln["scenario"] for ln in written] == [SURGE, BLACKHOLE]
    assert append_history(summary, hist, run_dir=rendered_run) == []  # re-rendering a run is still one run
    lines = read_jsonl(hist)
    assert len(lines) == 2
    line = lines[1]
    m = next(s for s in summary["scenarios"] if s["name"] == BLACKHOLE)["metrics"]
    assert line["run_id"] == RUN_NAME and line["outcome"] == "passed" and line["env"] == "local"
    assert (line["failover_s"], line["rto_s"], line["error_rate"], line["lost_acked_writes"]) == \
        (m["failover_s"], m["rto_s"], m["error_rate"], m["lost_acked_writes"])
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert line["git_commit"] == head.stdout.strip()
    # a run killed mid-append left half a line: the next run's lines still start on their own line
    with open(hist, "a") as fh:
        fh.write('{"run_id": "killed", "scen')
    append_history(dict(summary, run_id="next-run"), hist)
    t = load_history(hist)
    assert [p.run_id for p in t.scenarios[SURGE]] == [RUN_NAME, "next-run"]
    assert "killed" not in hist.read_text() and not t.warnings


# -- corrupted or partial run directories ----------------------------------------------------------------------

def _truncate_mid_history(run: Path) -> None:
    p = run / "scenarios" / SURGE / "history.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    lines[100] = lines[100][: len(lines[100]) // 2] + "\n"
    p.write_text("".join(lines))


def _truncate_result(run: Path) -> None:
    p = run / "scenarios" / BLACKHOLE / "result.json"
    p.write_text(p.read_text()[:300])


def _edit_result(run: Path, **changes) -> None:
    p = run / "scenarios" / BLACKHOLE / "result.json"
    p.write_text(json.dumps({**json.loads(p.read_text()), **changes}))


def _rm(rel: str):
    def go(run: Path) -> None:
        p = run / rel
        if p.is_dir():
            import shutil
            shutil.rmtree(p)
        else:
            p.unlink()
    return go


CORRUPTIONS = {
    "result.json missing": (_rm(f"scenarios/{BLACKHOLE}/result.json"),
                            rf"scenarios/{BLACKHOLE}/result\.json: missing"),
    "no scenarios at all": (_rm("scenarios"), r"scenarios: missing; not a gameday run directory"),
    "history line cut in the middle": (_truncate_mid_history, rf"scenarios/{SURGE}/history\.jsonl:101: not valid JSON"),
    "result.json cut short": (_truncate_result, rf"{BLACKHOLE}/result\.json: not valid JSON at line \d+"),
    "result.json wrong schema": (lambda r: _edit_result(r, outcome="green"),
                                 r"result\.json: field 'outcome' must be one of passed, failed, error, skipped"),
    "metric not a number": (lambda r: _edit_result(r, metrics={"rto_s": "fast"}), r"metrics\.rto_s must be a number"),
    "events.jsonl wrong schema": (lambda r: (r / "env/events.jsonl").write_text('{"seq": 1, "time": 1}\n' * 3),
                                  r"env/events\.jsonl:1: unknown event kind None"),
    "event field of the wrong type": (lambda r: (r / "env/events.jsonl").write_text(
        '{"seq": 1, "time": 1, "kind": "alarm", "region": "us-east-1", "alarm": "a", "old": "OK", "new": 5}\n'),
        r"env/events\.jsonl:1: event 'alarm': field 'new': Input should be a valid string"),
    "journal step without its fault": (lambda r: (r / "journal.jsonl").write_text(
        '{"seq": 1, "time": 1.5, "process": "nemesis", "action": "intent", "scenario": null, "detail": {}}\n'),
        r"journal\.jsonl:1: journal line: field 'fault': Field required"),
    "replicas.json not an object": (lambda r: (r / f"scenarios/{SURGE}/replicas.json").write_text("[1, 2]"),
                                    r"replicas\.json: expected a JSON dict, got list"),
    "empty result.json": (lambda r: (r / f"scenarios/{SURGE}/result.json").write_text(""), r"empty file"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corrupted_run_gives_one_clear_line_and_exit_2(stored_run: Path, case: str):
    corrupt, message = CORRUPTIONS[case]
    corrupt(stored_run)
    r = gameday("report", stored_run)
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit)  # no exception escaped: typer.Exit(2)
    err = r.stderr.strip()
    assert "\n" not in err and err.startswith("gameday: error: "), err
    assert re.search(message, err), err
    assert "Traceback" not in r.output


def test_a_truncated_last_line_is_a_warning_not_an_error(stored_run: Path):
    """A process SIGKILLed mid-write leaves half a last line: the run can still be explained."""
    p = stored_run / "env" / "events.jsonl"
    p.write_text(p.read_text() + '{"seq": 999, "kind": "alar')
    r = gameday("report", stored_run)
    assert r.exit_code == 0, r.output
    assert "last line was cut short" in (stored_run / "report.html").read_text()


def test_the_real_command_line_on_a_partial_run(tmp_path: Path):
    """The installed entry point (a new process): exit 2 and one line on stderr, for a run dir and
    for an unreadable history."""
    (tmp_path / "run" / "scenarios" / "x").mkdir(parents=True)
    r = subprocess.run([sys.executable, "-m", "gameday.cli", "report", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "scenarios/x/result.json: missing" in r.stderr
    bad = tmp_path / "history.jsonl"
    bad.write_text('{"run_id": "a", "scenario": "s", "outcome": "passed", "started_at": "2026-11-25T00:00:00Z"}\n'
                   '{"run_id": "b", "scen\n'
                   '{"run_id": "c", "scenario": "s", "outcome": "passed", "started_at": "2026-11-25T01:00:00Z"}\n')
    r = subprocess.run([sys.executable, "-m", "gameday.cli", "report", "--trend", "--history", str(bad),
                        "--out", str(tmp_path / "t.html")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"{bad}:2: not valid JSON" in r.stderr


# -- timeline.jsonl ------------------------------------------------------------------------------------------

def test_timeline_holds_every_kind_of_event_on_one_axis(rendered_run: Path):
    lines = read_jsonl(rendered_run / "timeline.jsonl")
    assert [ln["time"] for ln in lines] == sorted(ln["time"] for ln in lines)
    kinds = {(ln["source"], ln["kind"]) for ln in lines}
    for want in (("client", "client"), ("journal", "fault"), ("env", "alarm"), ("env", "lambda_invocation"),
                 ("env", "dns_change"), ("env", "ecs"), ("env", "replication_lag"), ("scenario", "scenario")):
        assert want in kinds, want
    # faults: injected then rolled back; alarms: transitions with old/new (the evaluator's own "source"
    # field kept apart from the line's origin); Lambda: outcome and result; DNS: the move to us-west-2
    fault = [(ln["action"], ln["fault_kind"]) for ln in lines if ln["source"] == "journal"]
    assert fault == [("intent", "block_region"), ("injected", "block_region"), ("rolled_back", "block_region")]
    assert [ln["action"] for ln in lines if ln["source"] == "env" and ln["kind"] == "fault"] == ["inject", "rollback"]
    alarm = next(ln for ln in lines if ln["kind"] == "alarm" and ln["new"] == "ALARM")
    assert alarm["source"] == "env" and alarm["event_source"] == "evaluation" and alarm["old"] == "OK"
    lam = [ln for ln in lines if ln["kind"] == "lambda_invocation"]
    assert all(ln["outcome"] == "ok" and "result" in ln for ln in lam)
    assert any(ln["result"].get("moved") for ln in lam)
    assert ["127.0.2.1"] in [ln["new"] for ln in lines if ln["kind"] == "dns_change"]
    assert all(isinstance(ln["lag_s"], (int, float)) for ln in lines if ln["kind"] == "replication_lag")
    # client history per 1 s bucket and region: every completed operation counted exactly once
    for name in (SURGE, BLACKHOLE):
        hist = read_jsonl(rendered_run / "scenarios" / name / "history.jsonl")
        done = [e for e in hist if e["type"] != "invoke"]
        buckets = [ln for ln in lines if ln["kind"] == "client" and ln["scenario"] == name]
        assert sum(b["requests"] for b in buckets) == len(done)
        assert sum(b["fail"] + b["info"] for b in buckets) == sum(1 for e in done if e["type"] in ("fail", "info"))
        assert {b["region"] for b in buckets} == {"us-east-1", "us-west-2"}
        assert all(b["p50_s"] is None or b["p50_s"] <= b["p99_s"] for b in buckets)


def test_ecs_task_stops_and_starts_are_marked_on_the_chart(stored_run: Path):
    from gameday.reports.html import scenario_faults, scenario_window, timeline_figure

    run = load_run(stored_run)
    bh = next(s for s in run.scenarios if s.name == BLACKHOLE)
    t = bh.started + 5
    # what environments/local/ecs.py emits when a task is stopped and its replacement starts
    run.events += [{"kind": "ecs", "action": "task_stopped", "region": "us-east-1", "task": "t-1", "az": "us-east-1a",
                    "reason": "Task stopped by user", "time": t},
                   {"kind": "ecs", "action": "task_started", "region": "us-east-1", "task": "t-2", "az": "us-east-1b",
                    "reason": "service scheduler", "time": t + 1},
                   {"kind": "ecs", "action": "scaled", "region": "us-east-1", "old": 2, "new": 3, "time": t + 2}]
    summary_faults = json.loads((stored_run / "summary.json").read_text())["scenarios"][1]["faults"]
    faults = scenario_faults(run, bh, summary_faults)
    fig = timeline_figure(run, bh, faults, scenario_window(bh, faults))
    marks = {tr.name: list(tr.x) for tr in fig.data if tr.name and tr.name.startswith("task ")}
    assert marks == {"task stopped": [5.0], "task started": [6.0]}


def test_route53_health_checks_are_drawn_as_a_band(stored_run: Path):
    from gameday.reports.html import scenario_faults, scenario_window, timeline_figure

    run = load_run(stored_run)
    bh = next(s for s in run.scenarios if s.name == BLACKHOLE)
    t = bh.started + 5
    # what environments/local/healthchecks.py emits under failover routing: changes only
    run.events += [{"kind": "route53_health", "region": "us-east-1", "health_check_id": "hc-1", "healthy": False,
                    "time": t},
                   {"kind": "route53_health", "region": "us-east-1", "health_check_id": "hc-1", "healthy": True,
                    "time": t + 3}]
    summary_faults = json.loads((stored_run / "summary.json").read_text())["scenarios"][1]["faults"]
    faults = scenario_faults(run, bh, summary_faults)
    fig = timeline_figure(run, bh, faults, scenario_window(bh, faults))
    bands = {tr.name: [x for x in tr.x if x is not None] for tr in fig.data
             if tr.name and tr.name.startswith("health check ")}
    assert set(bands) == {"health check healthy", "health check unhealthy"}, bands
    # unhealthy exactly from the first change to the second
    assert min(bands["health check unhealthy"]) == 5.0 and max(bands["health check unhealthy"]) == 8.0


def _band_kind(event: str):
    from gameday.reports.html import band_kinds

    kinds = band_kinds({"127.0.1.1": "us-east-1", "127.0.2.1": "us-west-2"}, {"us-east-1": "#111", "us-west-2": "#222"})
    return next(k for k in kinds if k.event == event)


# (events at t = 100 + x; the window runs from x = -2 to x = 20): the rows, then per legend entry its colour
# and the band's [start, end] pairs in seconds since t0
BANDS = {
    "alarm": ([{"kind": "alarm", "alarm": "gameday-request-count-us-east-1", "region": "us-east-1", "old": "OK",
                "new": "ALARM", "time": 105.0},
               {"kind": "alarm", "alarm": "gameday-request-count-us-east-1", "region": "us-east-1", "old": "ALARM",
                "new": "OK", "time": 112.0},
               # a transition before the window only sets the state the band opens with
               {"kind": "alarm", "alarm": "gameday-errors", "region": "us-west-2", "old": None, "new": "ALARM", "time": 50.0}],
              ["alarm errors (us-west-2)", "alarm request-count-us-east-1"],
              {"alarm ALARM": ("#D62728", [[-2.0, 20.0], [5.0, 12.0]]), "alarm OK": ("#2CA02C", [[-2.0, 5.0], [12.0, 20.0]])}),
    "dns_change": ([{"kind": "dns_change", "name": "api.gameday.test.", "old": ["127.0.1.1"], "new": ["127.0.2.1"],
                     "time": 108.0}],
                   ["DNS api.gameday.test"],
                   {"DNS → us-east-1": ("#111", [[-2.0, 8.0]]), "DNS → us-west-2": ("#222", [[8.0, 20.0]])}),
    "route53_health": ([{"kind": "route53_health", "region": "us-east-1", "healthy": False, "time": 103.0},
                        {"kind": "route53_health", "region": "us-east-1", "healthy": True, "time": 106.0}],
                       ["R53 health us-east-1"],
                       {"health check healthy": ("#2CA02C", [[-2.0, 3.0], [6.0, 20.0]]),
                        "health check unhealthy": ("#D62728", [[3.0, 6.0]])}),
}


@pytest.mark.parametrize("event", list(BANDS))
def test_one_band_function_draws_each_kind_of_band(event):
    from gameday.reports.html import Window, state_bands

    events, want_rows, want = BANDS[event]
    shown: set[str] = set()
    rows, traces = state_bands(_band_kind(event), events + [{"kind": "other", "time": 104.0}], Window(100.0, 98.0, 120.0),
                               shown)
    assert rows == want_rows
    got = {}
    for tr in traces:
        xs = [x for x in tr.x if x is not None]
        got.setdefault(tr.name, (tr.line.color, []))[1].extend(sorted([xs[i], xs[i + 1]] for i in range(0, len(xs), 2)))
        assert set(tr.y) - {None} <= set(want_rows) and tr.line.width == 14
    assert {k: (c, sorted(s)) for k, (c, s) in got.items()} == want
    assert shown == set(want)   # one legend entry per state name, shared with the chart's other bands
    assert [tr.showlegend for tr in state_bands(_band_kind(event), events, Window(100.0, 98.0, 120.0), shown)[1]] == \
        [False] * len(traces)


def test_the_report_escapes_the_runs_own_text(stored_run: Path, browser):
    """Scenario names, messages and check details are the run's data: a name with <script> shows as text
    and runs nothing."""
    evil = "<script>alert('name')</script>surge"
    result_path = stored_run / "scenarios" / SURGE / "result.json"
    result = json.loads(result_path.read_text())
    result.update(name=evil, message="AssertionError: <img src=x onerror=alert('message')> & more")
    result["checks"][0]["detail"] = "</td><script>alert('detail')</script>"
    result_path.write_text(json.dumps(result))
    finalize_run(stored_run)
    text = (stored_run / "report.html").read_text()
    for raw in ("<script>alert(", "<img src=x", "</td><script>"):
        assert raw not in text, raw
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;surge" in text
    page, errors = _open(browser, stored_run / "report.html")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.wait_for_function(CHARTS_DRAWN, timeout=30_000)
        card = page.locator("section.card[id^=scenario-]").filter(has_text="surge").first
        assert card.locator("h2").inner_text().startswith(evil)
        assert "<img src=x onerror=alert('message')> & more" in card.locator("pre.message").inner_text()
        assert "</td><script>alert('detail')</script>" in card.locator("td.detail").first.inner_text()
        assert page.locator("img").count() == 0 and not dialogs and not errors, (dialogs, errors)
    finally:
        page.close()


# -- the nightly workflow ------------------------------------------------------------------------------------

def test_nightly_workflow_runs_the_suite_and_keeps_its_evidence_on_failure():
    yaml = pytest.importorskip("yaml")
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    triggers = wf[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    steps = wf["jobs"]["resilience"]["steps"]
    runs = [s.get("run", "") for s in steps]
    install = next(i for i, r in enumerate(runs) if "pip install" in r and ".[dev]" in r)
    suite = next(i for i, r in enumerate(runs) if "gameday run" in r)
    trend = next(i for i, r in enumerate(runs) if "gameday report --trend" in r)
    assert install < suite < trend
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    junit = next(s for s in steps if s.get("uses", "").startswith(("mikepenz/action-junit-report@",
                                                                    "dorny/test-reporter@")))
    for s in (upload, junit, steps[trend]):
        assert s["if"].startswith("always()"), s  # a failed suite is the run to keep
    assert "GAMEDAY_RUN_DIR" in upload["with"]["path"] and "reports/trend.html" in upload["with"]["path"]
    # the reports' shared plotly.js (reports/html.py), or the downloaded pages draw no charts
    assert "reports/runs/plotly-*.min.js" in upload["with"]["path"].splitlines()
    assert "junit.xml" in junit["with"]["report_paths"]
    locate = next(s for s in steps if "readlink reports/runs/latest" in s.get("run", ""))
    assert steps.index(locate) < steps.index(upload)
    assert wf["permissions"]["checks"] == "write"


def test_tasks_over_time_are_drawn_per_region_from_the_ecs_events(stored_run: Path):
    """The tasks panel replays the `ecs` events: RUNNING tasks per region as steps (from the count
    when the window opens), and target tracking's scaling decisions as marks."""
    from gameday.reports.html import scenario_faults, scenario_window, task_counts, timeline_figure

    run = load_run(stored_run)
    bh = next(s for s in run.scenarios if s.name == BLACKHOLE)
    t = bh.started + 5
    before = [{"kind": "ecs", "action": "task_running", "region": "us-west-2", "task": f"w-{i}", "time": bh.started - 60}
              for i in range(2)]
    run.events = [e for e in run.events if e["kind"] != "ecs"] + before + [
        {"kind": "ecs", "action": "scaled", "region": "us-west-2", "old": 2, "new": 4, "reason": "target tracking",
         "time": t},
        # started (provisioning) is not RUNNING yet; a task stopped before it ran never counted
        {"kind": "ecs", "action": "task_started", "region": "us-west-2", "task": "w-2", "time": t + 0.5},
        {"kind": "ecs", "action": "task_running", "region": "us-west-2", "task": "w-2", "time": t + 2},
        {"kind": "ecs", "action": "task_running", "region": "us-west-2", "task": "w-3", "time": t + 3},
        {"kind": "ecs", "action": "task_stopped", "region": "us-west-2", "task": "w-9", "time": t + 3.5},
        {"kind": "ecs", "action": "task_stopped", "region": "us-west-2", "task": "w-0", "time": t + 4},
    ]
    assert [n for _, n in task_counts(run.events)["us-west-2"]] == [1, 2, 3, 4, 3]
    summary_faults = json.loads((stored_run / "summary.json").read_text())["scenarios"][1]["faults"]
    faults = scenario_faults(run, bh, summary_faults)
    w = scenario_window(bh, faults)
    fig = timeline_figure(run, bh, faults, w)
    steps = next(tr for tr in fig.data if tr.name == "us-west-2 tasks")
    assert list(steps.y) == [2, 3, 4, 3, 3] and steps.line.shape == "hv"
    assert list(steps.x)[1:4] == [7.0, 8.0, 9.0]
    star = next(tr for tr in fig.data if tr.name == "desired count set")
    assert list(star.x) == [5.0] and list(star.y) == [4] and "desired 2 → 4" in star.text[0]
    # nothing changes, nothing scaled in the window: no tasks panel
    run.events = [e for e in run.events if e["kind"] != "ecs"] + before
    quiet = timeline_figure(run, bh, faults, w)
    assert not any(tr.name and tr.name.endswith(" tasks") for tr in quiet.data)
