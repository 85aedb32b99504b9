"""ECS tasks as containers: the docker environment's TaskLauncher (environments/local/ecs.py).

Each task is a testcontainers `DockerContainer` from the service image, on the host's network
(`network_mode=host`) and told to listen on 127.0.0.1 and its own port: the load balancer
probes and proxies it on loopback exactly as it does a task process, and the task reaches the
AWS endpoint (the router in front of moto) on loopback. No port is published and no network
is created, so no traffic leaves loopback.

The scheduler's verbs map onto Docker's: a task that stops by itself is a container that
exited (its exit code); `ecs.stop_task` is `docker stop` (SIGTERM, SIGKILL after the grace
period); a lost AZ is `docker kill`. Every stopped container's output is saved to the
task's log, then the container is removed. A region's containers can be frozen (`docker
pause`: the kernel still completes TCP handshakes on their listening sockets, so callers
time out, as with a black-holed network) and thawed.

CPU: ECS gives a task its `cpu` units as Docker cpu shares. Under Docker's default parent
cgroup (/docker) all task containers together weigh as much as one host thread, so on a busy
machine (moto, Locust and the load balancers are all host processes) every task starves at
once; with the cgroupfs driver each task container is placed at the top of the hierarchy
with TASK_CPU_SHARES, so it weighs about what a task process of the local environment does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from gameday.environments.docker.cleanup import OWNER_LABEL, RUN_LABEL
from gameday.environments.local.ecs import TASK_HOST, TaskSpec
from gameday import procs
from gameday.config import DockerSpec

log = logging.getLogger("gameday.docker.tasks")

# Docker cpu shares of a task container (ECS passes a task's cpu units the same way). Chosen by
# measurement, not 1024: a container is one scheduling entity however many threads it runs,
# while a task process of the local environment, like moto's and Locust's processes, weighs
# 1024 per runnable thread. Under the surge scenario's load a write took 280 ms (median) with
# 1024 and 18 ms with 4096; the local environment's task processes: 15 ms.
TASK_CPU_SHARES = 4096
POLL_CACHE_S = 0.25   # the readiness watcher polls every 20 ms: ask the daemon at most this often


def _own_process(pid: int | None, container_id: str) -> bool:
    """Whether /proc/<pid> is this container's process: its cgroup path names the container (the
    cgroupfs and systemd drivers, cgroup v1 and v2 alike). A daemon in another pid namespace (a
    VM, a remote host, rootless) reports pids that may name an unrelated local process."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return container_id in f.read()
    except OSError:
        return False


