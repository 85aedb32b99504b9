"""`gameday rollback [RUN_DIR]`: after a SIGKILLed injector, roll back from the run's journal
every fault that has an intent and no rolled_back, against the environment still running.

The environment is found from RUN_DIR/env/state.json (what the run's environment wrote), else
the default state file (`gameday up`). A local environment's faults live in its processes:
when it is gone, so are they, and there is nothing to restore.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from gameday.environments.base import Environment
from gameday.faults.base import Fault, FaultError
from gameday.faults.journal import Journal, JournaledFault, JournalError, open_faults, read_journal

EXIT_OK, EXIT_ROLLBACK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class NoLiveEnvironment(Exception):
    pass


def find_environment(run_dir: Path, open_: list[JournaledFault], state_file: Path | None = None) -> dict:
    """Endpoints of the running environment these faults were applied to; NoLiveEnvironment (why) if none."""
    import requests

    from gameday import state

    run_state = run_dir / "env" / "state.json"
    path = state_file or (run_state if run_state.exists() else None)
    try:
        endpoints = state.read_state(path)
    except state.NoEnvironment as e:
        raise NoLiveEnvironment(str(e)) from None
    # the journal says which environment (its pid) each fault was applied to
    pids = {f.env.get("pid") for f in open_ if f.env and f.env.get("pid")}
    if pids and endpoints.get("pid") not in pids:
        raise NoLiveEnvironment(f"the environment running now (pid {endpoints.get('pid')}) is not the one these "
                                f"faults were applied to (pid {', '.join(str(p) for p in sorted(pids))})")
    try:
        requests.get(endpoints["control_url"] + "/endpoints", timeout=3).raise_for_status()
    except (requests.RequestException, KeyError, TypeError) as e:
        raise NoLiveEnvironment(f"the environment's control API does not answer ({type(e).__name__})") from None
    return endpoints


def rollback_run(run_dir: str | Path, *, attach: Callable[[Path, list[JournaledFault]], Environment],
                 echo: Callable[[str], None] = print, err: Callable[[str], None] = print) -> int:
    """Roll back the open faults of a run; one line per fault. Returns the exit code.

    `attach(run_dir, open_faults)` returns the live environment those faults were applied to, or
    raises NoLiveEnvironment (then there is nothing to restore: a local environment's faults die
    with it). The caller (the `gameday rollback` command) is the composition root that knows the
    environment kinds; this module knows only the Environment interface."""
    run = Path(run_dir)
    if not run.is_dir():
        err(f"gameday: error: {run}: no such run directory")
        return EXIT_BAD_INPUT
    journal_path = run / "journal.jsonl"
    if not journal_path.exists():
        echo(f"no journal in {run}: no fault was injected in this run; nothing to roll back")
        return EXIT_OK
    try:
        faults, warnings = read_journal(journal_path)
        todo: list[tuple[JournaledFault, Fault]] = [(jf, _rebuild(jf)) for jf in open_faults(faults)]
    except JournalError as e:
        err(f"gameday: error: corrupted journal {journal_path}: {e}")
        return EXIT_BAD_INPUT
    for w in warnings:
        echo(f"warning: {w}")
    if not todo:
        echo(f"nothing to roll back: all {len(faults)} fault(s) in {journal_path} were rolled back")
        return EXIT_OK

    try:
        env = attach(run, [jf for jf, _ in todo])
    except NoLiveEnvironment as e:
        echo(f"no running environment ({e}): the local environment's faults died with it; nothing to restore "
             f"({len(todo)} fault(s) were open: {', '.join(f'{jf.kind} {jf.target}' for jf, _ in todo)})")
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - one line for the user
        err(f"gameday: error: cannot reach the environment of {run}: {e}")
        return EXIT_ROLLBACK_FAILED
    journal = Journal(journal_path)
    failed = 0
    for jf, fault in reversed(todo):  # newest first, as the nemesis would
        try:
            detail = env.revert(fault, jf.injected)
        except Exception as e:  # noqa: BLE001 - report it, go on with the others
            failed += 1
            msg = f"{type(e).__name__}: {e}"
            journal.write("rollback_failed", id=jf.id, kind=jf.kind, target=jf.target, params=jf.params,
                          scenario=jf.scenario, detail={"error": msg, "by": "gameday rollback", "pid": os.getpid()})
            echo(f"FAILED  {jf.kind} {jf.target} ({jf.id}): {msg}")
            continue
        journal.write("rolled_back", id=jf.id, kind=jf.kind, target=jf.target, params=jf.params,
                      scenario=jf.scenario, detail={**(detail or {}), "by": "gameday rollback", "pid": os.getpid()})
        _timeline(env, jf, fault)
        echo(f"rolled back  {jf.kind} {jf.target} ({jf.id}, {jf.state}): {fault.describe()}")
    return EXIT_ROLLBACK_FAILED if failed else EXIT_OK


def _rebuild(jf: JournaledFault) -> Fault:
    try:
        return Fault.from_record(jf.kind, jf.params)
    except FaultError as e:
        raise JournalError(f"journal.jsonl:{jf.intent_line}: fault {jf.id} cannot be rebuilt: {e}") from None


def _timeline(env, jf: JournaledFault, fault: Fault) -> None:
    try:
        env.post_event({"kind": "fault", "action": "rollback", "ok": True, "id": jf.id, "fault_kind": jf.kind,
                        "target": jf.target, "by": "gameday rollback", "description": fault.describe(),
                        "scenario": jf.scenario}, timeout_s=2)
    except Exception:  # noqa: BLE001 - the journal is the record; the timeline is best effort
        pass
