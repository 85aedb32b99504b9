"""AWS FIS experiments run on the local environment: moto keeps experiments as records only, this
runner carries out their actions on the running parts, as FIS does in an account.

It follows every customer StartExperiment and StopExperiment the router sees
(ctx.after_aws_call("fis", ...)): the experiment, as StartExperiment answered it (the
experiment's own copy of its template's actions, targets and stop conditions), is scheduled by the
pure rules of fis_model.py on ctx.clock, each action's effect is put in place when it starts and
undone when it ends, and the states are told to moto (moto_fix_fis, admin route fis_experiment),
so GetExperiment and ListExperiments report what runs.

The actions modelled, and what each does here:
- aws:dynamodb:global-table-pause-replication (aws:dynamodb:global-table): replication FROM the
  target table's region to every other region is paused (GlobalTableReplicator.pause), resumed
  when the action ends;
- aws:network:disrupt-connectivity (aws:ec2:subnet, scope "all"): as FIS does it, the subnets'
  network ACL is cloned (tag managedByFIS=true) with deny-all entries, the subnets are associated
  with the clone, and when the action ends their original association is restored and the clone
  deleted; every call goes through the router (ctx.customer_client), so the network-ACL
  enforcement hooked there takes effect;
- aws:lambda:invocation-error / invocation-add-delay (aws:lambda:function): the Lambda runner's
  injected fault (set_fault "error" / "delay");
- aws:fis:inject-api-internal-error / -throttle-error / -unavailable-error (aws:iam:role): the
  router's API faults on the listed EC2 operations in the experiment's region. Every local
  caller signs with the same credentials, so the roles cannot be told apart: the fault applies
  to every caller of those operations;
- aws:fis:wait: nothing but its duration.
Stop conditions (aws:cloudwatch:alarm): the experiment stops when one of its alarms is in ALARM.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

from botocore.exceptions import BotoCoreError, ClientError

from gameday import aws
from gameday.environments.local import fis_model as model
from gameday.environments.local.context import AwsCall, LocalContext

log = logging.getLogger("gameday.fis")

STOP_CONDITION_POLL_S = 0.25    # how often a running experiment's stop-condition alarms are read
IDLE_WAIT_S = 1.0               # nothing due: the scheduler still looks again (a wake comes sooner)
DENY_RULE_NUMBER = 1            # the clone's deny-all entries, evaluated before any other entry
ENVIRONMENT_STOPPED = "Experiment stopped: the local environment stopped."

PAUSE_REPLICATION = "aws:dynamodb:global-table-pause-replication"
DISRUPT_CONNECTIVITY = "aws:network:disrupt-connectivity"
LAMBDA_ERROR = "aws:lambda:invocation-error"
LAMBDA_DELAY = "aws:lambda:invocation-add-delay"
API_ERRORS = {"aws:fis:inject-api-internal-error": ("error", 500),
              "aws:fis:inject-api-throttle-error": ("throttle", 500),
              "aws:fis:inject-api-unavailable-error": ("error", 503)}
WAIT = "aws:fis:wait"
# action id -> the resource type its targets must have (None: it takes no target)
TARGET_TYPES: dict[str, str | None] = {
    PAUSE_REPLICATION: "aws:dynamodb:global-table", DISRUPT_CONNECTIVITY: "aws:ec2:subnet",
    LAMBDA_ERROR: "aws:lambda:function", LAMBDA_DELAY: "aws:lambda:function",
    **{a: "aws:iam:role" for a in API_ERRORS}, WAIT: None,
}
# applied last and undone first: FIS's own EC2 calls (disrupt-connectivity) must not meet the API
# faults of the same experiment (locally every caller is the same principal)
_LAST = tuple(API_ERRORS)

Undo = Callable[[], None]


class ActionFailed(Exception):
    """The action cannot run (its target is not in this environment, a parameter is invalid):
    the experiment fails with this reason."""


@dataclass
class _Run:
    id: str
    region: str
    started_at: float                 # ctx.clock.monotonic() when StartExperiment was accepted
    started_wall: float
    actions: dict[str, dict]          # name -> the experiment's action (actionId, parameters, targets)
    targets: dict[str, dict]
    windows: dict[str, model.Window]
    stop_alarms: list[str]            # CloudWatch alarm ARNs
    halt: model.Halt | None = None
    undo: dict[str, Undo] = field(default_factory=dict)    # actions whose effect is in place
    applied: set[str] = field(default_factory=set)
    effect_ms: dict[str, float] = field(default_factory=dict)   # start -> effect in place
    notes: dict[str, list[str]] = field(default_factory=dict)   # what of an action is not modelled
    next_alarm_check: float = 0.0
    published: tuple | None = None
    state: model.ExperimentState | None = None
    finished: bool = False


def _needed(part, missing: str):
    """A part of the environment an action acts on; ActionFailed(missing) when it is not there."""
    if part is None:
        raise ActionFailed(missing)
    return part


def _arn_parts(arn: str) -> tuple[str, str]:
    """(region, resource) of an ARN."""
    parts = arn.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":
        raise ActionFailed(f"target {arn!r} is not an ARN")
    return parts[3], parts[5]


def _specs(actions: dict[str, dict]) -> tuple[list[model.ActionSpec], model.Halt | None]:
    """The schedule's input from the experiment's actions, and the failure of the first action the
    local environment cannot run (unknown action, missing or invalid duration)."""
    specs, halt = [], None
    for name, a in actions.items():
        duration, start_after = 0.0, tuple(a.get("startAfter") or ())
        try:
            if a.get("actionId") not in TARGET_TYPES:
                raise ValueError(f"action {a.get('actionId')!r} is not modelled by the local environment "
                                 f"(modelled: {', '.join(sorted(TARGET_TYPES))})")
            if "duration" not in (a.get("parameters") or {}):
                raise ValueError(f"action {name!r} ({a['actionId']}) needs the parameter duration")
            duration = model.parse_duration(a["parameters"]["duration"])
        except ValueError as e:
            halt = halt or model.Halt(0.0, "failed", f"Action {name} failed: {e}", action=name)
        specs.append(model.ActionSpec(name, duration, start_after))
    return specs, halt


def new_run(region: str, experiment: dict, now: float, now_wall: float) -> _Run:
    """A run of one experiment, as StartExperiment answered it."""
    actions = experiment.get("actions") or {}
    specs, halt = _specs(actions)
    try:
        windows = model.schedule(specs)
    except ValueError as e:
        windows = {s.name: model.Window(0.0, 0.0) for s in specs}
        halt = halt or model.Halt(0.0, "failed", f"Experiment failed: {e}")
    alarms = [c["value"] for c in experiment.get("stopConditions") or []
              if c.get("source") == "aws:cloudwatch:alarm" and c.get("value")]
    return _Run(id=experiment["id"], region=region, started_at=now, started_wall=now_wall, actions=actions,
                targets=experiment.get("targets") or {}, windows=windows, stop_alarms=alarms, halt=halt)


class FisRunner:
    """The local FIS: runs the experiments customers start through the router."""

    def __init__(self, ctx: LocalContext, *, replication=None, lambdas=None, router=None,
                 disabled_effects: frozenset[str] | set[str] = frozenset()):
        self.ctx = ctx
        self.replication = replication     # GlobalTableReplicator
        self.lambdas = lambdas             # LambdaRunner (None: no function runs here)
        self.router = router               # AwsRouter
        # action ids whose effect is switched off (the run and its states go on): how a test shows
        # that its check fails without the effect
        self.disabled_effects = set(disabled_effects)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()     # the runs; held while a step applies or undoes effects
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hooked = False

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> "FisRunner":
        if not self._hooked:
            self.ctx.after_aws_call("fis", "StartExperiment", self._on_start)
            self.ctx.after_aws_call("fis", "StopExperiment", self._on_stop)
            self._hooked = True
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fis-runner", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop every experiment still running (its effects undone), then the scheduler."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            for run in self._runs.values():
                if not run.finished:
                    if run.halt is None:
                        run.halt = model.Halt(self._elapsed(run), "stopped", ENVIRONMENT_STOPPED)
                    self._step(run)

    def status(self) -> dict:
        with self._lock:
            return {"experiments": {run.id: self._describe(run) for run in self._runs.values()},
                    "disabled_effects": sorted(self.disabled_effects)}

    @staticmethod
    def _describe(run: _Run) -> dict:
        st = run.state
        return {"region": run.region, "status": st.status if st else "initiating",
                "reason": st.reason if st else None,
                "actions": {n: a.status for n, a in st.actions.items()} if st else {},
                "effect_ms": dict(run.effect_ms), "notes": dict(run.notes)}

    def experiment(self, experiment_id: str) -> dict:
        with self._lock:
            return self._describe(self._runs[experiment_id])

    # -- the router's calls ------------------------------------------------------------------------------
    def _on_start(self, call: AwsCall) -> None:
        if self._stop.is_set():
            return
        experiment = json.loads(call.response)["experiment"]
        with self._lock:
            if experiment["id"] in self._runs:   # a retried StartExperiment (same clientToken)
                return
            run = new_run(call.region, experiment, self.ctx.clock.monotonic(), self.ctx.clock.time())
            self._runs[run.id] = run
            # claimed before the caller has the answer: a StopExperiment right after it finds the
            # experiment the runner's, not moto's
            self._publish(run, model.ExperimentState(
                "initiating", "Experiment is initiating.",
                {n: model.ActionState("pending", "Action is pending.") for n in run.windows}))
        self.ctx.events.emit("fis", action="start", id=run.id, region=run.region,
                             actions={n: a.get("actionId") for n, a in run.actions.items()})
        self._wake.set()

    def _on_stop(self, call: AwsCall) -> None:
        experiment = json.loads(call.response)["experiment"]
        with self._lock:
            run = self._runs.get(experiment["id"])
            if run is None or run.finished or run.halt is not None:
                return
            run.halt = model.Halt(self._elapsed(run), "stopped", model.STOPPED_BY_USER)
        self.ctx.events.emit("fis", action="stop", id=run.id, region=run.region)
        self._wake.set()

    # -- the schedule ------------------------------------------------------------------------------------
    def _elapsed(self, run: _Run) -> float:
        return self.ctx.clock.monotonic() - run.started_at

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            due: list[float] = []
            with self._lock:
                for run in [r for r in self._runs.values() if not r.finished]:
                    try:
                        nxt = self._step(run)
                    except Exception:  # noqa: BLE001 - one experiment's bug must not stop the others
                        log.exception("FIS experiment %s: step failed", run.id)
                        nxt = self.ctx.clock.monotonic() + STOP_CONDITION_POLL_S
                    if nxt is not None:
                        due.append(nxt)
            wait = min(due, default=self.ctx.clock.monotonic() + IDLE_WAIT_S) - self.ctx.clock.monotonic()
            if wait > 0:   # else due already (the clock moved during the step): step again at once
                self.ctx.clock.wait(self._wake, wait)

    def _step(self, run: _Run) -> float | None:
        """Bring one run's effects and published state in line with the schedule at this moment;
        the clock's next moment something is due for it (None: it has ended)."""
        elapsed = self._elapsed(run)
        self._check_stop_conditions(run, elapsed)
        state = model.experiment_state(run.windows, elapsed, run.halt, undone=not run.undo)
        if state.status == "stopping":
            self._publish(run, state)    # seen while the effects are undone
        self._undo_ended(run, state.running)
        if not self._start_due(run, state.running, elapsed):
            self._undo_ended(run, set())   # an action failed: the experiment ends, every effect goes
        state = model.experiment_state(run.windows, elapsed, run.halt, undone=not run.undo)
        self._publish(run, state)
        if state.status in model.TERMINAL and not run.undo:
            run.finished = True
            return None
        nxt = model.next_change(run.windows, elapsed)
        candidates = [run.started_at + nxt] if nxt is not None and run.halt is None else []
        if run.stop_alarms and run.halt is None:
            candidates.append(run.next_alarm_check)
        return min(candidates, default=self.ctx.clock.monotonic() + STOP_CONDITION_POLL_S)

    def _start_due(self, run: _Run, running: set[str], elapsed: float) -> bool:
        """Put in place the effect of each action that should run and has not; False when one failed
        (the run is then halted with its reason)."""
        order = sorted(running - run.applied, key=lambda n: run.actions[n].get("actionId") in _LAST)
        for name in order:
            run.applied.add(name)
            try:
                run.undo[name] = self._apply(run, name)
            except ActionFailed as e:
                run.halt = model.Halt(elapsed, "failed", f"Action {name} failed: {e}", action=name)
                return False
            run.effect_ms[name] = round((self.ctx.clock.monotonic() - run.started_at) * 1000, 1)
            self.ctx.events.emit("fis", action="action_start", id=run.id, name=name,
                                 action_id=run.actions[name].get("actionId"), effect_ms=run.effect_ms[name],
                                 notes=run.notes.get(name) or None)
        return True

    def _undo_ended(self, run: _Run, running: set[str]) -> None:
        ending = sorted((n for n in run.undo if n not in running),
                        key=lambda n: run.actions[n].get("actionId") not in _LAST)
        for name in ending:
            undo = run.undo.pop(name)
            try:
                undo()
            except Exception as e:  # noqa: BLE001 - the other effects must still be undone
                log.exception("FIS experiment %s: undoing action %s failed", run.id, name)
                run.notes.setdefault(name, []).append(f"undo failed: {type(e).__name__}: {e}")
            self.ctx.events.emit("fis", action="action_end", id=run.id, name=name,
                                 action_id=run.actions[name].get("actionId"))

    def _check_stop_conditions(self, run: _Run, elapsed: float) -> None:
        now = self.ctx.clock.monotonic()
        if run.halt is not None or not run.stop_alarms or now < run.next_alarm_check:
            return
        run.next_alarm_check = now + STOP_CONDITION_POLL_S
        for arn in run.stop_alarms:
            region, resource = arn.split(":", 5)[3], arn.split(":", 6)[-1]
            try:
                found = self.ctx.internal_client("cloudwatch", region).describe_alarms(AlarmNames=[resource])
            except (ClientError, BotoCoreError) as e:
                log.warning("FIS experiment %s: stop condition %s unreadable: %s", run.id, arn, e)
                continue
            alarms = found.get("MetricAlarms", []) + found.get("CompositeAlarms", [])
            if any(a.get("StateValue") == "ALARM" for a in alarms):
                run.halt = model.Halt(elapsed, "stopped", f"Experiment stopped: stop condition {arn} is in ALARM.")
                self.ctx.events.emit("fis", action="stop_condition", id=run.id, alarm=arn)
                return

    def _publish(self, run: _Run, state: model.ExperimentState) -> None:
        """Tell moto the experiment's state (GetExperiment/ListExperiments answer it), when it changed."""
        key = (state.status, tuple(sorted((n, a.status) for n, a in state.actions.items())))
        run.state = state
        if key == run.published:
            return

        def wall(offset: float | None) -> float | None:
            return None if offset is None else round(run.started_wall + offset, 3)

        actions = {n: {"status": a.status, "reason": a.reason, "startTime": wall(a.start), "endTime": wall(a.end)}
                   for n, a in state.actions.items()}
        try:
            aws.moto_admin(self.ctx.moto_urls[run.region], "fis_experiment", region=run.region, id=run.id,
                           status=state.status, reason=state.reason, endTime=wall(state.end), actions=actions)
        except (OSError, ValueError) as e:   # moto gone (the environment stopping) or refused
            log.warning("FIS experiment %s: state %s not told to moto: %s", run.id, state.status, e)
            return
        run.published = key
        self.ctx.events.emit("fis", action="state", id=run.id, status=state.status, reason=state.reason,
                             actions={n: a.status for n, a in state.actions.items()})

    # -- the actions' effects ------------------------------------------------------------------------------
    def _targets(self, run: _Run, name: str) -> list[str]:
        """The resources the action acts on (only targets that list resourceArns are resolved)."""
        action = run.actions[name]
        want = TARGET_TYPES[action["actionId"]]
        arns: list[str] = []
        for key, target_name in (action.get("targets") or {}).items():
            target = run.targets.get(target_name)
            if target is None:
                raise ActionFailed(f"target {target_name!r} ({key}) is not one of the experiment's targets")
            if target.get("resourceType") != want:
                raise ActionFailed(f"target {target_name!r} is {target.get('resourceType')!r}; "
                                   f"{action['actionId']} takes {want}")
            if not target.get("resourceArns"):
                raise ActionFailed(f"target {target_name!r} selects resources by tags or filters: only targets "
                                   f"listing resourceArns are resolved locally")
            try:
                arns += model.select_targets(target["resourceArns"], target.get("selectionMode"))
            except ValueError as e:
                raise ActionFailed(str(e)) from None
        if want is not None and not arns:
            raise ActionFailed(f"{action['actionId']} needs a target of type {want}")
        return arns

    def _apply(self, run: _Run, name: str) -> Undo:
        action_id = run.actions[name]["actionId"]
        arns = self._targets(run, name)
        params = run.actions[name].get("parameters") or {}
        if action_id == WAIT:
            return lambda: None
        effect = {PAUSE_REPLICATION: self._pause_replication, DISRUPT_CONNECTIVITY: self._disrupt_connectivity,
                  LAMBDA_ERROR: self._lambda_fault, LAMBDA_DELAY: self._lambda_fault}.get(action_id, self._api_fault)
        prepared = effect(run, name, action_id, arns, params)
        if action_id in self.disabled_effects:
            run.notes.setdefault(name, []).append("effect switched off (disabled_effects)")
            return lambda: None
        return prepared()

    # Each effect checks its targets and parameters first (ActionFailed before anything changed) and
    # returns the function that applies it, which returns the undo.
    def _pause_replication(self, run: _Run, name: str, action_id: str, arns: list[str], params: dict):
        repl = _needed(self.replication, "no global-table replication runs in this environment")
        pairs: list[tuple[str, str]] = []
        for arn in arns:
            region, resource = _arn_parts(arn)
            if resource != f"table/{repl.table}" or region not in repl.regions:
                raise ActionFailed(f"target {arn}: not a replica of the global table {repl.table!r} "
                                   f"(regions {', '.join(repl.regions)})")
            pairs += [(region, other) for other in repl.regions if other != region]

        def apply() -> Undo:
            for source, destination in pairs:
                repl.pause(source, destination)

            def undo() -> None:
                for source, destination in pairs:
                    repl.resume(source, destination)
            return undo
        return apply

    def _lambda_fault(self, run: _Run, name: str, action_id: str, arns: list[str], params: dict):
        runner = _needed(self.lambdas, "no Lambda function runs in this environment (the config has no failover "
                                       "function)")
        for arn in arns:
            function = arn.split(":function:", 1)[-1].split(":")[0]
            if function != runner.function_name:
                raise ActionFailed(f"target {arn}: no function {function!r} here (the function is "
                                   f"{runner.function_name!r})")
        notes = run.notes.setdefault(name, [])
        try:
            percentage = float(params.get("invocationPercentage", 100))
            delay_ms = float(params.get("startupDelayMilliseconds", 0))
        except ValueError as e:
            raise ActionFailed(f"invalid parameter: {e}") from None
        if percentage < 100:
            notes.append(f"invocationPercentage {percentage:g} not modelled: every invocation is affected")
        if action_id == LAMBDA_ERROR:
            if str(params.get("preventExecution", "true")).lower() == "false":
                notes.append("preventExecution=false not modelled: the handler does not run")
            mode, delay_s = "error", None
        else:
            if delay_ms <= 0:
                raise ActionFailed("startupDelayMilliseconds must be a number of milliseconds > 0")
            mode, delay_s = "delay", delay_ms / 1000

        def apply() -> Undo:
            fault = runner.set_fault(mode, delay_s=delay_s)

            def undo() -> None:
                if runner.fault == fault:   # not a fault set since by someone else
                    runner.clear_fault()
            return undo
        return apply

    def _api_fault(self, run: _Run, name: str, action_id: str, arns: list[str], params: dict):
        router = _needed(self.router, "no AWS router runs in this environment")
        if params.get("service") != "ec2":
            raise ActionFailed(f"service {params.get('service')!r}: FIS injects API errors into ec2 only")
        operations = [o.strip() for o in str(params.get("operations", "")).split(",") if o.strip()]
        if not operations:
            raise ActionFailed("the parameter operations is required (e.g. DescribeInstances)")
        try:
            percentage = float(params.get("percentage", 100))
        except ValueError:
            raise ActionFailed(f"percentage {params.get('percentage')!r} is not a number") from None
        if not 0 < percentage <= 100:
            raise ActionFailed(f"percentage {percentage:g} must be in 1..100")
        run.notes.setdefault(name, []).append(
            "every caller of these operations is affected: locally all callers sign with the same credentials, "
            f"so the roles {', '.join(arns)} cannot be told apart")
        kind, status = API_ERRORS[action_id]

        def apply() -> Undo:
            ids = []
            try:
                for op in operations:
                    ids.append(router.add_fault(kind=kind, region=run.region, service="ec2", operation=op,
                                                rate=percentage / 100, status=status)["id"])
            except ValueError as e:
                for rule_id in ids:
                    router.remove_fault(rule_id)
                raise ActionFailed(str(e)) from None

            def undo() -> None:
                for rule_id in ids:
                    router.remove_fault(rule_id)
            return undo
        return apply

    def _disrupt_connectivity(self, run: _Run, name: str, action_id: str, arns: list[str], params: dict):
        scope = params.get("scope", "all")
        if scope != "all":
            raise ActionFailed(f"scope {scope!r} is not modelled locally (only 'all')")
        by_region: dict[str, list[str]] = {}
        for arn in arns:
            region, resource = _arn_parts(arn)
            if not resource.startswith("subnet/"):
                raise ActionFailed(f"target {arn} is not a subnet")
            by_region.setdefault(region, []).append(resource.removeprefix("subnet/"))

        def apply() -> Undo:
            undos: list[Undo] = []
            try:
                for region, subnets in by_region.items():
                    undos.append(_deny_subnets(self.ctx.customer_client("ec2", region), region, subnets))
            except BaseException:
                for undo in reversed(undos):
                    undo()
                raise

            def undo_all() -> None:
                for undo in reversed(undos):
                    undo()
            return undo_all
        return apply


