"""Entry point of a region's moto server: `python -m moto.server` without werkzeug's per-request
access log, which cost about 11% of the server's CPU under load (py-spy, 100 requests/s) for
lines nobody reads; warnings and errors still reach the log file."""

from __future__ import annotations

import logging
import sys

from moto.server import main

if __name__ == "__main__":
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    main(sys.argv[1:])
