"""The local environment's control API: HTTP + JSON on 127.0.0.1, routed by a werkzeug Map.
The faults (gameday.faults), the CLI, the docker environment, the tests and the Chaos UI drive
the running stack through it (`LocalEnvironment.control(method, path, body)`).

Routes (each answers one JSON document):
  GET    /endpoints                 the stack's endpoints (what `gameday up --json` prints)
  GET    /status                    every component's status()
  GET    /events?since=SEQ&kind=K   timeline events after SEQ (optionally of one kind)
  POST   /events                    {"kind": K = "note", ...fields} onto the timeline
  GET    /lambda/invocations        the failover Lambda's invocations
  POST   /network/block             {"region", "mode": "hang" | "refuse" = "hang"}
  POST   /network/unblock           {"region"}
  POST   /control-plane/block       {"region"}       (any region with an AWS endpoint)
  POST   /control-plane/unblock     {"region"}
  POST   /api-faults                {"kind", "region", "service", "operation", "rate", "status",
                                     "latency_s", "limit"}: the rule, with its "id"
  DELETE /api-faults/<id>           {"removed": bool}
  POST   /replication/pause|resume  {"source", "destination"}
  POST   /replication/config        {"lag_s"?, "drop_fraction"?}
  POST   /lambda/fault              {"mode": "error" | "timeout" | "delay", "delay_s"?}
  GET    /lambda/fault              {"fault": {...} | null}
  DELETE /lambda/fault              {"cleared": bool}
  POST   /ecs/az                    {"region", "az", "available": bool}
  POST   /lb/fail-responses         {"region", "share": 0 < x <= 1, "status": 5XX = 500} (fault fail_responses)
  POST   /lb/restore-responses      {"region"}: the failure's counts
Actions without a result answer {"ok": true}.

Errors: 400 {"error": one line, "field": the body or query field at fault (when one is)} for bad
input: a body that is not a JSON object, a missing or unknown field, a wrong type, an unknown
region, or a value the component refuses (its ValueError). 404 for an unknown path, 405 for a
known path with another method. Anything else raised by a handler is a bug in the environment:
500 {"error": "<Type>: <message>", "traceback": ...}, also logged with its traceback, never a 400.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import traceback
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import BaseConverter, Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

log = logging.getLogger("gameday.control")

View = Callable[..., Any]   # view(request, **url values) -> a JSON-serialisable result (None: {"ok": true})
OK = {"ok": True}


class ControlError(Exception):
    """Bad input to the control API: answered 400 with this one-line message."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@contextlib.contextmanager
def refused_by_component():
    """A component's own refusal of a value (its documented ValueError: unknown availability
    zone, rate out of range...) is bad input. Only around the component call, so that a
    ValueError anywhere else stays a bug (500)."""
    try:
        yield
    except ValidationError as e:
        raise _field_error(e) from e
    except ValueError as e:
        raise ControlError(str(e).splitlines()[0] if str(e) else type(e).__name__) from e


# -- request bodies ----------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _known_region(region: str, info: ValidationInfo, *, wildcard: bool = False) -> str:
    regions = sorted((info.context or {}).get("regions", ()))
    if (wildcard and region == "*") or region in regions:
        return region
    # pre-formatted: pydantic fills a template's {names} only from a context given with it
    raise PydanticCustomError("unknown_region", f"unknown region {region!r}: one of {regions}")


class RegionBody(_Body):
    region: str

    @field_validator("region")
    @classmethod
    def _region(cls, v: str, info: ValidationInfo) -> str:
        return _known_region(v, info)


class BlockBody(RegionBody):
    mode: Literal["hang", "refuse"] = "hang"


class AzBody(RegionBody):
    az: str
    available: bool


class FailResponsesBody(RegionBody):
    share: float = Field(gt=0, le=1)
    status: int = Field(500, ge=500, le=599)


class ReplicationPair(_Body):
    source: str
    destination: str

    @field_validator("source", "destination")
    @classmethod
    def _region(cls, v: str, info: ValidationInfo) -> str:
        return _known_region(v, info)


class ReplicationConfig(_Body):
    lag_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    drop_fraction: float | None = Field(None, ge=0, le=1)


class LambdaFaultBody(_Body):
    mode: Literal["error", "timeout", "delay"]
    delay_s: float | None = Field(None, gt=0, allow_inf_nan=False)


