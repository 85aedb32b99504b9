"""The loopback guard (gameday/net.py) and every place the harness sends traffic from: the HTTP
front doors' upstream connections (gameday/httpfwd.py), the DNS stub resolver
(gameday/resolver.py), the load generator's targets (loadgen/context.py, checked by the runner,
the Locust master and every worker) and the reference service's DynamoDB endpoint (sut/service.py).

Refused addresses are TEST-NET ones (RFC 5737) and a private one, and no test may reach them even
when a guard is missing: connections are intercepted and the Locust/service processes would only
listen (the tests then fail on their exit code).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gameday.httpfwd import LoopbackServer, QuietHandler, UpstreamPool
from gameday.loadgen.context import check_targets
from gameday.loadgen.plan import LoadInputError
from gameday.loadgen.runner import LoadRunner
from gameday.net import LOCAL_ONLY, AddressRefused, allowed_networks, check_address, env_kind_of, free_port
from gameday.resolver import ServiceResolver
from gameday.sut.service import endpoint_problem
from tests.support import descendants

REPO = Path(__file__).resolve().parents[1]
REFUSED = ("192.0.2.10", "198.51.100.7", "10.1.2.3", "0.0.0.0", "169.254.169.254")


# -- the guard ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.2.1", "127.255.255.254", "localhost", "::1", "[::1]"])
def test_loopback_addresses_and_localhost_are_allowed(host):
    check_address(host)
    check_address(host, allowed_networks("docker"))


@pytest.mark.parametrize("host", REFUSED + ("::ffff:192.0.2.10", "2001:db8::1"))
def test_other_addresses_are_refused_with_one_line_naming_the_address(host):
    with pytest.raises(AddressRefused) as e:
        check_address(host, what="DNS queries")
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"refused to send DNS queries to {host}")
    assert "127.0.0.0/8" in message


def test_a_name_is_judged_by_every_address_it_resolves_to(monkeypatch):
    import socket

    answers = {"mixed.test": ["127.0.0.1", "192.0.2.10"], "local.test": ["127.0.0.5"]}
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda host, *a, **k: [(socket.AF_INET, 0, 0, "", (ip, 0)) for ip in answers[host]])
    check_address("local.test")
    with pytest.raises(AddressRefused, match=r"^refused to send traffic to mixed.test \(192.0.2.10\): outside"):
        check_address("mixed.test")


def test_each_environment_kind_has_its_networks():
    assert allowed_networks("local") == LOCAL_ONLY
    assert allowed_networks(None) == LOCAL_ONLY
    # docker: task containers share the host's network and listen on 127.0.0.1
    assert allowed_networks("docker") == LOCAL_ONLY
    # aws: the user's real stack; allowed explicitly, not by accident
    assert allowed_networks("aws") is None
    check_address("192.0.2.10", allowed_networks("aws"))
    with pytest.raises(AddressRefused, match="unknown environment kind 'staging'"):
        allowed_networks("staging")
    assert env_kind_of({"env": "docker"}) == "docker" and env_kind_of({"kind": "aws"}) == "aws"
    assert env_kind_of({}) == "local"


# -- the HTTP front doors' upstream connections ---------------------------------------------------------------

class _Echo(QuietHandler):
    def do_GET(self):
        self.send_json(200, {"path": self.path})


@pytest.fixture
def no_outside_connection(monkeypatch):
    """Every TCP connection http.client opens goes through here: loopback ones go ahead, any other
    is recorded and fails, so a missing guard is seen without a packet leaving the machine."""
    import socket

    attempted: list[tuple] = []
    real = socket.create_connection

    def create_connection(address, *a, **k):
        if not address[0].startswith("127."):
            attempted.append(address)
            raise ConnectionRefusedError(f"test: would have connected to {address}")
        return real(address, *a, **k)

    monkeypatch.setattr(http.client.socket, "create_connection", create_connection)
    return attempted


@pytest.mark.parametrize("host", REFUSED)
def test_upstream_pool_refuses_a_non_loopback_upstream_before_connecting(host, no_outside_connection):
    pool = UpstreamPool(timeout_s=1)
    with pytest.raises(AddressRefused, match=rf"^refused to send a forwarded request to {host}: outside"):
        pool.request(host, 80, "GET", "/", b"", {})
    assert no_outside_connection == []
    # an OSError: the front doors' "upstream failed" paths (load balancer 502, router 503) answer the
    # client with this one line instead of dropping the connection with a traceback
    assert issubclass(AddressRefused, OSError)


def test_upstream_pool_forwards_to_loopback_upstreams(no_outside_connection):
    servers = [LoopbackServer(addr, 0, _Echo).start(f"echo-{addr}") for addr in ("127.0.0.1", "127.0.2.1")]
    try:
        pool = UpstreamPool(timeout_s=5)
        for s in servers:
            for path in ("/a", "/b"):   # the second one reuses the connection (the host is checked once)
                status, _, body = pool.request(s.server_address[0], s.port, "GET", path, b"", {})
                assert status == 200 and json.loads(body) == {"path": path}
        assert pool._checked == {"127.0.0.1", "127.0.2.1"}
    finally:
        for s in servers:
            s.stop()
    assert no_outside_connection == []


def test_upstream_pool_shares_keep_alive_connections_between_threads():
    """A front door runs one thread per client connection: an upstream connection must outlive the
    thread that opened it, or every new client connection opens a new upstream one (moto then
    gets a connection storm and drops SYNs: issue 17's tail). Per-thread connections open 8 here."""
    server = LoopbackServer("127.0.0.1", 0, _Echo).start("echo")
    pool = UpstreamPool(timeout_s=5)
    try:
        for i in range(8):   # eight short-lived threads one after the other, as client connections come and go
            t = threading.Thread(target=pool.request, args=("127.0.0.1", server.port, "GET", f"/{i}", b"", {}))
            t.start()
            t.join()
        assert pool.opened == 1
        # concurrent requests each need a connection; afterwards they are all reused
        gate = threading.Barrier(4)

        def concurrent() -> None:
            gate.wait()
            assert pool.request("127.0.0.1", server.port, "GET", "/c", b"", {})[0] == 200

        threads = [threading.Thread(target=concurrent) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        opened = pool.opened
        assert 1 <= opened <= 4
        for _ in range(10):
            assert pool.request("127.0.0.1", server.port, "GET", "/again", b"", {})[0] == 200
        assert pool.opened == opened
    finally:
        pool.close()
        server.stop()


def test_upstream_pool_takes_the_networks_it_may_reach():
    # a pool for an environment without the limit (none exists today) connects where it is told
    pool = UpstreamPool(timeout_s=1, allowed=None)
    server = LoopbackServer("127.0.0.1", 0, _Echo).start("echo")
    try:
        assert pool.request("127.0.0.1", server.port, "GET", "/x", b"", {})[0] == 200
    finally:
        server.stop()


# -- the DNS stub resolver ----------------------------------------------------------------------------------

@pytest.mark.parametrize("host", REFUSED)
def test_service_resolver_refuses_a_non_loopback_dns_server(host):
    with pytest.raises(AddressRefused, match=rf"^refused to send DNS queries to {host}: outside"):
        ServiceResolver(host, 53)


def test_service_resolver_asks_a_loopback_dns_server():
    import dnslib
    from dnslib.server import BaseResolver, DNSServer

    class One(BaseResolver):
        def resolve(self, request, handler):
            reply = request.reply()
            reply.add_answer(*dnslib.RR.fromZone(f"{request.q.qname} 7 A 127.0.1.1"))
            return reply

    port = free_port()
    server = DNSServer(One(), port=port, address="127.0.0.1")
    server.start_thread()
    try:
        answer = ServiceResolver("127.0.0.1", port, timeout_s=2).lookup("api.gameday.test")
        assert answer.addresses == ["127.0.1.1"] and answer.ttl == 7
    finally:
        server.stop()


# -- the load generator's targets --------------------------------------------------------------------------

def endpoints(kind: str = "local", lb: str = "127.0.1.1", dns: str | None = "127.0.0.1") -> dict:
    ep = {"service_name": "api.gameday.test", "lb_port": 1, "run_dir": "/nonexistent", "pid": os.getpid(),
          "regions": {"us-east-1": {"lb_url": f"http://{lb}:1", "lb_address": lb},
                      "us-west-2": {"lb_url": "http://127.0.2.1:1", "lb_address": "127.0.2.1"}},
          "profile": {"period_s": 5, "dns_ttl_s": 1}, "alarm_threshold": 500}
    ep["env" if kind != "aws" else "kind"] = kind
    if dns:
        ep["dns"] = {"host": dns, "port": 1}
    return ep


def test_load_targets_on_loopback_pass_and_others_are_refused():
    check_targets(endpoints())
    check_targets(endpoints("docker"))
    with pytest.raises(LoadInputError, match=r"^refused to send load for us-east-1's load balancer to 192.0.2.10"):
        check_targets(endpoints(lb="192.0.2.10"))
    with pytest.raises(LoadInputError, match=r"^refused to send load for the DNS server to 10.1.2.3"):
        check_targets(endpoints(dns="10.1.2.3"))
    ep = endpoints()
    ep["regions"]["us-west-2"]["lb_url"] = "http://198.51.100.7:80"   # the URL is checked, not only the address
    with pytest.raises(LoadInputError, match="us-west-2's load balancer to 198.51.100.7"):
        check_targets(ep)
    # aws: real load balancers (names resolving to public addresses) are the point; nothing is resolved
    check_targets(endpoints("aws", lb="my-alb-123.us-east-1.elb.amazonaws.com", dns=None))
    with pytest.raises(LoadInputError, match="^unknown environment kind 'staging'"):
        check_targets(endpoints("staging"))


def test_runner_refuses_a_non_loopback_target_before_starting_anything(tmp_path):
    before = descendants(os.getpid())
    with pytest.raises(LoadInputError, match=r"^refused to send load for us-east-1's load balancer to 192.0.2.10"):
        LoadRunner(tmp_path / "a", endpoints=endpoints(lb="192.0.2.10"), surge_rate=10)
    assert not any(tmp_path.iterdir()) and descendants(os.getpid()) <= before


def test_locust_refuses_a_non_loopback_target_in_one_line(tmp_path):
    # the check at option parsing (master or Locust alone); the master and each worker check again
    # when they plan the run (loadgen/context.py prepare_run / create)
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps(endpoints(lb="192.0.2.10")))
    out = subprocess.run([sys.executable, "-m", "locust", "-f", str(REPO / "loadgen" / "locustfile.py"), "--headless",
                          "--gameday-state", str(state_file), "--master", "--master-bind-port", str(free_port())],
                         capture_output=True, text=True, timeout=60, cwd="/")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, (out.returncode, out.stderr)
    assert lines[0].startswith("gameday load: error: refused to send load for us-east-1's load balancer to "
                               "192.0.2.10: outside 127.0.0.0/8"), lines[0]


# -- the reference service's DynamoDB endpoint -------------------------------------------------------------------

def test_service_endpoint_must_be_loopback_or_left_out():
    for ok in (None, "", "http://127.0.0.1:4566", "http://localhost:4566", "http://[::1]:4566"):
        assert endpoint_problem(ok) is None, ok
    problem = endpoint_problem("http://192.0.2.10:4566")
    assert problem.startswith("--endpoint http://192.0.2.10:4566: refused, 192.0.2.10 is not a loopback address")
    assert "leave --endpoint out on AWS" in problem
    assert endpoint_problem("http://:4566") == "--endpoint 'http://:4566' names no host"


def test_service_refuses_a_non_loopback_endpoint_before_it_listens():
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "gameday.sut.service", "--port", str(port), "--region", "us-east-1",
                          "--table", "t", "--task-id", "abc", "--endpoint", "http://10.1.2.3:4566"],
                         capture_output=True, text=True, timeout=30)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert lines[-1] == ("python -m sut.service: error: --endpoint http://10.1.2.3:4566: refused, 10.1.2.3 is not a "
                         "loopback address (an explicit endpoint must be the harness's local one on 127.0.0.0/8; "
                         "leave --endpoint out on AWS)"), lines
    import socket

    with socket.socket() as s:   # it never listened
        s.bind(("127.0.0.1", port))
