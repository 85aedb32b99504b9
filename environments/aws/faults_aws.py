"""How each fault kind is done on a real AWS stack: `AWS_FAULT_DRIVERS`, the aws environment's
driver table {fault kind -> driver} (environments/base.py). The faults keep their data, their
journal lines and the Nemesis; only the doing differs. block_region and lambda_fault have two
backends each, chosen by the config (AwsEnvironment.backend).

Every rollback works from the fault's params alone (after a SIGKILL only the intent is in the
journal): NACL deny entries use one reserved rule number, lose_az keeps the service's own
subnets in a tag on the service, FIS experiments carry the fault and run in their tags, the
Lambda alias keeps its original version in its description. Every FIS experiment also has a
maximum duration, so that FIS ends it even if nobody rolls it back.
"""

from __future__ import annotations

import secrets

from botocore.exceptions import ClientError

from gameday.environments.aws.discovery import ORIGINAL_SUBNETS_TAG
from gameday.environments.aws.observe import service_tasks, task_az
from gameday.environments.aws.guardrails import check_task_caps, parse_alarm_ref
from gameday.environments.base import CapabilityMissing, DriverTable, FaultDriver
from gameday.faults.base import FaultError

FIS_MAX_DURATION = "PT30M"     # FIS ends the experiment by itself after this, rolled back or not
ALIAS_MARK = "gameday: original version "
RUNNING_FIS_STATES = ("pending", "initiating", "running")


class Driver(FaultDriver):
    """check() raises FaultError / GuardrailViolation before anything is journaled."""

    @property
    def targets(self):
        return self.env.targets[self.fault.region]


# -- ECS ----------------------------------------------------------------------------------------------

class StopTasksDriver(Driver):
    def _victims(self) -> tuple[list[str], int]:
        tasks = service_tasks(self.env, self.targets)
        arns = [x["taskArn"] for x in tasks]
        if not arns:
            raise FaultError(f"stop_tasks: no running tasks of the service in {self.fault.region}")
        n = self.fault.how_many(len(arns))
        check_task_caps(self.env, self.fault.region, n, self.targets.desired or len(arns), len(arns), "stop_tasks")
        return self.fault.choose(arns), len(arns)

    def check(self) -> None:
        self._victims()

    def apply(self) -> dict:
        victims, running = self._victims()
        ecs = self.env.client("ecs", self.fault.region)
        stopped = []
        for arn in victims:
            ecs.stop_task(cluster=self.targets.cluster, task=arn, reason=f"gameday fault: {self.fault.describe()}")
            stopped.append(arn)
        return {"stopped": stopped, "running_before": running}

    def revert(self, applied: dict | None = None) -> dict:
        return {"note": "nothing to undo: the ECS service scheduler replaces stopped tasks itself"}


