"""Loopback addressing. Every address the harness binds or dials is in 127.0.0.0/8."""

from __future__ import annotations

import ipaddress
import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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


def assert_loopback(host: str) -> None:
    ip = ipaddress.ip_address(socket.gethostbyname(host))
    if not ip.is_loopback:
        raise ValueError(f"{host} ({ip}) is not a loopback address: gameday's local environment only talks to 127.0.0.0/8")
