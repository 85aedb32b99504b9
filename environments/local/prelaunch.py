"""`gameday up`'s slowest first steps, started before it imports the CLI.

`LocalEnvironment` already holds the validated config when it starts `gameday up --json`, so it
passes what the moto servers and the task zygote need (the regions, the logs folder, whether the
built-in service's tasks fork from a zygote) in $GAMEDAY_PRELAUNCH and runs this module in front
of the CLI. Their zygotes then import moto and boto3 (the longest part of a cold start) while this
process imports the CLI, pydantic and the config (about 0.25 s on 2 cores), instead of after.

`LocalStack` takes them over (take_fleet, take_task_zygote) when they match what it would start
itself, and starts its own otherwise; whatever is not taken is stopped (discard), and dies with
this process anyway (procs.spawn). `gameday up` run by hand never sets the variable: the same
stack starts, a quarter of a second later.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ENV_VAR = "GAMEDAY_PRELAUNCH"
_launched: dict[str, tuple] = {}


def spec_for(regions: list[str], logs_dir: Path, *, task_zygote: bool) -> str:
    """The value of $GAMEDAY_PRELAUNCH for a stack with these regions (Route 53's us-east-1
    included, as LocalStack adds it) and this logs folder."""
    return json.dumps({"regions": list(regions), "logs": str(logs_dir), "task_zygote": task_zygote})


def launch(spec: dict) -> None:
    from gameday.environments.local.moto_region import MotoFleet

    logs = Path(spec["logs"])
    regions = tuple(spec["regions"])
    _launched["fleet"] = (regions, logs, MotoFleet(list(regions), logs).launch())
    if spec.get("task_zygote"):
        from gameday.environments.local.zygote import TaskZygote

        log = logs / "task-zygote.log"
        _launched["task_zygote"] = (log, TaskZygote(log).start())


def take_fleet(regions: list[str], logs_dir: Path):
    """The prelaunched MotoFleet if it has exactly these regions and logs folder, else None."""
    got = _launched.pop("fleet", None)
    if got is None:
        return None
    launched_regions, logs, fleet = got
    if list(launched_regions) == list(regions) and Path(logs) == Path(logs_dir):
        return fleet
    fleet.stop()
    return None


def take_task_zygote(log_path: Path):
    """The prelaunched TaskZygote if it logs to `log_path`, else None."""
    got = _launched.pop("task_zygote", None)
    if got is None:
        return None
    log, zygote = got
    if Path(log) == Path(log_path):
        return zygote
    zygote.stop()
    return None


def discard() -> None:
    """Stop whatever was prelaunched and not taken (a stack that failed before, or another kind)."""
    while _launched:
        _, got = _launched.popitem()
        got[-1].stop()


def main() -> None:
    # run as `python -m`, this file is __main__: the stack imports it by its name, a module of its
    # own, and must find what was launched there
    from gameday.environments.local import prelaunch

    spec = os.environ.pop(ENV_VAR, None)   # popped: nothing this process starts inherits it
    if spec:
        prelaunch.launch(json.loads(spec))
    from gameday.cli import main as cli_main

    try:
        cli_main()
    finally:
        prelaunch.discard()


if __name__ == "__main__":
    main()
