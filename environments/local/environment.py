"""`LocalEnvironment`: the embedded local environment as a client process sees it. It runs
`gameday up --json` as a child process (so Locust, the service and the pytest process never
share an interpreter) and drives it through its control API. Faults are applied by its driver
table (environments/local/faults_local.py), which calls that control API."""

from __future__ import annotations

import json
import select
import subprocess
import time
from pathlib import Path

import requests

from gameday.environments.base import Environment
from gameday.environments.local import prelaunch
from gameday.environments.local.faults_local import LOCAL_FAULT_DRIVERS
from gameday import aws, procs
from gameday.config import GamedayConfig

START_TIMEOUT_S = 90.0


class EnvironmentStartError(Exception):
    pass


class LocalEnvironment(Environment):
    kind = "local"
    capabilities = frozenset({
        "stop_tasks", "lose_az", "block_data_plane", "block_control_plane",
        "pause_replication", "api_fault", "lambda_fault", "replication_drop", "fail_responses",
    })
    fault_drivers = LOCAL_FAULT_DRIVERS
    up_args: tuple[str, ...] = ()   # extra `gameday up` arguments (the docker environment: --env docker)
    tasks_are_processes = True      # the built-in service's tasks fork from a zygote (docker: containers)

    def __init__(self, config: GamedayConfig, run_dir: Path, *, config_path: Path | None = None,
                 failover_handler: str | None = None, state_file: Path | None = None):
        super().__init__(config)
        self.run_dir = Path(run_dir)
        self.config_path = config_path
        self.failover_handler = failover_handler
        self.state_file = state_file or (self.run_dir / "env" / "state.json")
        self.proc: subprocess.Popen | None = None
        self.endpoints: dict = {}
        self._session = requests.Session()

    @classmethod
    def attach(cls, endpoints: dict, config: GamedayConfig | None = None) -> "LocalEnvironment":
        """A client of an environment that is already running (`gameday up`, or another process's
        LocalEnvironment), from its endpoints (the state file): it talks to the control API and
        the AWS endpoint, starts nothing, and its stop() leaves the environment running.
        The config is the one the environment was started with (env/config.json next to its
        timeline) when that file is there."""
        if config is None:
            from gameday.config import load_config

            cfg_file = Path(endpoints.get("run_dir") or ".") / "config.json"
            regions = list(endpoints.get("regions") or {})
            config = load_config(cfg_file if cfg_file.is_file() else None,
                                 None if cfg_file.is_file() or not regions else {"regions": regions})
        env = cls(config, Path(endpoints.get("run_dir") or "."))
        env.endpoints = dict(endpoints)
        return env

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> "LocalEnvironment":
        env_dir = self.run_dir / "env"
        env_dir.mkdir(parents=True, exist_ok=True)
        # The child gets the already-validated config as a file, so what runs is what we hold.
        cfg_file = env_dir / "config.json"
        cfg_file.write_text(self.config.model_dump_json(indent=2))
        # prelaunch: the moto servers and the task zygote start before the child imports the CLI
        argv = [procs.python(), "-m", "gameday.environments.local.prelaunch", "up", "--json", "--run-dir", str(env_dir),
                "--config", str(cfg_file), "--state-file", str(self.state_file)]
        if self.failover_handler:
            argv += ["--failover-handler", self.failover_handler]
        argv += list(self.up_args)
        log = env_dir / "stack.log"
        # stdout answers with the endpoints line; stderr (progress and errors) goes to the log
        regions = list(dict.fromkeys([*self.config.regions, "us-east-1"]))   # as LocalStack: Route 53's home too
        early = prelaunch.spec_for(regions, env_dir / "logs",
                                   task_zygote=self.tasks_are_processes and not self.config.service.command)
        self.proc = procs.spawn(argv, log_path=log, stdout=subprocess.PIPE,
                                env={"PYTHONUNBUFFERED": "1", prelaunch.ENV_VAR: early})
        deadline = time.monotonic() + START_TIMEOUT_S
        line = b""
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise EnvironmentStartError(
                        f"local environment exited with code {self.proc.returncode} while starting; "
                        f"last log lines:\n{_tail(log)}")
                ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
                if ready:
                    line = self.proc.stdout.readline()
                    if line.strip().startswith(b"{"):
                        break
            else:
                raise EnvironmentStartError(f"local environment not ready after {START_TIMEOUT_S:.0f}s; "
                                            f"last log lines:\n{_tail(log)}")
            self.endpoints = json.loads(line)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            procs.terminate(self.proc, grace_s=15)
            self.proc = None

    # -- control API ---------------------------------------------------------------------------------
    def control(self, method: str, path: str, body: dict | None = None, timeout_s: float = 10.0):
        r = self._session.request(method, self.endpoints["control_url"] + path, json=body, timeout=timeout_s)
        data = r.json()
        if r.status_code >= 400:
            raise ValueError(data.get("error", r.text))
        return data

    def post_event(self, event: dict, timeout_s: float = 2.0) -> None:
        self.control("POST", "/events", event, timeout_s=timeout_s)

    # -- Environment interface ------------------------------------------------------------------------
    def client(self, service: str, region: str):
        return aws.client(service, region, self.endpoints["aws_endpoint"])

    def observer(self, service: str, region: str):
        home = aws.ROUTE53_HOME if service == "route53" else region
        return aws.client(service, home, self.endpoints["moto_urls"][home])

    def lb_url(self, region: str) -> str:
        return self.endpoints["regions"][region]["lb_url"]

    def region_of_address(self, address: str) -> str | None:
        for r, v in self.endpoints["regions"].items():
            if v["lb_address"] == address:
                return r
        return None

    def resolver(self, honour_ttl: bool = True):
        from gameday.resolver import ServiceResolver
        return ServiceResolver(self.endpoints["dns"]["host"], self.endpoints["dns"]["port"], honour_ttl=honour_ttl)

    def status(self) -> dict:
        return self.control("GET", "/status")

    def events(self, since: int = 0, kind: str | None = None) -> list[dict]:
        q = f"?since={since}" + (f"&kind={kind}" if kind else "")
        return self.control("GET", "/events" + q)


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return f"(no log at {path})"
