"""What makes the local environment's cold start short, each part on its own:

- MotoFleet: one zygote imports moto once and forks every region's server; each is still a
  server process of its own (its state, port, process group, log), stopped and reaped one by
  one, and none outlives the zygote;
- TaskZygote: the built-in service's tasks forked from one process that imported boto3 once;
  each is a real process with its own environment and exit status; a team's command is spawned;
- the load balancers check a newly registered target at once (ALB: registered, a target "must
  pass one health check to be considered healthy"; Elastic Load Balancing user guide, "Health
  checks for Application Load Balancer target groups"), not at their next round.

The whole cold start is measured by benchmarks/bench_environment.py (ratio to the bare parts)."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from gameday import aws, procs
from gameday.assertions.eventually import eventually
from gameday.clock import FakeClock
from gameday.config import load_config
from gameday.environments.local import ecs
from gameday.environments.local.context import LocalContext
from gameday.environments.local.loadbalancer import LoadBalancers
from gameday.environments.local.moto_region import MotoFleet, MotoServer
from gameday.environments.local.zygote import SERVICE_MODULE, TaskZygote
from gameday.events import EventLog
from gameday.net import free_port, free_port_on_all, region_address

CFG = load_config(None)
PROFILE = CFG.profile("local")
START_S = 30.0   # a process start on a busy 2-core machine, with a wide margin


def _alive(pid: int) -> bool:
    fields = procs.stat_fields(pid)
    return fields is not None and fields[0] != "Z"   # a zombie is dead, only not reaped yet


def _table(name: str, region: str) -> dict:
    return {"service": "dynamodb", "region": region, "op": "create_table", "params": {
        "TableName": name, "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}], "BillingMode": "PAY_PER_REQUEST"}}


# -- the moto fleet ------------------------------------------------------------------------------------------

def test_forked_servers_are_one_process_per_region_each_stopped_and_reaped(tmp_path):
    regions = ["us-east-1", "us-west-2"]
    fleet = MotoFleet(regions, tmp_path / "logs").launch()
    try:
        fleet.send_plans({r: [_table(f"t-{r}", r)] for r in regions})
        fleet.wait_ready(START_S)
        servers = fleet.servers
        pids = {r: s.proc.pid for r, s in servers.items()}
        assert len(set(pids.values()) | {fleet.proc.pid}) == 3, pids   # a process each, none the zygote
        for r, pid in pids.items():
            assert os.getpgid(pid) == pid                              # its own group: a stop signals it alone
            assert Path(f"/proc/{pid}/comm").read_text().strip() == f"moto-{r}"
            assert (tmp_path / "logs" / f"moto-{r}.log").exists()
            # its own state (its plan only), on its own port, in both of its regions' views
            tables = aws.client("dynamodb", r, servers[r].url).list_tables()["TableNames"]
            assert tables == [f"t-{r}"], (r, tables)
        servers["us-west-2"].stop()
        assert servers["us-west-2"].proc.returncode == 0 and not _alive(pids["us-west-2"])
        assert _alive(pids["us-east-1"])                               # the other region keeps serving
        assert aws.client("dynamodb", "us-east-1", servers["us-east-1"].url).list_tables()["TableNames"]
    finally:
        fleet.stop()
    assert not any(_alive(p) for p in pids.values())
    assert fleet.proc.poll() is not None                               # the zygote exits with its servers


def _bindable(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as a server binds (past TIME_WAIT)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.parametrize("kind", ["fleet", "server"])
def test_a_servers_port_is_held_from_the_start_and_freed_when_it_stops(tmp_path, kind):
    """The port is bound before the server process exists (net.reserved_port, handed over): no other
    program can take it while moto imports, as happened to a free_port() number in CI; the starter
    and the zygote keep no copy, so a stopped server's port is free again."""
    regions = ["us-east-1", "us-west-2"]
    fleet = MotoFleet(regions, tmp_path / "logs") if kind == "fleet" else None
    servers = fleet.servers if fleet else {"us-east-1": MotoServer("us-east-1", tmp_path / "logs")}
    ports = {r: s.port for r, s in servers.items()}
    assert not any(_bindable(p) for p in ports.values()), f"{ports}: free for anyone before the servers start"
    try:
        if fleet:
            fleet.launch()
            fleet.send_plans({})
            fleet.wait_ready(START_S)
        else:
            servers["us-east-1"].start(START_S)
        for r, server in servers.items():
            assert server.socket is None, "the starter still holds the socket"
            assert aws.client("dynamodb", r, server.url).list_tables()["TableNames"] == []
            assert server.url.endswith(f":{ports[r]}")
        victim = servers["us-east-1"]
        victim.stop()
        assert _bindable(ports["us-east-1"]), "a stopped server's port stays held (by the zygote or the starter)"
    finally:
        fleet.stop() if fleet else servers["us-east-1"].stop()


