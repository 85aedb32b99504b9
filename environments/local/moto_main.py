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

and two things for the cold start (environments/local/moto_region.py is the other side):

- with --plan-stdin, the server first makes the provisioning calls it reads on stdin (JSON,
  provision.plan()'s calls for this server) through its own WSGI application, in-process:
  the same requests, dispatch and backends as over HTTP, without the sockets, and while the
  other regions' servers do theirs on the other core;
- once its socket listens, it writes one line on stdout, `{"ready": true, "results": {...}}`
  (what the calls saved: hosted zone and health check ids), so its starter waits on an
  event rather than polling; stdout then goes to the log.

Only the standard library at import: this module runs in every moto process, which should
import moto and nothing else of the harness (environments/local/__init__.py is lazy for that).

benchmarks/bench_moto.py measures the server side by side with plain `python -m moto.server`.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
from urllib.parse import urlsplit

# the credentials the in-process calls sign with: gameday.aws.LOCAL_CREDENTIALS (not imported:
# see above). moto's default account answers whatever the key is.
_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def speed_up_dispatch() -> None:
    from moto import backends
    from moto.core import responses

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules   # werkzeug_app calls it as backends.<name>()
    # call_action only asks `action in method_names`: a frozenset answers that as the list did
    names_of = responses.method_names_from_class
    responses.method_names_from_class = functools.cache(lambda clazz: frozenset(names_of(clazz)))


def share_sdk_data() -> None:
    """botocore's Loader caches per instance, and moto makes a new Session or Loader for many
    things (each backend's region list, each service's model): each one lists botocore's data
    folder (~400 services, a stat each) and parses endpoints.json again, ~30% of the CPU of a
    server's first calls. The files do not change while the server runs, and the SDK only reads
    the parsed endpoints, so one parse per process serves every Loader with the same paths."""
    from botocore import loaders

    def shared(method, copy=lambda v: v, names=None):
        cache: dict = {}

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            if names is not None and (args[0] if args else kwargs.get("name")) not in names:
                return method(self, *args, **kwargs)
            key = (type(self), tuple(self.search_paths), args, tuple(sorted(kwargs.items())))
            if key not in cache:
                cache[key] = method(self, *args, **kwargs)
            return copy(cache[key])
        return wrapper

    for name in ("list_available_services", "list_api_versions"):
        setattr(loaders.Loader, name, shared(getattr(loaders.Loader, name), copy=list))
    loaders.Loader.load_data_with_path = shared(loaders.Loader.load_data_with_path, names={"endpoints", "partitions"})


def _resolve(value, results: dict):
    """`value` with every {"$ref": name} replaced by the result saved under that name."""
    if isinstance(value, dict):
        if set(value) == {"$ref"}:
            return results[value["$ref"]]
        return {k: _resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, results) for v in value]
    return value


def apply_plan(calls: list[dict], client_for) -> dict[str, str]:
    """Make the plan's calls in order with `client_for(service, region)` (a boto3 client); returns
    the values the calls saved, by name. A failing call raises: a half-provisioned region is
    not an environment."""
    results: dict[str, str] = {}
    for call in calls:
        answer = getattr(client_for(call["service"], call["region"]), call["op"])(**_resolve(call["params"], results))
        if call.get("save"):
            for key in call["pick"]:
                answer = answer[key]
            results[call["save"]] = answer
    return results


def in_process_clients(app, base_url: str):
    """client_for(service, region): boto3 clients whose requests `app` answers in this process.
    One botocore session for all, so each service's model is read once."""
    import botocore.session
    from botocore.awsrequest import AWSResponse
    from moto.core.botocore_stubber import MockRawResponse
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    session = botocore.session.get_session()
    clients: dict[tuple[str, str], object] = {}

    def send(request, **_):
        url = urlsplit(request.url)
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        environ = EnvironBuilder(method=request.method, base_url=f"{url.scheme}://{url.netloc}", path=url.path,
                                 query_string=url.query, headers=headers,
                                 data=request.body or b"").get_environ()
        body, status, headers = run_wsgi_app(app, environ, buffered=True)
        return AWSResponse(request.url, int(status.split()[0]), dict(headers.items()),
                           MockRawResponse(b"".join(body)))

    def client_for(service: str, region: str):
        if (service, region) not in clients:
            c = session.create_client(service, region_name=region, endpoint_url=base_url, **_CREDENTIALS)
            c.meta.events.register("before-send", send)
            clients[(service, region)] = c
        return clients[(service, region)]

    return client_for

LISTEN_QUEUE = 4096   # benchmarks/bench_latency.py measures it against werkzeug's 128 side by side


def serve(host: str, port: int, plan: list[dict] | None) -> None:
    """moto.server.main's server (threaded werkzeug, moto's request handler), provisioned by
    `plan` before its socket listens, and saying so on stdout once it does."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import BaseWSGIServer, make_server

    os.environ.setdefault("MOTO_PORT", str(port))   # as moto.server.main: some answers hold the server's URL
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    results = apply_plan(plan, in_process_clients(app, f"http://{host}:{port}")) if plan else {}
    # moto answers every request with Connection: close, so every AWS call is a new connection: with
    # werkzeug's listen queue of 128, a burst of callers overflows it, the kernel drops SYNs and each
    # costs a 1 s retransmit (a random 2 s client timeout). 4096 is Linux's default somaxconn cap.
    BaseWSGIServer.request_queue_size = LISTEN_QUEUE
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    sys.stdout.write(json.dumps({"ready": True, "results": results}) + "\n")
    sys.stdout.flush()
    os.dup2(2, 1)   # the starter reads one line; whatever is printed later belongs in the log
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a region's moto server (see the module docstring)")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--plan-stdin", action="store_true", help="read provisioning calls (JSON) on stdin first")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    speed_up_dispatch()
    share_sdk_data()
    # read after moto is loaded: the starter spawns first and writes the plan once it has one
    serve(args.host, args.port, json.load(sys.stdin) if args.plan_stdin else None)
