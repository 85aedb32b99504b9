"""ELBv2 target health in moto corrected to AWS: DescribeTargetHealth answers what the local load
balancer's health checks found, not moto's canned "healthy".

moto 5.2.5 answers every registered target "healthy" and keys a target group's targets by Id
alone (registering 127.0.0.1:41001 then 127.0.0.1:41002 kept one target). In AWS a target is an
(Id, Port) pair, an "ip" target group may hold one address on several ports, and its health is
what the load balancer's checks say (Elastic Load Balancing, "Health checks for Application Load
Balancer target groups" and TargetHealth in the API reference):
- registered and not yet checked: `initial`, reason `Elb.RegistrationInProgress`;
- `healthy` (no reason), `unhealthy` with `Target.FailedHealthChecks` (or Target.Timeout,
  Target.ResponseCodeMismatch), `draining` with `Target.DeregistrationInProgress`.

Here targets are keyed by (Id, Port), and the load balancer component
(environments/local/loadbalancer.py) tells each target's state on every change through the admin
route `elbv2_target_health` (body: region, target_group_arn, targets: [{id, port, state, reason?,
description?}]). A registered target no checker has reported on is `initial`.

Only moto and the standard library at import (moto_corrections).
"""

from __future__ import annotations

from moto.elbv2 import models as elbv2_models
from moto.elbv2.exceptions import InvalidTargetError, TargetNotRunning
from moto.elbv2.models import FakeHealthStatus, FakeTargetGroup

from gameday.environments.local.moto_corrections import find_in_backends

STATES = ("initial", "healthy", "unhealthy", "unused", "draining", "unavailable")
# AWS's TargetHealth.Description for the reasons the local checker gives
DESCRIPTIONS = {
    "Elb.RegistrationInProgress": "Target registration is in progress",
    "Elb.InitialHealthChecking": "Initial health checks in progress",
    "Target.FailedHealthChecks": "Health checks failed",
    "Target.Timeout": "Request timed out",
    "Target.DeregistrationInProgress": "Target deregistration is in progress",
    "Target.NotRegistered": "Target is not registered to the target group",
}


# moto's own methods, as shipped (what the corrected ones replace; tests show the difference)
MOTO_AS_SHIPPED = {name: getattr(FakeTargetGroup, name)
                   for name in ("register", "deregister", "deregister_terminated_instances", "health_for")}


def target_key(target: dict, default_port) -> tuple[str, int]:
    return str(target["Id"]), int(target.get("Port") or default_port)


def health_of(reported: dict | None) -> tuple[str, str | None, str | None]:
    """(State, Reason, Description) of a registered target from what its checker last said."""
    if reported is None:
        return "initial", "Elb.RegistrationInProgress", DESCRIPTIONS["Elb.RegistrationInProgress"]
    state, reason = reported["state"], reported.get("reason")
    return state, reason, reported.get("description") or DESCRIPTIONS.get(reason or "")


def _patch_target_group() -> None:
    if getattr(FakeTargetGroup, "gameday_patched", False):   # once per process (a zygote's servers inherit it)
        return
    FakeTargetGroup.gameday_patched = True

    def register(self, targets):
        for target in targets:
            if instance := self.ec2_backend.get_instance_by_id(target["Id"]):
                if instance.state != "running":
                    raise TargetNotRunning(instance_id=target["Id"])
            key = target_key(target, self.port)
            self.targets[key] = {"Id": key[0], "Port": key[1]}
            self.deregistered_targets.pop(key, None)
            _reports(self).pop(key, None)   # registered again: checked again from the start

    def deregister(self, targets):
        for target in targets:
            key = target_key(target, self.port)
            t = self.targets.pop(key, None)
            if not t:
                raise InvalidTargetError()
            self.deregistered_targets[key] = t
            _reports(self).pop(key, None)

    def deregister_terminated_instances(self, instance_ids):
        for key in [k for k in self.targets if k[0] in instance_ids]:
            self.terminated_targets[key] = self.targets.pop(key)

    original_health_for = FakeTargetGroup.health_for

    def health_for(self, target, ec2_backend):
        key = target_key(target, self.port)
        if key not in self.targets:
            # moto's answers for deregistered and unknown targets, by (Id, Port)
            for gone, state, reason in ((self.terminated_targets, "draining", "Target.DeregistrationInProgress"),
                                        (self.deregistered_targets, "unused", "Target.NotRegistered")):
                if key in gone:
                    return FakeHealthStatus(key[0], key[1], self.health_check_port, state, reason, DESCRIPTIONS[reason])
            return original_health_for(self, {"Id": key[0], "Port": key[1]}, ec2_backend)   # never registered
        state, reason, description = health_of(_reports(self).get(key))
        return FakeHealthStatus(key[0], key[1], self.health_check_port, state, reason, description)

    FakeTargetGroup.register = register
    FakeTargetGroup.deregister = deregister
    FakeTargetGroup.deregister_terminated_instances = deregister_terminated_instances
    FakeTargetGroup.health_for = health_for


def _reports(group: FakeTargetGroup) -> dict:
    if not hasattr(group, "gameday_reports"):
        group.gameday_reports = {}
    return group.gameday_reports


def _group(region: str, arn: str) -> FakeTargetGroup:
    return find_in_backends(elbv2_models.elbv2_backends, region, lambda b: b.target_groups.get(arn),
                            f"target group {arn!r}")


def set_target_health(body: dict) -> dict:
    """The load balancer's checks' truth (admin route elbv2_target_health); a target not registered
    is refused (the checker and the registrations disagree: a bug to see, not to paper over)."""
    group = _group(body["region"], body["target_group_arn"])
    reports = _reports(group)
    for t in body["targets"]:
        key = target_key({"Id": t["id"], "Port": t["port"]}, group.port)
        if t["state"] not in STATES:
            raise ValueError(f"target state {t['state']!r}: one of {', '.join(STATES)}")
        if key not in group.targets:
            raise KeyError(f"target {key[0]}:{key[1]} is not registered in {group.name}")
        reports[key] = {"state": t["state"], "reason": t.get("reason"), "description": t.get("description")}
    return {"target_group": group.name, "reported": len(body["targets"])}


def install(admin) -> None:
    _patch_target_group()
    admin.route("elbv2_target_health", set_target_health)