def test_forked_servers_do_not_outlive_their_zygote(tmp_path):
    fleet = MotoFleet(["us-east-1", "us-west-2"], tmp_path / "logs").launch()
    try:
        fleet.send_plans({})
        fleet.wait_ready(START_S)
        pids = [s.proc.pid for s in fleet.servers.values()]
        os.kill(fleet.proc.pid, signal.SIGKILL)    # no stop of its own: PR_SET_PDEATHSIG does it
        eventually(lambda: _none_alive(pids), deadline_s=5, what="servers gone with their zygote")
        # and their handles say so: a stop() then returns at once
        eventually(lambda: _all_exited(fleet), deadline_s=5, what="handles learn the exit")
    finally:
        fleet.stop()


def _none_alive(pids: list[int]) -> None:
    assert not [p for p in pids if _alive(p)]


def _all_exited(fleet: MotoFleet) -> None:
    assert all(s.proc.poll() is not None for s in fleet.servers.values())


# -- the task zygote -------------------------------------------------------------------------------------------

@pytest.fixture
def moto(tmp_path):
    server = MotoServer("us-east-1", tmp_path / "moto").start(START_S, plan=[_table("items", "us-east-1")])
    yield server
    server.stop()


def _service_args(port: int, endpoint: str, task_id: str) -> list[str]:
    return ["--port", str(port), "--region", "us-east-1", "--table", "items", "--endpoint", endpoint,
            "--task-id", task_id, "--az", "us-east-1a"]


def test_a_forked_task_is_a_real_process_with_its_own_environment_and_exit_status(tmp_path, moto, monkeypatch):
    # the zygote's environment has no credentials: a task that can write got its own (the launch's)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    zygote = TaskZygote(tmp_path / "zygote.log").start()
    try:
        port, log = free_port(), tmp_path / "task.log"
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        task = zygote.launch(_service_args(port, moto.url, "t1"), env, log)
        assert task.pid != zygote.proc.pid and os.getpgid(task.pid) == task.pid and task.poll() is None
        url = f"http://127.0.0.1:{port}"
        eventually(lambda: _get(url + "/health"), deadline_s=START_S, what="forked task listening")
        assert Path(f"/proc/{task.pid}/comm").read_text().strip() == "task-us-east-1"   # ps tells tasks apart
        r = requests.put(url + "/items/k1", json={"value": 1}, timeout=5)
        assert r.status_code == 200 and r.json()["task"] == "t1", r.text
        os.killpg(task.pid, signal.SIGTERM)                       # as procs.terminate stops a task
        assert task.wait(10) == 0                                 # the service's graceful exit
        assert not _alive(task.pid)                               # reaped by the zygote
        assert "serving us-east-1 table items" in log.read_text() # its log is its own file
        bad = zygote.launch(["--port", str(free_port())], {}, tmp_path / "bad.log")
        assert bad.wait(10) == 2                                  # argparse's exit code, as `python -m` gives
        assert "required" in (tmp_path / "bad.log").read_text()
    finally:
        zygote.stop()


def _get(url: str) -> None:
    try:
        status = requests.get(url, timeout=1).status_code
    except requests.ConnectionError as e:
        raise AssertionError(f"not listening: {e}") from None
    assert status == 200, status


class _Forked(Exception):
    pass


def test_the_launcher_forks_only_the_built_in_service_and_spawns_any_other_command(tmp_path):
    class Recorder:   # a zygote that only says it was asked
        running = True
        log_path = tmp_path / "zygote.log"

        def __init__(self):
            self.launched = []

        def launch(self, args, env, log_path):
            self.launched.append(args)
            raise _Forked

    zygote = Recorder()
    launcher = ecs.ProcessLauncher(zygote)
    other = [sys.executable, "-c", "import sys; sys.exit(7)"]
    task = launcher.launch(ecs.TaskSpec("us-east-1", "t", "us-east-1a", 1, other, {}, tmp_path / "t.log"))
    assert isinstance(task.proc, subprocess.Popen) and task.proc.wait(10) == 7 and zygote.launched == []
    builtin = [sys.executable, "-m", SERVICE_MODULE, "--port", "1"]
    with pytest.raises(_Forked):
        launcher.launch(ecs.TaskSpec("us-east-1", "t", "us-east-1a", 1, builtin, {}, tmp_path / "u.log"))
    assert zygote.launched == [["--port", "1"]]
    zygote.running = False   # a zygote that died: the built-in service is spawned instead
    spec = ecs.TaskSpec("us-east-1", "t", "us-east-1a", 1, [sys.executable, "-m", SERVICE_MODULE, "--bad"], {},
                        tmp_path / "v.log")
    task = launcher.launch(spec)
    assert isinstance(task.proc, subprocess.Popen) and task.proc.wait(20) == 2 and len(zygote.launched) == 1


