"""gameday's pytest plugin: options (with ini mirrors), markers, and the fixtures scenarios
compose: `env` (the environment, session-scoped), `run_dir`.

Options:
  --env local|docker|aws      which environment (ini: gameday_env; default local)
  --config PATH               gameday.toml (ini: gameday_config)
  --failover-handler MOD:FN   the failover Lambda handler to rehearse (ini: gameday_failover_handler)
  --run-dir PATH              where this run's data goes (default: a new reports/runs/<id>)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gameday.config import ConfigError, load_config

ENV_KEY = pytest.StashKey[object]()
RUN_DIR_KEY = pytest.StashKey[Path]()
CONFIG_KEY = pytest.StashKey[object]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("gameday", "gameday resilience harness")
    g.addoption("--env", dest="gameday_env", default=None, choices=["local", "docker", "aws"],
                help="environment to run against (default: local)")
    g.addoption("--config", dest="gameday_config", default=None, help="gameday.toml to use")
    g.addoption("--failover-handler", dest="gameday_failover_handler", default=None,
                help="failover Lambda handler module:function (overrides the config)")
    g.addoption("--run-dir", dest="gameday_run_dir", default=None,
                help="run directory (default: a new reports/runs/<run-id>)")
    parser.addini("gameday_env", "default for --env", default="local")
    parser.addini("gameday_config", "default for --config", default="")
    parser.addini("gameday_failover_handler", "default for --failover-handler", default="")


def _opt(config: pytest.Config, name: str) -> str | None:
    return config.getoption(name) or config.getini(name) or None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario: a resilience scenario (the nightly suite)")
    config.addinivalue_line("markers", "needs_env: needs a running environment (started by the env fixture)")
    config.addinivalue_line("markers", "capability(name): skip unless the environment offers this fault primitive")
    handler = _opt(config, "gameday_failover_handler")
    try:
        cfg = load_config(_opt(config, "gameday_config"), {"failover": {"handler": handler}} if handler else None)
    except ConfigError as e:
        raise pytest.UsageError(str(e)) from None
    config.stash[CONFIG_KEY] = cfg


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
def env(pytestconfig: pytest.Config, gameday_config, run_dir):
    """The environment under test, started once per session and torn down at the end."""
    kind = _opt(pytestconfig, "gameday_env") or "local"
    if kind != "local":
        pytest.skip(f"the {kind} environment is not available in this build of gameday")
    from environments.local import LocalEnvironment

    e = LocalEnvironment(gameday_config, run_dir, failover_handler=_opt(pytestconfig, "gameday_failover_handler"))
    e.start()
    pytestconfig.stash[ENV_KEY] = e
    try:
        yield e
    finally:
        e.stop()
