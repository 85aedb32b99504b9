"""Route 53 corrected to AWS inside each moto server: change status and health-check status.

moto answers every ChangeResourceRecordSets with the same change id, INSYNC at once, and
GetHealthCheckStatus with one canned "Success". Corrected here:

- **GetChange PENDING -> INSYNC.** Each ChangeResourceRecordSets gets its own change id
  ("/change/C" + 13 characters, as Route 53's). A change to a zone that a DNS server follows
  (the local DNS server, environments/local/dns.py, says so through the admin route
  `route53_dns_follow` when it starts, and again with no zones when it stops) is PENDING until
  that server has applied it and says so: `route53_change_served` (by change id: a customer's
  change, which the server applies as its own batch) or `route53_zone_served` (every change of
  the zone submitted before a zone read it published: a change made straight against moto).
  A change nobody serves never stays PENDING forever: one to a zone no DNS server follows is
  INSYNC at once (there is no name server to wait for: moto's answer before), and one the
  follower never reports is INSYNC after the follower's `unserved_insync_s` (Route 53's
  documented bound, "within 60 seconds", unless the follower says otherwise), so a caller that
  waits for INSYNC is never stuck; a follower that stops releases its zones' pending changes.
  A GetChange of an id Route 53 never issued is NoSuchChange, as in AWS.
- **GetHealthCheckStatus** answers the local health checkers' last observation
  (environments/local/healthchecks.py reports it through `route53_health_observed`): Region,
  IPAddress (the checker's own address) and StatusReport {Status, CheckedTime}. A health check no
  checker has reported on has no observations (moto's canned "Success" was a lie).
- **ListResourceRecordSets pages inside one name's sets.** moto ignores StartRecordIdentifier and
  never returns NextRecordIdentifier, so a page that ends inside a weighted or failover record's
  sets pointed back at its own start: a reader following IsTruncated looped for ever. As Route 53
  documents it (ListResourceRecordSets, "NextRecordIdentifier: ... the value of SetIdentifier for
  the next resource record set that has the current DNS name and type"), the next page now starts
  at that set (`record_sets_page`).

Only moto and the standard library (moto_corrections' rule).
"""

from __future__ import annotations

import itertools
import random
import string
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus

PENDING, INSYNC = "PENDING", "INSYNC"
# Route 53: "changes generally propagate to all Route 53 name servers within 60 seconds"
UNSERVED_INSYNC_S = 60.0
CHANGE_ID_CHARS = string.ascii_uppercase + string.digits
# ids moto's other operations (CreateHostedZone, ...) still hand out: GetChange keeps answering them
MOTO_FIXED_CHANGE_IDS = ("C2682N5HXP0BZ4", "C1PA6795UKMFR9")
CHANGES_KEPT = 10_000
CONNECTION_FAILURE = ("Failure: Connection timed out. The endpoint or the internet connection is down, "
                      "or requests are being blocked by your firewall.")


# -- the rules (pure) ----------------------------------------------------------------------------------------
def record_sets_page(ordered: list, start: tuple[str, str, str] | None, max_items: int) -> tuple[list, object | None]:
    """One ListResourceRecordSets page of `ordered` (the zone's record sets from StartRecordName and
    StartRecordType on, in Route 53's order; each with .name, .type, .set_identifier): with
    `start` = (name, type, StartRecordIdentifier), the sets of that name and type before the one
    with that identifier are skipped. (page, the next set or None)."""
    if start is not None:
        name, rtype, ident = start[0].rstrip(".").lower(), start[1], start[2]
        ordered = list(itertools.dropwhile(
            lambda rs: rs.name.rstrip(".").lower() == name and rs.type == rtype and rs.set_identifier != ident,
            ordered))
    page = ordered[:max_items]
    return page, (ordered[max_items] if len(ordered) > max_items else None)



def new_change_id(rng: random.Random) -> str:
    """A change id in Route 53's form: "/change/C" + 13 upper-case letters and digits."""
    return "/change/C" + "".join(rng.choice(CHANGE_ID_CHARS) for _ in range(13))


