"""gameday's pytest plugin: options (with ini mirrors), markers, and the fixtures scenarios
compose: `env` (the environment, session-scoped), `run_dir`, and for each scenario
`scenario` (its ScenarioRecord: metrics, checks, result.json), `nemesis` (faults, journaled
and rolled back whatever happens) and `load` (Locust as a subprocess, history in the
scenario's directory).

Options:
  --env local|docker|aws      which environment (ini: gameday_env; default local)
  --config PATH               gameday.toml (ini: gameday_config)
  --failover-handler MOD:FN   the failover Lambda handler to rehearse (ini: gameday_failover_handler)
  --run-dir PATH              where this run's data goes (default: a new reports/runs/<id>)
  --gameday-progress story|quiet|verbose   each scenario's story told while it runs (gameday/progress.py;
                              ini: gameday_progress; default story)
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from gameday.config import ConfigError, load_config

ENV_KEY = pytest.StashKey[object]()
RUN_DIR_KEY = pytest.StashKey[Path]()
RECORD_KEY = pytest.StashKey[object]()
REPORTS_KEY = pytest.StashKey[dict]()
CONFIG_KEY = pytest.StashKey[object]()
PROGRESS_KEY = pytest.StashKey[object]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("gameday", "gameday resilience harness")
    g.addoption("--env", dest="gameday_env", default=None, choices=["local", "docker", "aws"],
                help="environment to run against (default: local)")
    g.addoption("--config", dest="gameday_config", default=None, help="gameday.toml to use")
    g.addoption("--failover-handler", dest="gameday_failover_handler", default=None,
                help="failover Lambda handler module:function (overrides the config)")
    g.addoption("--run-dir", dest="gameday_run_dir", default=None,
                help="run directory (default: a new reports/runs/<run-id>)")
    g.addoption("--gameday-progress", dest="gameday_progress", default=None, choices=["story", "quiet", "verbose"],
                help="live progress while a scenario runs: story (default: each step with its time), quiet "
                     "(nothing), verbose (every timeline event)")
    parser.addini("gameday_env", "default for --env", default="local")
    parser.addini("gameday_config", "default for --config", default="")
    parser.addini("gameday_failover_handler", "default for --failover-handler", default="")
    parser.addini("gameday_run_dir", "default for --run-dir", default="")
    parser.addini("gameday_progress", "default for --gameday-progress", default="story")


def _opt(config: pytest.Config, name: str) -> str | None:
    return config.getoption(name) or config.getini(name) or None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario: a resilience scenario (the nightly suite)")
    config.addinivalue_line("markers", "needs_env: needs a running environment (started by the env fixture)")
    config.addinivalue_line("markers", "alarms(key, ...): the alarms (gameday.toml keys) the scenario's story relies on: "
                                       "the baseline waits for those to be out of ALARM (without it: every alarm)")
    config.addinivalue_line("markers", "capability(name, ...): skip the scenario unless the environment offers "
                            "these fault primitives (Environment.capabilities)")
    handler = _opt(config, "gameday_failover_handler")
    try:
        cfg = load_config(_opt(config, "gameday_config"), {"failover": {"handler": handler}} if handler else None)
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from None
    config.stash[CONFIG_KEY] = cfg
    from gameday.progress import Progress

    try:   # now, before pytest captures output: the story is written while a scenario runs
        config.stash[PROGRESS_KEY] = Progress.configure(_opt(config, "gameday_progress"))
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


@pytest.fixture(scope="session")
def gameday_config(pytestconfig: pytest.Config):
    return pytestconfig.stash[CONFIG_KEY]


@pytest.fixture(scope="session")
def run_dir(pytestconfig: pytest.Config) -> Path:
    if RUN_DIR_KEY not in pytestconfig.stash:
        given = _opt(pytestconfig, "gameday_run_dir")
        if given:
            p = Path(given)
            p.mkdir(parents=True, exist_ok=True)
        else:
            from gameday.rundir import new_run_dir
            p = new_run_dir()
        pytestconfig.stash[RUN_DIR_KEY] = p
    return pytestconfig.stash[RUN_DIR_KEY]


@pytest.fixture(scope="session")
def env(request: pytest.FixtureRequest, pytestconfig: pytest.Config, gameday_config, run_dir):
    """The environment under test, started once per session and torn down at the end."""
    kind = _opt(pytestconfig, "gameday_env") or "local"
    if kind == "aws":
        try:
            yield from _aws_env(pytestconfig, gameday_config, run_dir)
        finally:
            from gameday.loadgen.runner import join_pending_reports

            join_pending_reports()
        return
    if kind == "docker":
        e = _docker_env(pytestconfig, gameday_config, run_dir)
    elif kind != "local":
        pytest.skip(f"the {kind} environment is not available in this build of gameday")
    else:
        from gameday.environments.local import LocalEnvironment

        e = LocalEnvironment(gameday_config, run_dir, failover_handler=_opt(pytestconfig, "gameday_failover_handler"))
        e.start()
    pytestconfig.stash[ENV_KEY] = e
    from gameday.loadgen.runner import close_park, join_pending_reports, open_park

    with_load = sum(1 for item in request.session.items if "load" in getattr(item, "fixturenames", ()))
    if with_load > 1:
        # Locust processes importing while a scenario ends, for the next (loadgen.runner.LocustPark):
        # one per scenario with a load, as many as there are such scenarios
        open_park(total=with_load)
    try:
        yield e
    finally:
        close_park()
        join_pending_reports()   # the last scenario's Locust report (the load fixture does not wait)
        e.stop()


def _docker_env(pytestconfig: pytest.Config, gameday_config, run_dir):
    """Tasks as containers (environments/docker): Docker missing or not running, or an image that
    cannot be built, ends the session with the one line that says what to do."""
    from gameday.environments.docker import DockerEnvironment
    from gameday.environments.docker.images import ImageBuildError
    from gameday.environments.docker.preflight import DockerUnavailable

    e = DockerEnvironment(gameday_config, run_dir, failover_handler=_opt(pytestconfig, "gameday_failover_handler"))
    try:
        return e.start()
    except (DockerUnavailable, ImageBuildError) as err:
        pytest.exit(f"gameday --env docker cannot start: {err}", returncode=2)


def _aws_env(pytestconfig: pytest.Config, gameday_config, run_dir):
    """The deployed stack (environments/aws): account allow-list, discovery and preflight first;
    any refusal ends the session before a scenario starts (nothing has been changed)."""
    from gameday.environments.aws import AccountRefused, AwsConfigError, AwsEnvironment, PreflightFailed

    try:
        # the timeline scenario checks read comes from AWS's own signals (environments/aws/signals.py)
        e = AwsEnvironment(gameday_config, run_dir).start().follow_signals()
    except (AwsConfigError, AccountRefused, PreflightFailed) as err:
        pytest.exit(f"gameday --env aws refused to start: {err}", returncode=2)
    pytestconfig.stash[ENV_KEY] = e
    try:
        yield e
    finally:
        e.stop()


# -- scenarios -------------------------------------------------------------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    rep = yield
    # keep each phase's report: the scenario fixture's teardown turns them into an outcome
    item.stash.setdefault(REPORTS_KEY, {})[rep.when] = rep
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        _progress_end(item)
    return rep


def _progress_end(item: pytest.Item) -> None:
    """The rest of the scenario's story, its checks and its verdict, before pytest prints the outcome."""
    progress, rec = item.config.stash.get(PROGRESS_KEY, None), item.stash.get(RECORD_KEY, None)
    if progress is not None and rec is not None:
        progress.end(rec, *_outcome(item))


