"""The docker environment: the local environment's whole model (moto per region on loopback,
load balancers, alarm evaluator, SNS -> Lambda runner, replication, Route 53 DNS), with every
ECS task a container from a service image: the reference service's (built here from sut/, no
image registry needed) or the user's own (config `[docker] image`, contract in docs/docker.md).

`DockerEnvironment` is `LocalEnvironment` driving `gameday up --env docker`: the same control
API, clients and fault driver table (environments/local/faults_local.py); what a fault does to
containers (a blocked region's are paused) happens behind that control API (docker/stack.py).
Before it starts that, it checks that Docker answers (one clear line if not) and builds the
images in this process, so a first run's image build is reported as such and is not counted
against the environment's start timeout.
"""

from __future__ import annotations

from gameday.environments.local import LocalEnvironment


class DockerEnvironment(LocalEnvironment):
    kind = "docker"
    up_args = ("--env", "docker")
    tasks_are_processes = False   # tasks are containers: no task zygote to prelaunch

    def start(self) -> "DockerEnvironment":
        from gameday.environments.docker import images
        from gameday.environments.docker.preflight import docker_client

        client = docker_client()
        try:
            if self.config.docker.image:
                images.check_user_image(client, self.config.docker.image)
            else:
                images.ensure_service_image(client, progress=lambda m: print(f"[gameday docker] {m}", flush=True))
        finally:
            client.close()
        return super().start()