def _proc_start_time(pid: int | None) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat), or None if this process
    cannot see it (a remote daemon, Docker in a VM, another pid namespace), or it is gone or a zombie."""
    fields = procs.stat_fields(pid) if pid else None
    return fields[19] if fields and len(fields) > 19 and fields[0] != "Z" else None


def _disable_ryuk() -> None:
    # testcontainers' reaper is a container from a registry image, which cannot be pulled here;
    # environments.docker.cleanup does its job (labels, sweep, watchdog)
    from testcontainers.core.config import testcontainers_config

    testcontainers_config.ryuk_disabled = True


class ContainerTask:
    """One running task container (TaskHandle)."""

    def __init__(self, container, region: str, log_path: Path):
        self.container = container          # testcontainers DockerContainer
        self.region = region
        self.log_path = log_path
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        self.id = wrapped.id
        self._pid = wrapped.attrs["State"].get("Pid") or None
        # A running container is a process this host can see (the local daemon): while it lives,
        # poll() asks /proc, not the daemon. Asking the daemon costs an API round trip and JSON
        # per task per scheduler tick, CPU the 2-core machine's harness needs during a surge.
        self._start_time = _proc_start_time(self._pid) if _own_process(self._pid, self.id) else None
        self._rc: int | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._paused = False
        self._removed = False

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def returncode(self) -> int | None:
        return self._rc

    def info(self) -> dict:
        return {"container": self.id[:12]}

    def poll(self) -> int | None:
        import docker.errors

        if self._rc is not None or self._removed:
            return self._rc
        if self._start_time is not None and _proc_start_time(self._pid) == self._start_time:
            return None   # the same process still runs (a frozen one too); a reused pid differs in start time
        now = time.monotonic()
        if now - self._checked < POLL_CACHE_S:
            return None
        self._checked = now
        c = self.container.get_wrapped_container()
        try:
            c.reload()
        except docker.errors.NotFound:
            self._rc = 137   # removed behind our back (docker rm -f): as good as killed
            return self._rc
        except docker.errors.DockerException:
            return None      # daemon busy: ask again next time
        state = c.attrs["State"]
        if state.get("Status") in ("exited", "dead"):
            self._rc = int(state.get("ExitCode", -1))
        return self._rc

    def stop(self, grace_s: float) -> None:
        import docker.errors

        with self._lock:
            if self._removed:
                return
            c = self.container.get_wrapped_container()
            try:
                if self._paused:
                    c.unpause()   # a frozen process cannot act on SIGTERM
                    self._paused = False
                if grace_s > 0:
                    c.stop(timeout=max(1, round(grace_s)))
                else:
                    c.kill()
            except docker.errors.APIError:
                pass  # already exited
            try:
                c.reload()
                if self._rc is None:
                    self._rc = int(c.attrs["State"].get("ExitCode", -1))
                self._save_logs(c)
            except docker.errors.DockerException:
                pass
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
            self._removed = True
            self.container.get_docker_client().client.close()

    def _save_logs(self, c) -> None:
        try:
            data = c.logs(stdout=True, stderr=True)
        except Exception:  # noqa: BLE001 - logs are for people; the stop goes on
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as f:
            f.write(data)

    def set_paused(self, paused: bool) -> None:
        import docker.errors

        with self._lock:
            if self._removed or self._paused == paused:
                return
            c = self.container.get_wrapped_container()
            try:
                c.pause() if paused else c.unpause()
                self._paused = paused
            except docker.errors.APIError as e:
                log.warning("%s container %s failed: %s", "pause" if paused else "unpause", self.id[:12], e)


class DockerTaskLauncher:
    """TaskLauncher: each task a container from `image`, configured through the image contract
    (docs/docker.md): host, port, region, table and endpoint as environment variables."""

    def __init__(self, image: str, spec: DockerSpec, run_id: str, *, cgroup_parent: str | None = None):
        _disable_ryuk()
        self.image = image
        self.spec = spec
        self.run_id = run_id
        self.owner = os.getpid()
        self._lock = threading.Lock()
        self._live: dict[str, list[ContainerTask]] = {}
        self._paused_regions: set[str] = set()
        self._cpu = {"cpu_shares": TASK_CPU_SHARES, "cgroup_parent": cgroup_parent} if cgroup_parent else {}

    def container_env(self, spec: TaskSpec) -> dict[str, str]:
        d = self.spec
        env = {k: v for k, v in spec.env.items() if k.startswith(("AWS_", "GAMEDAY_", "PYTHONUNBUFFERED"))}
        env.update({d.host_env: TASK_HOST, d.port_env: str(spec.port), d.region_env: spec.region,
                    d.table_env: spec.env.get("GAMEDAY_TABLE", ""), d.endpoint_env: spec.env.get("AWS_ENDPOINT_URL", ""),
                    "GAMEDAY_HOST": TASK_HOST})
        env.update(d.env)
        return env

    def launch(self, spec: TaskSpec) -> ContainerTask:
        import docker.errors
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import ContainerStatusWaitStrategy

        name = f"gameday-{self.run_id}-{spec.region}-{spec.task_id[:12]}"
        container = (
            DockerContainer(self.image)   # the daemon DOCKER_HOST names, as preflight checked
            .with_name(name)
            .with_envs(**self.container_env(spec))
            .with_kwargs(network_mode="host", init=True, auto_remove=False, **self._cpu,
                         labels={RUN_LABEL: self.run_id, OWNER_LABEL: str(self.owner),
                                 "gameday.region": spec.region, "gameday.az": spec.az, "gameday.task": spec.task_id})
            # started (not exited at once); listening on its port is the scheduler's readiness check
            .waiting_for(ContainerStatusWaitStrategy())
        )
        try:
            container.start()
        except StopIteration:
            pass  # the container exited at once: the scheduler sees its exit code at its next tick
        except (docker.errors.DockerException, TimeoutError, ConnectionError) as e:
            try:
                container.stop()
            except Exception:  # noqa: BLE001 - it may not exist at all
                pass
            # the scheduler's "cannot start" path (CannotStartContainerError) takes OSError
            raise OSError(f"{type(e).__name__}: {str(e)[:300]}") from None
        task = ContainerTask(container, spec.region, spec.log_path)
        with self._lock:
            self._live.setdefault(spec.region, []).append(task)
            self._live[spec.region] = [t for t in self._live[spec.region] if not t._removed]
        return task

    def set_region_paused(self, region: str, paused: bool) -> int:
        """Freeze (or thaw) every live container of the region; returns how many."""
        with self._lock:
            (self._paused_regions.add if paused else self._paused_regions.discard)(region)
            tasks = [t for t in self._live.get(region, []) if not t._removed]
        for t in tasks:
            t.set_paused(paused)
        return len(tasks)

    def status(self) -> dict:
        with self._lock:
            return {"image": self.image, "run": self.run_id, "paused_regions": sorted(self._paused_regions),
                    "containers": {r: [t.id[:12] for t in ts if not t._removed] for r, ts in self._live.items()}}