class LoseAzDriver(Driver):
    """The AZ's tasks stop and the service places no task there: its awsvpc subnets in that AZ are
    taken out of the service's network configuration until rollback."""

    def _in_az(self) -> tuple[list[str], list[str]]:
        t = self.targets
        tasks = service_tasks(self.env, t)
        victims = [x["taskArn"] for x in tasks if task_az(x) == self.fault.az]
        subnets = self.env.observer("ec2", t.region).describe_subnets(SubnetIds=t.service_subnets)["Subnets"] \
            if t.service_subnets else []
        keep = [s["SubnetId"] for s in subnets if s["AvailabilityZone"] != self.fault.az]
        if subnets and not keep:
            raise FaultError(f"lose_az: every subnet of the service in {t.region} is in {self.fault.az}")
        check_task_caps(self.env, t.region, len(victims), t.desired or len(tasks), len(tasks), f"lose_az {self.fault.az}")
        return victims, keep

    def check(self) -> None:
        self._in_az()

    def _service(self) -> dict:
        t = self.targets
        return self.env.observer("ecs", t.region).describe_services(
            cluster=t.cluster, services=[t.service], include=["TAGS"])["services"][0]

    def apply(self) -> dict:
        t = self.targets
        victims, keep = self._in_az()
        ecs = self.env.client("ecs", t.region)
        svc = self._service()
        net = svc.get("networkConfiguration", {}).get("awsvpcConfiguration", {})
        if keep and set(keep) != set(net.get("subnets", [])):
            tags = {x["key"]: x["value"] for x in svc.get("tags") or []}
            if ORIGINAL_SUBNETS_TAG not in tags:  # tag first: a rollback after a kill must know what to restore
                ecs.tag_resource(resourceArn=svc["serviceArn"],
                                 tags=[{"key": ORIGINAL_SUBNETS_TAG, "value": ",".join(net.get("subnets", []))}])
            ecs.update_service(cluster=t.cluster, service=t.service,
                               networkConfiguration={"awsvpcConfiguration": {**net, "subnets": keep}})
        for arn in victims:
            ecs.stop_task(cluster=t.cluster, task=arn, reason=f"gameday fault: {self.fault.describe()}")
        return {"stopped": victims, "subnets": keep, "original_subnets": list(t.service_subnets)}

    def revert(self, applied: dict | None = None) -> dict:
        t = self.targets
        svc = self._service()
        tags = {x["key"]: x["value"] for x in svc.get("tags") or []}
        original = tags.get(ORIGINAL_SUBNETS_TAG)
        if not original:
            return {"note": f"the service's subnets in {t.region} were not changed"}
        ecs = self.env.client("ecs", t.region)
        net = svc.get("networkConfiguration", {}).get("awsvpcConfiguration", {})
        ecs.update_service(cluster=t.cluster, service=t.service,
                           networkConfiguration={"awsvpcConfiguration": {**net, "subnets": original.split(",")}})
        ecs.untag_resource(resourceArn=svc["serviceArn"], tagKeys=[ORIGINAL_SUBNETS_TAG])
        return {"subnets": original.split(",")}


# -- network ACLs ---------------------------------------------------------------------------------------

def _is_deny_all(e: dict) -> bool:
    return e["RuleAction"] == "deny" and e.get("Protocol") == "-1" and e.get("CidrBlock") == "0.0.0.0/0"


class BlockRegionNaclDriver(Driver):
    """Deny-all entries (inbound and outbound, at the reserved rule number, before every allow)
    in the network ACLs of the service's and the load balancer's subnets. Network ACLs drop
    packets, so clients see a hang: there is no "refuse" on AWS."""

    def check(self) -> None:
        if self.fault.mode != "hang":
            raise FaultError("block_region: network ACLs drop packets, so on aws only mode='hang' exists")
        if not self.targets.block_subnets:
            raise FaultError(f"block_region: no subnets known for {self.fault.region} (set aws.regions.{self.fault.region}.subnets)")

    def _acls(self, client) -> list[dict]:
        return client.describe_network_acls(Filters=[{"Name": "association.subnet-id",
                                                      "Values": self.targets.block_subnets}])["NetworkAcls"]

    def apply(self) -> dict:
        self.check()
        rule = self.env.config.aws.guardrails.nacl_rule_number
        ec2 = self.env.client("ec2", self.fault.region)
        done: dict[str, list[str]] = {}
        for acl in self._acls(ec2):
            for egress in (False, True):
                existing = [e for e in acl["Entries"] if e["RuleNumber"] == rule and e["Egress"] == egress]
                if existing and not all(_is_deny_all(e) for e in existing):
                    raise FaultError(f"block_region: rule {rule} of {acl['NetworkAclId']} is not ours; refusing to replace it")
                if not existing:
                    ec2.create_network_acl_entry(NetworkAclId=acl["NetworkAclId"], RuleNumber=rule, Protocol="-1",
                                                 RuleAction="deny", Egress=egress, CidrBlock="0.0.0.0/0")
                done.setdefault(acl["NetworkAclId"], []).append("egress" if egress else "ingress")
        return {"rule": rule, "acls": done, "subnets": self.targets.block_subnets}

    def revert(self, applied: dict | None = None) -> dict:
        rule = (applied or {}).get("rule") or self.env.config.aws.guardrails.nacl_rule_number
        ec2 = self.env.client("ec2", self.fault.region)
        removed: dict[str, list[str]] = {}
        for acl in self._acls(ec2):
            for e in acl["Entries"]:
                if e["RuleNumber"] == rule and _is_deny_all(e):
                    try:
                        ec2.delete_network_acl_entry(NetworkAclId=acl["NetworkAclId"], RuleNumber=rule, Egress=e["Egress"])
                    except ClientError as err:
                        if "NotFound" not in err.response.get("Error", {}).get("Code", ""):
                            raise
                    removed.setdefault(acl["NetworkAclId"], []).append("egress" if e["Egress"] else "ingress")
        return {"rule": rule, "removed": removed}