def _deny_subnets(ec2, region: str, subnets: list[str]) -> Undo:
    """FIS's disrupt-connectivity (scope all) on some subnets of a region: clone each subnet's
    network ACL with deny-all entries first, associate the subnets with the clone; the undo puts
    the original associations back and deletes the clones."""
    try:
        acls = ec2.describe_network_acls(
            Filters=[{"Name": "association.subnet-id", "Values": subnets}])["NetworkAcls"]
    except (ClientError, BotoCoreError) as e:
        raise ActionFailed(f"DescribeNetworkAcls in {region}: {e}") from None
    current = {a["SubnetId"]: (a["NetworkAclAssociationId"], acl) for acl in acls
               for a in acl.get("Associations", []) if a.get("SubnetId") in subnets}
    missing = sorted(set(subnets) - set(current))
    if missing:
        raise ActionFailed(f"subnet(s) {', '.join(missing)} not found in {region}")
    clones: dict[str, str] = {}
    moved: list[tuple[str, str]] = []   # (association id now, original ACL id)

    def undo() -> None:
        for association, original in moved:
            ec2.replace_network_acl_association(AssociationId=association, NetworkAclId=original)
        for clone in clones.values():
            ec2.delete_network_acl(NetworkAclId=clone)

    try:
        for subnet, (association, acl) in current.items():
            if acl["NetworkAclId"] not in clones:
                clones[acl["NetworkAclId"]] = _clone_denying(ec2, acl)
            new = ec2.replace_network_acl_association(AssociationId=association,
                                                      NetworkAclId=clones[acl["NetworkAclId"]])
            moved.append((new["NewAssociationId"], acl["NetworkAclId"]))
    except (ClientError, BotoCoreError) as e:
        undo()
        raise ActionFailed(f"network ACL calls in {region} failed: {e}") from None
    return undo


def _clone_denying(ec2, acl: dict) -> str:
    """A copy of `acl` (tag managedByFIS=true, as FIS creates it) whose first entries deny all
    traffic in and out."""
    clone = ec2.create_network_acl(VpcId=acl["VpcId"], TagSpecifications=[{
        "ResourceType": "network-acl", "Tags": [{"Key": "managedByFIS", "Value": "true"}]}])["NetworkAcl"]["NetworkAclId"]
    for egress in (False, True):
        ec2.create_network_acl_entry(NetworkAclId=clone, RuleNumber=DENY_RULE_NUMBER, Protocol="-1",
                                     RuleAction="deny", Egress=egress, CidrBlock="0.0.0.0/0")
    for e in acl.get("Entries", []):
        if DENY_RULE_NUMBER < e["RuleNumber"] < 32767 and e.get("CidrBlock"):
            extra = {k: e[k] for k in ("PortRange", "IcmpTypeCode") if k in e}
            ec2.create_network_acl_entry(NetworkAclId=clone, RuleNumber=e["RuleNumber"], Protocol=e["Protocol"],
                                         RuleAction=e["RuleAction"], Egress=e["Egress"], CidrBlock=e["CidrBlock"],
                                         **extra)
    return clone
