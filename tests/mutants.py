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
