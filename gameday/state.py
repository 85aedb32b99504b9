"""The state file `gameday up` writes so that Locust, `gameday status` and other tools find
the running environment without being told (GAMEDAY_STATE overrides the path)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

DEFAULT_STATE = Path(".gameday") / "local.json"


class NoEnvironment(Exception):
    pass


def state_path(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get("GAMEDAY_STATE") or DEFAULT_STATE)


def pid_namespace() -> str:
    """Which process namespace a pid belongs to (host + /proc's pid namespace id): a pid written in
    one (`gameday up` on a host) means nothing in another (a Locust master in a container or pod)."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = "?"
    return f"{socket.gethostname()}/{ns}"


def write_state(endpoints: dict, path: str | Path | None = None) -> Path:
    p = state_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    data = {**endpoints, "pid_namespace": pid_namespace()} if endpoints.get("pid") else endpoints
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, p)
    return p


def read_state(path: str | Path | None = None) -> dict:
    p = state_path(path)
    if not p.exists():
        raise NoEnvironment(f"no running environment: {p} not found (start one with `gameday up`)")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise NoEnvironment(f"{p} is not valid JSON ({e}); remove it and run `gameday up`") from None
    pid = data.get("pid")
    # the liveness check only where the pid means something: the namespace that wrote it
    if pid and data.get("pid_namespace", pid_namespace()) == pid_namespace():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise NoEnvironment(f"the environment in {p} (pid {pid}) is not running; start one with `gameday up`") from None
        except PermissionError:
            pass
    return data


def remove_state(path: str | Path | None = None, pid: int | None = None) -> None:
    p = state_path(path)
    try:
        if pid is None or json.loads(p.read_text()).get("pid") == pid:
            p.unlink()
    except (FileNotFoundError, json.JSONDecodeError):
        pass
