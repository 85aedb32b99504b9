"""A failover function for weighted records: each region has an A record with its own
SetIdentifier; traffic goes where the weight is (a record of weight 0 gets none unless every
record has weight 0). On an alarm in ALARM the failing region's record gets weight 0 and the
other region's gets 100, in one ChangeBatch (Route 53 applies a batch atomically, so clients
never see both or neither). With FAILBACK_ON_OK=true, the primary region's alarm returning to
OK shifts the weights back (failover.failback = "automatic").

Written for real Lambda: environment variables only, boto3 client at import time, errors
returned as {"statusCode": 500}.

Environment: HOSTED_ZONE_ID, RECORD_NAME, RECORD_TTL, PRIMARY_REGION, PRIMARY_SET_ID,
PRIMARY_ADDRESS, SECONDARY_REGION, SECONDARY_SET_ID, SECONDARY_ADDRESS, FAILBACK_ON_OK (optional).
"""

import json
import logging
import os

import boto3

logger = logging.getLogger()
logger.setLevel(logging.INFO)

route53 = boto3.client("route53")

REQUIRED = ("HOSTED_ZONE_ID", "RECORD_NAME", "RECORD_TTL", "PRIMARY_REGION", "PRIMARY_SET_ID", "PRIMARY_ADDRESS",
            "SECONDARY_REGION", "SECONDARY_SET_ID", "SECONDARY_ADDRESS")


def _error(message):
    logger.error(message)
    return {"statusCode": 500, "body": json.dumps({"error": message})}


def _records():
    """region -> (set identifier, address), from the environment."""
    return {os.environ[f"{role}_REGION"]: (os.environ[f"{role}_SET_ID"], os.environ[f"{role}_ADDRESS"])
            for role in ("PRIMARY", "SECONDARY")}


def shift_weights(to_region, reason):
    """Weight 100 to `to_region`, 0 to the others, in one atomic change."""
    changes = []
    for region, (set_id, address) in _records().items():
        weight = 100 if region == to_region else 0
        changes.append({"Action": "UPSERT", "ResourceRecordSet": {
            "Name": os.environ["RECORD_NAME"], "Type": "A", "TTL": int(os.environ["RECORD_TTL"]),
            "SetIdentifier": set_id, "Weight": weight, "ResourceRecords": [{"Value": address}]}})
    route53.change_resource_record_sets(HostedZoneId=os.environ["HOSTED_ZONE_ID"],
                                        ChangeBatch={"Comment": reason, "Changes": changes})
    summary = ", ".join(f"{c['ResourceRecordSet']['SetIdentifier']}={c['ResourceRecordSet']['Weight']}"
                        for c in changes)
    print(f"weights now {summary} ({reason})")
    return summary


def handler(event, context):
    missing = [k for k in REQUIRED if not os.environ.get(k)]
    if missing:
        return _error(f"missing environment variable(s): {', '.join(missing)}")
    try:
        alarm = json.loads(event["Records"][0]["Sns"]["Message"])
        name, state = alarm["AlarmName"], alarm["NewStateValue"]
        region = alarm["AlarmArn"].split(":")[3]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        return _error(f"not a CloudWatch alarm notification: {e!r}")
    records = _records()
    if region not in records:
        return _error(f"alarm region {region} is not one of {sorted(records)}")
    logger.info("alarm %s is %s (region %s)", name, state, region)
    try:
        if state == "ALARM":
            target = next(r for r in records if r != region)
            return {"statusCode": 200, "body": shift_weights(target, f"failover: {name}")}
        if (state == "OK" and os.environ.get("FAILBACK_ON_OK", "").lower() == "true"
                and region == os.environ["PRIMARY_REGION"]):
            return {"statusCode": 200, "body": shift_weights(region, f"failback: {name} is OK")}
    except Exception as e:  # the team's style: report, do not raise
        return _error(f"route53 change failed: {type(e).__name__}: {e}")
    return {"statusCode": 200, "body": "no action"}
