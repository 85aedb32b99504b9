"""The repository's own test configuration (gameday's fixtures for scenarios come from its
pytest plugin, gameday/pytest_plugin.py; this file is for the harness's own tests only).

Required parts (tests/parts.py): some tests need more than pip gives, a headless Chromium,
a Docker daemon, debootstrap. `python -m pytest` provides them when it can, once, and only
for the tests selected: as root with apt-get it installs Debian's chromium / docker.io /
debootstrap, and it starts dockerd in the background when dockerd is installed but no daemon
answers (stopped again when the session ends). Where a part is still missing, every test
needing it is skipped with one line naming what to install.

Environment variables:
- GAMEDAY_NO_PROVISION=1: never install or start anything, only detect (and skip).
- CI=true or GAMEDAY_REQUIRE_PARTS=1 (strict mode): a missing part fails the test instead of
  skipping it, so the session's exit code says so (.ci/run runs with CI=true).

A test declares a part with `@pytest.mark.needs("docker")` (or `pytestmark` for a module;
the closest marker wins), or by using the fixture `chromium_path` or `docker_daemon`.
"""

import signal

import pytest

from tests import scheduling
from tests.parts import (  # noqa: F401 - pytest finds hooks and fixtures by name in a conftest
    chromium_path,
    docker_daemon,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_protocol,
    pytest_runtest_setup,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

# A session started in the background by a shell without job control (`nohup python -m pytest &`, a
# script's `cmd &`) inherits SIGINT ignored, and so would every process its tests start: Ctrl-C
# tests (the Nemesis' rollback, `gameday status --watch`, `gameday run` stopping) would then see
# nothing arrive. The tests deliver SIGINT on purpose, so the session takes Python's default back,
# in the main process and in each xdist worker (each imports this file); children then start with it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def whole_suite_turn(tmp_path_factory):
    """This test's turn to run a whole suite: no other whole-suite run of the session (local or
    docker) runs beside it (tests/scheduling.py)."""
    with scheduling.whole_suite_turn(tmp_path_factory):
        yield
