"""boto3 clients bound to an endpoint, with the local environment's fixed fake credentials."""

from __future__ import annotations

import functools
import threading

import boto3
from botocore.config import Config

LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
LOCAL_ACCOUNT_ID = "123456789012"  # moto's default account
# Route 53 is a global service whose control plane lives in us-east-1; every SDK signs its
# calls for us-east-1, which is how the router (and AWS) sends them there.
ROUTE53_HOME = "us-east-1"

_cache: dict[tuple, object] = {}
_lock = threading.Lock()
_session_lock = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    """One Session for every client: a new Session per client parsed each service's model and
    the endpoints file again (~60 ms a client, about 1 s of the local environment's start)."""
    return boto3.session.Session()


def client(service: str, region: str, endpoint_url: str, *, retries: int = 2, timeout_s: float = 5.0,
           cached: bool = True):
    key = (service, region, endpoint_url, retries, timeout_s)
    if cached:
        with _lock:
            c = _cache.get(key)
        if c is not None:
            return c
    with _session_lock:   # a Session is not thread-safe; its clients are
        c = _session().client(
            service, region_name=region, endpoint_url=endpoint_url,
            config=Config(retries={"total_max_attempts": retries + 1, "mode": "standard"},  # retries after the first call
                          connect_timeout=timeout_s, read_timeout=timeout_s,
                          max_pool_connections=32),
            **LOCAL_CREDENTIALS,
        )
    if cached:
        with _lock:
            _cache.setdefault(key, c)
    return c


def moto_admin(moto_url: str, name: str, timeout_s: float = 5.0, **body) -> object:
    """POST one of moto_corrections' admin routes on a region's moto server (the harness telling
    moto the local model's truth: not an AWS API); its JSON answer. A refused body raises
    ValueError with moto's one-line reason."""
    import requests

    r = requests.post(f"{moto_url}/_gameday/{name}", json=body, timeout=timeout_s)
    if r.status_code != 200:
        raise ValueError(f"moto admin route {name}: {r.status_code} {r.text.strip()[:300]}")
    return r.json()


def record_sets(route53, zone_id: str, name: str, record_type: str = "A", *, page_size: int | None = None) -> list[dict]:
    """Every record set of `name` and `record_type` in a hosted zone (a simple record's one set, a
    weighted or failover record's several), as Route 53's control plane holds them. Read from that
    name on (StartRecordName/StartRecordType: Route 53 lists a name's sets together), page by page,
    until the first set of another name or type: one ListResourceRecordSets call for any record of
    up to 100 sets, whatever the size of the zone (on AWS every call counts against the account's
    5 requests/s). page_size: MaxItems (Route 53's default is 100)."""
    fqdn = name.rstrip(".").lower() + "."
    kwargs = {"HostedZoneId": zone_id, "StartRecordName": fqdn, "StartRecordType": record_type,
              **({"MaxItems": str(page_size)} if page_size else {})}
    out: list[dict] = []
    while True:
        page = route53.list_resource_record_sets(**kwargs)
        for rs in page["ResourceRecordSets"]:
            if rs["Name"].lower() != fqdn or rs["Type"] != record_type:
                return out
            out.append(rs)
        if not page.get("IsTruncated"):
            return out
        start = (kwargs["StartRecordName"], kwargs["StartRecordType"], kwargs.get("StartRecordIdentifier"))
        nxt = (page["NextRecordName"], page["NextRecordType"], page.get("NextRecordIdentifier"))
        if nxt == start:
            # an endpoint that pages inside one name's sets without NextRecordIdentifier (moto did)
            raise RuntimeError(f"ListResourceRecordSets of {fqdn} {record_type} in zone {zone_id}: the next page "
                               f"starts where this one did ({start[0]} {start[1]}): the endpoint gives no "
                               f"NextRecordIdentifier for a page that ends inside a record's sets")
        kwargs.pop("StartRecordIdentifier", None)
        kwargs.update(StartRecordName=nxt[0], StartRecordType=nxt[1], **({"StartRecordIdentifier": nxt[2]} if nxt[2] else {}))
