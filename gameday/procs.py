"""Child processes that cannot outlive the harness.

Every process the harness starts gets its own process group (so a stop kills its children
too) and PR_SET_PDEATHSIG (so a SIGKILLed parent still takes its children down with it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    os.setpgrp()


def spawn(argv: list[str], log_path: Path | None = None, env: dict[str, str] | None = None,
          cwd: str | Path | None = None, stdin=subprocess.DEVNULL, stdout=None) -> subprocess.Popen:
    """Start argv in its own process group, output appended to log_path."""
    out = stdout
    if out is None:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(log_path, "ab", buffering=0)
        else:
            out = subprocess.DEVNULL
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=subprocess.STDOUT if stdout is None else None,
                            env=full_env, cwd=cwd, preexec_fn=_die_with_parent, close_fds=True)


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


def python() -> str:
    return sys.executable
