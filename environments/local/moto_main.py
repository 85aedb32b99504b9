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

and these for the cold start (environments/local/moto_region.py is the other side):

- with --plan-stdin, the server first makes the provisioning calls it reads on stdin (JSON,
  provision.plan()'s calls for this server) through its own WSGI application, in-process:
  the same requests, dispatch and backends as over HTTP, without the sockets, and while the
  other regions' servers do theirs on the other core;
- once its socket listens, it writes one line on stdout, `{"ready": true, "results": {...}}`
  (what the calls saved: hosted zone and health check ids), so its starter waits on an
  event rather than polling; stdout then goes to the log;
- with --fork REGION PORT FD (repeated: MotoFleet; FD the socket bound to PORT that the starter
  hands over, net.reserved_port, so the port cannot be taken meanwhile), the process is a zygote: it imports moto and
  warms it once (`warm`: each service the harness uses answers one read-only call in-process),
  reads every region's plan ({region: calls}) on stdin, and forks one server per region, which
  provisions itself and serves as above (its ready line names its region and pid); the zygote
  stays their parent, reaps them and reports each exit on stdout. One server process per
  region still, moto's import paid once instead of once per region (~1 CPU-s each);
- the collector is off until the server serves (then frozen, see _main): the start-up's
  objects all live, and full collections over them were ~40% of a start's CPU.

Only the standard library at import: this module runs in every moto process, which should
import moto and nothing else of the harness (environments/local/__init__.py is lazy for that).

benchmarks/bench_moto.py measures the server side by side with plain `python -m moto.server`.
"""

from __future__ import annotations

import argparse
import functools
import gc
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
    # a service's model, as one Loader already shares it between its callers: moto's EC2 backend
    # (ECS imports it) asks three new Sessions for EC2's regions, each parsing its 4 MB model
    loaders.Loader.load_service_model = shared(loaders.Loader.load_service_model)


def _resolve(value, results: dict):
    """`value` with every {"$ref": name} replaced by the result saved under that name, and every
    {"$b64": text} by its bytes (a plan is JSON: a Lambda's zip travels as base64)."""
    if isinstance(value, dict):
        if set(value) == {"$ref"}:
            return results[value["$ref"]]
        if set(value) == {"$b64"}:
            import base64

            return base64.b64decode(value["$b64"])
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


@functools.cache
def _sdk_session():
    """One SDK session per process (a zygote's is its servers'). A boto3 one: its Loader searches
    the paths of the boto3 Sessions moto makes, so share_sdk_data gives both one copy of each model."""
    import boto3

    return boto3.session.Session()


def in_process_clients(app, base_url: str):
    """client_for(service, region): boto3 clients whose requests `app` answers in this process."""
    from botocore.awsrequest import AWSResponse
    from moto.core.botocore_stubber import MockRawResponse
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    session = _sdk_session()
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
            c = session.client(service, region_name=region, endpoint_url=base_url, **_CREDENTIALS)
            c.meta.events.register("before-send", send)
            clients[(service, region)] = c
        return clients[(service, region)]

    return client_for

LISTEN_QUEUE = 4096   # benchmarks/bench_latency.py measures it against werkzeug's 128 side by side


def serve(host: str, port: int, plan: list[dict] | None, app=None, region: str | None = None,
          fd: int | None = None) -> None:
    """moto.server.main's server (threaded werkzeug, moto's request handler), provisioned by
    `plan` before its socket listens, and saying so on stdout once it does (with `region` and its
    pid when a zygote forked it: its servers share the zygote's stdout)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import BaseWSGIServer, make_server

    os.environ.setdefault("MOTO_PORT", str(port))   # as moto.server.main: some answers hold the server's URL
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    app = app or dispatcher()
    results = apply_plan(plan, in_process_clients(app, f"http://{host}:{port}")) if plan else {}
    # moto answers every request with Connection: close, so every AWS call is a new connection: with
    # werkzeug's listen queue of 128, a burst of callers overflows it, the kernel drops SYNs and each
    # costs a 1 s retransmit (a random 2 s client timeout). 4096 is Linux's default somaxconn cap.
    BaseWSGIServer.request_queue_size = LISTEN_QUEUE
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler, fd=fd)
    if fd is not None:
        # the starter's socket, bound to `port` since before this process started (net.reserved_port):
        # werkzeug takes a socket it is handed as already listening
        server.socket.listen(LISTEN_QUEUE)
        os.close(fd)   # fromfd made a duplicate: one descriptor of the socket is enough
    ready = {"ready": True, "results": results, **({"region": region, "pid": os.getpid()} if region else {})}
    os.write(1, (json.dumps(ready) + "\n").encode())   # one write: atomic on a pipe other servers share
    os.dup2(2, 1)   # the starter reads one line; whatever is printed later belongs in the log
    # the start-up's objects (moto, the SDK's models) live as long as the process: out of the
    # collector's sight (see _main), which then only walks what requests allocate
    gc.freeze()
    gc.enable()
    server.serve_forever()


@functools.cache
def _corrections():
    """moto corrected to AWS where the harness relies on it (moto_corrections.py), once per process."""
    from gameday.environments.local import moto_corrections

    return moto_corrections.install()


def dispatcher():
    """moto's WSGI application, as moto.server.main makes it, with moto_corrections' admin routes."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    return _corrections().wrap(app)


# The services the harness provisions and calls (provision.py, the components' clients), each with
# a call that reads and changes nothing: a zygote makes it once for all its servers, so they start
# with the service's backend module, Flask app, request router and SDK models loaded.
HARNESS_SERVICES = {"dynamodb": "list_tables", "dynamodbstreams": "list_streams", "sns": "list_topics",
                    "cloudwatch": "describe_alarms", "ecs": "list_clusters", "route53": "list_hosted_zones",
                    # what stands in for an account's network, load balancer and function (provision.py)
                    "ec2": "describe_vpcs", "elbv2": "describe_load_balancers", "lambda": "list_functions",
                    "iam": "list_roles"}


def warm(services: dict[str, str] = HARNESS_SERVICES):
    """moto's WSGI application, each of `services` asked its read-only call in-process (in the
    default account's us-east-1, whose backend moto makes for any server's first request anyway:
    creating the service's Flask app does). Returns the application."""
    from werkzeug import serving  # noqa: F401 - loaded here once rather than in each server

    app = dispatcher()
    client_for = in_process_clients(app, "http://127.0.0.1:1")
    for service, read_only_call in services.items():
        getattr(client_for(service, "us-east-1"), read_only_call)()
    return app


def fork_servers(host: str, servers: list[tuple[str, int, int | None]], logs_dir: str | None) -> None:
    """The zygote: moto imported and warmed once, then one server process per region forked
    from it (copy-on-write: each starts with moto loaded), each provisioned by its own plan (JSON
    {region: calls} on stdin) and serving on its own port, its log in logs_dir/moto-REGION.log.
    Then it reaps them, saying on stdout which exited with what; it exits once all have."""
    app = warm()
    plans = json.load(sys.stdin)   # read after the warm-up: the starter prepares them meanwhile
    gc.freeze()   # the zygote's objects stay put in the collector's lists: their pages stay shared
    children: dict[int, str] = {}
    zygote = os.getpid()
    for i, (region, port, fd) in enumerate(servers):
        pid = os.fork()
        if pid == 0:
            for _, _, other in servers[i + 1:]:   # the next servers' sockets are theirs alone (the
                if other is not None:             # earlier ones' the zygote has closed already)
                    os.close(other)
            _run_forked(zygote, region, host, port, plans.get(region) or [], logs_dir, app, fd)
        children[pid] = region
        if fd is not None:
            os.close(fd)   # the server holds it: a server that dies frees its port

    def forward(sig, _frame):   # a stop of the zygote stops its servers (each in its own group)
        for child in children:
            _signal_group(child, sig)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    while children:
        pid, status = os.wait()
        region = children.pop(pid, None)
        if region is not None:
            line = json.dumps({"region": region, "pid": pid, "exited": os.waitstatus_to_exitcode(status)})
            os.write(1, (line + "\n").encode())


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _run_forked(zygote: int, region: str, host: str, port: int, plan: list[dict], logs_dir: str | None,
                app, fd: int | None = None) -> None:
    """A forked server (dies with the zygote, its own process group and log); never returns."""
    from gameday.environments.local.zygote import become_forked_child, exit_code

    code = 1
    try:
        become_forked_child(zygote, os.path.join(logs_dir, f"moto-{region}.log") if logs_dir else None,
                            f"moto-{region}")
        serve(host, port, plan, app=app, region=region, fd=fd)
        code = 0
    except SystemExit as e:
        code = exit_code(e)
    except BaseException:  # noqa: BLE001 - the traceback goes to the region's log, the exit code to the starter
        import traceback

        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def _main() -> None:
    parser = argparse.ArgumentParser(description="a region's moto server (see the module docstring)")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, help="serve one region on this port")
    parser.add_argument("--plan-stdin", action="store_true", help="read provisioning calls (JSON) on stdin first")
    parser.add_argument("--fd", type=int, help="with --port: the socket bound to it, handed over by the starter")
    parser.add_argument("--fork", nargs=3, action="append", metavar=("REGION", "PORT", "FD"), default=[],
                        help="zygote: fork a server per REGION on PORT, its socket FD (bound by the starter; "
                             "- for none: the server binds PORT itself) (plans: JSON by region on stdin)")
    parser.add_argument("--logs-dir", help="with --fork: where each server writes moto-REGION.log")
    args = parser.parse_args()
    if bool(args.port) == bool(args.fork):
        parser.error("give either --port or --fork REGION PORT FD (one or more)")
    # The start-up allocates millions of objects that all live (modules, botocore's JSON models):
    # the collector's full passes over them found nothing and cost ~40% of a server's start-up CPU
    # (measured: 1.60 -> 0.98 CPU-s to import and warm). serve() turns it back on.
    gc.disable()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    speed_up_dispatch()
    share_sdk_data()
    if args.fork:
        fork_servers(args.host, [(r, int(p), None if fd == "-" else int(fd)) for r, p, fd in args.fork], args.logs_dir)
    else:
        # read after moto is loaded: the starter spawns first and writes the plan once it has one
        serve(args.host, args.port, json.load(sys.stdin) if args.plan_stdin else None, fd=args.fd)


if __name__ == "__main__":
    _main()
