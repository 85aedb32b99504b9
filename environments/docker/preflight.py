"""Is Docker there? One clear line when it is not, naming how to start it."""

from __future__ import annotations

import os
import shutil

START_HINT = "start it with `dockerd &` (as root) or `systemctl start docker`"


class DockerUnavailable(Exception):
    """Docker is missing or its daemon does not answer; the message says what to do."""


def docker_client(timeout_s: float = 30.0):
    """A docker SDK client for the daemon DOCKER_HOST (or the default socket) names, after one ping."""
    try:
        import docker
        import docker.errors
    except ImportError:
        raise DockerUnavailable("the docker Python package is missing: pip install testcontainers") from None
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not os.environ.get("DOCKER_HOST") and shutil.which("dockerd") is None and not os.path.exists("/var/run/docker.sock"):
        raise DockerUnavailable("Docker is not installed: `apt-get install docker.io` (Debian), then " + START_HINT)
    try:
        client = docker.DockerClient(base_url=host, timeout=timeout_s)
        client.ping()
    except docker.errors.DockerException as e:
        raise DockerUnavailable(f"Docker is not running (no daemon answers at {host}): {START_HINT}"
                                f" [{type(e).__name__}: {str(e)[:160]}]") from None
    return client
