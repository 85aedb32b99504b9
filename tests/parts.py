"""Required parts: what some of the harness's own tests need from the machine beyond pip, and
one answer when a part is missing.

A part is something a test needs that `pip install -e ".[dev]"` cannot give: a headless
Chromium (the report and web UI browser tests), a Docker daemon (the docker environment),
debootstrap (the docker environment's base image is a Debian root filesystem built here).
Each part knows how to detect itself, which Debian packages provide it, and the one line
that says what to install.

A test declares what it needs with `@pytest.mark.needs("docker", "debootstrap")` (on the test,
or `pytestmark` for a module: the closest marker wins, so a test can narrow its module's
`needs()`), or by using a part's fixture: `chromium_path` (the browser's path), `docker_daemon`
(the daemon's URL). Before the first such test runs, the session provides every part the
selected tests need and the machine lacks, once: as root with apt-get, `apt-get update` then
`apt-get install -y --no-install-recommends <packages>` (log: tests/artifacts/parts/apt-get.log),
and dockerd started in the background when it is installed but no daemon answers (log:
tests/artifacts/parts/dockerd.log; stopped at the end of the session, since this session
started it). A session whose selected tests need no part provides nothing.

Where a part is still missing, each test needing it is skipped with one line naming what to
install. Strict mode (CI=true, or GAMEDAY_REQUIRE_PARTS=1): that test fails instead, so the
run's exit code says a part was missing. GAMEDAY_NO_PROVISION=1: never install or start
anything, only detect (and skip, or fail in strict mode).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pytest
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from tests.scheduling import group_and_order

LOG_DIR = Path(__file__).resolve().parent / "artifacts" / "parts"   # git-ignored
NO_PROVISION_ENV = "GAMEDAY_NO_PROVISION"
REQUIRE_ENV = "GAMEDAY_REQUIRE_PARTS"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
DOCKERD_START_S = 60.0          # dockerd answers in a few seconds; its first start sets up its storage
DOCKERD_STOP_S = 30.0           # it stops what containers are left first (10 s grace each, in parallel)
APT_TIMEOUT_S = 1800.0          # chromium + docker.io from a slow mirror; a hang must still end
APT_LOCK_WAIT_S = 600           # another apt-get (another session's provisioning) holds the lock meanwhile
APT_LOCK_RETRY_S = 2.0          # `apt-get update` does not wait for the lists lock itself: it is retried
# one provisioning at a time on this machine, whichever pytest session (or xdist worker) asks: a second
# one waits, then finds the parts the first installed (seen in a fresh-clone run: three `apt-get update`
# at once, two of them refused the lists lock, and every test needing a part failed)
PROVISION_LOCK = Path("/tmp/gameday-parts-provision.lock")


def strict() -> bool:
    """CI proves everything: a missing part is a failure there, never a skip."""
    return os.environ.get("CI", "").lower() in ("true", "1") or os.environ.get(REQUIRE_ENV) == "1"


def strict_reason() -> str:
    return "CI=true" if os.environ.get("CI", "").lower() in ("true", "1") else f"{REQUIRE_ENV}=1"


@dataclass(frozen=True)
class Missing:
    """Why a part is not there and how a person provides it."""
    reason: str                          # what is not there, e.g. "dockerd is not installed"
    packages: tuple[str, ...] = ()       # the Debian packages that provide it
    then: str = ""                       # a step after installing them, e.g. "start dockerd"
    fix: str = ""                        # what to do when no package helps


@dataclass(frozen=True)
class Part:
    name: str                            # as in @pytest.mark.needs(name)
    title: str                           # as in the skip line: "needs <title>: ..."
    check: Callable[[], Missing | None]  # None when the part is there
    extra_packages: tuple[str, ...] = () # installed with its packages, not worth naming in the line


# -- detection --------------------------------------------------------------------------------------------
def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def docker_answers(host: str, timeout_s: float = 3.0) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=timeout_s)
    except Exception:   # noqa: BLE001 - a malformed DOCKER_HOST, a missing socket: no daemon either way
        return False
    try:
        return bool(client.ping())
    except Exception:   # noqa: BLE001
        return False
    finally:
        client.close()


def _check_chromium() -> Missing | None:
    if shutil.which("chromium") is None:
        return Missing("no chromium on PATH", packages=("chromium",))
    try:
        import playwright.sync_api  # noqa: F401 - the tests drive chromium with it
    except ImportError:
        return Missing("the playwright package is missing", fix="pip install -e \".[dev]\"")
    return None


def _check_docker() -> Missing | None:
    try:
        import docker  # noqa: F401
    except ImportError:
        return Missing("the docker Python package is missing", fix="pip install -e \".[dev]\"")
    host = docker_host()
    if docker_answers(host):
        return None
    if host != DEFAULT_DOCKER_HOST:
        # a daemon the user chose: this session does not start one in its place
        return Missing(f"no Docker daemon answers at DOCKER_HOST={host}",
                       fix="start the daemon DOCKER_HOST names, or unset DOCKER_HOST")
    if shutil.which("dockerd") is None:
        return Missing("dockerd is not installed", packages=("docker.io",), then="start dockerd")
    return Missing(f"dockerd is installed but no daemon answers at {host}",
                   fix="start dockerd (as root: `dockerd &`, or `systemctl start docker`)")


def _base_image_in_daemon() -> bool:
    """The docker environment's base image is already built: debootstrap is not needed."""
    from gameday.environments.docker import images

    if not docker_answers(docker_host()):
        return False
    import docker

    client = docker.DockerClient(base_url=docker_host(), timeout=10)
    try:
        return images._image_exists(client, images.base_tag())
    except Exception:   # noqa: BLE001 - no tag for this machine (not Debian): building it says why
        return False
    finally:
        client.close()


