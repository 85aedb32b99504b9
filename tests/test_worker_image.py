"""The Locust worker image (environments/docker/worker_image.py) and the manifests in deploy/.

The image is built with the docker environment's registry-free recipe (the Debian base made
with debootstrap, the host's own copies of locust and gameday, no network) and run as a Locust
worker in a container, connected to a master this test starts on the host: the master sees it,
the requests of the run are the container's, made against the local environment, and their
history reaches the master over Locust's messages (the container shares no directory with it).

The deploy/ files are checked statically: they parse, and they name the command, environment
variables and ports the image uses (a drift between the manifests and the image is a failure).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path

import pytest
import requests
import yaml

from gameday import procs, state
from gameday.config import load_config
from gameday.environments.docker import images
from gameday.environments.docker import worker_image as wi
from gameday.loadgen import history as hist
from gameday.loadgen import history_stream
from gameday.net import free_port

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
CFG = load_config(None)
PROFILE = CFG.profile("local")
# the image tests build and run containers; the deploy/ checks override this with needs()
pytestmark = [pytest.mark.slow, pytest.mark.needs_env, pytest.mark.needs("docker", "debootstrap")]
TEST_LABELS = {"gameday.test": "worker-image"}
SURGE_REGION = "us-west-2"
SURGE_RATE = 10          # requests/s: the proof is that the container makes requests, not how many
HOLD_S = 4
CONTAINER_START_S = 30   # python + locust import in a fresh container on 2 busy cores (measured ~2 s)


@pytest.fixture(scope="module")
def client(docker_daemon):
    from gameday.environments.docker.preflight import docker_client

    c = docker_client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def gameday_files() -> dict[str, bytes]:
    """gameday's files read once: other work may edit the checkout while this module runs."""
    return wi.gameday_files()


@pytest.fixture(scope="module")
def worker_tag(client, gameday_files) -> str:
    t0 = time.monotonic()
    tag = wi.ensure_worker_image(client, progress=print, files=gameday_files)
    first_s = time.monotonic() - t0
    size_mb = client.images.get(tag).attrs["Size"] / 1e6
    print(f"worker image {tag}: first call {first_s:.1f}s, {size_mb:.0f} MB")
    return tag


def test_the_worker_image_is_cached_by_its_content(client, worker_tag, gameday_files):
    t0 = time.monotonic()
    assert wi.ensure_worker_image(client, files=gameday_files) == worker_tag
    cached_s = time.monotonic() - t0
    print(f"worker image: cached call {cached_s:.2f}s")
    assert cached_s < 5, "a second call must find the image, not rebuild it"
    base = images.base_tag()
    assert wi.worker_tag(base, gameday_files) == worker_tag
    # any change in gameday's files is a different image
    first = sorted(gameday_files)[0]
    assert wi.worker_tag(base, {**gameday_files, first: gameday_files[first] + b"\n"}) != worker_tag
    assert wi.worker_tag(base, {**gameday_files, "gameday/new.py": b""}) != worker_tag
    assert "gameday/loadgen/locustfile.py" in gameday_files and "gameday/__init__.py" in gameday_files
    config = client.images.get(worker_tag).attrs["Config"]
    assert config["Cmd"] == ["/bin/sh", "-c", wi.WORKER_CMD]
    assert f"{wi.MASTER_PORT_ENV}={wi.DEFAULT_MASTER_PORT}" in config["Env"]


def test_the_image_carries_the_hosts_locust_and_gameday(client, worker_tag):
    out = client.containers.run(
        worker_tag, ["python3", "-c", "import locust, gevent, zmq, gameday.loadgen.locustfile as f; "
                                      "print(locust.__version__, f.__file__)"],
        remove=True, network_mode="none", labels=TEST_LABELS)
    version, where = out.decode().split()[-2:]
    assert version == metadata.version("locust")   # never imported here: Locust patches the process
    assert where.startswith(wi.SITE + "/gameday/loadgen/"), where


