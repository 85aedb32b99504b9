"""The docker environment (environments/docker): every ECS task a container from an image built
here without any registry, the rest of the local model reused.

These tests need a Docker daemon and, to build the base image once, debootstrap as root: the
required parts of tests/parts.py. The test session installs and starts them when it can; where
it cannot, each test that needs them is skipped with the line that says what to install (a
failure when CI=true).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gameday.assertions.eventually import eventually
from gameday.environments.docker import DockerEnvironment, images
from gameday.environments.docker.cleanup import RUN_LABEL
from gameday.environments.docker.preflight import DockerUnavailable, docker_client
from tests.support import LIGHT_LOAD
from gameday.config import load_config

REPO = Path(__file__).resolve().parents[1]
CFG = load_config(None)
PROFILE = CFG.profile("docker")
# every test but two builds or runs images (the closest needs() marker wins)
pytestmark = [pytest.mark.needs_env, pytest.mark.slow, pytest.mark.needs("docker", "debootstrap")]

DEAD_SOCKET = "unix:///tmp/gameday-no-docker-here.sock"


@pytest.mark.needs()   # a daemon that is not there is what it tests
def test_docker_not_running_is_one_clear_line(tmp_path):
    env = {**os.environ, "DOCKER_HOST": DEAD_SOCKET}
    proc = subprocess.run([sys.executable, "-m", "gameday.cli", "up", "--env", "docker", "--run-dir", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Docker is not running" in lines[0] and "dockerd &" in lines[0] and "systemctl start docker" in lines[0]
    assert DEAD_SOCKET in lines[0]
    # the same in-process, for the pytest plugin's env fixture
    os.environ["DOCKER_HOST"], saved = DEAD_SOCKET, os.environ.get("DOCKER_HOST")
    try:
        with pytest.raises(DockerUnavailable, match="dockerd"):
            docker_client(timeout_s=2)
    finally:
        if saved is None:
            os.environ.pop("DOCKER_HOST")
        else:
            os.environ["DOCKER_HOST"] = saved


@pytest.fixture(scope="module")
def client(docker_daemon):
    c = docker_client()
    yield c
    c.close()


def test_images_build_without_a_registry_and_are_cached(client):
    t0 = time.monotonic()
    tag = images.ensure_service_image(client, progress=print)
    first_s = time.monotonic() - t0
    t0 = time.monotonic()
    assert images.ensure_service_image(client) == tag
    cached_s = time.monotonic() - t0
    print(f"service image {tag}: first call {first_s:.1f}s, cached {cached_s:.2f}s")
    assert cached_s < 5, "a second run must not rebuild"
    # the image runs the reference service's imports with the host's dependency versions
    import boto3
    import tenacity  # noqa: F401 - its version is in the tag's hash, checked by import below

    out = client.containers.run(tag, ["python3", "-c", "import boto3, tenacity, sut.service; print(boto3.__version__)"],
                                remove=True, network_mode="none")
    assert out.decode().strip() == boto3.__version__
    # the tag is a content hash: a different sut/ (or dependency set) is a different image
    assert images.service_tag(images.base_tag()) == tag


@pytest.mark.needs("docker")
def test_user_image_missing_is_a_clear_error(client):
    with pytest.raises(images.ImageBuildError, match="not in the local Docker daemon.*docker build"):
        images.check_user_image(client, "gameday-test/no-such-image:1")


# -- one running docker environment -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def denv(tmp_path_factory, client):
    e = DockerEnvironment(CFG, tmp_path_factory.mktemp("docker-env"))
    e.start()
    run = e.endpoints["docker"]["run"]
    try:
        yield e
    finally:
        e.stop()
    # a stopped environment leaves no container behind
    assert client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run}"}) == []


def _containers(env, region):
    return {t["task_id"]: t for t in env.status()["ecs"][region]["tasks"]}


def _running(env, region):
    return {tid: t for tid, t in _containers(env, region).items() if t["state"] == "RUNNING"}


def test_tasks_are_containers_serving_through_the_load_balancer(denv, client):
    run = denv.endpoints["docker"]["run"]
    labelled = client.containers.list(filters={"label": f"{RUN_LABEL}={run}"})
    for region in CFG.regions:
        tasks = _running(denv, region)
        assert len(tasks) >= CFG.service.min_tasks
        ids = {t["container"] for t in tasks.values()}
        assert ids <= {c.id[:12] for c in labelled}
        for c in labelled:
            if c.id[:12] in ids:
                assert c.attrs["HostConfig"]["NetworkMode"] == "host" and c.labels["gameday.region"] == region
    import requests

    r = requests.put(denv.lb_url("us-west-2") + "/items/docker-k1", json={"value": 1}, timeout=5)
    assert r.status_code == 200 and r.headers["X-Gameday-Task"] in _running(denv, "us-west-2")


def test_stop_task_kills_the_container_and_a_replacement_container_starts(denv, client):
    import docker.errors

    region = "us-east-1"
    before = _running(denv, region)
    victim_id, victim = next(iter(before.items()))
    denv.observer("ecs", region).stop_task(cluster="gameday", task=victim_id, reason="gameday test")

    def container_gone():
        try:
            c = client.containers.get(victim["container"])
        except docker.errors.NotFound:
            return "removed"
        assert c.status in ("exited", "dead"), c.status
        return c.status
    deadline = PROFILE.reconcile_interval_s * 4 + 2.0 + 10   # a tick, the stop grace, docker's own latency
    eventually(container_gone, deadline_s=deadline, what="the stopped task's container to be gone")

    def replaced():
        now = _running(denv, region)
        new = set(now) - set(before)
        assert len(now) >= CFG.service.min_tasks and new, f"running {list(now)}"
        cid = now[new.pop()]["container"]
        assert client.containers.get(cid).status == "running"
        return cid
    _, new_cid = eventually(replaced, deadline_s=deadline + PROFILE.task_provisioning_s + 30,
                            what="a replacement task container RUNNING")
    assert new_cid != victim["container"]


def test_container_killed_behind_the_harness_is_seen_exited_and_replaced(denv, client):
    """A task container that dies by itself (here `docker kill` from outside, as the OOM killer
    would) is a task whose essential container exited: the scheduler must notice (its liveness
    check reads /proc, then asks the daemon for the exit code), say so, and replace it."""
    region = "us-west-2"
    before = _running(denv, region)
    victim_id, victim = next(iter(before.items()))
    client.containers.get(victim["container"]).kill()

    def stopped_as_exited():
        ev = [e for e in denv.events(kind="ecs") if e.get("action") == "task_stopped" and e.get("task") == victim_id]
        assert ev, f"no task_stopped event for {victim_id} yet"
        assert "exited" in ev[-1]["reason"] and "137" in ev[-1]["reason"], ev[-1]
    eventually(stopped_as_exited, deadline_s=PROFILE.reconcile_interval_s * 4 + 10,
               what="the scheduler to see the killed container exited (exit code 137)")

    def replaced():
        now = _running(denv, region)
        assert victim_id not in now and len(now) >= CFG.service.min_tasks, f"running {list(now)}"
    eventually(replaced, deadline_s=PROFILE.task_provisioning_s + PROFILE.reconcile_interval_s * 4 + 30,
               what="a replacement task container RUNNING")


def test_block_region_pauses_its_containers_and_unblock_thaws_them(denv, client):
    region = "us-west-2"
    ids = [t["container"] for t in _containers(denv, region).values()]
    denv.control("POST", "/network/block", {"region": region, "mode": "hang"})
    try:
        assert {client.containers.get(c).status for c in ids} == {"paused"}
        assert region in denv.status()["docker"]["paused_regions"]
    finally:
        denv.control("POST", "/network/unblock", {"region": region})
    assert {client.containers.get(c).status for c in ids} == {"running"}

    def healthy_again():
        lb = denv.status()["load_balancers"][region]
        assert lb["healthy"] >= CFG.service.min_tasks, lb
    eventually(healthy_again, deadline_s=PROFILE.health_check_interval_s * (PROFILE.healthy_threshold + 2) + 15,
               what="targets healthy after the thaw")


def test_user_image_with_its_own_variable_names(tmp_path, client):
    """A user's image (here: the reference service behind different variable names) runs as the
    tasks, configured only through the contract's variables that [docker] names."""
    import io

    import requests

    base = images.ensure_service_image(client)
    user_tag = "gameday-test/user-service:1"
    cmd = ('exec python3 -m sut.service --host "$LISTEN_ADDR" --port "$PORT" --region "$REGION" --table "$TABLE_NAME" '
           '--endpoint "$DYNAMODB_ENDPOINT" --task-id "$GAMEDAY_TASK_ID"')
    dockerfile = f"FROM {base}\nCMD {json.dumps(['/bin/sh', '-c', cmd])}\n"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=user_tag, network_mode="none", rm=True)
    cfg = load_config(None, {"docker": {"image": user_tag, "host_env": "LISTEN_ADDR", "port_env": "PORT",
                                        "region_env": "REGION", "table_env": "TABLE_NAME",
                                        "endpoint_env": "DYNAMODB_ENDPOINT"}})
    e = DockerEnvironment(cfg, tmp_path)
    try:
        e.start()
        assert e.endpoints["docker"]["image"] == user_tag
        r = requests.put(e.lb_url("us-east-1") + "/items/user-k", json={"value": "v"}, timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()["region"] == "us-east-1" and r.headers["X-Gameday-Task"] in _running(e, "us-east-1")
        item = e.observer("dynamodb", "us-east-1").get_item(TableName=cfg.dynamodb.table, Key={"pk": {"S": "user-k"}})
        assert "Item" in item, "the user's task wrote to the table the contract named"
    finally:
        e.stop()
        client.images.remove(user_tag, force=True)


def test_sigkilled_harness_leaves_no_container(tmp_path, client):
    e = DockerEnvironment(CFG, tmp_path)
    e.start()
    run = e.endpoints["docker"]["run"]
    e.proc.kill()   # SIGKILL `gameday up`: its own stop never runs; the watchdog cleans up
    e.proc.wait()
    e.proc = None

    def swept():
        # sparse: no inspect per container (a container the watchdog removes between the list and
        # its inspect would raise NotFound instead of counting as gone)
        left = client.containers.list(all=True, sparse=True, filters={"label": f"{RUN_LABEL}={run}"})
        assert left == [], [c.id[:12] for c in left]
    eventually(swept, deadline_s=30, what="the watchdog to remove the SIGKILLed run's containers")


# -- the resilience suite on docker ----------------------------------------------------------------------
SUITE_TIMEOUT_S = 720   # the suite takes 250-300 s here (docs/docker.md); a hang must not outlive the test


@pytest.mark.whole_suite
@pytest.mark.timeout(SUITE_TIMEOUT_S + 300)   # + the local suite's turn, if it holds it (tests/scheduling.py)
def test_scenario_suite_passes_on_docker(tmp_path, client, whole_suite_turn):
    from gameday import procs

    run_dir = tmp_path / "run"
    log = tmp_path / "gameday-run.log"
    t0 = time.monotonic()
    # its own process group: on a timeout the whole tree (gameday run -> pytest -> gameday up) goes
    config = tmp_path / "gameday.toml"
    config.write_text(LIGHT_LOAD)   # the docker environment's evidence does not depend on the rate (tests/support.py)
    proc = procs.spawn([sys.executable, "-m", "gameday.cli", "run", "--env", "docker", "-c", str(config),
                        "--run-dir", str(run_dir)], log_path=log, cwd=REPO)
    try:
        proc.wait(timeout=SUITE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        procs.terminate(proc, grace_s=20)
        pytest.fail(f"the suite did not finish in {SUITE_TIMEOUT_S}s; its output ends:\n{log.read_text()[-3000:]}")
    took = time.monotonic() - t0
    out = log.read_text()[-6000:]
    summary_file = run_dir / "summary.json"
    assert summary_file.exists(), f"no summary.json:\n{out}"
    summary = json.loads(summary_file.read_text())
    print(f"suite on docker: {took:.0f}s, " + ", ".join(f"{s['name']}={s['outcome']}" for s in summary["scenarios"]))
    assert summary["env"] == "docker"
    assert len(summary["scenarios"]) >= 8
    outcomes = {s["name"]: s["outcome"] for s in summary["scenarios"]}
    assert set(outcomes.values()) <= {"passed", "skipped"}, f"{outcomes}\n{out}"
    assert proc.returncode == 0, out
    # a skip must say why (a capability the environment lacks)
    results = {p.parent.name: json.loads(p.read_text()) for p in (run_dir / "scenarios").glob("*/result.json")}
    for name, outcome in outcomes.items():
        if outcome == "skipped":
            assert (results.get(name) or {}).get("message"), f"{name} skipped without a reason"
    assert list(outcomes.values()).count("passed") >= 6, outcomes

    # every task of the run was a container, and none is left
    events = [json.loads(line) for line in (run_dir / "env" / "events.jsonl").read_text().splitlines()]
    started = [e for e in events if e.get("kind") == "ecs" and e.get("action") == "task_started"]
    assert started and all(e.get("container") for e in started)
    ready = [e for e in events if e.get("kind") == "docker" and e.get("action") == "ready"]
    assert ready, "the docker stack announces its run id"
    run = ready[0]["run"]
    assert client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run}"}) == []
    assert client.networks.list(filters={"label": f"{RUN_LABEL}={run}"}) == []


def test_user_image_that_acks_unstored_writes_fails_the_scenario(tmp_path, client):
    """The suite on docker can fail: a user's image whose service answers 200 to every PUT but
    never writes to DynamoDB loses every acknowledged write, and the scenario that stops its
    task containers and loses an AZ must FAIL on lost_acked_writes, saying how many."""
    import io

    base = images.ensure_service_image(client)
    user_tag = "gameday-test/acks-without-writing:1"
    # the reference service with its store's put replaced by a no-op that still reports success
    broken = ("import sys, time, sut.service as s; "
              "s.DynamoStore.put = lambda self, key, value, client_time, writer: {'written_at': time.time()}; "
              "sys.exit(s.main())")
    # the reference image's own command line (the image contract), with the module swapped for the mutant
    assert images.SERVICE_CMD.startswith("exec python3 -m sut.service ")
    cmd = images.SERVICE_CMD.replace("python3 -m sut.service", f'python3 -c "{broken}"', 1)
    dockerfile = f"FROM {base}\nCMD {json.dumps(['/bin/sh', '-c', cmd])}\n"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=user_tag, network_mode="none", rm=True)
    config = tmp_path / "gameday.toml"
    config.write_text(f'[docker]\nimage = "{user_tag}"\n' + LIGHT_LOAD)
    run_dir = tmp_path / "run"
    try:
        proc = subprocess.run([sys.executable, "-m", "gameday.cli", "run", "--env", "docker", "-c", str(config),
                               "-k", "task_loss_is_absorbed", "--run-dir", str(run_dir)],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    finally:
        client.images.remove(user_tag, force=True)
    out = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 1, f"the scenario must fail (exit 1), got {proc.returncode}:\n{out}"
    summary = json.loads((run_dir / "summary.json").read_text())
    (s,) = summary["scenarios"]
    assert s["name"] == "task_loss_is_absorbed" and s["outcome"] == "failed", s
    result = json.loads((run_dir / "scenarios" / s["name"] / "result.json").read_text())
    failed = {c["name"]: c for c in result["checks"] if not c["valid"]}
    assert "lost_acked_writes" in failed, f"failed checks: {sorted(failed)}"
    assert s["metrics"]["lost_acked_writes"] > 0 and s["metrics"]["acked_writes"] > 0
    assert "lost_acked_writes" in out, "the failure is named in the run's output"
