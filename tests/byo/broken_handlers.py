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
