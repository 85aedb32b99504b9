"""What an AWS API request is, and how AWS answers it with an error, from botocore's models.

The router needs two things from a customer call it may fault: the operation it names (a
fault on Route 53's GetChange must not hit ChangeResourceRecordSets) and the error shape its
protocol expects (botocore must parse the fault, and retry a throttle, as it would AWS's own).
Both come from botocore's service models, never from a list of operations kept by hand:

- json (DynamoDB, ECS): the operation is the X-Amz-Target header, "DynamoDB_20120810.PutItem";
- query / ec2 (SNS, IAM, EC2): the Action parameter, in the form body or the query string;
- smithy-rpc-v2-cbor (CloudWatch in botocore >= 1.42): the path, /service/<Service>/operation/<Op>;
- rest-xml / rest-json (Route 53, S3, Lambda): the method and path, matched against each
  operation's http.method / http.requestUri of the services signed with the request's signing
  name ({Label} is one path segment, {Label+} any rest; "?versioning"-style literals, required
  query-string members and required headers tell apart operations that share a path).

The signing name (the service in the SigV4 credential scope) is not the boto3 service name
(cloudwatch signs as "monitoring") and several services share one (dynamodb and
dynamodbstreams; s3 and s3control): `services_signed_as` is the reverse of
`ServiceModel.signing_name`, from every model's metadata.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, NamedTuple
from urllib.parse import parse_qs, parse_qsl, unquote
from xml.sax.saxutils import escape

import botocore.session

REST_PROTOCOLS = ("rest-json", "rest-xml")
CBOR_PROTOCOL = "smithy-rpc-v2-cbor"
LABEL_RE = re.compile(r"\{([^}]+?)(\+?)\}")
ACTION_RE = re.compile(rb"(?:^|&)Action=([^&]+)")
CBOR_OPERATION_RE = re.compile(r"/service/[^/]+/operation/([^/?]+)")
FORM_TYPE = "application/x-www-form-urlencoded"
# Rate throttling codes AWS answers with, most general first: when an operation models one of
# them (Lambda's TooManyRequestsException, 429) that is its throttle. Capacity and concurrency
# errors botocore also retries (ProvisionedThroughputExceededException, PriorRequestNotComplete,
# LimitExceededException) are other failures, not a request-rate throttle.
RATE_THROTTLE_CODES = ("ThrottlingException", "Throttling", "TooManyRequestsException", "ThrottledException",
                       "RequestThrottledException", "RequestLimitExceeded", "SlowDown")
# Otherwise the protocol family's own: query services and Route 53 answer "Throttling" (Route 53
# developer guide, "Throttling for Amazon Route 53 API requests"), EC2 "RequestLimitExceeded"
# (503), json and rest-json services the common error "ThrottlingException", all 400.
PROTOCOL_THROTTLE = {"query": ("Throttling", 400), "rest-xml": ("Throttling", 400),
                     "ec2": ("RequestLimitExceeded", 503)}
DEFAULT_THROTTLE = ("ThrottlingException", 400)


@dataclass(frozen=True)
class Call:
    """One request as AWS sees it: the operation (None when no model names it), the protocol, and
    whether the service speaks JSON for a former query API (its errors then carry the query code)."""
    operation: str | None
    protocol: str
    query_compatible: bool = False


class SignedService(NamedTuple):
    name: str                 # boto3 service name
    protocol: str             # the model's metadata.protocol
    query_compatible: bool    # metadata.awsQueryCompatible: CloudWatch, SQS


# -- the service models a signing name stands for -----------------------------------------------
@functools.cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


def _loader():
    return _session().get_component("data_loader")


def _metadata(name: str) -> dict:
    """A model's metadata without loading the model: loading all ~420 takes 3.7 s on this machine,
    reading the head of each file (metadata comes first) 0.07 s. Falls back to botocore's loader."""
    loader = _loader()
    version = loader.determine_latest_version(name, "service-2")
    for root in loader.search_paths:
        base = os.path.join(root, name, version, "service-2")
        for path, opener in ((base + ".json", open), (base + ".json.gz", gzip.open)):
            if os.path.isfile(path):
                with opener(path, "rt", encoding="utf-8") as f:
                    head = f.read(32768)
                try:
                    start = head.index("{", head.index('"metadata"'))
                    return json.JSONDecoder().raw_decode(head, start)[0]
                except ValueError:
                    return loader.load_service_model(name, "service-2")["metadata"]
    return loader.load_service_model(name, "service-2")["metadata"]


_SIGNING_INDEX_LOCK = threading.Lock()


def _signing_index() -> dict[str, tuple[SignedService, ...]]:
    """signing name -> the services signed with it, as ServiceModel.signing_name reads it. Built
    once under a lock: ~0.5 s of CPU, and a router's request threads that all asked for it at once
    each built it (functools.cache does not hold the others back), starving the process for
    seconds at the start of a load."""
    with _SIGNING_INDEX_LOCK:
        return _build_signing_index()