def test_a_worker_told_no_master_stops_at_once_saying_what_to_set(client, worker_tag):
    worker = client.containers.run(worker_tag, detach=True, network_mode="none", labels=TEST_LABELS)
    try:
        code = worker.wait(timeout=CONTAINER_START_S)["StatusCode"]
        logs = worker.logs().decode(errors="replace")
    finally:
        worker.remove(force=True)
    assert code != 0 and f"set {wi.MASTER_HOST_ENV} to the address of the Locust master" in logs, (code, logs)


def _stats(csv_path: Path) -> dict[str, int]:
    with open(csv_path, newline="") as f:
        return {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(f)}


def _start_master(env, out: Path, port: int):
    """`gameday load --master` on the host's loopback; its run directory is out/run."""
    ep = state.write_state(env.endpoints, out / "endpoints.json")
    argv = [procs.python(), "-m", "gameday.cli", "load", "--master", "--expect-workers", "1",
            "--run-dir", str(out / "run"), "--bind-host", "127.0.0.1", "--port", str(port), "--state-file", str(ep),
            "--shape", "constant", "--surge-region", SURGE_REGION, "--surge-rate", str(SURGE_RATE),
            "--follower-rate", "2", "--hold", f"{HOLD_S}s",
            # Locust's own options, passed on
            "--expect-workers-max-wait", str(CONTAINER_START_S), "--only-summary", "--exit-code-on-error", "0"]
    return procs.spawn(argv, out / "master.log")


def test_the_image_runs_as_a_worker_of_a_master_on_the_host(client, worker_tag, tmp_path):
    from gameday.environments.local import LocalEnvironment

    with LocalEnvironment(CFG, tmp_path / "env") as env:
        before = env.status()["load_balancers"][SURGE_REGION]["requests"]
        port = free_port()
        master = _start_master(env, tmp_path, port)
        # the image's own command (CMD: gameday load --worker), told where the master is by the environment only;
        # host networking: the master and the local environment are on the host's loopback
        worker = client.containers.run(worker_tag, detach=True, network_mode="host", labels=TEST_LABELS,
                                       environment=wi.worker_environment("127.0.0.1", port))
        try:
            limit = CONTAINER_START_S + HOLD_S + PROFILE.period_s + 30
            try:
                code = worker.wait(timeout=limit)["StatusCode"]
            except requests.exceptions.RequestException:
                pytest.fail(f"the worker container did not end within {limit}s; master log:\n"
                            f"{(tmp_path / 'master.log').read_text()[-2000:]}")
            logs = worker.logs().decode(errors="replace")
            mounts = worker.attrs["Mounts"]
            master.wait(timeout=limit)
        finally:
            worker.remove(force=True)
            procs.terminate(master)
        served = env.status()["load_balancers"][SURGE_REGION]["requests"] - before
    master_log = (tmp_path / "master.log").read_text()
    assert code == 0, f"the worker container exited with {code}:\n{logs[-2000:]}"
    assert re.search(r"\(index 0\) reported as ready\. 1 workers connected", master_log), master_log[-2000:]
    assert "gameday load: cannot start the run" not in logs, logs[-2000:]
    stats = _stats(tmp_path / "run" / "locust_stats.csv")
    # the master makes no request itself: every one it counts is the container worker's
    assert stats["Aggregated"] >= 0.5 * SURGE_RATE * HOLD_S, stats
    surge = sum(n for name, n in stats.items() if name.startswith("regional ") and name.endswith(SURGE_REGION))
    assert surge > 0, stats
    assert served >= surge, f"{SURGE_REGION}'s load balancer served {served}, Locust counted {surge}"
    # the worker shares no directory with the master: its history came over Locust's messages
    assert mounts == [], mounts
    # seen once in CI beside the rest (session 13): no stream ever opened at the master; the worker's
    # own log is what can say why
    assert (tmp_path / "run" / hist.MERGED_NAME).exists(), (
        f"the master merged no history (no worker stream opened); worker container log:\n{logs[-3000:]}\n"
        f"master log:\n{master_log[-1500:]}")
    entries, cut = hist.read_entries(tmp_path / "run" / hist.MERGED_NAME)
    done = [e for e in entries if e["type"] in ("ok", "fail", "info")]
    assert not cut and len(done) == stats["Aggregated"], f"{len(done)} completions, Locust counted {stats}"
    assert {e["worker"] for e in entries} == {"w0"}
    report = history_stream.read_completeness(tmp_path / "run")
    assert report["complete"] and report["workers"]["w0"]["missing"] == 0, report


