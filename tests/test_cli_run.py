"""`gameday run`, `init` and `status` as a user meets them: options checked before anything is
created, the suite chosen (built-in, the team's own, all), `gameday init` never overwriting, the
shipped templates in step with the repository's own files, and a SIGKILLed `gameday run` taking
its pytest child (and the environment) down with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gameday.assertions.eventually import eventually
from gameday.config import GamedayConfig, load_config
from gameday.faults.journal import open_faults, read_journal

REPO = Path(__file__).resolve().parents[1]


def gameday(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gameday.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


# -- options are checked before anything is created ----------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--env", "nope"], "--env must be one of local, docker, aws, got 'nope'"),
    (["--suite", "theirs"], "--suite must be one of builtin, mine, all, got 'theirs'"),
    (["--suite", "mine"], "--suite mine: no scenarios of your own"),
    (["-c", "missing.toml"], "missing.toml: config file not found"),
])
def test_bad_run_options_create_nothing_and_say_one_line(tmp_path, args, says):
    r = gameday("run", *args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not r.stdout
    assert not (tmp_path / "reports").exists(), "a bad option must not create a run directory or move latest"


def test_bad_env_leaves_latest_where_it_was(tmp_path):
    runs = tmp_path / "reports" / "runs"
    (runs / "earlier").mkdir(parents=True)
    (runs / "latest").symlink_to("earlier")
    r = gameday("run", "--env", "nope", cwd=tmp_path)
    assert r.returncode == 2
    assert os.readlink(runs / "latest") == "earlier" and sorted(p.name for p in runs.iterdir()) == ["earlier", "latest"]


# -- which suite runs ----------------------------------------------------------------------------------

def _suite(tmp_path: Path, *args: str) -> tuple[str, list[str]]:
    """The suite `gameday run` chooses in tmp_path (resolved in a child, from that directory)."""
    code = ("import json, sys; from gameday.cli import resolve_suite, _split_pytest_args; "
            "from gameday.config import load_config; cfg = load_config(None); "
            "paths, _ = _split_pytest_args(sys.argv[2:]); "
            "print(json.dumps(resolve_suite(sys.argv[1] or None, cfg, paths)))")
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    chosen, paths = json.loads(r.stdout)
    return chosen, paths


def test_suite_defaults_to_builtin_without_scenarios_of_ones_own(tmp_path):
    import gameday.scenarios

    builtin = str(Path(gameday.scenarios.__file__).resolve().parent)
    assert _suite(tmp_path, "") == ("builtin", [builtin])
    (tmp_path / "scenarios").mkdir()
    assert _suite(tmp_path, "") == ("all", [builtin, "scenarios"])
    assert _suite(tmp_path, "mine") == ("mine", ["scenarios"])
    assert _suite(tmp_path, "builtin") == ("builtin", [builtin])
    # paths on the command line are the team's scenarios; other arguments go to pytest
    (tmp_path / "more").mkdir()
    assert _suite(tmp_path, "mine", "more", "--maxfail", "2") == ("mine", ["more"])
    # [suite] in gameday.toml: other paths and another default
    (tmp_path / "gameday.toml").write_text('[suite]\npaths = ["more"]\ndefault = "mine"\n')
    assert _suite(tmp_path, "") == ("mine", ["more"])


def test_another_gameday_checkout_than_the_installed_one_is_refused(tmp_path):
    (tmp_path / "gameday").mkdir()
    (tmp_path / "gameday" / "pytest_plugin.py").write_text("")
    (tmp_path / "scenarios").mkdir()
    r = gameday("run", cwd=tmp_path)
    assert r.returncode == 2 and "is a checkout of gameday, but gameday is installed from" in r.stderr, r.stderr
    assert "pip install -e ." in r.stderr and not (tmp_path / "reports").exists()


def test_a_gameday_checkout_does_not_count_its_own_suite_twice():
    # in the repository, ./scenarios IS the built-in suite
    chosen, paths = _suite(REPO, "")
    assert chosen == "builtin" and len(paths) == 1 and Path(paths[0]) == REPO / "scenarios"


# -- gameday init --------------------------------------------------------------------------------------

def test_init_writes_the_starter_files_and_never_overwrites(tmp_path):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "__init__.py").write_text("# ours\n")
    r = gameday("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "skipped scenarios/__init__.py: exists" in r.stdout
    for f in ("gameday.toml", "failover/failover_lambda.py", "scenarios/test_example.py",
              ".github/workflows/gameday-nightly.yml"):
        assert (tmp_path / f).is_file() and f"wrote   {f}" in r.stdout, r.stdout
    assert (tmp_path / "scenarios" / "__init__.py").read_text() == "# ours\n"
    cfg = load_config(tmp_path / "gameday.toml")
    assert cfg.failover.handler == "failover/failover_lambda.py:handler"
    # the config is the shipped defaults but for the handler
    assert cfg.model_dump(exclude={"failover"}) == GamedayConfig().model_dump(exclude={"failover"})
    (tmp_path / "gameday.toml").write_text("# mine\n")
    again = gameday("init", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("skipped") == 5 and "0 file(s) written" in again.stdout
    assert (tmp_path / "gameday.toml").read_text() == "# mine\n"


def test_init_refuses_a_file_as_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    r = gameday("init", "f", cwd=tmp_path)
    assert r.returncode == 2 and "is not a directory" in r.stderr and "Traceback" not in r.stderr


def test_shipped_templates_match_the_repository_files():
    from gameday.init import render_config

    # the repository's gameday.toml is the shipped template with the reference handler
    assert render_config("gameday.sut.failover_lambda:handler", header="", handler_comment="") == \
        (REPO / "gameday.toml").read_text()
    assert load_config(REPO / "gameday.toml") == GamedayConfig(), "gameday.toml must list the defaults"
    # the team's nightly workflow is the repository's, but for how gameday itself is installed
    ours = (REPO / ".github" / "workflows" / "nightly.yml").read_text()
    theirs = (REPO / "gameday" / "templates" / "workflows" / "gameday-nightly.yml").read_text()
    strip = lambda s: [ln for ln in s.splitlines() if not ln.lstrip().startswith("#") and "install" not in ln
                       and "GAMEDAY_PACKAGE" not in ln and "env:" not in ln]
    assert strip(ours) == strip(theirs)


def test_the_worked_example_in_the_docs_is_the_tested_file():
    import re

    doc = (REPO / "docs" / "scenarios.md").read_text()
    example = (REPO / "tests" / "data" / "user_scenarios" / "test_team_example.py").read_text()
    first_python_block = re.search(r"```python\n(.*?)```", doc, re.S)[1]
    assert first_python_block.strip() in example, "docs/scenarios.md's example drifted from the file test_install runs"


# -- status -c -----------------------------------------------------------------------------------------

def test_status_takes_a_config_and_reports_a_bad_one(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[profiles.local]\nperiod_s = 0\n")
    r = gameday("status", "-c", str(bad), cwd=tmp_path)
    assert r.returncode == 2 and "period_s" in r.stderr and "Traceback" not in r.stderr
    r = gameday("status", "--config", str(tmp_path / "none.toml"), cwd=tmp_path)
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_status_config_mismatch_lines():
    from gameday.cli import config_mismatch

    cfg = GamedayConfig()
    ep = {"regions": {"us-east-1": {}, "us-west-2": {}}, "service_name": cfg.service.name}
    assert config_mismatch(cfg, ep) == []
    ep2 = {"regions": {"eu-west-1": {}, "us-west-2": {}}, "service_name": "other.test"}
    out = config_mismatch(cfg, ep2)
    assert len(out) == 2 and "eu-west-1" in out[0] and "other.test" in out[1]


# -- a SIGKILLed gameday run ---------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if text.encode() in (p / "cmdline").read_bytes() and _alive(int(p.name)):
                    found.append(int(p.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_sigkilled_run_takes_its_pytest_child_down_and_rollback_works(tmp_path):
    run_dir = tmp_path / "run"
    # three scenarios: without the parent death signal pytest would go on with the other two
    proc = subprocess.Popen([sys.executable, "-m", "gameday.cli", "run", "-k",
                             "region_blackhole or all_tasks_stopped or route53_throttled",
                             "--run-dir", str(run_dir)], cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def fault_in_effect():
            faults = read_journal(run_dir / "journal.jsonl")[0] if (run_dir / "journal.jsonl").exists() else []
            assert any("injected" in f.actions for f in faults), "no fault injected yet"
        # environment start (~10 s) + steady state + the fault, on a busy 2-core machine
        eventually(fault_in_effect, deadline_s=120, interval_s=0.2, what="the blackhole fault is injected",
                   why_deadline="environment start and the scenario's steady state")
        pytest_pids = _children(proc.pid)
        assert pytest_pids, "gameday run has no pytest child"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        def gone():
            left = [p for p in pytest_pids if _alive(p)] + _processes_mentioning(str(run_dir))
            assert not left, f"still running after gameday run was SIGKILLed: {left}"
        # pytest gets SIGTERM: it rolls the fault back, then the environment's processes die with it
        eventually(gone, deadline_s=30, interval_s=0.2, what="pytest and the environment end with gameday run",
                   why_deadline="SIGTERM -> rollback -> exit, then PR_SET_PDEATHSIG")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert open_faults(read_journal(run_dir / "journal.jsonl")[0]) == [], "pytest did not roll its fault back"
    r = gameday("rollback", str(run_dir), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


# -- the plugin refuses what would mix two scenarios' results, and honours capability() -------------------

def _inner_pytest(tmp_path: Path, files: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:locust", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_two_scenarios_with_one_name_are_refused_before_anything_starts(tmp_path):
    scenario = "def test_surge_fails_over(scenario):\n    pass\n"
    r = _inner_pytest(tmp_path, {"scenarios/__init__.py": "", "scenarios/test_ours.py": scenario,
                                 "scenarios/more/__init__.py": "", "scenarios/more/test_again.py": scenario},
                      "scenarios")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "two scenarios are named 'surge_fails_over'" in r.stderr and "test_again.py" in r.stderr, r.stderr
    assert not (tmp_path / "reports").exists(), "the run started"


def test_capability_marker_skips_a_scenario_the_environment_cannot_do(tmp_path):
    conftest = ("import types, pytest\n\n@pytest.fixture(scope='session')\ndef env():\n"
                "    return types.SimpleNamespace(kind='fake', capabilities=frozenset({'stop_tasks'}))\n")
    test = ("import pytest\n\n@pytest.mark.capability('block_region')\ndef test_blackhole(scenario):\n"
            "    raise AssertionError('ran although the environment cannot block a region')\n")
    r = _inner_pytest(tmp_path, {"conftest.py": conftest, "test_cap.py": test}, "-rs", "--run-dir", "run")
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout + r.stderr
    assert "the fake environment cannot block region" in r.stdout, r.stdout


@pytest.mark.parametrize("builtin_only", [True, False])
def test_only_a_run_of_the_builtin_suite_leaves_hypothesis_plugin_out(tmp_path, builtin_only):
    """gameday's own scenarios use no Hypothesis: their run skips its plugin (~0.7 s of CPU a run);
    a run with the team's scenarios keeps every plugin the team has."""
    from gameday.cli import pytest_argv

    argv = pytest_argv(["scenarios"], tmp_path, "local", k=None, config=None, failover_handler=None, extra=[],
                       builtin_only=builtin_only)
    assert ("no:hypothesispytest" in argv) is builtin_only