class ApiFaultBody(_Body):
    """An API fault rule as the client gives it (the router fills in id, matched, created_at)."""
    kind: Literal["throttle", "error", "latency", "blackhole"]
    region: str = "*"
    service: str = "*"
    operation: str = "*"
    rate: float = Field(1.0, gt=0, le=1)
    status: int = Field(500, ge=400, le=599)
    latency_s: float = Field(0.0, ge=0, allow_inf_nan=False)
    limit: int = Field(0, ge=0)

    @field_validator("region")
    @classmethod
    def _region(cls, v: str, info: ValidationInfo) -> str:
        return _known_region(v, info, wildcard=True)


def _field_error(e: ValidationError) -> ControlError:
    err = e.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "missing":
        return ControlError(f"missing field {where!r}", where)
    if err["type"] == "extra_forbidden":
        return ControlError(f"unknown field {where!r}", where)
    return ControlError(f"{where}: {err['msg']}" if where else err["msg"], where or None)


def json_body(request: Request) -> dict:
    raw = request.get_data()
    try:
        body = json.loads(raw) if raw else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ControlError("body is not JSON") from None
    if not isinstance(body, dict):
        raise ControlError(f"body must be a JSON object, got {type(body).__name__}")
    return body


def parse(model: type[BaseModel], request: Request, regions) -> BaseModel:
    try:
        return model.model_validate(json_body(request), context={"regions": regions})
    except ValidationError as e:
        raise _field_error(e) from None


class FaultIdConverter(BaseConverter):
    """An API fault rule's id, as the router makes them (api-<n>)."""
    regex = r"[\w-]+"


