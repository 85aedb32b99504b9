"""The reference failover Lambda: a CloudWatch alarm in ALARM, delivered by SNS, moves the
service's Route 53 A record to a healthy region.

Written exactly as it would be deployed to AWS Lambda (Python runtime, handler
`gameday.sut.failover_lambda.handler`, SNS trigger from each region's alarm topic):
- the Route 53 client is made once at import time with plain boto3, so warm invocations
  reuse its connections; region, endpoint and credentials come from the environment;
- its configuration is environment variables:
    GAMEDAY_HOSTED_ZONE_ID     hosted zone id (without the /hostedzone/ prefix is fine)
    GAMEDAY_RECORD_NAME        the A record, e.g. "api.gameday.test."
    GAMEDAY_RECORD_TTL         TTL in seconds to write
    GAMEDAY_REGION_ADDRESSES   JSON {region: load balancer IP}
    GAMEDAY_REGIONS            regions in order of preference, comma-separated (or a JSON list)
    GAMEDAY_FAILBACK           "manual" (default) or "automatic"
    GAMEDAY_HOME_REGION        where traffic belongs when healthy (automatic failback; default: the
                               first of GAMEDAY_REGIONS)

Policy, per SNS record: NewStateValue "ALARM" fails over. With GAMEDAY_FAILBACK=automatic, an
"OK" of an alarm of the home region fails back to it, but only once every alarm of that region
is OK (one alarm recovering while another still fires is not a healed region); otherwise OK
and INSUFFICIENT_DATA do nothing (failback is a human decision). The failing region is the alarm's (from AlarmArn,
else the topic's). If the A record points at the failing region it is UPSERTed to the first
configured region whose alarms that notify the failover topic (its own region's topic of that
name) are all OK; if no other region is healthy the record stays put and the log says why (moving
traffic into a region that is down too would only make things worse). If the record already points
elsewhere nothing is done: an alarm of a region that has no traffic (the region already failed
away from, or the healthy region's own alarm while the record points at the other one) changes
nothing, and a second delivery of the same alarm is harmless (SNS and Lambda both deliver at least
once).

Route 53 Throttling, PriorRequestNotComplete, 5xx and connection errors are retried with
exponential backoff and jitter, never past the invocation's remaining time. Errors it cannot
handle are raised, so Lambda's asynchronous retries try again.
"""

from __future__ import annotations

import json
import logging
import os

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError as BotoConnectionError, HTTPClientError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

logger = logging.getLogger("failover")
logger.setLevel(logging.INFO)  # Lambda's root logger is at WARNING unless the function says otherwise

CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 2.0
MAX_ATTEMPTS = 6
# Tenacity owns the retrying (backoff with jitter, bounded by the invocation's remaining time),
# so the SDK's own retries are off (total_max_attempts counts the first call; botocore's
# "max_attempts" would count retries only); short timeouts keep a hung endpoint inside the budget.
route53 = boto3.client("route53", config=Config(
    retries={"total_max_attempts": 1, "mode": "standard"},
    connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S))

RETRYABLE_CODES = frozenset({"Throttling", "ThrottlingException", "PriorRequestNotComplete",
                             "RequestLimitExceeded", "ServiceUnavailable", "InternalError"})
REQUIRED_ENV = ("GAMEDAY_HOSTED_ZONE_ID", "GAMEDAY_RECORD_NAME", "GAMEDAY_RECORD_TTL",
                "GAMEDAY_REGION_ADDRESSES", "GAMEDAY_REGIONS")


class FailoverError(Exception):
    """Something retrying later might fix (or a human must): raised so Lambda records an error."""


def _settings() -> dict:
    missing = [k for k in REQUIRED_ENV if not os.environ.get(k)]
    if missing:
        raise FailoverError(f"missing environment variables: {', '.join(missing)}")
    raw_regions = os.environ["GAMEDAY_REGIONS"].strip()
    regions = json.loads(raw_regions) if raw_regions.startswith("[") else [
        r.strip() for r in raw_regions.split(",") if r.strip()]
    return {
        "zone_id": os.environ["GAMEDAY_HOSTED_ZONE_ID"].rsplit("/", 1)[-1],
        "record": _fqdn(os.environ["GAMEDAY_RECORD_NAME"]),
        "ttl": int(os.environ["GAMEDAY_RECORD_TTL"]),
        "addresses": json.loads(os.environ["GAMEDAY_REGION_ADDRESSES"]),
        "regions": regions,
        "failback": os.environ.get("GAMEDAY_FAILBACK", "manual").strip().lower(),
        "home": os.environ.get("GAMEDAY_HOME_REGION") or (regions[0] if regions else None),
    }


