"""Required parts (tests/parts.py): a test needing a part the machine lacks is skipped with one
line naming what to install, or fails in strict mode (CI=true); tests that need no part, or are
not selected, are not touched. Each case is an inner pytest run on a tiny test file, with a part
made missing (PATH without chromium, DOCKER_HOST naming a socket nobody serves) and
GAMEDAY_NO_PROVISION=1, so nothing is ever installed or started here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.parts import Missing, missing_line

REPO = Path(__file__).resolve().parents[1]

BROWSER_TESTS = '''
import pytest

pytestmark = pytest.mark.needs("chromium")

def test_with_the_marker():
    pass

def test_with_the_fixture(chromium_path):
    assert chromium_path.endswith("chromium")

@pytest.mark.needs()   # the closest marker wins: this one needs nothing
def test_needs_nothing():
    pass
'''

DOCKER_TESTS = '''
import pytest

@pytest.mark.needs("docker", "debootstrap")
def test_builds_images():
    pass

def test_with_the_fixture(docker_daemon):
    pass
'''


def inner_pytest(tmp_path: Path, source: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """pytest on one small file with the parts plugin, in a clean environment: no CI, no strict mode
    (COLUMNS: the short summary's lines whole, as on CI, where pytest never cuts them)."""
    (tmp_path / "test_inner.py").write_text(source)
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "GAMEDAY_REQUIRE_PARTS", "PYTEST_ADDOPTS")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.parts", "-p", "no:cacheprovider",
                           "-ra", "-q", "test_inner.py", *args],
                          cwd=tmp_path, env={**base, "PYTHONPATH": str(REPO), "GAMEDAY_NO_PROVISION": "1", "COLUMNS": "1000", **env},
                          capture_output=True, text=True, timeout=120)
    proc.output = proc.stdout + proc.stderr
    return proc


def no_chromium_path(tmp_path: Path) -> str:
    """A PATH with nothing on it: no chromium, no debootstrap, no apt-get."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    return str(empty)


def skip_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("SKIPPED")]


def test_missing_chromium_skips_each_test_needing_it_with_one_line(tmp_path):
    proc = inner_pytest(tmp_path, BROWSER_TESTS, PATH=no_chromium_path(tmp_path))
    assert proc.returncode == 0, proc.output
    assert re.search(r"\b1 passed, 2 skipped\b", proc.output), proc.output
    lines = skip_lines(proc.output)
    assert len(lines) == 2, proc.output   # one line per test, never more
    for line in lines:
        assert "needs chromium: apt-get install chromium (as root)" in line, line
        assert "no chromium on PATH" in line and "GAMEDAY_NO_PROVISION=1: nothing installed" in line, line
    # the session says what it found, once
    assert "chromium: MISSING: needs chromium" in proc.output, proc.output


def test_strict_mode_fails_instead_of_skipping(tmp_path):
    path = no_chromium_path(tmp_path)
    for strict in ({"CI": "true"}, {"GAMEDAY_REQUIRE_PARTS": "1"}):
        proc = inner_pytest(tmp_path, BROWSER_TESTS, PATH=path, **strict)
        assert proc.returncode == 1, proc.output
        assert re.search(r"\b1 passed, 2 errors\b", proc.output), proc.output
        assert not skip_lines(proc.output), proc.output
        said = [line for line in proc.output.splitlines() if line.startswith("ERROR")]
        assert len(said) == 2 and all("needs chromium: apt-get install chromium (as root)" in line for line in said), said
        assert all(f"{'CI=true' if 'CI' in strict else 'GAMEDAY_REQUIRE_PARTS=1'}: a missing part fails the run" in line
                   for line in said), said


def test_tests_not_selected_need_nothing_even_in_strict_mode(tmp_path):
    """`pytest tests/test_config.py` installs and checks nothing: only selected tests' parts count."""
    proc = inner_pytest(tmp_path, BROWSER_TESTS, "-k", "needs_nothing", PATH=no_chromium_path(tmp_path), CI="true")
    assert proc.returncode == 0, proc.output
    assert re.search(r"\b1 passed, 2 deselected\b", proc.output), proc.output
    assert "required parts" not in proc.output, "no part was checked, so none is reported"


def test_no_daemon_at_docker_host_skips_and_says_what_is_missing(tmp_path):
    dead = f"unix://{tmp_path}/nobody-serves-this.sock"
    proc = inner_pytest(tmp_path, DOCKER_TESTS, PATH=no_chromium_path(tmp_path), DOCKER_HOST=dead)
    assert proc.returncode == 0, proc.output
    assert re.search(r"\b2 skipped\b", proc.output), proc.output
    lines = skip_lines(proc.output)
    assert len(lines) == 2, proc.output
    combined = next(line for line in lines if "debootstrap" in line)
    # both parts on one line: the package to install, and what to do about the daemon DOCKER_HOST names
    assert "needs Docker and debootstrap: apt-get install debootstrap (as root); start the daemon DOCKER_HOST names, " \
           "or unset DOCKER_HOST" in combined, combined
    assert f"no Docker daemon answers at DOCKER_HOST={dead}" in combined, combined
    docker_only = next(line for line in lines if line is not combined)
    assert "needs Docker: start the daemon DOCKER_HOST names" in docker_only, docker_only


def test_the_fixture_hands_over_the_part_when_it_is_there(tmp_path):
    import shutil

    if shutil.which("chromium") is None:
        pytest.skip("needs chromium: apt-get install chromium (as root) [to see a present part handed over]")
    proc = inner_pytest(tmp_path, BROWSER_TESTS, "-k", "fixture", CI="true")
    assert proc.returncode == 0, proc.output
    assert re.search(r"\b1 passed\b", proc.output) and "chromium: present" in proc.output, proc.output


def test_an_unknown_part_is_a_usage_error(tmp_path):
    proc = inner_pytest(tmp_path, 'import pytest\n\n@pytest.mark.needs("chromum")\ndef test_x():\n    pass\n')
    assert proc.returncode == 4, proc.output
    assert "needs('chromum',): no such part (known: chromium, docker, debootstrap, netns)" in proc.output, proc.output


def test_the_line_for_a_fresh_machine_names_every_package_once():
    line = missing_line({"docker": Missing("dockerd is not installed", packages=("docker.io",), then="start dockerd"),
                         "debootstrap": Missing("debootstrap is not installed", packages=("debootstrap",))},
                        {"docker": "not root: nothing installed or started"})
    assert line.startswith("needs Docker and debootstrap: apt-get install docker.io debootstrap (as root), "
                           "then start dockerd ["), line
    assert "dockerd is not installed (not root: nothing installed or started); debootstrap is not installed" in line
    assert "\n" not in line
