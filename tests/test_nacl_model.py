"""Network ACL rules (environments/local/nacl_model.py) against the VPC documentation, as a table.

Pages:
- Amazon VPC User Guide, "Network ACL rules" and "Default network ACL for a VPC"
  (https://docs.aws.amazon.com/vpc/latest/userguide/nacl-rules.html, default-network-acl.html):
  inbound and outbound rules are separate; rules are evaluated in ascending number order and the
  first that matches decides; the `*` rule denies whatever no numbered rule matched; the default
  ACL allows everything (rule 100); a custom ACL starts with only the `*` rules.
- EC2 API reference, NetworkAclEntry: Protocol "-1" is every protocol, else the protocol number;
  PortRange is for TCP/UDP; CidrBlock / Ipv6CidrBlock.
- "Ephemeral ports" (same guide) and Elastic Load Balancing's "Configure network ACLs for your load
  balancer": ACLs are stateless, so the responses to a client (to its ephemeral port) need an
  outbound rule, and the load balancer needs its subnets to reach the targets' port.
"""

from __future__ import annotations

import pytest

from gameday.environments.local.nacl_model import (
    CLIENT_ADDRESS, DEFAULT_RULE_NUMBER, EPHEMERAL_PORT, AclEntry, Packet, Subnet, decide, reachability,
)

IN, OUT = False, True


def rule(n, egress, action, protocol="-1", cidr="0.0.0.0/0", ports=None, ipv6=None):
    api = {"RuleNumber": n, "Egress": egress, "RuleAction": action, "Protocol": protocol}
    if ipv6:
        api["Ipv6CidrBlock"] = ipv6
    else:
        api["CidrBlock"] = cidr
    if ports:
        api["PortRange"] = {"From": ports[0], "To": ports[1]}
    return AclEntry.from_api(api)


# the VPC's default ACL as moto and AWS describe it: allow-all at 100, the `*` deny at 32767
DEFAULT = [rule(100, IN, "allow"), rule(DEFAULT_RULE_NUMBER, IN, "deny"),
           rule(100, OUT, "allow"), rule(DEFAULT_RULE_NUMBER, OUT, "deny")]
DENY_ALL = [rule(1, IN, "deny"), rule(1, OUT, "deny")]   # what block_region's NACL driver and FIS add
CLIENT_IN = Packet(IN, 6, 80, CLIENT_ADDRESS)


@pytest.mark.parametrize("entries,packet,allowed,by", [
    (DEFAULT, CLIENT_IN, True, 100),                                       # the default ACL allows all
    ([], CLIENT_IN, False, DEFAULT_RULE_NUMBER),                           # a new custom ACL: only `*`
    (DEFAULT + DENY_ALL, CLIENT_IN, False, 1),                             # a lower-numbered deny wins
    ([rule(200, IN, "deny"), rule(100, IN, "allow")], CLIENT_IN, True, 100),   # number order, not list order
    ([rule(100, IN, "allow"), rule(50, IN, "deny", cidr="203.0.113.0/24")], CLIENT_IN, False, 50),  # contained
    ([rule(50, IN, "deny", cidr="198.51.100.0/24"), rule(100, IN, "allow")], CLIENT_IN, True, 100),  # not contained
    ([rule(50, IN, "deny", cidr="203.0.113.10/32"), rule(100, IN, "allow")], CLIENT_IN, False, 50),  # a /32
    ([rule(1, OUT, "deny"), rule(100, IN, "allow")], CLIENT_IN, True, 100),    # an egress rule: not inbound
    ([rule(1, IN, "deny", protocol="17"), rule(100, IN, "allow")], CLIENT_IN, True, 100),   # UDP: not TCP
    ([rule(1, IN, "deny", protocol="6"), rule(100, IN, "allow")], CLIENT_IN, False, 1),     # TCP: by number
    ([rule(1, IN, "deny", protocol="tcp"), rule(100, IN, "allow")], CLIENT_IN, False, 1),   # by name (moto keeps it)
    ([rule(1, IN, "deny", protocol="6", ports=(443, 443)), rule(100, IN, "allow")], CLIENT_IN, True, 100),
    ([rule(1, IN, "deny", protocol="6", ports=(1, 1023)), rule(100, IN, "allow")], CLIENT_IN, False, 1),
    ([rule(1, IN, "deny", protocol="6", ports=(80, 80)), rule(100, IN, "allow")], CLIENT_IN, False, 1),  # inclusive
    ([rule(1, IN, "deny", ipv6="::/0"), rule(100, IN, "allow")], CLIENT_IN, True, 100),    # IPv6 rule, IPv4 packet
    ([rule(1, IN, "deny", protocol="1"), rule(100, IN, "allow")], CLIENT_IN, True, 100),   # ICMP: not TCP
    # the response leg: outbound to the client's ephemeral port
    ([rule(100, OUT, "allow", protocol="6", ports=(1024, 65535))], Packet(OUT, 6, EPHEMERAL_PORT, CLIENT_ADDRESS),
     True, 100),
    ([rule(100, OUT, "allow", protocol="6", ports=(80, 80))], Packet(OUT, 6, EPHEMERAL_PORT, CLIENT_ADDRESS),
     False, DEFAULT_RULE_NUMBER),
])
def test_the_first_matching_rule_in_number_order_decides(entries, packet, allowed, by):
    v = decide(entries, packet)
    assert (v.allowed, v.rule_number) == (allowed, by)


