"""Network ACL rules as a pure model: which packets a subnet's network ACL lets in or out, and what
that means for a region's load balancer (can clients reach it; which AZs' tasks can it reach).

No threads, sockets, boto3 or clock reads: the ACLs' entries (as DescribeNetworkAcls gives them)
and the subnets come in, verdicts come out. The adapter, network_acls.py, re-reads them from moto
after each customer call that can change them and applies the verdict to the load balancers.

AWS pages the rules follow (Amazon VPC User Guide unless said otherwise):
- "Network ACL rules" / EC2 API NetworkAclEntry: each ACL has numbered inbound (ingress) rules
  and a separate set of numbered outbound (egress) rules; a packet is checked against the rules of
  its direction in ascending rule-number order, and the first rule that matches decides (allow or
  deny), whatever higher-numbered rules say. The last rule, numbered `*` (32767 in the API), denies
  every packet no other rule matched: an ACL with no matching rule denies (a new custom ACL has
  only those, so it denies everything until rules are added).
- A rule matches on protocol ("-1" all, or the IANA number: TCP 6, UDP 17), on its CIDR block
  containing the packet's remote address (the source of an inbound packet, the destination of an
  outbound one; an IPv6 rule never matches an IPv4 packet), and, for TCP and UDP, on its port range
  containing the packet's destination port.
- ACLs are stateless: the responses to allowed inbound traffic are subject to the outbound rules
  (and vice versa), so a TCP conversation needs the request's direction and the response's, the
  response going to the other side's ephemeral port ("Ephemeral ports": 1024-65535 covers every
  client; Linux uses 32768-60999, Windows 49152-65535).
- ACLs act at the subnet boundary: traffic between two addresses of one subnet is not checked.
- Elastic Load Balancing, "Configure network ACLs for your load balancer": an internet-facing load
  balancer's subnets must let clients in on the listener port and the responses out on ephemeral
  ports, and let the load balancer reach its targets on the target port (and their responses in).

Representative traffic (the choice this model makes where AWS has many packets): the clients are
one internet address, CLIENT_ADDRESS, sending from EPHEMERAL_PORT; a load balancer node and a task
have the addresses LB_NODE_HOST and TASK_HOST inside their subnet's CIDR block.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_RULE_NUMBER = 32767          # the `*` rule: deny what nothing else matched
CLIENT_ADDRESS = "203.0.113.10"      # an internet client (RFC 5737 documentation range)
EPHEMERAL_PORT = 50000               # inside Linux's, Windows' and AWS's recommended ephemeral ranges
TCP = 6
PROTOCOL_NAMES = {"all": -1, "tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
LB_NODE_HOST = 10                    # a load balancer node: the subnet's network address + 10
TASK_HOST = 100                      # a task's ENI: the subnet's network address + 100


def _protocol_number(value) -> int:
    text = str(value).strip().lower()
    return PROTOCOL_NAMES[text] if text in PROTOCOL_NAMES else int(text)


@dataclass(frozen=True)
class AclEntry:
    """One rule of a network ACL."""
    rule_number: int
    egress: bool
    allow: bool
    protocol: int                     # -1: every protocol
    cidr: str | None = None           # IPv4 CIDR block, or
    ipv6_cidr: str | None = None      # IPv6 CIDR block
    ports: tuple[int, int] | None = None   # TCP/UDP destination port range (inclusive)

    @classmethod
    def from_api(cls, e: dict) -> "AclEntry":
        """From one of DescribeNetworkAcls' Entries."""
        pr = e.get("PortRange")
        return cls(rule_number=int(e["RuleNumber"]), egress=bool(e["Egress"]), allow=e["RuleAction"] == "allow",
                   protocol=_protocol_number(e.get("Protocol", "-1")), cidr=e.get("CidrBlock"),
                   ipv6_cidr=e.get("Ipv6CidrBlock"),
                   ports=(int(pr["From"]), int(pr["To"])) if pr else None)

    def matches(self, p: "Packet") -> bool:
        if self.egress != p.egress:
            return False
        if self.protocol != -1 and self.protocol != p.protocol:
            return False
        address = ipaddress.ip_address(p.address)
        block = self.cidr if address.version == 4 else self.ipv6_cidr
        if not block or address not in ipaddress.ip_network(block, strict=False):
            return False
        if self.protocol in (6, 17) and self.ports is not None:
            return self.ports[0] <= p.port <= self.ports[1]
        return True