# -- FIS ------------------------------------------------------------------------------------------------

class FisDriver(Driver):
    """One FIS experiment per fault: template + experiment, both tagged with the fault and the run;
    rollback stops the experiment and deletes the template."""

    action_id = "?"

    @property
    def region(self) -> str:
        return self.fault.region

    def parameters(self) -> dict[str, str]:
        return {"duration": FIS_MAX_DURATION}

    def fis_targets(self) -> dict:
        raise NotImplementedError

    def check(self) -> None:
        if not self.env.config.aws.fis_role_arn:
            raise FaultError(f"{self.fault.kind}: FIS needs aws.fis_role_arn (the role experiments run with)")

    def tags(self) -> dict[str, str]:
        return {"gameday:fault": f"{self.fault.kind}:{self.fault.target}"[:256], "gameday:run": self.env.run_id}

    def _stop_conditions(self) -> list[dict]:
        conds = []
        for ref in self.env.config.aws.guardrails.stop_condition_alarms:
            region, name = parse_alarm_ref(ref)
            if region == self.region:  # FIS stop conditions are alarms of the experiment's region
                conds.append({"source": "aws:cloudwatch:alarm",
                              "value": ref if ref.startswith("arn:") else
                              f"arn:{self.env.partition}:cloudwatch:{region}:{self.env.account_id}:alarm:{name}"})
        return conds or [{"source": "none"}]

    def apply(self) -> dict:
        self.check()
        fis = self.env.client("fis", self.region)
        targets = self.fis_targets()
        tpl = fis.create_experiment_template(
            clientToken=secrets.token_hex(16), description=f"gameday: {self.fault.describe()}"[:512],
            stopConditions=self._stop_conditions(), roleArn=self.env.config.aws.fis_role_arn, tags=self.tags(),
            targets=targets,
            actions={"fault": {"actionId": self.action_id, "parameters": self.parameters(),
                               "targets": {k: k for k in targets}}},
        )["experimentTemplate"]
        exp = fis.start_experiment(clientToken=secrets.token_hex(16), experimentTemplateId=tpl["id"],
                                   tags=self.tags())["experiment"]
        return {"template_id": tpl["id"], "experiment_id": exp["id"], "action": self.action_id}

    def revert(self, applied: dict | None = None) -> dict:
        fis = self.env.client("fis", self.region)
        if applied and applied.get("template_id"):
            templates = [applied["template_id"]]
        else:  # only the intent was journaled: find ours by their tags
            want = self.tags()
            templates = [x["id"] for x in fis.list_experiment_templates()["experimentTemplates"]
                         if all(x.get("tags", {}).get(k) == v for k, v in want.items())]
        stopped = []
        for exp in fis.list_experiments()["experiments"]:
            if exp.get("experimentTemplateId") in templates and exp.get("state", {}).get("status") in RUNNING_FIS_STATES:
                fis.stop_experiment(id=exp["id"])
                stopped.append(exp["id"])
        for tid in templates:
            try:
                fis.delete_experiment_template(id=tid)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
        return {"stopped_experiments": stopped, "deleted_templates": templates}