# -- the application -----------------------------------------------------------------------------------
class ControlApi:
    """The WSGI application over a LocalStack (its components: router, replication, lambdas, ecs,
    ctx.events; and its endpoints(), status(), block_data_plane()), and its loopback server."""

    def __init__(self, stack):
        self.stack = stack
        self.url_map = Map(converters={"fault_id": FaultIdConverter})
        self.views: dict[str, View] = {}
        self.server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._add_routes()

    def add_route(self, path: str, method: str, view: View) -> None:
        endpoint = f"{method} {path}"
        self.url_map.add(Rule(path, methods=[method], endpoint=endpoint))
        self.views[endpoint] = view

    def _add_routes(self) -> None:
        r = self.add_route
        r("/endpoints", "GET", lambda rq: self.stack.endpoints())
        r("/status", "GET", lambda rq: self.stack.status())
        r("/events", "GET", self.events)
        r("/events", "POST", self.emit)
        r("/lambda/invocations", "GET", lambda rq: self.stack.lambdas.invocations())
        r("/network/block", "POST", lambda rq: self.block(rq, True))
        r("/network/unblock", "POST", lambda rq: self.block(rq, False))
        r("/control-plane/block", "POST", lambda rq: self.control_plane(rq, True))
        r("/control-plane/unblock", "POST", lambda rq: self.control_plane(rq, False))
        r("/api-faults", "POST", self.add_api_fault)
        r("/api-faults/<fault_id:rule_id>", "DELETE",
          lambda rq, rule_id: {"removed": self.stack.router.remove_fault(rule_id)})
        r("/replication/pause", "POST", lambda rq: self.replication(rq, pause=True))
        r("/replication/resume", "POST", lambda rq: self.replication(rq, pause=False))
        r("/replication/config", "POST", self.replication_config)
        # the lambda_fault fault (faults/lambda_fault.py): a broken failover function until DELETE
        r("/lambda/fault", "POST", self.set_lambda_fault)
        r("/lambda/fault", "DELETE", lambda rq: self.stack.lambdas.clear_fault())
        r("/lambda/fault", "GET", lambda rq: {"fault": self.stack.lambdas.fault})
        r("/ecs/az", "POST", self.ecs_az)
        r("/lb/fail-responses", "POST", self.fail_responses)
        r("/lb/restore-responses", "POST",
          lambda rq: self.stack.lbs.fail_responses(parse(RegionBody, rq, self.regions).region, None))

    # -- views --------------------------------------------------------------------------------------
    @property
    def regions(self) -> list[str]:
        """The regions the service runs in (data plane, replication, ECS)."""
        return list(self.stack.config.regions)

    @property
    def aws_regions(self) -> list[str]:
        """Every region with an AWS endpoint (us-east-1 too: Route 53's control plane)."""
        return list(self.stack.ctx.moto_urls)

    def events(self, rq: Request):
        since = rq.args.get("since", "0")
        try:
            seq = int(since)
        except ValueError:
            raise ControlError(f"since must be an event seq (an integer), got {since!r}", "since") from None
        return self.stack.ctx.events.since(seq, rq.args.get("kind"))

    def emit(self, rq: Request):
        fields = json_body(rq)
        kind = fields.pop("kind", "note")
        if not isinstance(kind, str) or not kind:
            raise ControlError(f"kind must be a non-empty string, got {kind!r}", "kind")
        with refused_by_component():   # a kind or field the run log's event models refuse
            return self.stack.ctx.events.emit(kind, **fields)

    def block(self, rq: Request, blocked: bool):
        b = parse(BlockBody if blocked else RegionBody, rq, self.regions)
        return self.stack.block_data_plane(b.region, b.mode if blocked else None)

    def control_plane(self, rq: Request, blocked: bool):
        b = parse(RegionBody, rq, self.aws_regions)
        router = self.stack.router
        (router.block_control_plane if blocked else router.unblock_control_plane)(b.region)
        return OK

    def add_api_fault(self, rq: Request):
        b = parse(ApiFaultBody, rq, self.aws_regions)
        with refused_by_component():
            return self.stack.router.add_fault(**b.model_dump(exclude_unset=True))

    def replication(self, rq: Request, pause: bool):
        b = parse(ReplicationPair, rq, self.regions)
        repl = self.stack.replication
        with refused_by_component():   # e.g. source == destination
            (repl.pause if pause else repl.resume)(b.source, b.destination)
        return OK

    def replication_config(self, rq: Request):
        b = parse(ReplicationConfig, rq, self.regions)
        if b.lag_s is not None:
            self.stack.replication.set_lag(b.lag_s)
        if b.drop_fraction is not None:
            self.stack.replication.drop_fraction = b.drop_fraction
        return OK

    def set_lambda_fault(self, rq: Request):
        b = parse(LambdaFaultBody, rq, self.regions)
        with refused_by_component():   # delay without delay_s
            return self.stack.lambdas.set_fault(b.mode, b.delay_s)

    def ecs_az(self, rq: Request):
        b = parse(AzBody, rq, self.regions)
        with refused_by_component():   # an availability zone the region does not have
            self.stack.ecs.set_az_available(b.region, b.az, b.available)
        return OK

    def fail_responses(self, rq: Request):
        b = parse(FailResponsesBody, rq, self.regions)
        return self.stack.lbs.fail_responses(b.region, b.share, b.status)

    # -- dispatch -----------------------------------------------------------------------------------------
    def dispatch(self, request: Request) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, values = adapter.match()
        except NotFound:
            return _json(404, {"error": f"no route {request.method} {request.path}"})
        except MethodNotAllowed as e:
            allowed = ", ".join(sorted(e.valid_methods or ()))
            return _json(405, {"error": f"{request.method} {request.path} is not allowed: {allowed}"},
                         {"Allow": allowed})
        except HTTPException as e:   # a redirect or another routing answer
            return e.get_response(request.environ)
        try:
            result = self.views[endpoint](request, **values)
        except ControlError as e:
            return _json(400, {"error": str(e), **({"field": e.field} if e.field else {})})
        except Exception as e:  # noqa: BLE001 - a bug: report it, never kill the server
            log.exception("control %s %s failed", request.method, request.path)
            return _json(500, {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        return _json(200, OK if result is None else result)

    def __call__(self, environ, start_response):
        return self.dispatch(Request(environ))(environ, start_response)

    # -- serving --------------------------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> "ControlApi":
        self.server = make_server(host, port, self, threaded=True, request_handler=_QuietHandler)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="control-api", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.server is None:
            return
        self.server.shutdown()   # serve_forever closes the socket as it returns
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.server = self._thread = None


def _json(status: int, obj, headers: dict | None = None) -> Response:
    return Response(json.dumps(obj, default=str), status=status, headers=headers,
                    content_type="application/json")


class _QuietHandler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        # headers and body are written separately: without NODELAY, a keep-alive client's
        # delayed ACK costs every request 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_request(self, code="-", size="-") -> None:
        pass   # one line per poll of /status would drown the log
