"""Broken failover functions, written as a team might deploy them by mistake. The mutation tests
run the resilience suite with each and require it to FAIL, naming the check that caught it: a
harness that passes a broken failover is worse than none.

Each is a Lambda handler configured like the reference one (environment variables
GAMEDAY_HOSTED_ZONE_ID, GAMEDAY_RECORD_NAME, GAMEDAY_REGION_ADDRESSES, ...).
"""

from __future__ import annotations

import json
import os
import time

import boto3

route53 = boto3.client("route53")


def does_nothing(event, context):
    """Acknowledges the alarm and returns success without touching Route 53."""
    return {"statusCode": 200, "body": "ok"}


def _upsert(value: str) -> None:
    route53.change_resource_record_sets(
        HostedZoneId=os.environ["GAMEDAY_HOSTED_ZONE_ID"],
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": os.environ["GAMEDAY_RECORD_NAME"], "Type": "A", "TTL": int(os.environ["GAMEDAY_RECORD_TTL"]),
            "ResourceRecords": [{"Value": value}]}}]})


def _failing_region(event) -> str:
    msg = json.loads(event["Records"][0]["Sns"]["Message"])
    return msg["AlarmArn"].split(":")[3]


def _is_alarm(event) -> bool:
    """The mutants act on ALARM notifications only, like the reference: CloudWatch also delivers
    OK transitions (OK actions), and a mutant that reacted to those would flap DNS instead of
    showing the one mistake it stands for."""
    return json.loads(event["Records"][0]["Sns"]["Message"]).get("NewStateValue") == "ALARM"


def points_at_failing_region(event, context):
    """Rewrites the record, but to the region whose alarm fired (a swapped comparison)."""
    if not _is_alarm(event):
        return {"moved": 0}
    addresses = json.loads(os.environ["GAMEDAY_REGION_ADDRESSES"])
    _upsert(addresses[_failing_region(event)])
    return {"moved": 1}


def deletes_record(event, context):
    """Deletes the A record instead of moving it: the service name stops resolving."""
    if not _is_alarm(event):
        return {"deleted": 0}
    sets = route53.list_resource_record_sets(HostedZoneId=os.environ["GAMEDAY_HOSTED_ZONE_ID"])["ResourceRecordSets"]
    rec = next(s for s in sets if s["Name"] == os.environ["GAMEDAY_RECORD_NAME"] and s["Type"] == "A")
    route53.change_resource_record_sets(HostedZoneId=os.environ["GAMEDAY_HOSTED_ZONE_ID"],
                                        ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": rec}]})
    return {"deleted": 1}


def too_slow(event, context):
    """Does the right thing, but only after more time than the function is given: Lambda stops it
    at its timeout every time, retries included."""
    time.sleep(context.get_remaining_time_in_millis() / 1000.0 + 1.0)  # the mutation itself: slowness
    addresses = json.loads(os.environ["GAMEDAY_REGION_ADDRESSES"])
    healthy = next(r for r in addresses if r != _failing_region(event))
    _upsert(addresses[healthy])
    return {"moved": 1}


def raises(event, context):
    """Crashes on every invocation (a bad deploy)."""
    raise RuntimeError("failover handler crashed: KeyError 'GAMEDAY_TARGET_REGION'")


def _regions() -> list[str]:
    raw = os.environ.get("GAMEDAY_REGIONS", "").strip()
    return json.loads(raw) if raw.startswith("[") else [r.strip() for r in raw.split(",") if r.strip()]


def fails_over_on_any_alarm(event, context):
    """Moves the record away from whichever region's alarm fired, to the other region, without
    checking that region's alarms or where the record points: the healthy region's own alarm (a
    5XX burst after the failover) sends traffic back into the region that is down."""
    if not _is_alarm(event):
        return {"moved": 0}
    addresses = json.loads(os.environ["GAMEDAY_REGION_ADDRESSES"])
    failing = _failing_region(event)
    _upsert(addresses[next(r for r in addresses if r != failing)])
    return {"moved": 1, "away_from": failing}


def fails_back_on_any_ok(event, context):
    """The primary/secondary pattern without looking at which alarm recovered: an ALARM of the home
    region fails over to the other region, and ANY OK notification (of any alarm, of any region)
    points the record at the home region again, although the home region may still be down."""
    msg = json.loads(event["Records"][0]["Sns"]["Message"])
    addresses = json.loads(os.environ["GAMEDAY_REGION_ADDRESSES"])
    home = os.environ.get("GAMEDAY_HOME_REGION") or _regions()[0]
    state, region = msg.get("NewStateValue"), _failing_region(event)
    if state == "OK":
        _upsert(addresses[home])
        return {"moved": 1, "to": home, "because": f"{msg.get('AlarmName')} OK"}
    if state == "ALARM" and region == home:
        _upsert(addresses[next(r for r in addresses if r != home)])
        return {"moved": 1, "away_from": home}
    return {"moved": 0}


def fails_back_while_unhealthy(event, context):
    """Treats every alarm as a blip: fails over away from the alarm's region, waits one record TTL
    (the clients 'have moved'), then points the record back at that region without asking whether
    it healed (its alarm still fires): a fixed cooldown instead of a health check."""
    if not _is_alarm(event):
        return {"moved": 0}
    addresses = json.loads(os.environ["GAMEDAY_REGION_ADDRESSES"])
    failing = _failing_region(event)
    _upsert(addresses[next(r for r in addresses if r != failing)])
    cooldown_s = min(float(os.environ["GAMEDAY_RECORD_TTL"]), context.get_remaining_time_in_millis() / 1000.0 - 1.0)
    time.sleep(max(0.0, cooldown_s))   # the mutation itself: time, not health, decides the failback
    _upsert(addresses[failing])
    return {"moved": 2, "back_to": failing}