def bare_id(resource_id: str) -> str:
    """'/change/C123' or '/hostedzone/Z1' -> 'C123' / 'Z1'."""
    return str(resource_id).rsplit("/", 1)[-1]


@dataclass
class Change:
    id: str                        # bare id, "C..."
    zone_id: str                   # bare id, "Z..."
    submitted_at: float            # epoch s
    followed: bool                 # a DNS server followed the zone when the change was submitted
    unserved_insync_s: float = UNSERVED_INSYNC_S
    served_at: float | None = None
    released: bool = False         # its follower stopped: nobody will serve it

    def status(self, now: float) -> str:
        if not self.followed or self.served_at is not None or self.released:
            return INSYNC
        return INSYNC if now - self.submitted_at >= self.unserved_insync_s else PENDING


def health_status_report(ok: bool, *, http_status: int | None = None, check_type: str = "HTTP") -> str:
    """StatusReport.Status of one health checker's observation, in Route 53's wording:
    "Success: HTTP Status Code 200, OK", "Failure: HTTP Status Code 503, Service Unavailable",
    or the connection failure text when no status code came back."""
    if http_status is not None:
        try:
            phrase = HTTPStatus(http_status).phrase
        except ValueError:
            phrase = "Unknown"
        return f"{'Success' if ok else 'Failure'}: HTTP Status Code {http_status}, {phrase}"
    if check_type == "TCP":
        return "Success: TCP connection established" if ok else CONNECTION_FAILURE
    return "Success" if ok else CONNECTION_FAILURE


# -- the record moto keeps ----------------------------------------------------------------------------------

class _Route53State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random()
        self.changes: dict[str, Change] = {}
        self.followed: dict[str, float] = {}             # zone id -> its follower's unserved_insync_s
        self.observations: dict[str, dict[str, dict]] = {}  # health check id -> checker region -> observation

    def submit(self, zone_id: str, now: float) -> Change:
        with self.lock:
            cid = bare_id(new_change_id(self.rng))
            while cid in self.changes:
                cid = bare_id(new_change_id(self.rng))
            bound = self.followed.get(zone_id)
            change = Change(cid, zone_id, now, bound is not None, bound if bound is not None else UNSERVED_INSYNC_S)
            self.changes[cid] = change
            for old in list(self.changes)[:-CHANGES_KEPT]:
                del self.changes[old]
            return change


STATE = _Route53State()


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _change_info(change: Change) -> dict:
    return {"Id": f"/change/{change.id}", "Status": change.status(time.time()),
            "SubmittedAt": _utc(change.submitted_at)}


# -- admin routes: what the DNS server and the health checkers tell moto -------------------------------------

def dns_follow(body: dict) -> dict:
    """`route53_dns_follow` {zone_ids: [...], unserved_insync_s?}: the zones a DNS server now serves
    (replacing the last list; [] when it stops, which releases those zones' pending changes)."""
    zones = [bare_id(z) for z in body["zone_ids"]]
    bound = float(body.get("unserved_insync_s") or UNSERVED_INSYNC_S)
    with STATE.lock:
        for zone in set(STATE.followed) - set(zones):
            for c in STATE.changes.values():
                if c.zone_id == zone:
                    c.released = True
        STATE.followed = {z: bound for z in zones}
    return {"followed": zones}


def change_served(body: dict) -> dict:
    """`route53_change_served` {change_id}: the DNS server answers with this change applied."""
    with STATE.lock:
        change = STATE.changes.get(bare_id(body["change_id"]))
        if change is None:
            raise KeyError(f"no change {body['change_id']}")
        if change.served_at is None:
            change.served_at = time.time()
        return {"change_id": f"/change/{change.id}", "status": change.status(time.time())}


