"""ECS task state from the running local scheduler (issue 19, item 4): a task whose process dies
and a task a customer stops are STOPPED in DescribeTasks with AWS's stopCode, stoppedReason,
stoppedAt and the AZ the scheduler placed them in. The correction's rules and its twin against moto
as it ships: tests/test_aws_signals.py. Prints how long after the change the signal was visible.
"""

from __future__ import annotations

import os
import signal

import pytest

from gameday.assertions.eventually import eventually
from gameday.config import load_config
from gameday.environments.local.ecs import REASON_EXITED, EcsReconciler
from gameday.environments.local.router import AwsRouter
from tests.support import provisioned_context

# one task per region: a process that dies in one, a customer's StopTask in the other
CFG = load_config(None, overrides={"service": {"desired_tasks": 1, "min_tasks": 1, "max_tasks": 2},
                                   "profiles": {"local": {"task_provisioning_s": 0.2}}})
PROFILE = CFG.profile("local")
TASK_START_BUDGET_S = 10.0    # python task processes booting on two busy cores
STOPPED_DEADLINE_S = PROFILE.reconcile_interval_s + 3.0   # the scheduler notices at its next reconcile


@pytest.fixture(scope="module")
def scheduler():
    with provisioned_context(CFG) as ctx:
        router = AwsRouter(ctx).start()
        ecs = EcsReconciler(ctx)
        try:
            ecs.start()
            yield ctx, ecs
        finally:
            ecs.stop()
            router.stop()


def _running(ecs: EcsReconciler, region: str) -> dict:
    def check():
        running = [t for t in ecs.status()[region]["tasks"] if t["state"] == "RUNNING"]
        assert running, ecs.status()[region]
        return running[0]

    return eventually(check, deadline_s=TASK_START_BUDGET_S + PROFILE.task_provisioning_s,
                      what=f"a running task in {region}")[0]


def stopped_as(ecs_api, arn: str, code: str, reason: str, az: str) -> dict:
    t = ecs_api.describe_tasks(cluster="gameday", tasks=[arn])["tasks"][0]
    assert t["lastStatus"] == "STOPPED", t["lastStatus"]
    assert (t.get("stopCode"), t.get("availabilityZone")) == (code, az), (t.get("stopCode"), t.get("availabilityZone"))
    assert t.get("stoppedReason", "").startswith(reason) and t.get("stoppedAt"), t.get("stoppedReason")
    return t


def test_stopped_tasks_say_why_and_where(scheduler):
    ctx, ecs = scheduler
    api, west = ctx.customer_client("ecs", "us-east-1"), ctx.customer_client("ecs", "us-west-2")
    died, stopped = _running(ecs, "us-east-1"), _running(ecs, "us-west-2")
    for client, t in ((api, died), (west, stopped)):   # a running task has its AZ too
        [described] = client.describe_tasks(cluster="gameday", tasks=[t["task_arn"]])["tasks"]
        assert described["availabilityZone"] == t["az"], described
    os.kill(died["pid"], signal.SIGKILL)
    _, died_s = eventually(lambda: stopped_as(api, died["task_arn"], "EssentialContainerExited", REASON_EXITED,
                                              died["az"]), deadline_s=STOPPED_DEADLINE_S, what="exited task STOPPED")
    west.stop_task(cluster="gameday", task=stopped["task_arn"])
    _, user_s = eventually(lambda: stopped_as(west, stopped["task_arn"], "UserInitiated", "Task stopped by user",
                                              stopped["az"]), deadline_s=STOPPED_DEADLINE_S, what="stopped task")
    print(f"\nDescribeTasks: a dead process's task STOPPED/EssentialContainerExited {died_s * 1000:.0f} ms after "
          f"the kill (the scheduler's reconcile every {PROFILE.reconcile_interval_s * 1000:.0f} ms); a StopTask's "
          f"UserInitiated {user_s * 1000:.0f} ms after the call")
