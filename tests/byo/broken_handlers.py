"""Broken bring-your-own failover functions, as teams ship them by mistake (tests/test_byo_failover.py
requires the scenarios to FAIL with each, naming the check and quoting the handler's logs).
Configured like sut/examples/weighted_handler.py (same environment variables)."""

import json
import logging
import os

import boto3

logger = logging.getLogger()
logger.setLevel(logging.INFO)

route53 = boto3.client("route53")


def weights_unchanged(event, context):
    """Reads the weighted records and writes them back as they are (the new weights were computed
    into a copy that was never used), logs success and returns 200: nothing moves."""
    alarm = json.loads(event["Records"][0]["Sns"]["Message"])
    if alarm["NewStateValue"] != "ALARM":
        return {"statusCode": 200, "body": "no action"}
    sets = route53.list_resource_record_sets(HostedZoneId=os.environ["HOSTED_ZONE_ID"])["ResourceRecordSets"]
    mine = [s for s in sets if s["Name"] == os.environ["RECORD_NAME"] and "Weight" in s]
    wanted = {s["SetIdentifier"]: (0 if s["SetIdentifier"] == os.environ["PRIMARY_SET_ID"] else 100) for s in mine}
    route53.change_resource_record_sets(HostedZoneId=os.environ["HOSTED_ZONE_ID"], ChangeBatch={
        "Changes": [{"Action": "UPSERT", "ResourceRecordSet": s} for s in mine]})   # the bug: `wanted` unused
    logger.info("failover done: weights %s", wanted)
    return {"statusCode": 200, "body": json.dumps(wanted)}


def _weighted_upsert(set_id, address, weight, comment):
    route53.change_resource_record_sets(HostedZoneId=os.environ["HOSTED_ZONE_ID"], ChangeBatch={
        "Comment": comment, "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": os.environ["RECORD_NAME"], "Type": "A", "TTL": int(os.environ["RECORD_TTL"]),
            "SetIdentifier": set_id, "Weight": weight, "ResourceRecords": [{"Value": address}]}}]})


def weights_in_two_calls(event, context):
    """The weighted example's move (failing region to weight 0, the other to 100) made as two
    ChangeResourceRecordSets calls instead of one ChangeBatch: between them every weight is 0 and
    Route 53 answers every record, the failing region's included."""
    alarm = json.loads(event["Records"][0]["Sns"]["Message"])
    region = alarm["AlarmArn"].split(":")[3]
    if alarm["NewStateValue"] != "ALARM" or region != os.environ["PRIMARY_REGION"]:
        return {"statusCode": 200, "body": "no action"}
    _weighted_upsert(os.environ["PRIMARY_SET_ID"], os.environ["PRIMARY_ADDRESS"], 0, "failover 1/2: primary weight 0")
    _weighted_upsert(os.environ["SECONDARY_SET_ID"], os.environ["SECONDARY_ADDRESS"], 100,
                     "failover 2/2: secondary weight 100")
    logger.info("failover done in two calls: %s=0, %s=100", os.environ["PRIMARY_SET_ID"], os.environ["SECONDARY_SET_ID"])
    return {"statusCode": 200, "body": "weights shifted"}
