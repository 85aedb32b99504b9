"""The Chaos tab of Locust's web UI in a real headless Chromium (Debian's, driven by Playwright),
against a real local environment and a real Locust process, both started by `gameday up --web`:
start a swarm from the UI, inject block_region from the tab, watch the health alarm go to ALARM
and the DNS answer switch in the panel, roll back from the tab, watch the alarm recover.
Off loopback: Locust refuses to start without a token, and with one, fault requests without
it are refused (the test binds 0.0.0.0 and only ever connects to 127.0.0.1).

Screenshots and the measured times go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from gameday.faults import fault_classes, fault_kinds, read_journal, stop_tasks
from gameday.faults.base import FaultError
from gameday import procs
from gameday.config import load_config
from gameday.net import free_port
from gameday.loadgen.chaos_ui import fault_from_form, fault_schema, is_loopback

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PROFILE = load_config(None).profile("local")
# from a fault to the panel showing its effect: targets fail their health checks, HealthyHostCount
# is below 1 for a period, the alarm is evaluated, the Lambda moves the record, DNS is refreshed;
# doubled for a 2-core machine that other test runs share
EFFECT_DEADLINE_S = 2 * (PROFILE.floor_s + PROFILE.period_s
                         + PROFILE.health_check_interval_s * max(PROFILE.unhealthy_threshold, PROFILE.healthy_threshold))
START_DEADLINE_S = 90.0       # environments/local START_TIMEOUT_S: moto, provisioning, tasks
UI_DEADLINE_S = 20.0          # Locust's start, a page load, one poll of the panel


def package_fault_kinds() -> tuple[str, ...]:
    """The faults the Locust process knows: those of the faults package (other tests in this pytest
    process register faults of their own, e.g. tests/test_faults.py's test_probe)."""
    return tuple(k for k, cls in fault_classes().items() if cls.__module__.startswith("gameday.faults."))


def eventually(deadline_s: float, interval_s: float = 0.2):
    return retry(stop=stop_after_delay(deadline_s), wait=wait_fixed(interval_s), reraise=True,
                 retry=retry_if_exception_type(AssertionError))


def web_up(url: str, deadline_s: float = UI_DEADLINE_S, proc: subprocess.Popen | None = None) -> None:
    @eventually(deadline_s, 0.2)
    def answers():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode} before its web UI answered")
        try:
            requests.get(url + "/chaos/static/chaos.js", timeout=2).raise_for_status()
        except requests.RequestException as e:
            raise AssertionError(f"web UI not up at {url}: {e}") from None

    answers()


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no {path})"


# -- pure parts ------------------------------------------------------------------------------------------------

def test_loopback_means_127_0_0_0_8_and_ipv6_loopback_only():
    for host in ("127.0.0.1", "127.3.2.1", "localhost", "::1", "[::1]"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "", "*", "::", "10.0.0.5", "192.168.1.2", "example.com", "localhost.evil.com"):
        assert not is_loopback(host), host


def test_schema_lists_every_registered_fault_with_every_parameter():
    schema = {s["kind"]: s for s in fault_schema(("us-east-1", "us-west-2"))}
    assert set(schema) == set(fault_kinds())
    block = {f["name"]: f for f in schema["block_region"]["fields"]}
    assert block["region"]["choices"] == ["us-east-1", "us-west-2"] and block["region"]["required"]
    assert block["mode"]["choices"] == ["hang", "refuse"] and block["mode"]["default"] == "hang"
    assert block["data_plane"]["type"] == "bool" and block["data_plane"]["default"] is True
    stop = {f["name"]: f for f in schema["stop_tasks"]["fields"]}
    assert (stop["count"]["type"], stop["count"]["optional"]) == ("int", True)
    api = {f["name"]: f for f in schema["api_fault"]["fields"]}
    assert "kind" not in api and api["effect"]["choices"] == ["error", "throttle", "latency", "blackhole"]
    # API faults may name every region, and Route 53's home even where the service does not run
    assert fault_schema(("us-west-2",))[0]["kind"] == "api_fault"
    assert {f["name"]: f for f in fault_schema(("us-west-2",))[0]["fields"]}["region"]["choices"] == \
        ["*", "us-west-2", "us-east-1"]
    assert (api["rate"]["type"], api["rate"]["default"], api["rate"]["required"]) == ("float", 1.0, False)
    pause = {f["name"]: f for f in schema["pause_replication"]["fields"]}
    assert pause["source"]["choices"] == pause["destination"]["choices"] == ["us-east-1", "us-west-2"]
    assert all(s["doc"] for s in schema.values()), [k for k, s in schema.items() if not s["doc"]]
    json.dumps(schema)   # the page gets it as JSON