@functools.cache
def _build_signing_index() -> dict[str, tuple[SignedService, ...]]:
    index: dict[str, list[SignedService]] = defaultdict(list)
    for name in _loader().list_available_services("service-2"):
        md = _metadata(name)
        index[md.get("signingName") or md.get("endpointPrefix") or name].append(
            SignedService(name, md.get("protocol", ""), "awsQueryCompatible" in md))
    return {k: tuple(v) for k, v in index.items()}


def services_signed_as(signing_name: str) -> tuple[SignedService, ...]:
    """The boto3 services whose requests are signed for signing_name (dynamodb: dynamodb, dynamodbstreams)."""
    return _signing_index().get(signing_name, ())


@functools.cache
def service_model(name: str):
    return _session().get_service_model(name)


# -- REST operations from http.method + http.requestUri ------------------------------------------
@dataclass(frozen=True)
class RestRoute:
    operation: str
    protocol: str
    query: tuple[tuple[str, str], ...] = ()  # required query arguments; "" = any value
    headers: tuple[str, ...] = ()            # required headers, lower case
    deprecated: bool = False                 # loses a tie to its successor (S3 GetBucketLifecycle)

    @property
    def rank(self) -> tuple[int, bool]:
        """Among operations sharing a path: the most constrained first, deprecated last."""
        return -(len(self.query) + len(self.headers)), self.deprecated

    def accepts(self, args: Mapping[str, list[str]], headers: Mapping[str, str]) -> bool:
        return (all(k in args and (not v or v in args[k]) for k, v in self.query)
                and all(h in headers for h in self.headers))


def path_pattern(template: str) -> str:
    """The regex of a requestUri's path: {Label} is one segment, {Label+} (greedy) the rest;
    a trailing slash is optional, as Smithy's HTTP binding matching has it."""
    out, pos = [], 0
    for m in LABEL_RE.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(".+" if m.group(2) else "[^/]+")
        pos = m.end()
    out.append(re.escape(template[pos:].rstrip("/")))
    return "".join(out) + "/?"


def _specificity(template: str) -> tuple:
    """Try fixed paths before labelled ones and greedy labels last, so that
    /hostedzone/{Id}/rrset is never taken for a longer {Id}."""
    literal = LABEL_RE.sub("", template)
    return ("+}" in template, -len(literal), template)


def _rest_routes(name: str):
    """(method, path template, RestRoute) for every operation of one REST service."""
    model = service_model(name)
    for op_name in model.operation_names:
        op = model.operation_model(op_name)
        path, _, literal_query = op.http["requestUri"].partition("?")
        query, headers = parse_qsl(literal_query, keep_blank_values=True), []
        shape = op.input_shape
        for member in (shape.required_members if shape is not None else ()):
            ser = shape.members[member].serialization
            if ser.get("location") == "querystring":
                query.append((ser.get("name", member), ""))
            elif ser.get("location") == "header":
                headers.append(ser.get("name", member).lower())
        yield op.http["method"], path, RestRoute(op_name, model.protocol, tuple(query), tuple(headers),
                                                 bool(op.deprecated))


class RestMatcher:
    """Method + path -> operation for the REST services of one signing name: per method, one
    regex alternating every path template (most specific first), so a match is one regex call."""

    def __init__(self, service_names: list[str]):
        grouped: dict[str, dict[str, list[RestRoute]]] = defaultdict(lambda: defaultdict(list))
        for name in service_names:
            for method, path, route in _rest_routes(name):
                grouped[method][path].append(route)
        self._by_method: dict[str, tuple[re.Pattern, list[re.Pattern], list[list[RestRoute]]]] = {}
        for method, paths in grouped.items():
            ordered = sorted(paths, key=_specificity)
            patterns = [re.compile(path_pattern(p)) for p in ordered]
            routes = [sorted(paths[p], key=lambda r: r.rank) for p in ordered]
            combined = re.compile("|".join(f"({p.pattern})" for p in patterns))
            self._by_method[method] = (combined, patterns, routes)

    def match(self, method: str, path: str, query: str, headers: Mapping[str, str]) -> RestRoute | None:
        entry = self._by_method.get(method)
        m = entry[0].fullmatch(path) if entry else None
        if m is None:
            return None
        _, patterns, routes = entry
        args: dict[str, list[str]] | None = None
        first = m.lastindex - 1
        for i in range(first, len(patterns)):
            if i != first and not patterns[i].fullmatch(path):
                continue
            for route in routes[i]:
                if not route.query and not route.headers:
                    return route
                if args is None:
                    args = parse_qs(query, keep_blank_values=True)
                if route.accepts(args, headers):
                    return route
        return None


@functools.cache
def rest_matcher(signing_name: str) -> RestMatcher | None:
    names = [s.name for s in services_signed_as(signing_name) if s.protocol in REST_PROTOCOLS]
    return RestMatcher(names) if names else None


def prepare(signing_name: str) -> None:
    """Load what identify() needs for a signing name ("*": the index only), so that the first
    faulted call does not pay it (0.1-0.3 s on a busy 2-core machine) inside a timed scenario."""
    _signing_index()
    if signing_name != "*":
        rest_matcher(signing_name)
        for service in services_signed_as(signing_name):
            service_model(service.name)  # throttle_error reads the operations' modeled errors


