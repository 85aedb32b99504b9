"""Loopback addressing, and the guard on where the harness sends traffic.

In the local and docker environments every address the harness binds or dials is in 127.0.0.0/8
(or ::1). `check_address` refuses any other before a packet leaves: the front doors' upstream
connections (httpfwd), the DNS stub resolver, the load generator's targets and the reference
service's AWS endpoint call it. The aws environment talks to the user's real stack and is
allowed explicitly (`allowed_networks("aws")` is None).
"""

from __future__ import annotations

import ipaddress
import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def reserved_port(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to a free port of `host`, not listening yet: the port is held from now on.
    free_port()'s number is free only when asked; a server that binds it a second later (a moto
    server imports moto first) can find it taken, by a client's outgoing connection too (its
    source port comes from the same ephemeral range): seen in CI. Hand this socket to the server
    process instead (procs.spawn(pass_fds=...)), which listens on it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
    except OSError:
        s.close()
        raise
    return s


def free_port_on_all(hosts: list[str]) -> int:
    """One port number free on every host (each region's load balancer has its own loopback address
    but they share the port, as real load balancers all listen on 80/443)."""
    for _ in range(50):
        port = free_port(hosts[0])
        ok = True
        for h in hosts[1:]:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((h, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError(f"no common free port on {hosts}")


def region_address(index: int) -> str:
    """Region i's load balancer lives on 127.0.(i+1).1: distinct addresses, so a DNS answer names a region."""
    return f"127.0.{index + 1}.1"


LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
LOOPBACK6 = ipaddress.ip_network("::1/128")
LOCAL_ONLY = (LOOPBACK, LOOPBACK6)


class AddressRefused(PermissionError):
    """The harness was about to send traffic outside the networks it may reach; str() is one line.
    An OSError, so that a front door's "upstream failed" path answers the client with this line."""


def allowed_networks(env_kind: str | None) -> tuple | None:
    """The networks a harness part may send traffic to in an environment of this kind; None = any.

    local: loopback only (moto, the router, load balancers, tasks, DNS server all bind 127.0.0.0/8).
    docker: loopback too: task containers run on the host's network (network_mode=host) and
    listen on 127.0.0.1; the harness creates no other network.
    aws: not restricted here: it talks to the user's real stack (load balancer names resolve to
    public addresses no list can name), behind its own guardrails (account allow-list, load cap)."""
    kind = (env_kind or "local").lower()
    if kind == "aws":
        return None
    if kind in ("local", "docker"):
        return LOCAL_ONLY
    raise AddressRefused(f"unknown environment kind {env_kind!r}: no traffic allowed (local, docker or aws)")


def env_kind_of(endpoints: dict) -> str:
    """The environment kind an endpoints dict names (local and docker write "env", aws "kind")."""
    return str(endpoints.get("env") or endpoints.get("kind") or "local")


def check_address(host: str, allowed=LOCAL_ONLY, *, what: str = "traffic") -> None:
    """Refuse (AddressRefused) unless every address `host` resolves to lies in `allowed`
    (networks; None allows anything). `what` says in the message which traffic was refused."""
    if allowed is None:
        return
    for ip in _addresses(host, what):
        if not any(ip in net for net in allowed):
            nets = ", ".join(str(n) for n in allowed)
            shown = host if str(ip) == host else f"{host} ({ip})"
            raise AddressRefused(f"refused to send {what} to {shown}: outside {nets}, the only networks "
                                 "the harness may reach in this environment")


def _addresses(host: str, what: str) -> list:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass  # a name ("localhost"): every address it resolves to must be allowed
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as e:
        raise AddressRefused(f"refused to send {what} to {host}: it does not resolve ({e})") from None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
