"""How the local environment (and the docker one, which runs the same control plane) does each
fault kind: through its control API (environments/local/control_api.py), except stop_tasks, which
goes through the customer's ECS API as on AWS. `LOCAL_FAULT_DRIVERS` is the driver table
LocalEnvironment declares; every revert works from the fault's params alone.
"""

from __future__ import annotations

from gameday.environments.base import DriverTable, FaultDriver
from gameday.faults.api import ApiFault, signing_name
from gameday.faults.base import FaultError


class StopTasksDriver(FaultDriver):
    """ECS StopTask through the AWS endpoint (API faults and blocked control planes apply)."""

    def apply(self) -> dict:
        f = self.fault
        ecs = self.env.client("ecs", f.region)
        arns: list[str] = []
        for page in ecs.get_paginator("list_tasks").paginate(cluster=f.cluster, desiredStatus="RUNNING"):
            arns.extend(page["taskArns"])
        if not arns:
            raise FaultError(f"stop_tasks: no running tasks in cluster {f.cluster!r} in {f.region}")
        stopped = []
        for arn in f.choose(arns):
            ecs.stop_task(cluster=f.cluster, task=arn, reason=f"gameday fault: {f.describe()}")
            stopped.append(arn)
        return {"stopped": stopped, "running_before": len(arns)}

    def revert(self, applied: dict | None = None) -> dict:
        return {"note": "nothing to undo: the ECS service scheduler replaces stopped tasks itself"}


class LoseAzDriver(FaultDriver):
    def _set(self, available: bool) -> dict:
        f = self.fault
        self.env.control("POST", "/ecs/az", {"region": f.region, "az": f.az, "available": available})
        return {"az": f.az, "available": available}

    def apply(self) -> dict:
        return self._set(False)

    def revert(self, applied: dict | None = None) -> dict:
        return self._set(True)


class BlockRegionDriver(FaultDriver):
    def apply(self) -> dict:
        f, control = self.fault, self.env.control
        done: dict = {}
        if f.data_plane:
            control("POST", "/network/block", {"region": f.region, "mode": f.mode})
            done["data_plane"] = f.mode
        if f.control_plane:
            control("POST", "/control-plane/block", {"region": f.region})
            done["control_plane"] = "blocked"
            done["includes_route53"] = f.includes_route53
        return done

    def revert(self, applied: dict | None = None) -> dict:
        f, control = self.fault, self.env.control
        done: dict = {}
        # control plane first: a Lambda retrying its Route 53 call needs it before clients return
        if f.control_plane:
            control("POST", "/control-plane/unblock", {"region": f.region})
            done["control_plane"] = "unblocked"
        if f.data_plane:
            control("POST", "/network/unblock", {"region": f.region})
            done["data_plane"] = "unblocked"
        return done


class PauseReplicationDriver(FaultDriver):
    def _post(self, action: str) -> None:
        self.env.control("POST", f"/replication/{action}",
                         {"source": self.fault.source, "destination": self.fault.destination})

    def apply(self) -> dict:
        self._post("pause")
        return {"paused": self.fault.target}

    def revert(self, applied: dict | None = None) -> dict:
        self._post("resume")
        return {"resumed": self.fault.target}


class ReplicationDropDriver(FaultDriver):
    def _set(self, fraction: float) -> dict:
        self.env.control("POST", "/replication/config", {"drop_fraction": fraction})
        return {"drop_fraction": fraction}

    def apply(self) -> dict:
        return self._set(self.fault.fraction)

    def revert(self, applied: dict | None = None) -> dict:
        return self._set(0.0)


def api_rule(f: ApiFault) -> dict:
    """The router's rule for an API fault (the control API's POST /api-faults body). The router
    matches the SigV4 signing name (CloudWatch signs as "monitoring")."""
    rule: dict = {"kind": f.effect, "region": f.region, "rate": f.rate,
                  "service": "*" if f.service == "*" else signing_name(f.service),
                  "operation": f.operation or "*"}
    if f.effect == "latency":
        rule["latency_s"] = f.latency_s
    if f.effect == "error":
        rule["status"] = f.status or 500
    if f.limit:
        rule["limit"] = f.limit
    return rule


class ApiFaultDriver(FaultDriver):
    def apply(self) -> dict:
        made = self.env.control("POST", "/api-faults", api_rule(self.fault))
        return {"rule_id": made["id"]}

    def revert(self, applied: dict | None = None) -> dict:
        control = self.env.control
        if applied and applied.get("rule_id"):
            ids = [applied["rule_id"]]
        else:
            # the rule's id never reached the journal (killed between POST and journaling):
            # remove the router's rules that match this fault's spec
            want = api_rule(self.fault)
            rules = control("GET", "/status").get("router", {}).get("api_faults", [])
            ids = [r["id"] for r in rules if all(r.get(k) == v for k, v in want.items())]
        removed = [i for i in ids if control("DELETE", f"/api-faults/{i}").get("removed")]
        return {"removed": removed}


class LambdaFaultDriver(FaultDriver):
    def apply(self) -> dict:
        f = self.fault
        body = {"mode": f.mode} | ({"delay_s": f.delay_s} if f.delay_s is not None else {})
        return self.env.control("POST", "/lambda/fault", body)

    def revert(self, applied: dict | None = None) -> dict:
        return self.env.control("DELETE", "/lambda/fault")


class FailResponsesDriver(FaultDriver):
    """The region's load balancer answers the share itself, in its targets' name (lb_proxy)."""

    def apply(self) -> dict:
        f = self.fault
        return self.env.control("POST", "/lb/fail-responses", {"region": f.region, "share": f.share, "status": f.status})

    def revert(self, applied: dict | None = None) -> dict:
        return self.env.control("POST", "/lb/restore-responses", {"region": self.fault.region})


LOCAL_FAULT_DRIVERS: DriverTable = {
    "stop_tasks": StopTasksDriver,
    "lose_az": LoseAzDriver,
    "block_region": BlockRegionDriver,
    "pause_replication": PauseReplicationDriver,
    "replication_drop": ReplicationDropDriver,
    "api_fault": ApiFaultDriver,
    "lambda_fault": LambdaFaultDriver,
    "fail_responses": FailResponsesDriver,
}