# -- the load balancers check a new target at once ----------------------------------------------------------------

class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


class _Scheduler:
    """The ECS scheduler as the load balancers see it: targets, and a word when they change."""

    def __init__(self, regions):
        self._targets = {r: [] for r in regions}
        self._listeners = []

    def targets(self, region: str) -> list:
        return list(self._targets[region])

    def on_targets_changed(self, listener) -> None:
        self._listeners.append(listener)

    def register(self, region: str, target) -> None:
        self._targets[region].append(target)
        for listener in self._listeners:
            listener()


def test_a_registered_target_gets_its_first_health_check_at_once(tmp_path):
    """On a fake clock that never moves, a registered target is healthy: its check did not wait
    for the next round (which would never come)."""
    east = CFG.regions[0]
    addresses = {r: region_address(i) for i, r in enumerate(CFG.regions)}
    ctx = LocalContext(config=CFG, profile=PROFILE, run_dir=tmp_path, events=EventLog(None), moto_urls={},
                       lb_addresses=addresses, lb_port=free_port_on_all(list(addresses.values())), clock=FakeClock())
    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=target.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    sched = _Scheduler(CFG.regions)
    lbs = LoadBalancers(ctx, sched).start()
    try:
        t0 = ctx.clock.time()
        sched.register(east, ecs.Target("t1", "az1", "127.0.0.1", target.server_address[1]))
        eventually(lambda: _healthy(lbs, east), deadline_s=5, what="new target checked at registration")
        assert ctx.clock.time() == t0
    finally:
        lbs.stop()
        target.shutdown()
        target.server_close()


def _healthy(lbs: LoadBalancers, region: str) -> None:
    assert lbs.status()[region]["healthy"] == 1, lbs.status()[region]


# -- prelaunch: the zygotes start before `gameday up` imports the CLI ------------------------------------------

def test_a_prelaunched_fleet_is_taken_only_by_the_stack_it_was_launched_for(tmp_path):
    # Catches a stack running a fleet launched for other regions or another run's logs (its servers
    # would be provisioned for the wrong environment), and a mismatched fleet left running.
    import json

    from gameday.environments.local import prelaunch

    spec = json.loads(prelaunch.spec_for(["us-east-1"], tmp_path / "logs", task_zygote=False))
    prelaunch.launch(spec)
    fleet = prelaunch._launched["fleet"][-1]
    assert prelaunch.take_fleet(["us-east-1", "us-west-2"], tmp_path / "logs") is None
    eventually(lambda: _zygote_ended(fleet), deadline_s=5, what="the unmatched fleet stopped")
    prelaunch.launch(spec)
    taken = prelaunch.take_fleet(["us-east-1"], tmp_path / "logs")
    try:
        assert taken is not None and prelaunch.take_fleet(["us-east-1"], tmp_path / "logs") is None
    finally:
        taken.stop()


def _zygote_ended(fleet: MotoFleet) -> None:
    assert fleet.proc.poll() is not None


def _descendants(pid: int) -> list[str]:
    """The command lines of pid's descendants (from /proc)."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := procs.stat_fields(int(entry))) is not None:
            parent_of[int(entry)] = int(fields[1])
    found, frontier = [], {pid}
    while frontier:
        frontier = {p for p, parent in parent_of.items() if parent in frontier}
        found += sorted(frontier)
    out = []
    for p in found:
        try:
            out.append(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return out


def test_the_environment_starts_its_zygotes_before_the_cli_and_only_once(tmp_path):
    # Catches prelaunched zygotes the stack does not take (a second fleet and task zygote would run
    # beside them: twice the imports on 2 cores) and a prelaunch that does not happen at all.
    from gameday.environments.local import LocalEnvironment

    env = LocalEnvironment(CFG, tmp_path).start()
    try:
        children = _descendants(env.proc.pid)
        assert env.endpoints["timings"]["moto_head_start"] > 0, env.endpoints["timings"]
    finally:
        env.stop()
    zygotes = [c for c in children if "--fork" in c or "environments.local.zygote" in c]
    # the forked servers, tasks and Lambda environments keep their zygote's command line: count each once
    assert len({("moto" if "--fork" in c else "task") for c in zygotes}) == 2
    assert sum(1 for c in zygotes if "--fork" in c) == 1 + len(CFG.regions), zygotes