def _outcome(item: pytest.Item) -> tuple[str, str | None]:
    reps = item.stash.get(REPORTS_KEY, {})
    for when in ("setup", "call"):
        rep = reps.get(when)
        if rep is None:
            continue
        if rep.skipped:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            return "skipped", reason
        if rep.failed:
            msg = getattr(rep.longrepr, "reprcrash", None)
            text = msg.message if msg is not None else str(rep.longrepr)[:2000]
            return ("error" if when == "setup" else "failed"), text
    return "passed", None


def pytest_collection_finish(session: pytest.Session) -> None:
    # Everything imported and collected lives as long as the session: frozen out of the collector's
    # lists, the collections a scenario's run triggers, and the five full ones pytest makes at exit
    # (unraisable-exception cleanup), walk only what the run made since.
    gc.freeze()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Two scenarios of one run with the same name would write into one scenarios/<name>/ folder
    (a team's scenario named like a built-in one): refuse the run, naming both, before anything starts."""
    seen: dict[str, str] = {}
    for item in items:
        if "scenario" not in getattr(item, "fixturenames", ()):
            continue
        name = scenario_name(item)
        if name in seen:
            raise pytest.UsageError(f"two scenarios are named {name!r}: {seen[name]} and {item.nodeid}; "
                                    f"rename one (their results would share scenarios/{name}/)")
        seen[name] = item.nodeid


def scenario_name(item: pytest.Item) -> str:
    return item.name.removeprefix("test_").replace("[", "-").replace("]", "").replace("/", "_")


@pytest.fixture
def scenario(request: pytest.FixtureRequest, env, run_dir):
    """The running scenario's record. The environment is brought back to its baseline first; at the
    end result.json is written with the outcome pytest saw, and metrics become JUnit properties."""
    from gameday.assertions.deadlines import Deadlines
    from gameday.scenarios.baseline import restore_baseline
    from gameday.scenarios.recorder import ScenarioRecord

    from gameday.environments.base import CapabilityMissing

    name = scenario_name(request.node)
    rec = ScenarioRecord(name, run_dir / "scenarios" / name)
    request.node.stash[RECORD_KEY] = rec   # a skip below is recorded too (result.json, summary.json)
    for mark in request.node.iter_markers("capability"):
        for needed in mark.args:
            if needed in env.capabilities:
                continue
            try:   # before the baseline: a skipped scenario costs nothing; require() says why
                env.require(needed)
            except CapabilityMissing as e:
                pytest.skip(str(e))
            except AttributeError:   # an environment without require()
                pass
            pytest.skip(f"the {env.kind} environment cannot {needed.replace('_', ' ')}")
    rec.deadlines = Deadlines.from_profile(env.profile, env.config)
    env.control("POST", "/events", {"kind": "scenario", "action": "start", "name": name})
    progress = request.config.stash.get(PROGRESS_KEY, None)
    try:
        relies_on = request.node.get_closest_marker("alarms")
        took = restore_baseline(env, rec.deadlines, alarms=tuple(relies_on.args) if relies_on else None)
        rec.note(f"baseline restored in {took:.1f}s")
        if progress is not None:
            progress.begin(env, rec, run_dir, request.config.pluginmanager.get_plugin("terminalreporter"))
        yield rec
    finally:
        if progress is not None:
            progress.close()
        rec.finished = __import__("time").time()
        env.control("POST", "/events", {"kind": "scenario", "action": "finish", "name": name})
        # the outcome is final only after teardown: written by pytest_runtest_teardown below


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem):
    rec = item.stash.get(RECORD_KEY, None)
    if rec is None:
        return
    rec.outcome, rec.message = _outcome(item)
    for k, v in rec.metrics.items():
        if v is not None:
            item.user_properties.append((k, v))
    rec.write()


