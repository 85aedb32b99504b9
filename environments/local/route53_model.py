"""Route 53's rules as a pure model: which records a DNS answer is made of (simple, weighted,
failover, multivalue routing and health), what a refresh of the name servers' copy of the zone
does, and when a health checker changes a health check's status.

No threads, sockets, boto3 or clock reads: the time comes in as `now`, randomness as a seeded
`random.Random`, health as a callable. The adapters (dns.py: the DNS server on loopback;
healthchecks.py: the probes) carry out what the model decides and emit the events it returns.

AWS pages the rules follow (Amazon Route 53 Developer Guide):
- "How Amazon Route 53 chooses records when health checking is configured" (a record without a
  health check is always healthy; if no record of a group is healthy, all are treated as healthy),
- "Weighted routing" (weight / sum of weights; weight-0 records only when no non-zero record is
  healthy; the API reference: all weights 0 means equal chances),
- the API reference for ResourceRecordSet.Failover (primary when healthy; secondary when the
  primary is unhealthy and the secondary healthy; primary when the secondary is unhealthy),
- "How Amazon Route 53 determines whether a health check is healthy" and the API reference for
  HealthCheckConfig (FailureThreshold consecutive results to change the status; Inverted;
  Disabled: always healthy, and Inverted is how to stop traffic to a disabled check's resource),
- the API reference for ChangeResourceRecordSets, "Change batches and transactional changes"
  (Route 53 makes all or none of a batch's changes; each batch is applied and propagated on its
  own, so clients can be answered from the state between two batches).
"""

from __future__ import annotations

import ast
import random
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable, Iterable

from dnslib import QTYPE, RCODE, RR, A

MULTIVALUE_MAX = 8         # Route 53 answers with up to eight healthy multivalue records
CNAME_MAX_HOPS = 8
DEFAULT_FAILURE_THRESHOLD = 3  # HealthCheckConfig.FailureThreshold when omitted

Health = Callable[[str], bool]
Event = tuple[str, dict]   # (kind, fields) for ctx.events.emit(kind, **fields)


def always_healthy(_health_check_id: str) -> bool:
    return True


# -- the zone and answer selection ------------------------------------------------------------------

def _route53_name(name: str) -> str:
    """A Route 53 name as this model keys it: lower case (DNS names are case-insensitive), octal
    escapes decoded (Route 53 returns * as \\052), final dot."""
    name = re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), name).lower()
    return name if name.endswith(".") else name + "."


def _route53_value(rtype: str, value: str) -> str:
    # moto 5.2.5 returns its default SOA value as the repr of a dict: "{'Value': '...'}"
    if rtype == "SOA" and value.startswith("{"):
        try:
            value = ast.literal_eval(value)["Value"]
        except (ValueError, SyntaxError, KeyError, TypeError):
            pass
    # Route 53 accepts host names with or without the final dot; in zone-file syntax a name
    # without it would be relative
    if rtype in ("NS", "CNAME", "PTR") and not value.endswith("."):
        value += "."
    return value


