"""Nothing the docker environment creates outlives it.

Every container (and network, should one ever be made) carries the labels `gameday.run` (the
run's id) and `gameday.owner` (the pid of the `gameday up` that made it). Removed:
  - at stop, by run (`sweep(client, run=...)`);
  - at the next start, by dead owner (`sweep(client)`), for a harness that was SIGKILLed;
  - at once after a SIGKILL, by a watchdog process (`python -m environments.docker.cleanup
    --owner PID --run ID`) that is not the harness's child in any way that would kill it too
    (own session, no parent-death signal): it waits for the owner to die, sweeps, and exits.
    It stands in for testcontainers' Ryuk reaper, whose image cannot be pulled here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

RUN_LABEL = "gameday.run"
OWNER_LABEL = "gameday.owner"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_dead(labels: dict) -> bool:
    try:
        return not _alive(int(labels.get(OWNER_LABEL, "")))
    except ValueError:
        return False


def sweep(client, run: str | None = None) -> dict:
    """Remove the containers and networks of `run`, or (run None) of every owner that is dead."""
    removed = {"containers": 0, "networks": 0}
    for c in client.containers.list(all=True, filters={"label": RUN_LABEL}):
        if (c.labels.get(RUN_LABEL) == run) if run else _owner_dead(c.labels):
            try:
                c.remove(force=True)
                removed["containers"] += 1
            except Exception:  # noqa: BLE001 - already gone (removed by its own stop meanwhile)
                pass
    for n in client.networks.list(filters={"label": RUN_LABEL}):
        labels = n.attrs.get("Labels") or {}
        if (labels.get(RUN_LABEL) == run) if run else _owner_dead(labels):
            try:
                n.remove()
                removed["networks"] += 1
            except Exception:  # noqa: BLE001
                pass
    return removed


def leftovers(client, run: str) -> list[str]:
    """Names of the containers and networks of `run` that still exist (for tests and `gameday status`)."""
    names = [c.name for c in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run}"})]
    names += [n.name for n in client.networks.list(filters={"label": f"{RUN_LABEL}={run}"})]
    return names


def start_watchdog(owner: int, run: str, log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        # deliberately not gameday.procs.spawn: this process must survive its parent's SIGKILL
        return subprocess.Popen([sys.executable, "-m", "gameday.environments.docker.cleanup", "--owner", str(owner), "--run", run],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m environments.docker.cleanup", description=__doc__.split("\n\n")[0])
    p.add_argument("--owner", type=int, required=True, help="pid to wait for")
    p.add_argument("--run", required=True, help="the run id whose containers to remove once the owner is gone")
    p.add_argument("--interval-s", type=float, default=0.5)
    args = p.parse_args(argv)
    while _alive(args.owner):
        time.sleep(args.interval_s)
    from gameday.environments.docker.preflight import docker_client

    removed = sweep(docker_client(), run=args.run)
    print(f"owner {args.owner} gone: removed {removed} of run {args.run}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