def _check_debootstrap() -> Missing | None:
    if shutil.which("debootstrap") is not None and os.geteuid() == 0:
        return None
    if _base_image_in_daemon():
        return None
    if shutil.which("debootstrap") is None:
        return Missing("debootstrap is not installed (it builds the docker environment's base image)",
                       packages=("debootstrap",))
    return Missing("debootstrap needs root to build the docker environment's base image",
                   fix="run the docker tests once as root (the image is kept in the daemon)")


def _check_netns() -> Missing | None:
    if os.geteuid() != 0:
        return Missing("network namespaces need root", fix="run the distributed-load tests as root")
    if shutil.which("ip") is None:
        return Missing("`ip` (iproute2) is not installed", packages=("iproute2",))
    if shutil.which("unshare") is None:
        return Missing("`unshare` (util-linux) is not installed", packages=("util-linux",))
    return None


PARTS: dict[str, Part] = {p.name: p for p in (
    Part("chromium", "chromium", _check_chromium),
    # the order matters: debootstrap's check looks for the base image in the daemon
    Part("docker", "Docker", _check_docker),
    # debootstrap verifies the Release file with the archive's keyring, fetches over the configured mirror
    Part("debootstrap", "debootstrap", _check_debootstrap, extra_packages=("debian-archive-keyring", "ca-certificates")),
    # worker hosts of the distributed load tests: network + mount namespaces joined by veth pairs
    Part("netns", "network namespaces (ip netns)", _check_netns),
)}
PART_FIXTURES = {"chromium_path": "chromium", "docker_daemon": "docker"}


def one_line(text: str) -> str:
    return " ".join(text.split())


def missing_line(missing: dict[str, Missing], notes: dict[str, str]) -> str:
    """One line: which parts are missing, what to install (or do), and why this session did not."""
    names = [n for n in PARTS if n in missing]
    packages = list(dict.fromkeys(p for n in names for p in missing[n].packages))
    fixes = []
    if packages:
        thens = list(dict.fromkeys(missing[n].then for n in names if missing[n].packages and missing[n].then))
        fixes.append(f"apt-get install {' '.join(packages)} (as root)" + "".join(f", then {t}" for t in thens))
    fixes += list(dict.fromkeys(missing[n].fix for n in names if missing[n].fix))
    why = "; ".join(missing[n].reason + (f" ({notes[n]})" if notes.get(n) else "") for n in names)
    titles = " and ".join(PARTS[n].title for n in names)
    return one_line(f"needs {titles}: {'; '.join(fixes)} [{why}]")


