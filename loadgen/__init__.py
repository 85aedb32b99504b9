"""The Locust side of gameday: the locustfile (regional surge users, DNS-following users), load
shapes, the client-side operation history, and a runner that drives Locust from pytest.

Importing this package (or loadgen.runner, loadgen.plan, loadgen.history) never imports Locust
or gevent: Locust runs in its own processes.
"""
