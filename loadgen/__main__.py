"""`python -m gameday.loadgen [locust options]`: Locust with gameday's locustfile (what `gameday load` runs).

    gameday load                              # web UI on http://127.0.0.1:8089, custom options in the form
    gameday load --headless --surge-region us-east-1 --surge-rate 1.5x --hold 20s
    gameday load --master --expect-workers 2 & gameday load --worker & gameday load --worker

The web UI and the master bind to 127.0.0.1 unless --web-host / --master-bind-host say otherwise
(the locustfile sets those defaults). The web UI has a "Chaos" tab (docs/web-ui.md); off loopback
it needs a token: GAMEDAY_WEB_TOKEN=... gameday load --web-host 0.0.0.0 (Locust's login page,
password = the token). `gameday up --web` starts the environment and this web UI together. Every
Locust option works; `--help` lists gameday's after Locust's own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def gameday_help() -> str:
    from gameday.loadgen.plan import OPTIONS

    lines = ["", "gameday options (custom arguments; also in the web UI form; env GAMEDAY_LOAD_<NAME>):"]
    for o in OPTIONS:
        lines.append(f"  {o.flag:<18} {o.help} (default: {o.default or '-'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        # Locust prints --help before it imports the locustfile, so it cannot list gameday's options
        import subprocess

        subprocess.call([sys.executable, "-m", "locust", "--help"])
        print(gameday_help())
        return
    if not any(a in ("-f", "--locustfile") or a.startswith("--locustfile=") for a in args):
        args = ["-f", str(LOCUSTFILE), *args]
    # replace this process: signals (Ctrl-C, SIGTERM, SIGUSR1) then reach Locust itself
    os.execv(sys.executable, [sys.executable, "-m", "locust", *args])


if __name__ == "__main__":
    main()
