"""A Locust process started ahead of its run (loadgen.runner.LocustPark).

Most of a Locust process's start-up is imports: Locust itself with gevent's monkey-patching
(~0.6 s on 2 cores) and the locustfile's modules (~0.5 s). A parked process does them while the
previous scenario ends or the environment settles, then waits for its command line on stdin,
one JSON line {"argv": [...], "log": "<path>", "env": {...}, "cwd": "<dir>"}, and runs Locust's
main() with that argv exactly as `python -m locust <argv>` would, its output appended to the log.
The locustfile itself is not imported here: Locust imports it from its path, as always (its
event listeners must be registered once). End of input without a line: exit 0 (a park closed
unused).
"""

from __future__ import annotations

import gc
import json
import os
import sys


def main() -> int:
    import locust.main  # noqa: F401 - the point of parking: Locust, gevent's patching

    from gameday.loadgen import chaos_ui, context, history, plan, shapes, users  # noqa: F401 - the locustfile's

    gc.freeze()   # the imports live as long as the process: collections during the run skip them
    line = sys.stdin.readline()
    if not line.strip():
        return 0
    cmd = json.loads(line)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)   # as a spawned Locust: nothing to read on stdin
    log = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    os.environ.clear()
    os.environ.update(cmd["env"])
    os.chdir(cmd["cwd"])
    sys.argv = ["locust", *cmd["argv"]]
    return locust.main.main()


if __name__ == "__main__":
    sys.exit(main())