def _fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in RETRYABLE_CODES or status >= 500
    return isinstance(exc, (BotoConnectionError, HTTPClientError))


def _call(context, operation: str, **kwargs):
    """route53.<operation>(**kwargs), retried while there is time left for another attempt."""

    def out_of_time(retry_state) -> bool:
        if context is None:
            return False
        left_s = context.get_remaining_time_in_millis() / 1000 - retry_state.upcoming_sleep
        return left_s < CONNECT_TIMEOUT_S + READ_TIMEOUT_S

    def log_retry(retry_state) -> None:
        exc = retry_state.outcome.exception()
        logger.warning("route53 %s failed (%s: %s); retry %d in %.2fs", operation, type(exc).__name__, exc,
                       retry_state.attempt_number, retry_state.upcoming_sleep)

    for attempt in Retrying(stop=stop_after_attempt(MAX_ATTEMPTS) | out_of_time,
                            wait=wait_exponential_jitter(initial=0.1, max=1.0, jitter=0.1),
                            retry=retry_if_exception(_retryable), before_sleep=log_retry, reraise=True):
        with attempt:
            response = getattr(route53, operation)(**kwargs)
    return response


def _alarm(message) -> dict | None:
    try:
        body = json.loads(message) if isinstance(message, str) else None
    except ValueError:
        return None
    return body if isinstance(body, dict) and "AlarmName" in body and "NewStateValue" in body else None


def _arn_region(arn: str | None) -> str | None:
    parts = (arn or "").split(":")
    return parts[3] if len(parts) > 3 and parts[3] else None


def _current_a_record(cfg: dict, context) -> dict:
    resp = _call(context, "list_resource_record_sets", HostedZoneId=cfg["zone_id"],
                 StartRecordName=cfg["record"], StartRecordType="A", MaxItems="1")
    for rrset in resp.get("ResourceRecordSets", []):
        if _fqdn(rrset["Name"]) == cfg["record"] and rrset["Type"] == "A":
            if "SetIdentifier" in rrset or "AliasTarget" in rrset:
                raise FailoverError(f"{cfg['record']} is not a simple A record (routing policy or alias): "
                                    f"this handler only rewrites simple records")
            return rrset
    raise FailoverError(f"A record {cfg['record']} not found in hosted zone {cfg['zone_id']}")


def _alarms_not_ok(region: str, topic_arn: str | None) -> list[str]:
    """The alarms of `region` that notify the failover topic (`topic_arn`'s name in that region:
    alarm actions are same-region) and are not OK; ["<could not read its alarms: ...>"] if
    CloudWatch there does not answer (a region that cannot be seen is not known to be healthy)."""
    parts = (topic_arn or "").split(":")
    topic = ":".join(parts[:3] + [region] + parts[4:]) if len(parts) > 4 else None
    cloudwatch = boto3.client("cloudwatch", region_name=region, config=route53.meta.config)
    try:
        alarms = [a for page in cloudwatch.get_paginator("describe_alarms").paginate() for a in page["MetricAlarms"]
                  if topic is None or topic in a.get("AlarmActions", [])]
    except (ClientError, BotoConnectionError, HTTPClientError) as e:
        return [f"<could not read its alarms: {type(e).__name__}>"]
    return sorted(a["AlarmName"] for a in alarms if a["StateValue"] != "OK")


def _fail_away_from(failing: str, alarm_name: str, topic_arn: str | None, cfg: dict, context) -> dict:
    region_of = {ip: r for r, ip in cfg["addresses"].items()}
    current = _current_a_record(cfg, context)
    current_ip = current["ResourceRecords"][0]["Value"]
    current_region = region_of.get(current_ip)
    summary = {"alarm": alarm_name, "failing_region": failing, "record": cfg["record"]}
    if current_region != failing:
        logger.info("failover: record %s already points at %s (%s), not at failing %s; nothing to do (alarm %s)",
                    cfg["record"], current_region or "an unknown region", current_ip, failing, alarm_name)
        return {**summary, "action": "none", "current_region": current_region, "current_ip": current_ip}
    others = [r for r in cfg["regions"] if r != failing and r in cfg["addresses"]]
    if not others:
        raise FailoverError(f"no other region to fail over to from {failing} (regions {cfg['regions']})")
    not_ok = {r: _alarms_not_ok(r, topic_arn) for r in others}
    target = next((r for r in others if not not_ok[r]), None)
    if target is None:
        why = "; ".join(f"{r}: {', '.join(names)}" for r, names in not_ok.items())
        logger.warning("failover: %s is failing (%s) but no other region is healthy (%s); record %s stays on %s",
                       failing, alarm_name, why, cfg["record"], failing)
        return {**summary, "action": "none", "reason": f"no healthy region: {why}", "current_region": current_region}
    target_ip = cfg["addresses"][target]
    change = _call(context, "change_resource_record_sets", HostedZoneId=cfg["zone_id"], ChangeBatch={
        "Comment": f"failover from {failing} because {alarm_name}",
        "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": cfg["record"], "Type": "A", "TTL": cfg["ttl"], "ResourceRecords": [{"Value": target_ip}]}}]})
    logger.info("failover: record %s moved from %s (%s) to %s (%s) because %s",
                cfg["record"], failing, current_ip, target, target_ip, alarm_name)
    return {**summary, "action": "moved", "from": failing, "from_ip": current_ip, "to": target, "to_ip": target_ip,
            "change_id": change["ChangeInfo"]["Id"], "change_status": change["ChangeInfo"]["Status"]}