class PauseReplicationFis(FisDriver):
    action_id = "aws:dynamodb:global-table-pause-replication"

    @property
    def region(self) -> str:
        return self.fault.source

    def fis_targets(self) -> dict:
        arn = f"arn:{self.env.partition}:dynamodb:{self.region}:{self.env.account_id}:table/{self.env.table}"
        return {"Tables": {"resourceType": "aws:dynamodb:global-table", "resourceArns": [arn], "selectionMode": "ALL"}}


class BlockRegionFis(FisDriver):
    action_id = "aws:network:disrupt-connectivity"

    def check(self) -> None:
        super().check()
        BlockRegionNaclDriver.check(self)  # same limits: hang only, subnets known

    def parameters(self) -> dict[str, str]:
        return {"duration": FIS_MAX_DURATION, "scope": "all"}

    def fis_targets(self) -> dict:
        arns = [f"arn:{self.env.partition}:ec2:{self.region}:{self.env.account_id}:subnet/{s}"
                for s in self.targets.block_subnets]
        return {"Subnets": {"resourceType": "aws:ec2:subnet", "resourceArns": arns, "selectionMode": "ALL"}}


class ApiFaultFis(FisDriver):
    """FIS injects API errors only into EC2 calls made by chosen IAM roles (aws:fis:inject-api-*)."""

    def check(self) -> None:
        super().check()
        f = self.fault
        if f.service != "ec2":
            # not the scenario's fault: AWS has no way to do it, so a scenario that needs it is skipped
            raise CapabilityMissing(f"the aws environment cannot fail {f.service} API calls: FIS's "
                                    f"aws:fis:inject-api-*-error actions fail EC2 calls only")
        if f.effect not in ("error", "throttle"):
            raise FaultError(f"api_fault: FIS has no {f.effect!r} API fault on aws (error or throttle)")
        if f.region == "*" or not f.operation:
            raise FaultError("api_fault: on aws give one region and the operation(s), e.g. operation='DescribeInstances'")
        if f.limit:
            raise FaultError("api_fault: limit=N has no FIS equivalent; use rate")
        if not self.env.config.aws.fis_api_fault_role_arns:
            raise FaultError("api_fault: set aws.fis_api_fault_role_arns (the roles whose calls fail)")

    @property
    def action_id(self) -> str:
        f = self.fault
        if f.effect == "throttle":
            return "aws:fis:inject-api-throttle-error"
        return "aws:fis:inject-api-unavailable-error" if f.status == 503 else "aws:fis:inject-api-internal-error"

    def parameters(self) -> dict[str, str]:
        return {"duration": FIS_MAX_DURATION, "service": "ec2", "operations": self.fault.operation,
                "percentage": str(max(1, round(self.fault.rate * 100)))}

    def fis_targets(self) -> dict:
        return {"Roles": {"resourceType": "aws:iam:role", "resourceArns": list(self.env.config.aws.fis_api_fault_role_arns),
                          "selectionMode": "ALL"}}


class LambdaFaultFis(FisDriver):
    """aws:lambda:invocation-error / invocation-add-delay (the function needs FIS's Lambda extension layer)."""

    @property
    def region(self) -> str:
        return self.env.config.failover.region

    @property
    def action_id(self) -> str:
        return "aws:lambda:invocation-error" if self.fault.mode == "error" else "aws:lambda:invocation-add-delay"

    def parameters(self) -> dict[str, str]:
        p = {"duration": FIS_MAX_DURATION, "invocationPercentage": "100"}
        if self.fault.mode == "error":
            return {**p, "preventExecution": "true"}
        if self.fault.mode == "delay":
            return {**p, "startupDelayMilliseconds": str(int(self.fault.delay_s * 1000))}
        cfg = self.env.observer("lambda", self.region).get_function_configuration(FunctionName=self.env.config.aws.lambda_name)
        return {**p, "startupDelayMilliseconds": str((cfg.get("Timeout", 3) + 1) * 1000)}  # past its timeout

    def fis_targets(self) -> dict:
        from gameday.environments.aws.preflight import lambda_arn
        return {"Functions": {"resourceType": "aws:lambda:function", "resourceArns": [lambda_arn(self.env)],
                              "selectionMode": "ALL"}}