def test_form_values_are_read_as_the_fault_types_and_bad_ones_named():
    assert fault_from_form("stop_tasks", {"region": " us-east-1 ", "count": "2", "fraction": "", "all": "false",
                                          "seed": None}) == stop_tasks("us-east-1", count=2)
    assert fault_from_form("replication_drop", {"fraction": 1}).fraction == 1.0
    assert fault_from_form("api_fault", {"service": "sns", "region": "*", "effect": "latency",
                                         "latency_s": "0.25"}).latency_s == 0.25
    for kind, params, message in [
            ("stop_tasks", {"region": "us-east-1", "count": "two"}, "stop_tasks: count: must be a whole number >= 1"),
            ("stop_tasks", {"region": "us-east-1", "all": "maybe"}, "stop_tasks: all: must be true or false"),
            ("block_region", {"region": "us-east-1", "mode": "drop"}, "mode: unknown mode 'drop': one of hang, refuse"),
            ("unplug_the_moon", {}, "unknown fault kind 'unplug_the_moon'"),
            ("stop_tasks", ["us-east-1"], "stop_tasks: params must be an object")]:
        with pytest.raises(FaultError) as e:
            fault_from_form(kind, params)
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_off_loopback_without_a_token_nothing_starts(tmp_path):
    """`gameday up --web --web-host 0.0.0.0` and Locust alone both stop at once with one line."""
    env = {k: v for k, v in os.environ.items() if k != "GAMEDAY_WEB_TOKEN"}
    up = subprocess.run([sys.executable, "-m", "gameday.cli", "up", "--web", "--web-host", "0.0.0.0",
                         "--run-dir", str(tmp_path / "run"), "--state-file", str(tmp_path / "state.json")],
                        capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert up.returncode == 2, up.stderr
    assert "not loopback" in up.stderr and "GAMEDAY_WEB_TOKEN" in up.stderr
    assert "Traceback" not in up.stderr
    assert not (tmp_path / "state.json").exists()          # the environment never started


# -- the browser, against `gameday up --web` ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def web_env(tmp_path_factory):
    """`gameday up --web`: the local environment and Locust's web UI, as a user starts them."""
    tmp = tmp_path_factory.mktemp("web")
    port = free_port()
    state_file = tmp / "state.json"
    log = tmp / "up.log"
    proc = procs.spawn([sys.executable, "-m", "gameday.cli", "up", "--web", "--web-port", str(port),
                        "--run-dir", str(tmp / "run"), "--state-file", str(state_file)],
                       log_path=log, cwd=REPO, env={"PYTHONUNBUFFERED": "1"})
    try:
        @eventually(START_DEADLINE_S, 0.25)
        def environment_up():
            assert proc.poll() is None, f"gameday up exited with {proc.returncode}:\n{tail(log)}"
            assert state_file.exists(), "no state file yet"

        environment_up()
        url = f"http://127.0.0.1:{port}"
        web_up(url, proc=proc)
        yield {"url": url, "endpoints": json.loads(state_file.read_text()), "state_file": state_file,
               "run": tmp / "run", "proc": proc, "log": log}
    finally:
        procs.terminate(proc, grace_s=20)


@pytest.fixture(scope="module")
def browser(chromium_path):
    # chromium_path (tests/parts.py): the browser is installed when it can be, else the test is skipped
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def alarm_badge(page, region: str, key: str = "healthy-hosts"):
    return page.locator(f"[data-testid=chaos-alarm-{region}-{key}]")


def test_block_region_from_the_chaos_tab_fails_over_and_recovers(web_env, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    ep = web_env["endpoints"]
    src, dst = list(ep["regions"])[:2]
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(UI_DEADLINE_S * 1000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        # start a swarm from Locust's own form: DNS followers only (no surge that would trip the
        # request-count alarm by itself), long enough for the whole story
        page.goto(web_env["url"] + "/")
        page.get_by_role("button", name="Custom parameters").click()
        for name, value in (("shape", "constant"), ("surgeRate", "0"), ("followerRate", "10"), ("hold", "300s")):
            page.locator(f"input[name={name}]").fill(value)
        page.get_by_role("button", name="Start").click()
        page.get_by_role("tab", name="Chaos").click()
        panel = page.locator("[data-testid=chaos-panel]")
        panel.wait_for(state="visible")

        # every registered fault has its form; the live state is there before any fault
        for kind in package_fault_kinds():
            assert page.locator(f"[data-testid=chaos-form-{kind}]").count() == 1, kind

        @eventually(UI_DEADLINE_S)
        def healthy_and_loaded():
            assert alarm_badge(page, src).get_attribute("data-state") == "OK"
            assert page.locator("[data-testid=chaos-dns-answer]").get_attribute("data-region") == src
            assert "running" in page.locator("[data-testid=chaos-load]").inner_text()

        healthy_and_loaded()
        # bound to loopback: a page that rebinds its own name to 127.0.0.1 is refused by Host
        port = web_env["url"].rsplit(":", 1)[1]
        rebound = requests.post(web_env["url"] + "/chaos/rollback-all", headers={"Host": f"rebind.example:{port}"},
                                timeout=5)
        assert rebound.status_code == 403, rebound.text

        form = page.locator("[data-testid=chaos-form-block_region]")
        form.locator("select[name=region]").select_option(src)
        form.locator("select[name=mode]").select_option("hang")
        assert form.locator("input[name=data_plane]").is_checked()
        t_click = time.monotonic()
        page.locator("[data-testid=chaos-inject-block_region]").click()
        row = page.locator("[data-testid^=chaos-fault-block_region-]")
        # the row appears "pending" while the fault is injected, then turns "active"
        page.locator("[data-testid^=chaos-fault-block_region-][data-state=active]").wait_for()
        assert row.get_attribute("data-state") == "active"
        fault_id = row.get_attribute("data-testid").removeprefix("chaos-fault-")
        seen: dict[str, float] = {}

        @eventually(EFFECT_DEADLINE_S, 0.1)
        def alarm_and_dns_in_the_panel():
            if "alarm" not in seen and alarm_badge(page, src).get_attribute("data-state") == "ALARM":
                seen["alarm"] = time.monotonic() - t_click
            if "dns" not in seen and page.locator("[data-testid=chaos-dns-answer]").get_attribute("data-region") == dst:
                seen["dns"] = time.monotonic() - t_click
            assert set(seen) == {"alarm", "dns"}, f"panel so far: {seen}"

        alarm_and_dns_in_the_panel()
        assert page.locator(f"[data-testid=chaos-blocked-{src}]").inner_text().startswith("BLOCKED")
        page.screenshot(path=str(ARTIFACTS / "web_ui_chaos_failover.png"), full_page=True)

        t_rollback = time.monotonic()
        page.locator(f"[data-testid=chaos-rollback-{fault_id}]").click()

        @eventually(EFFECT_DEADLINE_S, 0.1)
        def recovered_in_the_panel():
            assert page.locator(f"[data-testid=chaos-fault-{fault_id}]").get_attribute("data-state") == "rolled_back"
            assert page.locator(f"[data-testid=chaos-blocked-{src}]").inner_text() == "up"
            assert alarm_badge(page, src).get_attribute("data-state") == "OK"

        recovered_in_the_panel()
        seen["recovery"] = time.monotonic() - t_rollback

        # the timeline shows the story in order: fault, alarm, DNS, rollback, recovery
        @eventually(UI_DEADLINE_S)
        def timeline_has_the_story():
            text = page.locator("[data-testid=chaos-events]").inner_text()
            lines = text.splitlines()[::-1]     # the list is newest first
            story = [f"inject block_region {src}", f"{src}: OK -> ALARM", f"({dst})",
                     f"rollback block_region {src}", f"{src}: ALARM -> OK"]
            at = [next((i for i, ln in enumerate(lines) if s in ln), None) for s in story]
            assert None not in at and at == sorted(at), f"timeline order {dict(zip(story, at))}:\n{text}"

        timeline_has_the_story()
        page.screenshot(path=str(ARTIFACTS / "web_ui_chaos_recovered.png"), full_page=True)
        assert errors == [], errors
    finally:
        page.close()

    # journaled exactly as a scenario's fault: intent before injected, then rolled_back
    journals = list((web_env["run"]).glob("chaos/*/journal.jsonl"))
    assert len(journals) == 1, journals
    (jf,), warnings = read_journal(journals[0])
    assert (jf.id, jf.kind, jf.scenario, jf.actions) == (fault_id, "block_region", "chaos-ui", ["injected", "rolled_back"])
    assert not warnings
    (ARTIFACTS / "web_ui_timings.json").write_text(json.dumps(
        {"inject_click_to_alarm_shown_s": round(seen["alarm"], 2), "inject_click_to_dns_switch_shown_s": round(seen["dns"], 2),
         "rollback_click_to_alarm_ok_shown_s": round(seen["recovery"], 2), "deadline_s": EFFECT_DEADLINE_S,
         "profile_floor_s": PROFILE.floor_s}, indent=2))


def test_off_loopback_fault_endpoints_need_the_token_and_quitting_rolls_back(web_env, browser, tmp_path):
    """Locust bound to 0.0.0.0 (reached only through 127.0.0.1) with a token: Locust's own UI asks
    for a login, fault requests without the token are refused, with it they work; SIGTERM to
    Locust rolls back the fault it still holds."""
    token = "s3cret-" + os.urandom(6).hex()
    port = free_port()
    chaos_dir = tmp_path / "chaos"
    log = tmp_path / "locust.log"
    proc = procs.spawn([sys.executable, "-m", "gameday.loadgen", "--gameday-state", str(web_env["state_file"]),
                        "--web-host", "0.0.0.0", "--web-port", str(port), "--chaos-dir", str(chaos_dir)],
                       log_path=log, cwd=REPO, env={"GAMEDAY_WEB_TOKEN": token})
    url = f"http://127.0.0.1:{port}"
    src, dst = list(web_env["endpoints"]["regions"])[:2]
    pause = {"kind": "pause_replication", "params": {"source": src, "destination": dst}}
    control = web_env["endpoints"]["control_url"]

    def paused() -> bool:
        return requests.get(control + "/status", timeout=5).json()["replication"][f"{src}->{dst}"]["paused"]

    try:
        web_up(url, proc=proc)
        s = requests.Session()
        assert s.post(url + "/chaos/inject", json=pause, timeout=5).status_code == 401
        assert s.post(url + "/chaos/inject", json=pause, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
        assert s.get(url + "/chaos/state", timeout=5).status_code == 401
        assert s.get(url + "/", timeout=5, allow_redirects=False).status_code == 302     # Locust's UI: login first
        assert not paused()
        # a page on another site cannot drive the faults through a logged-in browser
        r = s.post(url + "/chaos/inject", json=pause, timeout=5,
                   headers={"Authorization": f"Bearer {token}", "Origin": "http://evil.example"})
        assert r.status_code == 403 and not paused()

        # the browser: Locust's login page, password = token, then the panel answers
        page = browser.new_page()
        try:
            page.goto(url + "/")
            page.locator("input[name=username]").fill("tester")
            page.locator("input[name=password]").fill(token)
            page.locator("button[type=submit]").click()
            page.wait_for_url(url + "/")
            state = page.evaluate("() => fetch('./chaos/state').then(r => r.status)")
            assert state == 200
        finally:
            page.close()

        r = s.post(url + "/chaos/inject", json=pause, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 201, r.text
        assert paused()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) is not None
        assert not paused(), "Locust quit without rolling back its fault"
        (jf,), _ = read_journal(chaos_dir / "journal.jsonl")
        assert jf.actions == ["injected", "rolled_back"] and jf.scenario == "chaos-ui"
        assert token not in log.read_text()
    finally:
        procs.terminate(proc)
        if paused():   # never leave the shared environment broken for the next test
            requests.post(control + "/replication/resume", json={"source": src, "destination": dst}, timeout=5)
