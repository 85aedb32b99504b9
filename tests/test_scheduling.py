"""tests/scheduling.py's units only hold if pytest-xdist's `--dist loadgroup` keeps an
`xdist_group` on one worker. It does so by renaming each test's node id, which a pytest release
can break (pytest 9.2 with xdist 3.8: every test became its own unit, so modules' fixtures were
made on every worker and the machine's parts provisioned three times at once). This runs a
small session the way pyproject.toml runs ours and fails naming the versions when a group is split."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

GROUPED = '''
import os, pytest

@pytest.mark.xdist_group("one-unit")
@pytest.mark.parametrize("i", range(8))
def test_grouped(i, request):
    with open("seen.txt", "a") as f:   # workers' output does not reach the session's stdout
        f.write(f"{os.environ.get('PYTEST_XDIST_WORKER')} {request.node.nodeid}\\n")

@pytest.mark.parametrize("i", range(8))
def test_free(i):
    pass
'''


def test_an_xdist_group_runs_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:locust", "-p", "no:benchmark", "-n", "3",
                        "--dist", "loadgroup", "--no-loadscope-reorder", "-q", "test_grouped.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    seen = [line.split() for line in (tmp_path / "seen.txt").read_text().splitlines()]
    versions = f"pytest {version('pytest')}, pytest-xdist {version('pytest-xdist')}"
    assert len(seen) == 8, r.stdout
    assert all(nodeid.endswith("@one-unit") for _, nodeid in seen), \
        f"{versions}: --dist loadgroup did not name the group in the node ids: {[n for _, n in seen]}"
    assert len({worker for worker, _ in seen}) == 1, f"{versions}: one xdist_group ran on several workers: {seen}"


def test_whole_suite_turns_never_overlap(tmp_path_factory):
    # Catches a turn that locks nothing (the local and docker suites side by side again) and one never
    # released (the second suite waiting out its timeout). That the workers share the lock file's
    # folder is pytest-xdist's layout (basetemp/popen-gwN), not checked here.
    import threading

    from tests.scheduling import whole_suite_turn

    order: list[str] = []
    first_holds, second_tried = threading.Event(), threading.Event()

    def first():
        with whole_suite_turn(tmp_path_factory):
            first_holds.set()
            second_tried.wait(timeout=10)
            order.append("first ends")

    def second():
        first_holds.wait(timeout=10)
        second_tried.set()
        with whole_suite_turn(tmp_path_factory):   # flock: a second open file waits, even in one process
            order.append("second starts")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert order == ["first ends", "second starts"]