@dataclass(frozen=True)
class RecordSet:
    """One Route 53 resource record set, with its answers pre-built for the DNS wire."""

    name: str                         # lower-case FQDN with the final dot
    rtype: str                        # "A", "AAAA", "CNAME", ...
    ttl: int
    values: tuple[str, ...]
    rrs: tuple[RR, ...] = field(repr=False, compare=False)
    set_identifier: str | None = None
    weight: int | None = None
    failover: str | None = None       # "PRIMARY" | "SECONDARY"
    health_check_id: str | None = None
    multivalue: bool = False

    @property
    def policy(self) -> str:
        if self.failover:
            return "failover"
        if self.weight is not None:
            return "weighted"
        if self.multivalue:
            return "multivalue"
        return "simple"

    def healthy(self, health: Health) -> bool:
        return self.health_check_id is None or bool(health(self.health_check_id))

    def rrs_for(self, owner: str) -> list[RR]:
        """Answers owned by `owner` (differs from self.name only for a wildcard match)."""
        if owner == self.name:
            return list(self.rrs)
        return [RR(owner, rr.rtype, rclass=rr.rclass, ttl=rr.ttl, rdata=rr.rdata) for rr in self.rrs]

    @classmethod
    def from_route53(cls, rs: dict) -> "RecordSet":
        """From one ResourceRecordSets item; ValueError when this model cannot serve it."""
        name, rtype = _route53_name(rs["Name"]), rs["Type"]
        if "AliasTarget" in rs:
            raise ValueError("alias records are not modelled")
        for key in ("Region", "GeoLocation", "GeoProximityLocation", "CidrRoutingConfig"):
            if key in rs:
                raise ValueError(f"{key} routing is not modelled")
        ttl = int(rs.get("TTL", 300))
        values = tuple(_route53_value(rtype, r["Value"]) for r in rs.get("ResourceRecords", []))
        if rtype == "A":
            rrs = tuple(RR(name, QTYPE.A, ttl=ttl, rdata=A(v)) for v in values)  # the hot type: no parser
        else:
            rrs = tuple(rr for v in values for rr in RR.fromZone(f"{name} {ttl} IN {rtype} {v}"))
        return cls(name=name, rtype=rtype, ttl=ttl, values=values, rrs=rrs,
                   set_identifier=rs.get("SetIdentifier"),
                   weight=int(rs["Weight"]) if "Weight" in rs else None,
                   failover=rs.get("Failover"), health_check_id=rs.get("HealthCheckId"),
                   multivalue=bool(rs.get("MultiValueAnswer", False)))


def eligible(sets: tuple[RecordSet, ...], health: Health) -> list[tuple[RecordSet, float]]:
    """The record sets of one name+type group that Route 53 may answer with now, each with
    its relative chance."""
    policy = sets[0].policy
    if policy == "simple":
        return [(sets[0], 1.0)]
    if policy == "weighted":
        nonzero = [s for s in sets if s.weight]
        zero = [s for s in sets if not s.weight]
        # weight-0 record sets are considered only when no non-zero one is healthy
        live = [s for s in nonzero if s.healthy(health)] or [s for s in zero if s.healthy(health)]
        live = live or nonzero or zero  # all unhealthy: all are treated as healthy
        if not any(s.weight for s in live):
            return [(s, 1.0) for s in live]
        return [(s, float(s.weight)) for s in live if s.weight]
    if policy == "failover":
        ordered = [s for s in sets if s.failover == "PRIMARY"] + [s for s in sets if s.failover != "PRIMARY"]
        for s in ordered:
            if s.healthy(health):
                return [(s, 1.0)]
        return [(ordered[0], 1.0)]  # both unhealthy: the primary
    live = [s for s in sets if s.healthy(health)] or list(sets)  # multivalue
    return [(s, 1.0) for s in live]


def pick(sets: tuple[RecordSet, ...], health: Health, rng: random.Random) -> list[RecordSet]:
    """The record sets one DNS answer is made of."""
    choices = eligible(sets, health)
    policy = sets[0].policy
    if policy == "weighted" and len(choices) > 1:
        return rng.choices([s for s, _ in choices], weights=[w for _, w in choices])
    if policy == "multivalue" and len(choices) > MULTIVALUE_MAX:
        return rng.sample([s for s, _ in choices], MULTIVALUE_MAX)
    return [s for s, _ in choices]


