"""gameday as a team installs it: a wheel of this repository (not an editable install) in a fresh
virtual environment, used from a directory of the team's own that already has a `scenarios`
package and a `reports` package. `gameday init`, the built-in suite, the team's scenario through
plain `pytest` (the plugin comes from the entry point), and a team's check that must fail.

The venv sees the machine's site-packages for gameday's dependencies (installing moto, locust,
boto3... from the registry again would test pip, not gameday); gameday itself is the wheel's,
which the test checks by where it imports from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.needs_env]

FAILING_CONFIG = """\
# one task per region: losing it cannot be absorbed, so the team's example scenario must fail
[service]
desired_tasks = 1
min_tasks = 1
"""


def _run(argv: list, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _ok(r: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{what}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a clean copy of the repository's files (setuptools' in-tree build/ could
    carry stale modules into it)."""
    work = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                           text=True, check=True).stdout.split()
    src = work / "src"
    for f in files:
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, src / f)
    _ok(_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "dist", src],
             work, dict(os.environ), 300), "pip wheel")
    return next((work / "dist").glob("gameday-*.whl"))


def test_the_wheel_owns_no_top_level_name_but_gameday(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"gameday"}, tops
    for f in ("gameday/scenarios/test_failover.py", "gameday/sut/failover_lambda.py", "gameday/loadgen/locustfile.py",
              "gameday/loadgen/static/chaos.js", "gameday/reports/summary.schema.json",
              "gameday/templates/gameday.toml", "gameday/templates/scenarios/test_example.py",
              "gameday/templates/workflows/gameday-nightly.yml", "gameday/pytest_plugin.py"):
        assert f in names, f"{f} is not in the wheel"
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(meta).decode()
    assert "[pytest11]" in entry_points and "gameday = gameday.pytest_plugin" in entry_points


@pytest.fixture(scope="module")
def team(wheel, tmp_path_factory) -> dict:
    """A venv with the wheel installed, and the team's repository: its own scenarios and reports packages."""
    work = tmp_path_factory.mktemp("team")
    venv = work / "venv"
    _ok(_run([sys.executable, "-m", "venv", "--system-site-packages", venv], work, dict(os.environ), 120), "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    py = venv / "bin" / "python"
    _ok(_run([py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel], work, env, 300), "pip install")
    repo = work / "infra"
    (repo / "scenarios").mkdir(parents=True)
    (repo / "scenarios" / "__init__.py").write_text('"""The team\'s scenarios."""\n')
    (repo / "scenarios" / "team_steps.py").write_text("REGION_UNDER_TEST = 'us-east-1'\n")
    (repo / "reports").mkdir()
    (repo / "reports" / "__init__.py").write_text('"""The team\'s own reports package."""\nOURS = True\n')
    where = _ok(_run([py, "-c", "import gameday, gameday.scenarios, gameday.reports; "
                      "print(gameday.__file__); print(gameday.scenarios.__file__)"], repo, env, 60), "import").stdout
    assert all(line.startswith(str(venv)) for line in where.split()), f"gameday imported from outside the venv: {where}"
    return {"venv": venv, "py": py, "gameday": venv / "bin" / "gameday", "repo": repo, "env": env}


def test_init_then_the_builtin_surge_passes_from_the_teams_directory(team):
    repo, env = team["repo"], team["env"]
    r = _ok(_run([team["gameday"], "init"], repo, env, 60), "gameday init")
    assert "skipped scenarios/__init__.py: exists" in r.stdout and "wrote   scenarios/test_example.py" in r.stdout
    # the team tunes its alarm as teams do: the request-count threshold at a fifth of the seed's
    # (tests/support.py LIGHT_LOAD: what the verdict proves does not depend on the rate)
    toml = repo / "gameday.toml"
    text = toml.read_text()
    assert text.count("threshold = 500") == 1, "gameday init's request-count alarm changed: update this test"
    toml.write_text(text.replace("threshold = 500", "threshold = 100"))
    r = _ok(_run([team["gameday"], "run", "-k", "surge_fails_over"], repo, env, 400), "gameday run -k surge_fails_over")
    summary = json.loads((repo / "reports" / "runs" / "latest" / "summary.json").read_text())
    assert summary["passed"] and [s["name"] for s in summary["scenarios"]] == ["surge_fails_over"], summary
    assert (repo / "reports" / "runs" / "latest" / "report.html").is_file()
    assert (repo / "reports" / "__init__.py").read_text().endswith("OURS = True\n"), "the team's reports/ was touched"
    # nothing was written into the installed package
    site = next(team["venv"].glob("lib/python*/site-packages/gameday"))
    assert not (site / "reports" / "runs").exists() and not list(site.rglob(".pytest_cache"))


def test_plain_pytest_finds_the_plugin_and_runs_the_teams_scenarios(team):
    """`gameday init`'s example and docs/scenarios.md's worked example, in one session (one environment)."""
    repo, env = team["repo"], team["env"]
    _ok(_run([team["gameday"], "init"], repo, env, 60), "gameday init")
    shutil.copy2(REPO / "tests" / "data" / "user_scenarios" / "test_team_example.py", repo / "scenarios")
    run_dir = repo / "direct-run"
    r = _ok(_run([team["py"], "-m", "pytest", "scenarios", "-p", "no:cacheprovider", "--run-dir", run_dir],
                 repo, env, 400), "pytest in the team's directory")
    assert "2 passed" in r.stdout, r.stdout
    results = {d.name: json.loads((d / "result.json").read_text()) for d in (run_dir / "scenarios").iterdir()}
    assert {n: r["outcome"] for n, r in results.items()} == {
        "one_task_lost_is_absorbed": "passed", "our_region_outage_moves_traffic": "passed"}, results
    names = {c["name"] for c in results["one_task_lost_is_absorbed"]["checks"]}
    assert {"task_replaced", "healthy_hosts_alarm_stays_ok", "dns_stays", "lost_acked_writes"} <= names, names
    names = {c["name"] for c in results["our_region_outage_moves_traffic"]["checks"]}
    assert {"dns_failover", "lost_acked_writes"} <= names, names


def test_a_teams_check_fails_on_a_stack_that_cannot_absorb_the_fault(team):
    repo, env = team["repo"], team["env"]
    _ok(_run([team["gameday"], "init"], repo, env, 60), "gameday init")
    (repo / "one-task.toml").write_text(FAILING_CONFIG)
    # -k: the team's directory may hold the docs' example too (the plain-pytest test copies it in)
    r = _run([team["gameday"], "run", "--suite", "mine", "-k", "one_task_lost", "-c", "one-task.toml",
              "--run-dir", repo / "failing-run"],
             repo, env, 300)
    assert r.returncode == 1, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}"
    summary = json.loads((repo / "failing-run" / "summary.json").read_text())
    (sc,) = summary["scenarios"]
    assert not summary["passed"] and sc["name"] == "one_task_lost_is_absorbed" and sc["outcome"] == "failed"
    failed = [c["name"] for c in sc["checks"] if c["valid"] is False]
    assert "healthy_hosts_alarm_stays_ok" in failed, sc["checks"]
    verdict = next(ln for ln in r.stdout.splitlines() if "x healthy_hosts_alarm_stays_ok:" in ln)
    assert "alarm gameday-healthy-hosts-us-east-1" in verdict and "ALARM" in verdict, r.stdout
