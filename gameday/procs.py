"""Child processes that cannot outlive the harness.

Every process the harness starts gets its own process group (so a stop kills its children
too) and PR_SET_PDEATHSIG (so a SIGKILLed parent still takes its children down with it).

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a
child started from a short-lived worker thread would be killed when that thread ends. So
every spawn goes through one long-lived spawner thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# One thread that lives as long as the process: the parent thread of every child.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gameday-spawner")

_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent (thread) dies; call it in the
    child between fork and exec (a preexec_fn)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except OSError:
        pass


def _die_with_parent() -> None:  # runs in the child between fork and exec
    set_parent_death_signal(signal.SIGKILL)
    os.setpgrp()


def spawn(argv: list[str], log_path: Path | None = None, env: dict[str, str] | None = None,
          cwd: str | Path | None = None, stdin=subprocess.DEVNULL, stdout=None,
          pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start argv in its own process group, output (or stderr, if stdout is piped) appended to log_path;
    `pass_fds`: descriptors the child keeps (a listening socket it is handed: net.reserved_port)."""
    log = None
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab", buffering=0)
    out = stdout if stdout is not None else (log or subprocess.DEVNULL)
    # with a piped stdout (a child that answers on it), the log takes stderr alone
    err = subprocess.STDOUT if stdout is None else (log or None)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        return _spawner.submit(
            subprocess.Popen, argv, stdin=stdin, stdout=out, stderr=err,
            env=full_env, cwd=cwd, preexec_fn=_die_with_parent, close_fds=True, pass_fds=tuple(pass_fds)).result()
    finally:
        if log is not None:
            log.close()  # the child holds its own copy


def terminate(proc: subprocess.Popen | None, grace_s: float = 2.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after grace_s."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def kill_now(proc: subprocess.Popen | None) -> None:
    """SIGKILL the process group at once (ECS stop_task on a task that ignores SIGTERM is the same in the end)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.wait(timeout=5)


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first: index 0 is field 3 of
    proc(5)), or None if this process cannot see `pid`. The command name may hold spaces and ')',
    so the split is after its last ')'."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    """CPU time `pid` has used so far (utime + stime), for benchmarks that measure a server's own cost."""
    fields = stat_fields(pid)
    if fields is None:
        raise ProcessLookupError(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python() -> str:
    return sys.executable