class Zone:
    """An immutable copy of a hosted zone, answering queries. Swapped whole on refresh, so the
    query path needs no lock."""

    def __init__(self, apex: str, record_sets: Iterable[RecordSet], skipped: list[str] | None = None):
        self.apex = _route53_name(apex)
        groups: dict[tuple[str, str], list[RecordSet]] = {}
        for rs in record_sets:
            groups.setdefault((rs.name, rs.rtype), []).append(rs)
        self.groups: dict[tuple[str, str], tuple[RecordSet, ...]] = {k: tuple(v) for k, v in groups.items()}
        self.types_at: dict[str, list[str]] = {}
        for name, rtype in self.groups:
            self.types_at.setdefault(name, []).append(rtype)
        # a name exists if it owns records or has descendants that do (empty non-terminals)
        self.names: set[str] = set()
        for name in self.types_at:
            while name.endswith(self.apex) and name not in self.names:
                self.names.add(name)
                name = name.split(".", 1)[1] if name != self.apex else ""
        self.skipped = skipped or []
        soa = self.groups.get((self.apex, "SOA"))
        self.negative_soa: list[RR] = []
        if soa and soa[0].rrs:
            rr = soa[0].rrs[0]
            # RFC 2308: negative answers are cached for min(SOA TTL, SOA MINIMUM)
            neg_ttl = min(rr.ttl, getattr(rr.rdata, "times", (rr.ttl,))[-1])
            self.negative_soa = [RR(rr.rname, rr.rtype, rclass=rr.rclass, ttl=neg_ttl, rdata=rr.rdata)]

    @classmethod
    def from_route53(cls, apex: str, items: list[dict]) -> "Zone":
        sets, skipped = [], []
        for item in items:
            try:
                sets.append(RecordSet.from_route53(item))
            except Exception as e:  # noqa: BLE001 - one unservable record must not hide the zone
                ident = f"{item.get('Name')} {item.get('Type')}" + (
                    f" ({item['SetIdentifier']})" if item.get("SetIdentifier") else "")
                skipped.append(f"{ident}: {e}")
        return cls(apex, sets, skipped)

    def contains(self, qname: str) -> bool:
        return qname == self.apex or qname.endswith("." + self.apex)

    def _wildcard_for(self, qname: str) -> str | None:
        """RFC 4592: a name that does not exist matches *.<its closest existing ancestor>."""
        parent = qname
        while parent != self.apex:
            parent = parent.split(".", 1)[1]
            if parent in self.names:
                wildcard = "*." + parent
                return wildcard if wildcard in self.types_at else None
        return None

    def query(self, qname: str, qtype: str, health: Health, rng: random.Random) -> tuple[int, list[RR], list[RR]]:
        """(rcode, answer, authority) for a lower-case qname inside the zone."""
        answer: list[RR] = []
        owner = qname
        for _ in range(CNAME_MAX_HOPS):
            source = owner
            if source not in self.names:
                source = self._wildcard_for(owner)
                if source is None:
                    return (RCODE.NXDOMAIN if not answer else RCODE.NOERROR), answer, self.negative_soa
            types = self.types_at.get(source, [])
            wanted = types if qtype == "ANY" else [qtype] if qtype in types else []
            if not wanted and "CNAME" in types and qtype != "CNAME":
                cname = pick(self.groups[(source, "CNAME")], health, rng)[0]
                answer += cname.rrs_for(owner)
                target = _route53_name(str(cname.rrs[0].rdata.label)) if cname.rrs else ""
                if not self.contains(target):
                    return RCODE.NOERROR, answer, []
                owner = target
                continue
            for rtype in wanted:
                for rs in pick(self.groups[(source, rtype)], health, rng):
                    rrs = rs.rrs_for(owner)
                    answer += rng.sample(rrs, len(rrs)) if len(rrs) > 1 else rrs  # all values, random order
            return RCODE.NOERROR, answer, ([] if answer else self.negative_soa)
        return RCODE.SERVFAIL, answer, []  # CNAME loop

    def view(self, health: Health, rtype: str = "A") -> dict[str, list[str]]:
        """name -> every value an answer may carry now (for status and change events)."""
        out = {}
        for (name, t), sets in self.groups.items():
            if t == rtype:
                out[name] = sorted({v for s, _ in eligible(sets, health) for v in s.values})
        return out


# -- one committed change batch ------------------------------------------------------------------------

def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]   # the element name without its XML namespace


def _child_text(elem: ET.Element, name: str) -> str | None:
    return next((c.text for c in elem if _local(c.tag) == name), None)