@pytest.fixture
def nemesis(scenario, env, run_dir):
    """Inject faults: each journaled before it is applied and rolled back when the scenario ends
    (pass, fail, exception, Ctrl-C, SIGTERM). A fault the environment cannot do skips the scenario."""
    from gameday.environments.base import CapabilityMissing
    from gameday.faults.nemesis import Nemesis

    n = Nemesis(env, run_dir / "journal.jsonl", scenario=scenario.name)
    inject = n.inject

    def inject_or_skip(fault):
        try:
            return inject(fault)
        except CapabilityMissing as e:
            pytest.skip(str(e))
        except Exception as e:
            # a fault over one of the aws guardrails' caps: the scenario cannot run on this stack as
            # configured, which is not the system's failure (the skip names the cap to raise)
            if getattr(e, "cap", None):
                pytest.skip(str(e))
            raise

    n.inject = inject_or_skip
    # aws: stop-condition alarms watched every period; one in ALARM rolls every fault back at once
    # and interrupts the run (KeyboardInterrupt in the main thread ends the pytest session)
    import _thread

    guard = getattr(env, "guard", None)
    watcher = guard(n, on_abort=lambda reason: _thread.interrupt_main()) if guard else None
    try:
        with n:
            yield n
    finally:
        if watcher is not None:
            watcher.stop()
        scenario.faults = n.records()


def _skip_over_caps(factory) -> None:
    """A load over a guardrail cap (aws: max_rps) skips the scenario naming the cap, as a fault does."""
    start = factory.start

    def start_or_skip(**options):
        try:
            return start(**options)
        except Exception as e:
            if getattr(e, "cap", None):
                pytest.skip(str(e))
            raise

    factory.start = start_or_skip


@pytest.fixture
def load(scenario, env):
    """Start Locust load (as subprocesses) writing into the scenario's directory:
    `run = load.start(shape=..., surge_region=..., surge_rate="1.5x", follower_rate=20, hold_s=...)`.
    Every run is stopped and its history merged when the scenario ends."""
    from gameday.loadgen.runner import load_fixture
    from gameday.progress import announce_loads

    # join=False: Locust's master writes its own report for ~1 s after the history is closed; that
    # overlaps the next scenario, and the env fixture waits for every report before it ends
    for factory in load_fixture(env, scenario.dir, join=False):   # one factory; the loop resumes its clean-up
        announce_loads(factory, env)
        _skip_over_caps(factory)
        yield factory
