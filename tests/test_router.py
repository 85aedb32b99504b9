"""The AWS API router: SigV4 region routing, Route 53 in us-east-1, API faults, control-plane blocks."""

import time

import botocore.exceptions
import pytest

from gameday.environments.local.router import AwsRouter
from gameday import aws
from tests.support import provisioned_context


@pytest.fixture(scope="module")
def routed():
    with provisioned_context() as ctx:
        router = AwsRouter(ctx).start()
        yield ctx, router
        router.stop()


def test_requests_reach_the_region_they_are_signed_for(routed):
    ctx, router = routed
    ctx.customer_client("dynamodb", "us-west-2").put_item(TableName="gameday-items", Item={"pk": {"S": "routed"}})
    assert "Item" in ctx.internal_client("dynamodb", "us-west-2").get_item(TableName="gameday-items", Key={"pk": {"S": "routed"}})
    assert "Item" not in ctx.internal_client("dynamodb", "us-east-1").get_item(TableName="gameday-items", Key={"pk": {"S": "routed"}})


def test_route53_lives_in_us_east_1_whatever_region_signs(routed):
    ctx, _ = routed
    # a Lambda in us-west-2 with AWS_ENDPOINT_URL signs Route 53 calls for us-west-2
    r53 = aws.client("route53", "us-west-2", ctx.router_url)
    names = [r["Name"] for r in r53.list_resource_record_sets(HostedZoneId=ctx.provisioned.hosted_zone_id)["ResourceRecordSets"]]
    assert ctx.config.record_name in names


def test_throttle_fault_is_a_real_throttling_error_for_botocore(routed):
    ctx, router = routed
    rule = router.add_fault(kind="throttle", region="us-west-2", service="dynamodb", operation="PutItem")
    try:
        c = aws.client("dynamodb", "us-west-2", ctx.router_url, retries=0, cached=False)
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.put_item(TableName="gameday-items", Item={"pk": {"S": "t"}})
        assert e.value.response["Error"]["Code"] == "ThrottlingException"
        c.get_item(TableName="gameday-items", Key={"pk": {"S": "t"}})  # other operations unaffected
        # the other region is unaffected
        aws.client("dynamodb", "us-east-1", ctx.router_url, retries=0, cached=False).put_item(
            TableName="gameday-items", Item={"pk": {"S": "t"}})
    finally:
        router.remove_fault(rule["id"])
    c.put_item(TableName="gameday-items", Item={"pk": {"S": "t"}})  # rolled back


def test_route53_throttling_and_5xx(routed):
    ctx, router = routed
    c = aws.client("route53", "us-east-1", ctx.router_url, retries=0, cached=False)
    for kind, code in (("throttle", "Throttling"), ("error", "InternalFailure")):
        rule = router.add_fault(kind=kind, service="route53")
        try:
            with pytest.raises(botocore.exceptions.ClientError) as e:
                c.list_resource_record_sets(HostedZoneId=ctx.provisioned.hosted_zone_id)
            assert e.value.response["Error"]["Code"] == code
        finally:
            router.remove_fault(rule["id"])


def test_blocking_us_east_1_control_plane_takes_route53_with_it(routed):
    ctx, router = routed
    router.block_control_plane("us-east-1")
    try:
        c = aws.client("route53", "us-west-2", ctx.router_url, retries=0, timeout_s=0.5, cached=False)
        t0 = time.monotonic()
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            c.list_resource_record_sets(HostedZoneId=ctx.provisioned.hosted_zone_id)
        assert time.monotonic() - t0 < 5
        # us-west-2's own APIs still answer
        aws.client("dynamodb", "us-west-2", ctx.router_url, retries=0, cached=False).describe_table(TableName="gameday-items")
    finally:
        router.unblock_control_plane("us-east-1")
    aws.client("route53", "us-west-2", ctx.router_url, retries=0, cached=False).list_resource_record_sets(
        HostedZoneId=ctx.provisioned.hosted_zone_id)


def test_bad_fault_specs_are_refused(routed):
    _, router = routed
    with pytest.raises(ValueError, match="rate"):
        router.add_fault(kind="throttle", rate=0)
    with pytest.raises(ValueError, match="unknown region"):
        router.add_fault(kind="throttle", region="mars-1")
    with pytest.raises(ValueError, match="kind"):
        router.add_fault(kind="explode")
