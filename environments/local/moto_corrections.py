"""Where moto's behaviour is corrected to AWS's, inside each moto server process (moto_main
installs them before the server provisions or serves). One module per area, each with an
`install(admin)`: it patches moto's backends or responses (what AWS answers that moto does not:
alarm history, target health, a change going PENDING -> INSYNC, ...) and may register admin
routes through which the harness tells moto the local model's truth.

Admin routes: `POST {moto_url}/_gameday/<name>` with a JSON body, answered with JSON by the
function registered under <name>; not an AWS API (no SigV4, never through the router, so no
customer can call it and no API fault applies). gameday.aws has `moto_admin(url, name, **body)`
for the harness's side.

Only moto and the standard library at import (see moto_main's docstring).
"""

from __future__ import annotations

import importlib
import json
from typing import Callable

ADMIN_PREFIX = "/_gameday/"

# the correction modules (environments/local/<name>.py), each with install(admin: AdminRoutes)
CORRECTIONS: tuple[str, ...] = ("moto_fix_cloudwatch", "moto_fix_dynamodb", "moto_fix_ecs", "moto_fix_elbv2",
                                 "moto_fix_fis", "moto_fix_route53", "moto_fix_sns")


def find_in_backends(backends, region: str, get: Callable[[object], object], what: str):
    """What `get(backend)` finds (not None) in `region`'s backend of any account (moto keeps one
    backend per account and region); KeyError naming `what` (an admin route's 400) when none has it."""
    for account in list(backends.keys()):
        found = get(backends[account][region])
        if found is not None:
            return found
    raise KeyError(f"no {what} in {region}")


class AdminRoutes:
    """name -> handler(body: dict) -> JSON-serialisable answer; a ValueError/KeyError is a 400."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[dict], object]] = {}

    def route(self, name: str, handler: Callable[[dict], object]) -> None:
        if name in self.handlers:
            raise ValueError(f"admin route {name!r} registered twice")
        self.handlers[name] = handler

    def wrap(self, app):
        """`app` (moto's WSGI application) answering ADMIN_PREFIX paths itself."""
        handlers = self.handlers

        def wsgi(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if not path.startswith(ADMIN_PREFIX):
                return app(environ, start_response)
            handler = handlers.get(path[len(ADMIN_PREFIX):])
            if handler is None:
                status, answer = "404 Not Found", {"error": f"no admin route {path}"}
            else:
                try:
                    size = int(environ.get("CONTENT_LENGTH") or 0)
                    body = json.loads(environ["wsgi.input"].read(size) or b"{}") if size else {}
                    status, answer = "200 OK", handler(body)
                except (ValueError, KeyError, TypeError) as e:
                    status, answer = "400 Bad Request", {"error": f"{type(e).__name__}: {e}"}
            data = json.dumps(answer).encode()
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
            return [data]

        return wsgi


def install() -> AdminRoutes:
    """Every correction installed (once per process: a zygote's servers inherit them)."""
    admin = AdminRoutes()
    for name in CORRECTIONS:
        importlib.import_module(f"gameday.environments.local.{name}").install(admin)
    return admin