# -- deploy/ ----------------------------------------------------------------------------------------------
def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _kind(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}


@pytest.mark.needs()
def test_the_team_dockerfile_runs_the_same_worker_command():
    text = (DEPLOY / "Dockerfile.worker").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^ARG WHEEL\b", text, re.M) and "pip install" in text
    assert f"CMD [\"/bin/sh\", \"-c\", {json.dumps(wi.WORKER_CMD)}]" in text
    assert re.search(rf"^ENV .*\b{wi.MASTER_PORT_ENV}={wi.DEFAULT_MASTER_PORT}\b", text, re.M)
    assert "environments/docker/worker_image.py" in text, "it must say what CI builds instead"


@pytest.mark.needs()
def test_compose_runs_a_master_and_scaled_workers_of_the_image():
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    master, worker = services["master"], services["worker"]
    command = " ".join(master["command"])
    assert command.startswith("gameday load --master ") and f"--port {wi.DEFAULT_MASTER_PORT}" in command
    assert "--expect-workers ${GAMEDAY_WORKERS" in command
    assert "command" not in worker, "the workers run the image's own command"
    assert "volumes" not in worker, "workers share no directory with the master"
    env = worker["environment"]
    assert env[wi.MASTER_HOST_ENV].startswith("${GAMEDAY_MASTER_HOST:-master}")
    assert env[wi.MASTER_PORT_ENV] == str(wi.DEFAULT_MASTER_PORT)
    assert master["image"] == worker["image"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        r = subprocess.run(["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                           capture_output=True, text=True, env={"GAMEDAY_WHEEL": "gameday.whl", "GAMEDAY_STATE_FILE": "/tmp/state.json",
                                "PATH": os.environ["PATH"]})
        assert r.returncode == 0, r.stderr


@pytest.mark.needs()
def test_kubernetes_master_service_and_workers_agree_on_ports_and_names():
    master_docs = _docs(DEPLOY / "k8s" / "master.yaml")
    master, service = _kind(master_docs, "Deployment"), _kind(master_docs, "Service")
    workers = _kind(_docs(DEPLOY / "k8s" / "workers.yaml"), "Deployment")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"locust-master": (wi.DEFAULT_MASTER_PORT, wi.DEFAULT_MASTER_PORT), "web": (8089, 8089)}
    assert service["spec"]["selector"] == master["spec"]["template"]["metadata"]["labels"]
    (mc,) = master["spec"]["template"]["spec"]["containers"]
    args = " ".join(mc["args"])
    assert f"--master --master-bind-host 0.0.0.0 --master-bind-port {wi.DEFAULT_MASTER_PORT}" in args, args
    assert "--web-port 8089" in args and "--gameday-history-stream on" in args, args
    assert "volumeMounts" not in workers["spec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in mc["ports"]} == {wi.DEFAULT_MASTER_PORT, 8089}
    (wc,) = workers["spec"]["template"]["spec"]["containers"]
    assert "args" not in wc and "command" not in wc, "the workers run the image's own command"
    assert _env(wc) == {wi.MASTER_HOST_ENV: service["metadata"]["name"],
                        wi.MASTER_PORT_ENV: str(wi.DEFAULT_MASTER_PORT)}
    assert wc["image"] == mc["image"]
    # one Locust worker is one process on one core: the request and the limit say so
    assert wc["resources"]["requests"]["cpu"] == wc["resources"]["limits"]["cpu"] == "1"
    assert workers["spec"]["replicas"] >= 1
    assert workers["spec"]["selector"]["matchLabels"] != master["spec"]["selector"]["matchLabels"]
