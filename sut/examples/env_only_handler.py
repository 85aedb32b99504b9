"""A failover function as a team deploys it to AWS Lambda: configured only by environment
variables, its Route 53 client created at import time, errors returned as an HTTP-style payload
({"statusCode": 500}) instead of raised, logging with both `logging` and `print`.

It rewrites one simple A record: on a CloudWatch alarm notification in ALARM (delivered by
SNS) it UPSERTs RECORD_NAME to the address of the region that did not alarm. OK notifications
are logged and ignored.

Environment (gameday fills these from placeholders, see docs/failover.md):
  HOSTED_ZONE_ID, RECORD_NAME (with its trailing dot), RECORD_TYPE, RECORD_TTL,
  PRIMARY_REGION, PRIMARY_ADDRESS, SECONDARY_REGION, SECONDARY_ADDRESS

Returning {"statusCode": 500} makes Lambda record a *successful* invocation (no retry): only the
effect, the record moving, tells whether it worked. That is what gameday's scenarios judge.
"""

import json
import logging
import os

import boto3

logger = logging.getLogger()
logger.setLevel(logging.INFO)

# At import time, as in most Lambda code: region, endpoint and credentials come from the environment.
route53 = boto3.client("route53")

REQUIRED = ("HOSTED_ZONE_ID", "RECORD_NAME", "RECORD_TYPE", "RECORD_TTL",
            "PRIMARY_REGION", "PRIMARY_ADDRESS", "SECONDARY_REGION", "SECONDARY_ADDRESS")


def _error(message):
    logger.error(message)
    return {"statusCode": 500, "body": json.dumps({"error": message})}


def handler(event, context):
    missing = [k for k in REQUIRED if not os.environ.get(k)]
    if missing:
        return _error(f"missing environment variable(s): {', '.join(missing)}")
    addresses = {os.environ["PRIMARY_REGION"]: os.environ["PRIMARY_ADDRESS"],
                 os.environ["SECONDARY_REGION"]: os.environ["SECONDARY_ADDRESS"]}
    try:
        alarm = json.loads(event["Records"][0]["Sns"]["Message"])
        name, state = alarm["AlarmName"], alarm["NewStateValue"]
        failing = alarm["AlarmArn"].split(":")[3]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        return _error(f"not a CloudWatch alarm notification: {e!r}")
    print(f"alarm {name} is {state} (region {failing})")
    if state != "ALARM":
        return {"statusCode": 200, "body": json.dumps({"action": "none", "state": state})}
    target = next((r for r in addresses if r != failing), None)
    if target is None or failing not in addresses:
        return _error(f"alarm region {failing} is not one of {sorted(addresses)}")
    try:
        route53.change_resource_record_sets(
            HostedZoneId=os.environ["HOSTED_ZONE_ID"],
            ChangeBatch={"Comment": f"failover: {name}", "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
                "Name": os.environ["RECORD_NAME"], "Type": os.environ["RECORD_TYPE"],
                "TTL": int(os.environ["RECORD_TTL"]), "ResourceRecords": [{"Value": addresses[target]}]}}]})
    except Exception as e:  # the team's style: report, do not raise
        return _error(f"route53 change failed: {type(e).__name__}: {e}")
    logger.info("moved %s from %s to %s (%s)", os.environ["RECORD_NAME"], failing, target, addresses[target])
    return {"statusCode": 200, "body": json.dumps({"action": "moved", "to": target})}