# -- one session's parts ----------------------------------------------------------------------------------
@dataclass
class SessionParts:
    """Each part checked (and provided) at most once per session, lazily, for the selected tests."""
    config: pytest.Config
    results: dict[str, Missing | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)     # part -> why this session did not provide it
    done: list[str] = field(default_factory=list)           # what it did, with timings (terminal summary)
    dockerd: subprocess.Popen | None = None
    dockerd_tried: bool = False
    apt_updated: bool = False

    # what the tests need
    def needs(self, item: pytest.Item) -> list[str]:
        marker = item.get_closest_marker("needs")
        names = set(marker.args if marker else ())
        names |= {part for fixture, part in PART_FIXTURES.items() if fixture in getattr(item, "fixturenames", ())}
        return [n for n in PARTS if n in names]

    def wanted(self, session: pytest.Session) -> set[str]:
        return {n for item in session.items for n in self.needs(item)}

    # providing
    def provide(self, names: Iterable[str]) -> None:
        todo = [n for n in PARTS if n in set(names) and n not in self.results]
        if not todo:
            return
        why_not = self._why_not_provide()
        with _machine_lock() if why_not is None else nullcontext():
            self._provide(todo, why_not)

    def _provide(self, todo: list[str], why_not: str | None) -> None:
        if why_not is None and "docker" in todo:
            self._start_dockerd()
        missing = self._check(todo)
        if missing and why_not is None:
            packages = [p for n in missing for p in (*missing[n].packages, *PARTS[n].extra_packages)
                        if missing[n].packages]
            if packages:
                self._apt_install(list(dict.fromkeys(packages)), [n for n in missing if missing[n].packages])
            if "docker" in todo:
                self._start_dockerd()
            missing = self._check(todo)
        for n in todo:
            self.results[n] = missing.get(n)
            if n in missing and why_not is not None:
                self.notes.setdefault(n, why_not)

    def _check(self, names: list[str]) -> dict[str, Missing]:
        found = {n: PARTS[n].check() for n in names}
        return {n: m for n, m in found.items() if m is not None}

    def _why_not_provide(self) -> str | None:
        if os.environ.get(NO_PROVISION_ENV) == "1":
            return f"{NO_PROVISION_ENV}=1: nothing installed or started"
        if os.geteuid() != 0:
            return "not root: nothing installed or started"
        return None

    def _apt_install(self, packages: list[str], for_parts: list[str]) -> None:
        if shutil.which("apt-get") is None:
            for n in for_parts:
                self.notes[n] = "no apt-get on this machine: install it with its package manager"
            return
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = LOG_DIR / "apt-get.log"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        lock = ["-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT_S}"]
        steps = [] if self.apt_updated else [["apt-get", *lock, "update"]]
        steps.append(["apt-get", *lock, "install", "-y", "--no-install-recommends", *packages])
        self.say(f"installing {' '.join(packages)} for the selected tests (apt-get, as root; log: {log})")
        for argv in steps:
            t0 = time.monotonic()
            with open(log, "ab") as out:
                out.write(f"\n$ {' '.join(argv)}\n".encode())
                out.flush()
                rc = _run_apt(argv, out, env, log)
            took = time.monotonic() - t0
            what = " ".join(a for a in argv if a not in lock)
            if rc != 0:
                for n in for_parts:
                    self.notes[n] = f"`{what}` failed (exit {rc}), log: {log}"
                self.done.append(f"{what}: FAILED (exit {rc}) after {took:.1f} s, log: {log}")
                self.say(self.done[-1])
                for line in _tail(log, 8):   # apt-get's own words, where CI shows them
                    self.say(f"  {line}")
                return
            self.apt_updated = self.apt_updated or argv[len(lock) + 1] == "update"
            self.done.append(f"{what}: {took:.1f} s")
            self.say(self.done[-1])

    def _start_dockerd(self) -> None:
        """dockerd in the background when it is installed and nothing answers at the default socket."""
        host = docker_host()
        if self.dockerd_tried or host != DEFAULT_DOCKER_HOST or shutil.which("dockerd") is None \
                or docker_answers(host):
            return
        self.dockerd_tried = True
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = LOG_DIR / "dockerd.log"
        self.say(f"starting dockerd for the selected tests (log: {log}; stopped when the session ends)")
        t0 = time.monotonic()
        with open(log, "ab") as out:
            self.dockerd = subprocess.Popen(["dockerd"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            preexec_fn=_dockerd_preexec, close_fds=True)
        while time.monotonic() - t0 < DOCKERD_START_S:
            if docker_answers(host, timeout_s=2.0):
                self.done.append(f"dockerd started, answering after {time.monotonic() - t0:.1f} s (log: {log})")
                self.say(self.done[-1])
                return
            if self.dockerd.poll() is not None:
                code, self.dockerd = self.dockerd.returncode, None
                if docker_answers(host):   # another session started one meanwhile: that one serves
                    return
                self.notes["docker"] = f"dockerd exited with {code} at start: {_last_line(log)} (log: {log})"
                self.done.append(f"dockerd: {self.notes['docker']}")
                return
            time.sleep(0.5)
        self.notes["docker"] = f"dockerd did not answer within {DOCKERD_START_S:.0f} s (log: {log})"
        self.done.append(f"dockerd: {self.notes['docker']}")
        self.stop_dockerd()

    def stop_dockerd(self) -> None:
        """Only a daemon this session started; it stops its containers and its containerd itself."""
        proc, self.dockerd = self.dockerd, None
        if proc is None or proc.poll() is not None:
            return
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=DOCKERD_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self.done.append(f"dockerd (started by this session) stopped in {time.monotonic() - t0:.1f} s")

    # the answer for one test
    def require(self, names: list[str]) -> None:
        """Skip (or, in strict mode, fail) unless every part in `names` is there."""
        self.provide(names)
        missing = {n: self.results[n] for n in names if self.results.get(n) is not None}
        if not missing:
            return
        line = missing_line(missing, self.notes)
        if strict():
            pytest.fail(f"{line} ({strict_reason()}: a missing part fails the run)", pytrace=False)
        # reported at the test's own location (as a skipif marker's skip is), one line per test
        raise pytest.skip.Exception(line, _use_item_location=True)

    def say(self, message: str) -> None:
        """A line on the terminal at once, even while output is captured: provisioning takes minutes."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else nullcontext():
            reporter.write_line(f"[required parts] {message}")


class _machine_lock:
    """An exclusive lock on this machine's part provisioning (flock: released if the holder dies)."""

    def __enter__(self):
        self._f = open(PROVISION_LOCK, "a")
        fcntl.flock(self._f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


def _run_apt(argv: list[str], out, env: dict, log: Path) -> int | str:
    """Run one apt-get step; while another apt-get (not ours: e.g. the machine's own daily update at
    boot) holds apt's lock, wait for it and try again, up to APT_LOCK_WAIT_S. `DPkg::Lock::Timeout`
    covers dpkg's lock only: `apt-get update` is refused the lists lock at once."""
    locked = "apt's lock is held by another process"

    @retry(stop=stop_after_delay(APT_LOCK_WAIT_S), wait=wait_fixed(APT_LOCK_RETRY_S),
           retry=retry_if_result(lambda r: r == locked), retry_error_callback=lambda state: 100)
    def attempt() -> int | str:
        start = log.stat().st_size if log.exists() else 0
        try:
            rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, timeout=APT_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            return f"timed out after {APT_TIMEOUT_S:.0f} s"
        out.flush()
        with open(log, "rb") as f:
            f.seek(start)
            if rc != 0 and "Could not get lock" in f.read().decode(errors="replace"):
                out.write(f"({locked}: again in {APT_LOCK_RETRY_S:.0f} s)\n".encode())
                out.flush()
                return locked
        return rc

    return attempt()


def _dockerd_preexec() -> None:   # runs in the child between fork and exec
    from gameday.procs import set_parent_death_signal

    os.setsid()                    # a Ctrl-C of pytest is for pytest: the session stops dockerd itself
    set_parent_death_signal(signal.SIGTERM)   # a SIGKILLed session still stops it (cleanly)


def _tail(path: Path, n: int) -> list[str]:
    try:
        return path.read_text(errors="replace").strip().splitlines()[-n:]
    except OSError:
        return []


def _last_line(path: Path) -> str:
    lines = _tail(path, 1)
    return one_line(lines[-1])[:240] if lines else ""


STATE = pytest.StashKey[SessionParts]()


def session_parts(config: pytest.Config) -> SessionParts:
    if STATE not in config.stash:
        config.stash[STATE] = SessionParts(config)
    return config.stash[STATE]


# -- the pytest side --------------------------------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"needs(*parts): the test needs these parts of the machine ({', '.join(PARTS)}); provided by "
                   f"the session when it can, else the test is skipped naming what to install (fails when CI=true)")


@pytest.hookimpl(tryfirst=True)   # before xdist reads the xdist_group markers it adds
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("needs")
        unknown = [a for a in (marker.args if marker else ()) if a not in PARTS]
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.needs{tuple(unknown)}: no such part "
                                    f"(known: {', '.join(PARTS)})")
    parts = session_parts(config)
    group_and_order(items, lambda item: bool(parts.needs(item)))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    # outside pytest-timeout's timer (its wrapper is inside this one): apt-get may take minutes
    parts = session_parts(item.config)
    names = parts.needs(item)
    if any(n not in parts.results for n in names):
        # every part the selected tests need, at once: one apt-get update, one install
        parts.provide(names + sorted(parts.wanted(item.session)))
    return (yield)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    parts = session_parts(item.config)
    names = parts.needs(item)
    if names:
        parts.require(names)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if STATE in session.config.stash:
        session.config.stash[STATE].stop_dockerd()


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    if STATE not in config.stash or not config.stash[STATE].results:
        return
    parts = config.stash[STATE]
    terminalreporter.write_sep("-", "required parts")
    for line in parts.done:
        terminalreporter.write_line(line)
    for name, missing in parts.results.items():
        state = "present" if missing is None else "MISSING: " + missing_line({name: missing}, parts.notes)
        terminalreporter.write_line(f"{PARTS[name].title}: {state}")


@pytest.fixture(scope="session")
def chromium_path(request: pytest.FixtureRequest) -> str:
    """The headless browser the browser tests drive (through playwright)."""
    session_parts(request.config).require(["chromium"])
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def docker_daemon(request: pytest.FixtureRequest) -> str:
    """The URL of a Docker daemon that answers (DOCKER_HOST, or the default socket)."""
    session_parts(request.config).require(["docker"])
    return docker_host()