def zone_served(body: dict) -> dict:
    """`route53_zone_served` {zone_id, read_started_at}: a zone read that began at read_started_at
    (epoch s, this host's clock) is what the DNS server answers now: every change of that zone
    submitted before it is served."""
    zone, started = bare_id(body["zone_id"]), float(body["read_started_at"])
    now, served = time.time(), []
    with STATE.lock:
        for c in STATE.changes.values():
            if c.zone_id == zone and c.served_at is None and c.submitted_at < started:
                c.served_at = now
                served.append(f"/change/{c.id}")
    return {"served": served}


def health_observed(body: dict) -> dict:
    """`route53_health_observed` {health_check_id, region, ip_address, status, checked_time (epoch s)}."""
    observation = {"Region": body["region"], "IPAddress": body["ip_address"],
                   "StatusReport": {"Status": str(body["status"]), "CheckedTime": float(body["checked_time"])}}
    with STATE.lock:
        STATE.observations.setdefault(body["health_check_id"], {})[body["region"]] = observation
    return {"recorded": True}


# -- moto, corrected ----------------------------------------------------------------------------------------------

def _patch_responses(responses) -> None:
    from moto.core.responses import ActionResult
    from moto.route53.exceptions import Route53ClientError

    Response = responses.Route53
    change_rrsets = Response.change_resource_record_sets

    def change_resource_record_sets(self):
        result = change_rrsets(self)
        change = STATE.submit(bare_id(self._get_param("HostedZoneId")), time.time())
        return ActionResult({**result.result, "ChangeInfo": _change_info(change)})

    def get_change(self):
        cid = bare_id(self._get_param("Id"))
        with STATE.lock:
            change = STATE.changes.get(cid)
            info = _change_info(change) if change is not None else None
        if info is None:
            if cid not in MOTO_FIXED_CHANGE_IDS:
                raise Route53ClientError("NoSuchChange", f"A change with the specified change ID does not exist: {cid}")
            info = {"Id": f"/change/{cid}", "Status": INSYNC, "SubmittedAt": _utc(time.time())}
        return ActionResult({"ChangeInfo": info})

    def list_resource_record_sets(self):
        from moto.route53.exceptions import InvalidInput
        from moto.route53.models import validate_domain_name

        zone_id = self._get_param("HostedZoneId")
        start_type, start_name = self._get_param("StartRecordType"), self._get_param("StartRecordName")
        start_id = self._get_param("StartRecordIdentifier")
        max_items = self._get_int_param("MaxItems", 300)
        if (start_type and not start_name) or (start_id and not start_type):
            raise InvalidInput("The input is not valid")
        if start_name:
            validate_domain_name(start_name)
        ordered = list(self.backend.get_hosted_zone(zone_id).get_record_sets(start_type, start_name))
        page, nxt = record_sets_page(ordered, (start_name, start_type, start_id) if start_id else None, max_items)
        result = {"ResourceRecordSets": page, "IsTruncated": nxt is not None, "MaxItems": max_items}
        if nxt is not None:
            result.update(NextRecordName=nxt.name, NextRecordType=nxt.type)
            if nxt.set_identifier:
                result["NextRecordIdentifier"] = nxt.set_identifier
        return ActionResult(result)

    def get_health_check_status(self):
        hid = self._get_param("HealthCheckId")
        self.backend.get_health_check(hid)  # NoSuchHealthCheck as before
        with STATE.lock:
            seen = [dict(o, StatusReport=dict(o["StatusReport"])) for o in STATE.observations.get(hid, {}).values()]
        for o in seen:
            o["StatusReport"]["CheckedTime"] = _utc(o["StatusReport"]["CheckedTime"])
        return ActionResult({"HealthCheckObservations": seen})

    Response.change_resource_record_sets = change_resource_record_sets
    Response.get_change = get_change
    Response.get_health_check_status = get_health_check_status
    Response.list_resource_record_sets = list_resource_record_sets


def install(admin) -> None:
    from moto.route53 import responses

    _patch_responses(responses)
    admin.route("route53_dns_follow", dns_follow)
    admin.route("route53_change_served", change_served)
    admin.route("route53_zone_served", zone_served)
    admin.route("route53_health_observed", health_observed)