def subnet(az, acl, j):
    return Subnet(f"subnet-{az}", az, f"10.0.{j}.0/24", tuple(acl))


def three(acls):
    return [subnet(az, acl, j) for j, (az, acl) in enumerate(zip(("r-1a", "r-1b", "r-1c"), acls))]


# listener 80, targets 8080; the load balancer and the tasks share the region's three subnets
@pytest.mark.parametrize("acls,blocked,cut", [
    ([DEFAULT] * 3, False, set()),
    ([DENY_ALL + DEFAULT] * 3, True, {"r-1a", "r-1b", "r-1c"}),          # every subnet: the region hangs
    ([DENY_ALL + DEFAULT, DEFAULT, DEFAULT], False, {"r-1a"}),           # one AZ: its tasks are cut off
    ([[], [], []], True, {"r-1a", "r-1b", "r-1c"}),                      # custom ACLs with no rules deny all
    # inbound allowed, responses to clients denied (stateless): clients hang all the same
    ([[rule(100, IN, "allow"), rule(100, OUT, "allow", cidr="10.0.0.0/16")]] * 3, True, {"r-1a", "r-1b", "r-1c"}),
    # only the listener port closed: clients hang, the load balancer could still reach its targets
    ([[rule(10, IN, "deny", protocol="6", ports=(80, 80))] + DEFAULT] * 3, True, {"r-1a", "r-1b", "r-1c"}),
    # only the target port closed to the VPC's other subnets: each AZ's node still reaches its own
    # AZ's tasks (inside one subnet nothing is checked)
    ([[rule(10, IN, "deny", protocol="6", ports=(8080, 8080), cidr="10.0.0.0/16")] + DEFAULT] * 3, False, set()),
    # r-1a denies only clients (not the VPC): no client enters there, and its tasks are still
    # reached from r-1b and r-1c
    ([[rule(10, IN, "deny", cidr="203.0.113.0/24")] + DEFAULT, DEFAULT, DEFAULT], False, set()),
])
def test_what_the_acls_leave_of_a_regions_load_balancer(acls, blocked, cut):
    subnets = three(acls)
    r = reachability(subnets, subnets, listener_port=80, target_port=8080)
    assert (r.clients_blocked, set(r.unreachable_azs)) == (blocked, cut)


def test_tasks_are_reached_only_through_nodes_clients_reach():
    # r-1a's ACL lets nothing from the internet in, but the VPC in; r-1b and r-1c deny the VPC's
    # 10.0.0.0/24 (r-1a): r-1a's tasks are reachable only from r-1a's node, which serves no client
    vpc_only = [rule(10, IN, "allow", cidr="10.0.0.0/16"), rule(10, OUT, "allow", cidr="10.0.0.0/16")]
    deny_a = [rule(5, IN, "deny", cidr="10.0.0.0/24"), rule(5, OUT, "deny", cidr="10.0.0.0/24")] + DEFAULT
    subnets = three([vpc_only, deny_a, deny_a])
    r = reachability(subnets, subnets, listener_port=80, target_port=8080)
    assert r.serving_subnets == ("subnet-r-1b", "subnet-r-1c")
    assert set(r.unreachable_azs) == {"r-1a"}