@dataclass(frozen=True)
class Packet:
    """One packet as an ACL sees it: its direction, protocol, destination port and remote address
    (the source of an inbound packet, the destination of an outbound one)."""
    egress: bool
    protocol: int
    port: int
    address: str


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    rule_number: int                  # the rule that decided (DEFAULT_RULE_NUMBER: none matched)


def decide(entries: list[AclEntry], packet: Packet) -> Verdict:
    """The rules of the packet's direction in ascending number order; the first match decides."""
    for e in sorted((e for e in entries if e.egress == packet.egress), key=lambda e: e.rule_number):
        if e.matches(packet):
            return Verdict(e.allow, e.rule_number)
    return Verdict(False, DEFAULT_RULE_NUMBER)


@dataclass(frozen=True)
class Subnet:
    """A subnet, its AZ and CIDR block, and the entries of the network ACL it is associated with."""
    subnet_id: str
    az: str
    cidr: str
    entries: tuple[AclEntry, ...]

    def host(self, offset: int) -> str:
        return str(ipaddress.ip_network(self.cidr, strict=False).network_address + offset)


def tcp_conversation(client: Subnet | None, client_address: str, server: Subnet, server_address: str,
                     port: int) -> bool:
    """Can `client_address` (in subnet `client`, or outside the VPC when None) open a TCP connection
    to `server_address`:`port` in `server` and get the answers back? Stateless: the request leaves
    the client's subnet and enters the server's; the response leaves the server's subnet and enters
    the client's, to the client's ephemeral port. Inside one subnet nothing is checked."""
    if client is not None and client.subnet_id == server.subnet_id:
        return True
    legs = [(server, Packet(False, TCP, port, client_address)),
            (server, Packet(True, TCP, EPHEMERAL_PORT, client_address))]
    if client is not None:
        legs += [(client, Packet(True, TCP, port, server_address)),
                 (client, Packet(False, TCP, EPHEMERAL_PORT, server_address))]
    return all(decide(list(s.entries), p).allowed for s, p in legs)


@dataclass(frozen=True)
class Reachability:
    """What a region's network ACLs leave of its load balancer."""
    clients_blocked: bool             # no load balancer subnet lets clients in: the region's data plane hangs
    serving_subnets: tuple[str, ...]  # the load balancer subnets clients reach
    unreachable_azs: frozenset[str]   # AZs whose tasks no serving load balancer node reaches


def reachability(lb_subnets: list[Subnet], task_subnets: list[Subnet], listener_port: int,
                 target_port: int, client_address: str = CLIENT_ADDRESS) -> Reachability:
    """Clients reach the load balancer through the nodes in the subnets whose ACL lets them in and
    the answers out; a task (in its AZ's subnet) is reachable when one of those nodes reaches its
    target port (cross-zone: any node to any AZ). With no node reachable, every task is cut off too,
    as the block_region fault makes it. Not modelled: clients whose connection lands on a cut-off
    node of a load balancer that still serves through others (the local one is one address)."""
    serving = [s for s in lb_subnets
               if tcp_conversation(None, client_address, s, s.host(LB_NODE_HOST), listener_port)]
    cut = frozenset(t.az for t in task_subnets
                    if not any(tcp_conversation(s, s.host(LB_NODE_HOST), t, t.host(TASK_HOST), target_port)
                               for s in serving))
    return Reachability(clients_blocked=bool(lb_subnets) and not serving,
                        serving_subnets=tuple(s.subnet_id for s in serving), unreachable_azs=cut)
