"""`gameday load --master ...` and `gameday load --worker ...`: Locust's distributed mode with
workers on other hosts (docs/scaling.md). Anything else `gameday load` is given goes to Locust
unchanged (gameday.loadgen.__main__).

    gameday load --master --expect-workers 2 [--run-dir D] [--bind-host H] [--port P]
                 [--state-file S] [--surge-region R --surge-rate X --hold T ...: the run's options]
    gameday load --worker --master-host H [--master-port P]

The master is headless, binds H:P (default 0.0.0.0:5557), waits for the workers, plans the run
against the environment the state file names and hands every worker the endpoints, the plan and
its start time with Locust's spawn message: a worker needs nothing of the master's filesystem.
Workers stream their history to the master (loadgen/history_stream.py), which writes the merged
history.jsonl and history_completeness.json into the run directory, with each worker's clock
offset (loadgen/clock_offset.py).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from pathlib import Path

from gameday import state

DEFAULT_PORT = 5557   # Locust's own default master port
HELP = "\n\n".join(__doc__.split("\n\n")[1:3]) if __doc__ else ""


class LoadCliError(ValueError):
    """A bad command line: one line, no traceback."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gameday load", add_help=False, allow_abbrev=False)
    role = p.add_mutually_exclusive_group()
    role.add_argument("--master", action="store_true")
    role.add_argument("--worker", action="store_true")
    p.add_argument("--expect-workers", type=str)
    p.add_argument("--run-dir", type=str)
    p.add_argument("--bind-host", type=str)
    p.add_argument("--port", type=str)
    p.add_argument("--state-file", type=str)
    p.add_argument("--master-host", type=str)
    p.add_argument("--master-port", type=str)
    p.add_argument("-h", "--help", action="store_true")
    return p


def distributed(argv: list[str]) -> bool:
    """Is this command line a distributed master or worker (this module's), not plain Locust?"""
    return any(a in ("--master", "--worker") for a in argv)


def _int(value: str | None, flag: str, low: int, high: int, default: int | None = None) -> int:
    if value is None:
        if default is None:
            raise LoadCliError(f"{flag} is required")
        return default
    try:
        n = int(value)
    except ValueError:
        raise LoadCliError(f"{flag} {value!r}: not a whole number") from None
    if not low <= n <= high:
        raise LoadCliError(f"{flag} {n}: must be between {low} and {high}")
    return n


def _host(value: str | None, flag: str, default: str | None = None) -> str:
    if not value:
        if default is None:
            raise LoadCliError(f"{flag} is required (the master's address)")
        return default
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    try:
        socket.getaddrinfo(value, None)
    except OSError:
        raise LoadCliError(f"{flag} {value!r}: not an address and does not resolve") from None
    return value


def master_argv(opts, rest: list[str]) -> list[str]:
    """Locust's command line for a distributed master."""
    n = _int(opts.expect_workers, "--expect-workers", 1, 10000)
    port = _int(opts.port, "--port", 1, 65535, DEFAULT_PORT)
    host = _host(opts.bind_host, "--bind-host", "0.0.0.0")
    try:
        state_path = state.state_path(opts.state_file)
        state.read_state(opts.state_file)
    except state.NoEnvironment as e:
        raise LoadCliError(str(e)) from None
    argv = ["--master", "--headless", "--master-bind-host", host, "--master-bind-port", str(port),
            "--expect-workers", str(n), "--gameday-history-stream", "on",
            "--gameday-state", str(Path(state_path).resolve())]
    if opts.run_dir:
        d = Path(opts.run_dir).resolve()
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LoadCliError(f"--run-dir {opts.run_dir}: {e.strerror or e}") from None
        argv += ["--history-dir", str(d), "--csv", str(d / "locust"), "--html", str(d / "locust.html")]
    return argv + rest


def worker_argv(opts, rest: list[str]) -> list[str]:
    """Locust's command line for a worker on another host."""
    for flag in ("expect_workers", "run_dir", "bind_host", "port", "state_file"):
        if getattr(opts, flag) is not None:
            raise LoadCliError(f"--{flag.replace('_', '-')} is a master option (this is --worker)")
    host = _host(opts.master_host, "--master-host")
    port = _int(opts.master_port, "--master-port", 1, 65535, DEFAULT_PORT)
    return ["--worker", "--master-host", host, "--master-port", str(port), *rest]


def locust_argv(argv: list[str]) -> list[str] | None:
    """The Locust command line for `gameday load ARGV` (--master or --worker); None after --help.
    LoadCliError for a bad one."""
    opts, rest = _parser().parse_known_args(argv)
    if opts.help:
        print(HELP)
        return None
    if opts.master:
        if opts.master_host or opts.master_port:
            raise LoadCliError("--master-host/--master-port are worker options "
                               "(this is --master; use --bind-host/--port)")
        return master_argv(opts, rest)
    return worker_argv(opts, rest)


def main(argv: list[str]) -> int:
    """`gameday load ARGV`: the distributed master or worker, else Locust with gameday's locustfile."""
    from gameday.loadgen.__main__ import main as load_main

    if not distributed(argv):
        if "-h" in argv or "--help" in argv:
            print("gameday load: Locust with gameday's locustfile; distributed over hosts:\n" + HELP + "\n")
            sys.stdout.flush()
        return load_main(argv) or 0
    if "--master" in argv and "--worker" in argv:
        return _fail("--master and --worker: choose one")
    try:
        args = locust_argv(argv)
    except LoadCliError as e:
        return _fail(str(e))
    if args is None:
        return 0
    return load_main(args) or 0


def _fail(message: str) -> int:
    sys.stderr.write(f"gameday load: error: {message}\n")
    return 2
