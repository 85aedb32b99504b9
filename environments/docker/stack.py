"""The docker environment's composition root: the local stack (moto per region, router,
load balancers, alarm evaluator, Lambda runner, replication, Route 53 DNS, control API: all
reused as they are) with every ECS task a container instead of a host process.

What changes, and only this:
  - before anything starts: Docker must answer (one clear line if not), leftovers of dead
    earlier runs are swept, the service image is built (cached by content hash) or the
    user's image is checked, and a watchdog is started that removes this run's containers
    if this process is SIGKILLed;
  - the ECS scheduler's TaskLauncher is DockerTaskLauncher;
  - a data-plane block (fault block_region) also freezes the region's containers (`docker
    pause`), and the unblock (the fault's rollback) thaws them;
  - stop() removes every container of the run, whatever happened before.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

from gameday.environments.docker import cleanup, images
from gameday.environments.docker.containers import DockerTaskLauncher
from gameday.environments.docker.preflight import docker_client
from gameday.environments.local.stack import LocalStack
from gameday.config import GamedayConfig

log = logging.getLogger("gameday.docker.stack")


class DockerStack(LocalStack):
    kind = "docker"

    def __init__(self, config: GamedayConfig, run_dir: Path, *, progress=None):
        super().__init__(config, run_dir, progress=progress)
        self.run_id = uuid.uuid4().hex[:10]
        self.client = None
        self.image: str | None = None
        self.launcher: DockerTaskLauncher | None = None
        self.watchdog = None

    def _start(self) -> None:
        self.client = docker_client()   # DockerUnavailable: one line, nothing started yet
        swept = cleanup.sweep(self.client)
        if any(swept.values()):
            self.progress(f"removed leftovers of earlier runs: {swept}")
        t0 = time.monotonic()
        if self.config.docker.image:
            self.image = images.check_user_image(self.client, self.config.docker.image)
        else:
            self.image = images.ensure_service_image(self.client, self.progress)
        self.timings["image"] = round(time.monotonic() - t0, 3)
        self.progress(f"image {self.image} ready in {self.timings['image']:.2f}s")
        self.watchdog = cleanup.start_watchdog(os.getpid(), self.run_id, self.run_dir / "logs" / "docker-watchdog.log")
        info = self.client.info()
        self.launcher = DockerTaskLauncher(self.image, self.config.docker, self.run_id,
                                           # see containers.py: a task's CPU share (cgroupfs driver only;
                                           # with systemd's a parent must be a slice)
                                           cgroup_parent="/" if info.get("CgroupDriver") == "cgroupfs" else None)
        super()._start()
        self.ctx.events.emit("docker", action="ready", run=self.run_id, image=self.image, image_s=self.timings["image"])

    def task_launcher(self):
        return self.launcher

    def _block(self, region: str, mode: str | None) -> dict:
        out = super()._block(region, mode)
        n = self.launcher.set_region_paused(region, mode is not None)
        self.ctx.events.emit("docker", action="paused" if mode else "unpaused", region=region, containers=n)
        return out

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        try:
            super().stop()   # the ECS scheduler stops and removes every task container
        finally:
            if self.client is not None:
                try:
                    left = cleanup.sweep(self.client, run=self.run_id)
                    if any(left.values()):
                        log.warning("removed containers the scheduler left behind: %s", left)
                except Exception:  # noqa: BLE001 - the watchdog sweeps again once this process is gone
                    log.exception("sweeping run %s failed", self.run_id)
                self.client.close()

    def endpoints(self) -> dict:
        ep = super().endpoints()
        ep["docker"] = {"image": self.image, "run": self.run_id, "run_label": f"{cleanup.RUN_LABEL}={self.run_id}",
                        "docker_host": os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"}
        return ep

    def status(self) -> dict:
        out = super().status()
        if self.launcher is not None:
            out["docker"] = self.launcher.status()
        return out
