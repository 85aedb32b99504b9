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