def _fail_back_to(home: str, alarm_name: str, topic_arn: str | None, cfg: dict, context) -> dict:
    """Move the record back to `home` if every alarm of that region that notifies this topic (the
    alarms that drive failover) is OK and the record points elsewhere."""
    summary = {"alarm": alarm_name, "home_region": home, "record": cfg["record"]}
    firing = _alarms_not_ok(home, topic_arn)
    if firing:
        logger.info("failback: %s is OK but %s not yet; staying put", alarm_name, ", ".join(firing))
        return {**summary, "action": "none", "reason": f"alarms not OK: {firing}"}
    current = _current_a_record(cfg, context)
    current_ip = current["ResourceRecords"][0]["Value"]
    home_ip = cfg["addresses"][home]
    if current_ip == home_ip:
        return {**summary, "action": "none", "reason": "already home"}
    change = _call(context, "change_resource_record_sets", HostedZoneId=cfg["zone_id"], ChangeBatch={
        "Comment": f"failback to {home}: {alarm_name} is OK",
        "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": cfg["record"], "Type": "A", "TTL": cfg["ttl"], "ResourceRecords": [{"Value": home_ip}]}}]})
    logger.info("failback: record %s moved from %s back to %s (%s) because %s is OK",
                cfg["record"], current_ip, home, home_ip, alarm_name)
    return {**summary, "action": "failed_back", "from_ip": current_ip, "to": home, "to_ip": home_ip,
            "change_id": change["ChangeInfo"]["Id"]}


def handler(event, context):
    cfg = _settings()
    actions = []
    for record in event.get("Records", []):
        sns = record.get("Sns") or {}
        alarm = _alarm(sns.get("Message"))
        if alarm is None:
            logger.info("ignoring SNS message %s: not a CloudWatch alarm notification", sns.get("MessageId"))
            actions.append({"action": "ignored", "reason": "not an alarm", "message_id": sns.get("MessageId")})
            continue
        name, state = alarm["AlarmName"], alarm["NewStateValue"]
        region = _arn_region(alarm.get("AlarmArn")) or _arn_region(sns.get("TopicArn"))
        # which alarm this invocation handled, in its CloudWatch Logs: the one place a run on AWS
        # (environments/aws/signals_lambda.py) or a person reading the logs can learn it from
        logger.info("alarm notification: %s", json.dumps({
            "AlarmName": name, "NewStateValue": state, "OldStateValue": alarm.get("OldStateValue"),
            "region": region, "MessageId": sns.get("MessageId"), "TopicArn": sns.get("TopicArn")}))
        if state == "OK" and cfg["failback"] == "automatic" and region == cfg["home"] and region in cfg["addresses"]:
            actions.append(_fail_back_to(region, name, sns.get("TopicArn"), cfg, context))
            continue
        if state != "ALARM":
            logger.info("alarm %s is %s: no failover (failback is not automatic)", name, state)
            actions.append({"action": "ignored", "reason": f"state {state}", "alarm": name})
            continue
        failing = _arn_region(alarm.get("AlarmArn")) or _arn_region(sns.get("TopicArn"))
        if failing not in cfg["addresses"]:
            logger.warning("alarm %s is in region %s, which is not one of %s; nothing to do",
                           name, failing, sorted(cfg["addresses"]))
            actions.append({"action": "ignored", "reason": f"unknown region {failing}", "alarm": name})
            continue
        actions.append(_fail_away_from(failing, name, sns.get("TopicArn"), cfg, context))
    return {"moved": sum(1 for a in actions if a["action"] in ("moved", "failed_back")), "actions": actions}