@dataclass(frozen=True)
class ChangeBatch:
    """What one committed ChangeResourceRecordSets said, for the timeline: the ChangeInfo Id its
    caller was given, its Comment, and one line per change ("UPSERT api.gameday.test. A (east)
    weight 0: 127.0.1.1")."""

    id: str | None = None
    comment: str | None = None
    changes: tuple[str, ...] = ()

    @classmethod
    def from_api(cls, request: bytes, response: bytes) -> "ChangeBatch":
        """From the call's XML request and response bodies; what cannot be read is left out."""
        try:
            req = ET.fromstring(request) if request else None
            resp = ET.fromstring(response) if response else None
        except ET.ParseError:
            return cls()
        comment, changes = None, []
        for elem in req.iter() if req is not None else ():
            if _local(elem.tag) == "ChangeBatch":
                comment = _child_text(elem, "Comment")
            elif _local(elem.tag) == "Change":
                changes.append(_describe_change(elem))
        info = next((e for e in resp.iter() if _local(e.tag) == "ChangeInfo"), None) if resp is not None else None
        return cls(_child_text(info, "Id") if info is not None else None, comment, tuple(changes))

    def fields(self) -> dict:
        """The dns_change fields it adds (only those known)."""
        out = {"change_id": self.id, "comment": self.comment, "changes": list(self.changes) or None}
        return {k: v for k, v in out.items() if v is not None}


def _describe_change(change: ET.Element) -> str:
    rrset = next((c for c in change if _local(c.tag) == "ResourceRecordSet"), None)
    if rrset is None:
        return _child_text(change, "Action") or "?"
    text = {_local(c.tag): c.text for c in rrset}
    line = f"{_child_text(change, 'Action')} {text.get('Name')} {text.get('Type')}"
    if text.get("SetIdentifier"):
        line += f" ({text['SetIdentifier']})"
    for key in ("Weight", "Failover"):
        if text.get(key) is not None:
            line += f" {key.lower()} {text[key]}"
    values = [v.text for v in rrset.iter() if _local(v.tag) == "Value"]
    return line + (f": {', '.join(values)}" if values else "")


# -- the name servers' copy of the zone --------------------------------------------------------------

@dataclass
class ZoneCopy:
    """What the DNS server answers from: the last zone read from Route 53's API, kept whole when a
    refresh fails (name servers keep answering when the control plane is impaired). Each method
    returns the timeline events the adapter emits.

    Two ways in, as the adapter learns of changes: `applied`, a committed change batch read back
    before its caller has the answer (each batch is its own state, however soon the next one
    follows), and `refreshed` + `publish`, the periodic read (changes made without a caller the
    adapter sees, and answers that move with health)."""

    zone: Zone | None = None           # the zone as last read
    served: Zone | None = None         # the zone queries are answered from: the last one published,
    # swapped in with `views`, so an answer a client gets is always one status() and the timeline show
    raw: list[dict] | None = None
    last_ok: float | None = None       # `now` of the last successful refresh
    failures: int = 0                  # consecutive failed refreshes
    last_error: str | None = None
    views: dict[str, list[str]] = field(default_factory=dict)  # answers last published
    since: dict[str, float] = field(default_factory=dict)      # name -> `now` its published answer began
    zone_moved: bool = False           # the zone changed since the answers were last published

    def refreshed(self, items: list[dict], now: float, apex: str | None = None) -> list[Event]:
        """A refresh read `items` (every ResourceRecordSets item); `apex` is needed for the first."""
        if items != self.raw:
            name = apex if self.zone is None else self.zone.apex
            if name is None:
                raise ValueError("the first zone load needs the hosted zone's name (apex)")
            self.zone, self.raw, self.zone_moved = Zone.from_route53(name, items), items, True
        events: list[Event] = []
        if self.failures:
            events.append(("dns_refresh", {"state": "ok", "after_failures": self.failures,
                                           "zone_age_s": round(now - self.last_ok, 3)}))
        self.last_ok, self.failures, self.last_error = now, 0, None
        return events

    def applied(self, items: list[dict], now: float, health: Health, batch: ChangeBatch | None = None) -> list[Event]:
        """A committed change batch, the zone read back (`items`) at `now`, before its caller has the
        answer: Route 53 makes all or none of a batch's changes and applies each batch as it comes,
        so its answers are published at once as their own state (source "change", with what the
        batch said), even when the next batch follows a millisecond later."""
        return self.refreshed(items, now) + self.publish(health, now, batch=batch or ChangeBatch())

    def refresh_failed(self, error: str, now: float) -> list[Event]:
        """A refresh failed: keep serving the last good copy; one event when failing starts."""
        self.failures += 1
        self.last_error = error
        if self.failures > 1:
            return []
        return [("dns_refresh", {"state": "failing", "error": error, "serving": "last good copy of the zone"})]

    def age(self, now: float) -> float | None:
        return None if self.last_ok is None else round(now - self.last_ok, 3)

    def publish(self, health: Health, now: float | None = None, *, batch: ChangeBatch | None = None) -> list[Event]:
        """The answers now: one dns_change per name whose answer moved, saying why (`source`: "change",
        a batch applied; "poll", a zone change the periodic read found; "health", the zone unchanged)
        and, with `now`, how long the old answer was published (`old_lasted_s`)."""
        views = self.zone.view(health) if self.zone else {}
        source = "change" if batch is not None else "poll" if self.zone_moved else "health"
        self.zone_moved = False
        events = []
        for name in sorted(views.keys() | self.views.keys()):   # none moved: no event
            old, new = self.views.get(name, []), views.get(name, [])
            if old == new:
                continue
            fields = {"name": name, "type": "A", "old": old, "new": new, "source": source,
                      **(batch.fields() if batch else {})}
            if now is not None and name in self.since:
                fields["old_lasted_s"] = round(now - self.since[name], 6)
            if now is not None:
                self.since[name] = now
            events.append(("dns_change", fields))
        # views first: a query answered from the new zone finds its answer already in status()
        self.views = views
        self.served = self.zone
        return events


