"""SNS deliveries to `lambda` subscriptions corrected to reach the local Lambda runner.

moto 5.2.5 hands a notification for a `lambda` subscription to its own Lambda backend in the
function's region (moto/sns/models.py, Subscription.publish), which runs the function only with
Docker, and only when the function is in the same moto process: here each region is its own
moto server, and the topics in every region invoke one function in the failover region (AWS
allows a topic to invoke a function in another region).

Here a `lambda` delivery goes where the harness says the function is served: the Lambda runner
tells every region's moto, through the admin route `sns_lambda_endpoint` (body: function_arn,
the unqualified ARN; url; add true/false), the URL it takes deliveries at, and the delivery
POSTs the notification there, as moto's `http` delivery does, with `SubscriptionArn` (the
Lambda event's EventSubscriptionArn) and `FunctionArn` (the subscription's endpoint, alias or
version included) added. A delivery to a function nobody serves, or that the runner does not
take, is dropped and logged, as AWS records a failed delivery (after its retries).

The stack runs one runner per function. Component tests may run a second beside the first (each
with its own handler, as two copies of the account would): every registered runner gets each
delivery, as each got its own `http` subscription before.

Only moto and the standard library at import (moto_corrections).
"""

from __future__ import annotations

import logging
import threading

import requests
from moto.sns.models import Subscription

log = logging.getLogger("gameday.moto.sns")

DELIVERY_TIMEOUT_S = 5.0

_endpoints: dict[str, list[str]] = {}    # unqualified function ARN -> the URLs of the runners serving it
_lock = threading.Lock()


def function_of(endpoint: str) -> tuple[str, str | None]:
    """(unqualified function ARN, qualifier or None) of a `lambda` subscription's endpoint."""
    parts = endpoint.split(":")
    if len(parts) not in (7, 8) or parts[5] != "function":
        raise ValueError(f"not a Lambda function ARN: {endpoint!r}")
    return ":".join(parts[:7]), (parts[7] if len(parts) == 8 else None)


def _register(body: dict) -> dict:
    function_arn, _ = function_of(str(body["function_arn"]))
    url = str(body["url"])
    with _lock:
        urls = _endpoints.setdefault(function_arn, [])
        if url in urls:
            urls.remove(url)
        if body.get("add", True):
            urls.append(url)
        elif not urls:
            del _endpoints[function_arn]
        return {"function_arn": function_arn, "serving": list(urls)}


def _deliver(sub: Subscription, message: str, message_id: str, subject: str | None,
             message_attributes: dict | None) -> None:
    try:
        function_arn, _ = function_of(sub.endpoint)
    except ValueError as e:
        log.warning("SNS delivery %s to %s dropped: %s", message_id, sub.arn, e)
        return
    with _lock:
        urls = list(_endpoints.get(function_arn) or ())
    if not urls:
        log.warning("SNS delivery %s to %s dropped: no Lambda runner serves %s", message_id, sub.arn, function_arn)
        return
    data = sub.get_post_data(message, message_id, subject, message_attributes=message_attributes)
    data.update(SubscriptionArn=sub.arn, FunctionArn=sub.endpoint)
    for url in urls:
        try:
            r = requests.post(url, json=data, timeout=DELIVERY_TIMEOUT_S)
            if r.status_code != 200:
                log.warning("SNS delivery %s to %s failed: the runner answered %s %.200s",
                            message_id, sub.endpoint, r.status_code, r.text)
        except requests.RequestException as e:
            log.warning("SNS delivery %s to %s failed: %s", message_id, sub.endpoint, e)


def _patch_subscription() -> None:
    if getattr(Subscription, "gameday_lambda_patched", False):   # once per process (a zygote's servers inherit it)
        return
    Subscription.gameday_lambda_patched = True
    original = Subscription.publish

    def publish(self, message, message_id, subject=None, message_attributes=None, group_id=None,
                deduplication_id=None, message_structure=None):
        if self.protocol != "lambda":
            return original(self, message, message_id, subject=subject, message_attributes=message_attributes,
                            group_id=group_id, deduplication_id=deduplication_id,
                            message_structure=message_structure)
        # what moto's own publish does first, for every protocol
        if self._filter_policy_matcher is not None and not self._filter_policy_matcher.matches(message_attributes,
                                                                                                 message):
            return None
        if message_structure == "json":
            message = self._parse_message_structure(message, self.protocol)
        _deliver(self, message, message_id, subject, message_attributes)
        return None

    Subscription.publish = publish


def install(admin) -> None:
    _patch_subscription()
    admin.route("sns_lambda_endpoint", _register)
