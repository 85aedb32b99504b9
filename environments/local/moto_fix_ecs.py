"""ECS corrected to AWS inside each moto server: what DescribeTasks says about a task's end and place.

moto's StopTask keeps only the reason, and its DescribeTasks walks a running task one state
further at every call (RUNNING -> DEACTIVATING -> STOPPING -> DEPROVISIONING: a task anyone
describes three times looks stopped while it serves). Corrected here:

- a task's lastStatus moves only when it is stopped (the local scheduler, environments/local/ecs.py,
  is the truth about running tasks); DescribeTasks never advances it;
- StopTask records what AWS shows for a stopped task: lastStatus/desiredStatus STOPPED,
  `stoppedReason` (AWS's "Task stopped by user" when the caller gave none), `stopCode` from the
  reason (`stop_code()`: the scheduler's reasons are ServiceSchedulerInitiated, an essential
  container that exited EssentialContainerExited, a task that never started TaskFailedToStart,
  anything else a user's StopTask, UserInitiated), `stoppingAt`, `stoppedAt`,
  `executionStoppedAt`, and its containers STOPPED;
- every task has `createdAt` and `startedAt`, which moto leaves out: both the time RunTask recorded
  it (the local scheduler's launch; its provisioning delay is not in startedAt);
- every task has `availabilityZone`: the "gameday:availability-zone" tag the local scheduler
  puts on run_task (the AZ whose subnet it placed the task in), else its awsvpc subnet's AZ.

Only moto and the standard library (moto_corrections' rule).
"""

from __future__ import annotations

AZ_TAG = "gameday:availability-zone"   # environments/local/ecs.py's AZ_TAG
USER_STOP_REASON = "Task stopped by user"
USER_INITIATED, SCHEDULER_INITIATED = "UserInitiated", "ServiceSchedulerInitiated"
CONTAINER_EXITED, FAILED_TO_START = "EssentialContainerExited", "TaskFailedToStart"

# How the local scheduler's reasons (environments/local/ecs_model.py, REASON_*) begin, and the
# stop code AWS gives a task stopped for that reason; tests/test_aws_signals.py checks every
# REASON_* of the model against this table, so a new reason cannot fall through to UserInitiated.
REASON_PREFIXES: tuple[tuple[str, str], ...] = (
    ("Essential container in task exited", CONTAINER_EXITED),
    ("Task failed to start", FAILED_TO_START),
    ("CannotStartContainerError", FAILED_TO_START),
    ("CannotPullContainerError", FAILED_TO_START),
    ("ResourceInitializationError", FAILED_TO_START),
    ("Scaling activity initiated by", SCHEDULER_INITIATED),
    ("Availability zone ", SCHEDULER_INITIATED),
    ("Service scheduler shut down", SCHEDULER_INITIATED),
    ("Task has no process", SCHEDULER_INITIATED),
    ("Task failed ELB health checks", SCHEDULER_INITIATED),
)


def stop_code(reason: str | None) -> str:
    """The stopCode AWS shows for a task stopped with `reason` (see REASON_PREFIXES)."""
    for prefix, code in REASON_PREFIXES:
        if (reason or "").startswith(prefix):
            return code
    return USER_INITIATED


def task_availability_zone(tags: list[dict] | None, subnet_az: str | None = None) -> str | None:
    """The task's AZ: its AZ tag (key/value as ECS spells tags), else its subnet's AZ."""
    for tag in tags or []:
        if tag.get("key") == AZ_TAG and tag.get("value"):
            return tag["value"]
    return subnet_az


def _subnet_az(task) -> str | None:
    from moto.ec2.models import ec2_backends

    subnets = ((getattr(task, "network_configuration", None) or {}).get("awsvpcConfiguration") or {}).get("subnets")
    if not subnets:
        return None
    try:
        return ec2_backends[task._account_id][task.region_name].get_subnet(subnets[0]).availability_zone
    except Exception:  # noqa: BLE001 - a subnet deleted since: no AZ to tell
        return None


def _patch_task(models) -> None:
    Task = models.Task

    def availability_zone(self) -> str | None:
        return task_availability_zone(self.tags, None) or _subnet_az(self)

    Task.availability_zone = property(availability_zone)
    Task.advance = lambda self: None     # see the module doc: only a stop moves lastStatus
    init = Task.__init__

    def init_with_times(self, *args, **kwargs):
        from moto.core.utils import utcnow

        init(self, *args, **kwargs)
        # AWS's DescribeTasks gives every task createdAt, and startedAt once it runs; the local
        # scheduler calls RunTask as it launches the task, so both are that time here: the
        # provisioning time before the process serves (profile.task_provisioning_s) is not in it
        self.created_at = self.started_at = utcnow()

    Task.__init__ = init_with_times


def _patch_stop_task(models) -> None:
    Backend = models.EC2ContainerServiceBackend
    stop_task = Backend.stop_task

    def stop_task_recorded(self, cluster_str, task_str, reason):
        from moto.core.utils import utcnow

        already = self._gameday_stopped(cluster_str, task_str)
        if already is not None:   # StopTask on a stopped task: it stays as its first stop left it
            return already
        task = stop_task(self, cluster_str, task_str, reason or USER_STOP_REASON)
        now = utcnow()
        task.stop_code = stop_code(task.stopped_reason)
        task.stopping_at = task.stopped_at = task.execution_stopped_at = now
        for container in task.containers:
            container.last_status = "STOPPED"
        return task

    def stopped(self, cluster_str, task_str):
        cluster = self._get_cluster(cluster_str)
        tid = task_str.split("/")[-1]
        for arn, task in self.tasks.get(cluster.name, {}).items():
            if arn.endswith(tid) and task.last_status == "STOPPED":
                return task
        return None

    Backend._gameday_stopped = stopped
    Backend.stop_task = stop_task_recorded


def install(admin) -> None:  # noqa: ARG001 - no admin route: the scheduler's StopTask says it all
    from moto.ecs import models

    _patch_task(models)
    _patch_stop_task(models)