class LambdaFaultAlias(Driver):
    """The alias the topic invokes is pointed at a broken version you published (it fails, times out
    or starts late as that version does); rollback points it back."""

    def check(self) -> None:
        spec = self.env.config.aws
        if not (spec.lambda_alias and spec.lambda_broken_version):
            raise FaultError("lambda_fault: the alias backend needs aws.lambda_alias and aws.lambda_broken_version")

    def _lambda(self, client=True):
        region = self.env.config.failover.region
        return self.env.client("lambda", region) if client else self.env.observer("lambda", region)

    def apply(self) -> dict:
        self.check()
        spec = self.env.config.aws
        lam = self._lambda()
        alias = lam.get_alias(FunctionName=spec.lambda_name, Name=spec.lambda_alias)
        original = alias["FunctionVersion"]
        if alias.get("Description", "").startswith(ALIAS_MARK):
            original = alias["Description"][len(ALIAS_MARK):]   # already injected: keep the true original
        lam.update_alias(FunctionName=spec.lambda_name, Name=spec.lambda_alias, FunctionVersion=spec.lambda_broken_version,
                         Description=ALIAS_MARK + original)
        return {"alias": spec.lambda_alias, "original_version": original, "version": spec.lambda_broken_version}

    def revert(self, applied: dict | None = None) -> dict:
        spec = self.env.config.aws
        lam = self._lambda()
        alias = lam.get_alias(FunctionName=spec.lambda_name, Name=spec.lambda_alias)
        desc = alias.get("Description", "")
        if not desc.startswith(ALIAS_MARK):
            return {"note": f"alias {spec.lambda_alias} was not changed by gameday"}
        original = desc[len(ALIAS_MARK):]
        lam.update_alias(FunctionName=spec.lambda_name, Name=spec.lambda_alias, FunctionVersion=original, Description="")
        return {"alias": spec.lambda_alias, "version": original}


class FailResponsesUnsupported(Driver):
    """fail_responses is a fault of the local model's load balancer: an ALB cannot be told to
    answer a share of its targets' requests with a 5XX (on AWS, deploy a failing task definition)."""

    def check(self) -> None:
        raise FaultError(f"fail_responses is not supported on --env aws: an Application Load Balancer cannot "
                         f"answer a share of {self.fault.region}'s requests with HTTP {self.fault.status} for its "
                         f"targets; run it with --env local or docker")

    def apply(self) -> dict:
        self.check()
        return {}

    def revert(self, applied: dict | None = None) -> dict:
        return {"note": "fail_responses is never applied on --env aws: nothing to undo"}


def _by_backend(kind: str, drivers: dict[str, type[Driver]]):
    """A driver-table entry that picks the driver of the backend the config chose for `kind`."""

    def make(env, fault) -> Driver:
        backend = env.backend(kind)
        if backend not in drivers:
            raise FaultError(f"aws.fault_backends.{kind}: {backend!r} is not a backend of {kind}: "
                             f"one of {', '.join(drivers)}")
        return drivers[backend](env, fault)

    return make


AWS_FAULT_DRIVERS: DriverTable = {
    "stop_tasks": StopTasksDriver,
    "lose_az": LoseAzDriver,
    "block_region": _by_backend("block_region", {"nacl": BlockRegionNaclDriver, "fis": BlockRegionFis}),
    "pause_replication": PauseReplicationFis,
    "api_fault": ApiFaultFis,
    "lambda_fault": _by_backend("lambda_fault", {"alias": LambdaFaultAlias, "fis": LambdaFaultFis}),
    "fail_responses": FailResponsesUnsupported,
}
