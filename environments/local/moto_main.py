"""Entry point of a region's moto server: `python -m moto.server` with three per-request costs
taken out, none of which changes an answer:

- werkzeug's per-request access log: about 11% of the server's CPU under load (py-spy, 100
  requests/s) for lines nobody reads; warnings and errors still reach the log file;
- `moto.backends.list_of_moto_modules()`, which the dispatcher calls for every request to
  find the service's backend: a directory listing of moto's package plus one `stat` per entry
  (~150), 25% of the server's CPU in the docker suite (py-spy, 20 s of a scenario). The
  package's folders do not change while the server runs, so the list is read once;
- `moto.core.responses.method_names_from_class()`, which `call_action` calls for every
  request: `inspect.getmembers` over the service's response class. A class's methods do not
  change either, so it is computed once per class.

benchmarks/bench_moto.py measures the server side by side with plain `python -m moto.server`.
"""

from __future__ import annotations

import functools
import logging
import sys


def speed_up_dispatch() -> None:
    from moto import backends
    from moto.core import responses

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules   # werkzeug_app calls it as backends.<name>()
    # call_action only asks `action in method_names`: a frozenset answers that as the list did
    names_of = responses.method_names_from_class
    responses.method_names_from_class = functools.cache(lambda clazz: frozenset(names_of(clazz)))


if __name__ == "__main__":
    from moto.server import main

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    speed_up_dispatch()
    main(sys.argv[1:])
