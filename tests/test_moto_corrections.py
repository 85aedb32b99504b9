"""moto_corrections' admin routes, in a real moto server: a registered route answers its JSON, an
unknown one is a 404 naming it, a handler's bad input a 400 with its reason; AWS calls pass."""

from __future__ import annotations

import pytest

from gameday import aws
from gameday.environments.local import moto_corrections
from gameday.environments.local.moto_corrections import AdminRoutes
from tests.support import provisioned_context


def test_admin_routes_answer_and_refuse_with_a_reason():
    from werkzeug.test import Client

    admin = AdminRoutes()
    admin.route("echo", lambda body: {"got": body["x"]})
    with pytest.raises(ValueError, match="twice"):
        admin.route("echo", lambda body: None)
    client = Client(admin.wrap(lambda environ, start: (start("200 OK", []), [b"moto"])[1]))
    assert client.post("/_gameday/echo", json={"x": 1}).json == {"got": 1}
    bad = client.post("/_gameday/echo", json={})
    assert bad.status_code == 400 and "KeyError" in bad.json["error"]
    assert client.post("/_gameday/nope", json={}).status_code == 404
    assert client.get("/?Action=ListTopics").data == b"moto"


def test_a_moto_server_serves_the_admin_prefix_and_aws_alike():
    with provisioned_context() as ctx:
        url = ctx.moto_urls["us-east-1"]
        with pytest.raises(ValueError, match="404 .*no admin route /_gameday/nothing"):
            aws.moto_admin(url, "nothing")
        assert ctx.internal_client("sns", "us-east-1").list_topics()["Topics"]
    assert isinstance(moto_corrections.CORRECTIONS, tuple)


# -- DynamoDB: writes atomic, stream records in order (moto_fix_dynamodb._serialize_writes) ------------------

def _concurrent_puts_stream_sequence_numbers(writers: int = 4, each: int = 5) -> list[int]:
    """Sequence numbers of the stream records that `writers` threads' PutItems made at once, in the
    order the stream holds them. Making a record yields the thread (a sleep), where moto's own append
    had read the stream's length: the interleaving two writes at once can have on a busy machine."""
    import threading
    import time

    import boto3
    from moto import mock_aws
    from moto.dynamodb.models import table as moto_table

    class YieldingRecord(moto_table.StreamRecord):
        def __init__(self, *args, **kwargs):
            time.sleep(0.005)
            super().__init__(*args, **kwargs)

    with mock_aws(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(moto_table, "StreamRecord", YieldingRecord)
        ddb = boto3.client("dynamodb", region_name="us-east-1", **aws.LOCAL_CREDENTIALS)
        ddb.create_table(TableName="t", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST",
                         StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})

        def writer(w: int) -> None:
            for i in range(each):
                ddb.put_item(TableName="t", Item={"pk": {"S": f"w{w}-{i}"}})

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        from moto.dynamodb.models import dynamodb_backends
        shard = next(iter(dynamodb_backends.values()))["us-east-1"].tables["t"].stream_shard
        return [int(r.record["dynamodb"]["SequenceNumber"]) for r in shard.items]


def test_concurrent_writes_get_unique_stream_sequence_numbers_in_order():
    from gameday.environments.local import moto_fix_dynamodb

    moto_fix_dynamodb._serialize_writes()
    seqs = _concurrent_puts_stream_sequence_numbers()
    assert len(seqs) == 20 and len(set(seqs)) == 20 and seqs == sorted(seqs), seqs


def test_twin_moto_alone_gives_two_writes_at_once_the_same_sequence_number(monkeypatch):
    """Without the lock, a reader's NextShardIterator (after a page's highest number) points back
    into the page: the replicator reads records again, or forever."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import StreamShard

    from gameday.environments.local import moto_fix_dynamodb

    # moto's own methods back, wherever an earlier test in this process serialized them
    for cls, name in [(DynamoDBBackend, n) for n in moto_fix_dynamodb.WRITE_OPERATIONS] + [(StreamShard, "add")]:
        fn = getattr(cls, name, None)
        if fn is not None:
            monkeypatch.setattr(cls, name, getattr(fn, "__wrapped__", fn))
    seqs = _concurrent_puts_stream_sequence_numbers()
    assert len(set(seqs)) < len(seqs), f"no duplicate sequence number: {seqs}"
