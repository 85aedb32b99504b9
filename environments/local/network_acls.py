"""Network ACLs changed through the AWS API take effect on the regions' data planes, as in a VPC.

moto keeps network ACLs as data only. This component is told (ctx.after_aws_call) of every
customer call that can change what a region's ACLs let through (an entry created, replaced or
deleted; a subnet associated with another ACL; an ACL created or deleted), re-reads that region's
ACLs from moto (DescribeNetworkAcls of the VPC: what is in moto is the truth), and applies what the
pure model (nacl_model.reachability) makes of them, before the caller has the answer:

- no load balancer subnet lets clients in (and the responses out): the region's data plane is
  blocked in mode "hang" (packets dropped: clients time out), as the block_region fault does, and
  the tasks behind it fail their health checks; an ACL change that lets them in again heals it;
- some subnets cut off: the tasks in those AZs fail the load balancer's health checks (no serving
  node reaches them) and leave its rotation; the region still serves through the others.

The block is this component's own source of blocks (ctx.network.set_block, source "network_acl"),
so lifting it never lifts a block_region fault that is still on, and the fault's rollback never
lifts an ACL's deny. Customers of this: the aws environment's block_region NACL driver
(environments/aws/faults_aws.py) and FIS's aws:network:disrupt-connectivity (environments/local/fis.py),
which clones the ACL with deny entries and re-associates the subnets, both through the router.
"""

from __future__ import annotations

import threading
import time

from gameday.environments.local.context import AwsCall, LocalContext
from gameday.environments.local.nacl_model import AclEntry, Reachability, Subnet, reachability

SOURCE = "network_acl"
# the calls after which a region's ACLs may let other traffic through (EC2's API)
HOOKED_OPERATIONS = ("CreateNetworkAclEntry", "ReplaceNetworkAclEntry", "DeleteNetworkAclEntry",
                     "ReplaceNetworkAclAssociation", "CreateNetworkAcl", "DeleteNetworkAcl")
LISTENER_PORT = 80      # the load balancer's listener (provision._network_calls)
TARGET_PORT = 8080      # its target group's port: what the tasks serve on in AWS


class NetworkAcls:
    def __init__(self, ctx: LocalContext, lbs=None):
        self.ctx = ctx
        self.lbs = lbs   # LoadBalancers: set_blocked(region, mode, source=...); None: ctx.network only
        self.regions = [r for r in ctx.config.regions if ctx.provisioned and ctx.provisioned.vpc_ids.get(r)]
        self._locks = {r: threading.Lock() for r in self.regions}
        self._subnets: dict[str, dict[str, tuple[str, str]]] = {}   # region -> subnet -> (AZ, CIDR)
        self._verdicts: dict[str, Reachability] = {}
        self._refresh_ms: dict[str, float] = {}
        self._started = self._stopped = False

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> "NetworkAcls":
        # nothing read now: provisioning leaves every subnet on its VPC's default ACL, which allows
        # all traffic, and the first read (the EC2 client, the subnets) is paid by the first call
        # that may change that, not by every start
        for region in self.regions:
            self._verdicts[region] = Reachability(False, tuple(self.ctx.provisioned.subnet_ids[region].values()),
                                                  frozenset())
        for op in HOOKED_OPERATIONS:
            self.ctx.after_aws_call("ec2", op, self._on_call)
        self._started = True
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True   # the router has no way to unregister: the hook turns into a no-op
        for region in self.regions:
            with self._locks[region]:
                self._apply(region, Reachability(False, (), frozenset()), emit=False)

    def status(self) -> dict:
        return {r: {"clients_blocked": v.clients_blocked, "serving_subnets": list(v.serving_subnets),
                    "unreachable_azs": sorted(v.unreachable_azs), "refresh_ms": self._refresh_ms.get(r)}
                for r, v in self._verdicts.items()}

    # -- the hook ----------------------------------------------------------------------------------------
    def _on_call(self, call: AwsCall) -> None:
        if not self._stopped and call.region in self._locks:
            self.refresh(call.region)

    def refresh(self, region: str) -> Reachability:
        """Re-read the region's ACLs from moto and apply the verdict. Serialized per region, and
        each read is made after the call that triggered it was accepted: the last verdict applied
        is from a read after every change so far."""
        with self._locks[region]:
            t0 = time.perf_counter()
            if region not in self._subnets:
                self._subnets[region] = self._read_subnets(region)
            verdict = reachability(*self._subnets_with_acls(region), LISTENER_PORT, TARGET_PORT)
            self._apply(region, verdict, emit=True)
            self._refresh_ms[region] = round((time.perf_counter() - t0) * 1000, 2)
            return verdict

    # -- moto ------------------------------------------------------------------------------------------
    def _ec2(self, region: str):
        return self.ctx.internal_client("ec2", region)

    def _read_subnets(self, region: str) -> dict[str, tuple[str, str]]:
        subnets = self._ec2(region).describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": [self.ctx.provisioned.vpc_ids[region]]}])["Subnets"]
        return {s["SubnetId"]: (s["AvailabilityZone"], s["CidrBlock"]) for s in subnets}

    def _subnets_with_acls(self, region: str) -> tuple[list[Subnet], list[Subnet]]:
        """(the load balancer's subnets, the tasks' subnets), each with its ACL's entries. Both are
        the region's provisioned subnets, one per AZ (the load balancer is in all of them, and a
        task runs in its AZ's)."""
        acls = self._ec2(region).describe_network_acls(
            Filters=[{"Name": "vpc-id", "Values": [self.ctx.provisioned.vpc_ids[region]]}])["NetworkAcls"]
        by_subnet = {a["SubnetId"]: acl for acl in acls for a in acl.get("Associations", []) if a.get("SubnetId")}
        default = next((acl for acl in acls if acl.get("IsDefault")), {"Entries": []})
        out = []
        for subnet_id in self.ctx.provisioned.subnet_ids.get(region, {}).values():
            az, cidr = self._subnets[region][subnet_id]
            # a subnet is always associated with one ACL: the VPC's default unless told otherwise
            acl = by_subnet.get(subnet_id, default)
            out.append(Subnet(subnet_id, az, cidr, tuple(AclEntry.from_api(e) for e in acl.get("Entries", []))))
        return out, out

    # -- the verdict ---------------------------------------------------------------------------------------
    def _apply(self, region: str, verdict: Reachability, *, emit: bool) -> None:
        before = self._verdicts.get(region, Reachability(False, (), frozenset()))
        self._verdicts[region] = verdict
        with self.ctx.network.lock:
            if verdict.unreachable_azs:
                self.ctx.network.unreachable_azs[region] = verdict.unreachable_azs
            else:
                self.ctx.network.unreachable_azs.pop(region, None)
        mode = "hang" if verdict.clients_blocked else None
        if verdict.clients_blocked != before.clients_blocked:
            if self.lbs is not None:
                self.lbs.set_blocked(region, mode, source=SOURCE)
            else:
                self.ctx.network.set_block(region, SOURCE, mode)
        changed = (verdict.clients_blocked, verdict.unreachable_azs) != (before.clients_blocked, before.unreachable_azs)
        if emit and changed:
            cut = bool(verdict.clients_blocked or verdict.unreachable_azs)
            self.ctx.events.emit("data_plane", action="block" if cut else "unblock", region=region, mode=mode,
                                 source=SOURCE, unreachable_azs=sorted(verdict.unreachable_azs),
                                 serving_subnets=list(verdict.serving_subnets))