# -- one health checker ------------------------------------------------------------------------------

@dataclass(frozen=True)
class HealthTransition:
    """A health check's status changed (the adapter emits it as a `route53_health` event)."""

    healthy: bool
    reason: str
    failure_threshold: int
    at: float


@dataclass
class HealthCheckModel:
    """One Route 53 health check's status from its probe results.

    A new health check starts healthy. The status changes after FailureThreshold consecutive
    results the other way; a result agreeing with the status restarts the count. Inverted flips
    each result. Disabled: no probes, and the status is always healthy (unhealthy when also
    Inverted, the documented way to stop traffic to a disabled check's resource). MeasureLatency
    changes nothing here. One checker stands for Route 53's fleet, so the ">18% of checkers
    report healthy" aggregation is the single checker's status.
    """

    config: dict
    interval_s: float                  # between probe starts (the profile's compressed RequestInterval)
    started: float                     # `now` when checking began: the first probe is due then
    healthy: bool = True
    streak: int = 0                    # consecutive results disagreeing with the status
    probes: int = 0
    failures: int = 0                  # probe results counted as failures (after Inverted)
    last_result: str | None = None
    changed_at: float | None = None
    _due: float = field(init=False)

    def __post_init__(self) -> None:
        self._due = self.started
        if self.disabled:
            self.healthy = not self.inverted
            self.last_result = ("disabled: not probed, Route 53 considers it "
                                + ("unhealthy (inverted)" if self.inverted else "healthy"))

    @property
    def threshold(self) -> int:
        return int(self.config.get("FailureThreshold") or DEFAULT_FAILURE_THRESHOLD)

    @property
    def inverted(self) -> bool:
        return bool(self.config.get("Inverted"))

    @property
    def disabled(self) -> bool:
        return bool(self.config.get("Disabled"))

    def next_due(self, now: float) -> float | None:
        """When the next probe starts (`now` if overdue); None when disabled (no probes)."""
        return None if self.disabled else max(self._due, now)

    def observe(self, ok: bool, now: float, detail: str = "") -> HealthTransition | None:
        """One probe's result, finished at `now`; the transition when the status changes."""
        if self.disabled:
            return None
        # fixed rate from the first probe; a probe that overran its slot starts the next at once
        self._due = max(self._due + self.interval_s, now)
        if self.inverted:
            ok, detail = not ok, f"inverted: {detail}"
        self.probes += 1
        self.failures += 0 if ok else 1
        self.last_result = detail
        if ok == self.healthy:
            self.streak = 0
            return None
        self.streak += 1
        if self.streak < self.threshold:
            return None
        self.healthy, self.streak, self.changed_at = ok, 0, now
        return HealthTransition(ok, detail, self.threshold, now)