# -- one request ----------------------------------------------------------------------------------
def identify(signing_name: str, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Call:
    """The operation and protocol of one request (headers: case-insensitive, as http.server's)."""
    services = services_signed_as(signing_name)
    target = headers.get("X-Amz-Target")
    if target:
        return Call(target.rpartition(".")[2], "json", any(s.query_compatible for s in services))
    path, _, query = raw_path.partition("?")
    if headers.get("smithy-protocol") == "rpc-v2-cbor":
        cbor = CBOR_OPERATION_RE.fullmatch(path)
        return Call(cbor.group(1) if cbor else None, CBOR_PROTOCOL, any(s.query_compatible for s in services))
    form = body and (headers.get("Content-Type") or "").startswith(FORM_TYPE)
    m = ACTION_RE.search(body) if form else None
    if m is None and "Action=" in query:
        m = ACTION_RE.search(query.encode())
    protocols = [s.protocol for s in services]
    if m is not None:
        return Call(unquote(m.group(1).decode()), "ec2" if "ec2" in protocols else "query")
    matcher = rest_matcher(signing_name)
    route = matcher.match(method, path, query, headers) if matcher else None
    if route is not None:
        return Call(route.operation, route.protocol)
    rest = [p for p in protocols if p in REST_PROTOCOLS]
    return Call(None, (rest or protocols or ["json"])[0])


def operation_of(signing_name: str, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """identify(...).operation, the cheap way where the request names it: a JSON-protocol call's
    X-Amz-Target (ECS's change calls, StopTask, UpdateService, ..., which the router tells the ECS
    scheduler of) needs no model."""
    target = headers.get("X-Amz-Target")
    if target:
        return target.rpartition(".")[2]
    return identify(signing_name, method, raw_path, headers, body).operation


# -- errors in the request's own protocol -----------------------------------------------------------
@functools.lru_cache(maxsize=4096)
def throttle_error(signing_name: str, call: Call) -> tuple[str, int]:
    """(code, HTTP status) AWS throttles this operation with: the rate-throttling error the
    operation's model declares, else its protocol family's (a former query API's: query's)."""
    for service in services_signed_as(signing_name):
        model = service_model(service.name)
        operation = call.operation
        if operation not in model.operation_names:
            continue
        declared = {}
        for shape in model.operation_model(operation).error_shapes:
            err = shape.metadata.get("error", {})
            declared[err.get("code", shape.name)] = err.get("httpStatusCode", 400)
        for code in RATE_THROTTLE_CODES:
            if code in declared:
                return code, declared[code]
        break
    return PROTOCOL_THROTTLE.get("query" if call.query_compatible else call.protocol, DEFAULT_THROTTLE)


def server_error_code(status: int) -> str:
    """AWS's common error for an HTTP status ("Common Errors" of every API reference)."""
    if status == 503:
        return "ServiceUnavailable"
    if status >= 500:
        return "InternalFailure"
    return {403: "AccessDeniedException", 429: "TooManyRequestsException"}.get(status, "ValidationError")


def _cbor_text_map(items: dict[str, str]) -> bytes:
    """RFC 8949 encoding of a small map of text to text (all an RPC v2 CBOR error needs)."""
    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        if n < 256:
            return bytes([major << 5 | 24, n])
        if n < 65536:
            return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
        return bytes([major << 5 | 26]) + n.to_bytes(4, "big")
    out = head(5, len(items))
    for k, v in items.items():
        for s in (k.encode(), v.encode()):
            out += head(3, len(s)) + s
    return out


def error_response(call: Call, code: str, message: str, status: int, request_id: str,
                   request_headers: Mapping[str, str]) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers AWS sends for an error in the call's protocol."""
    headers = [("x-amzn-RequestId", request_id)]
    fault = "Sender" if status < 500 else "Receiver"
    if call.query_compatible:  # botocore reports the query code of a former query API from here
        headers.append(("x-amzn-query-error", f"{code};{fault}"))
    if call.protocol == "json":
        ctype = request_headers.get("Content-Type") or "application/x-amz-json-1.0"
        body = json.dumps({"__type": code, "message": message}).encode()
        return body, headers + [("Content-Type", ctype), ("x-amzn-ErrorType", code)]
    if call.protocol == "rest-json":
        body = json.dumps({"message": message}).encode()
        return body, headers + [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    if call.protocol == CBOR_PROTOCOL:
        body = _cbor_text_map({"__type": code, "message": message})
        return body, headers + [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
    code_x, message_x = escape(code), escape(message)
    if call.protocol == "ec2":
        xml = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code_x}</Code>'
               f"<Message>{message_x}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>")
    else:  # query and rest-xml (Route 53's shape; botocore reads S3's <Error> root as well)
        xml = (f'<?xml version="1.0"?><ErrorResponse><Error><Type>{fault}</Type><Code>{code_x}</Code>'
               f"<Message>{message_x}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
    return xml.encode(), headers + [("Content-Type", "text/xml")]
