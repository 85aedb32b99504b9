"""One moto server process per region: the honest model of a region's AWS control plane,
and twice the throughput of one process on two cores (docs/architecture.md, measured facts)."""

from __future__ import annotations

import json
import select
import subprocess
import time
from pathlib import Path

from gameday import procs
from gameday.net import free_port

HARNESS_MODULE = "gameday.environments.local.moto_main"


class MotoServerError(RuntimeError):
    pass


class MotoServer:
    def __init__(self, region: str, logs_dir: Path | None = None, port: int = 0, host: str = "127.0.0.1",
                 module: str = HARNESS_MODULE):
        self.region = region
        self.module = module   # moto.server: plain moto, the baseline of benchmarks/bench_moto.py
        self.host = host
        self.port = port or free_port(host)
        self.logs_dir = logs_dir
        self.proc = None
        self.started_s: float | None = None
        self._t0 = 0.0
        self.results: dict[str, str] = {}   # what the plan's calls saved (provision.plan)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self.logs_dir / f"moto-{self.region}.log" if self.logs_dir else None

    def start(self, timeout_s: float = 60.0, plan: list[dict] | None = None) -> "MotoServer":
        """Start the server; with `plan` (provision.plan()'s calls for this server), it makes them
        in-process before it serves, so it is provisioned once start() returns."""
        if self.module != HARNESS_MODULE:
            if plan:
                raise ValueError(f"only {HARNESS_MODULE} provisions in-process, not {self.module}")
            self._t0 = time.monotonic()
            self.proc = procs.spawn([procs.python(), "-m", self.module, "-H", self.host, "-p", str(self.port)],
                                    self.log_path)
            self._poll_ready(timeout_s)
            self.started_s = time.monotonic() - self._t0
            return self
        self.launch(with_plan=bool(plan))
        if plan:
            self.send_plan(plan)
        return self.wait_ready(timeout_s)

    def launch(self, with_plan: bool = True) -> "MotoServer":
        """Spawn the process and return at once: it imports moto while the caller prepares the plan
        (send_plan; the server reads it only once moto is loaded), then wait_ready()."""
        self._t0 = time.monotonic()
        argv = [procs.python(), "-m", self.module, "-H", self.host, "-p", str(self.port)]
        self.proc = procs.spawn(argv + (["--plan-stdin"] if with_plan else []), self.log_path,
                                stdin=subprocess.PIPE if with_plan else subprocess.DEVNULL, stdout=subprocess.PIPE)
        return self

    def send_plan(self, plan: list[dict]) -> None:
        try:
            self.proc.stdin.write(json.dumps(plan).encode())
            self.proc.stdin.close()
        except BrokenPipeError:
            pass   # it exited before reading: wait_ready() says so, with its log

    def wait_ready(self, timeout_s: float = 60.0) -> "MotoServer":
        self._await_ready_line(timeout_s)
        self.started_s = time.monotonic() - self._t0
        return self

    def _await_ready_line(self, timeout_s: float) -> None:
        """The server writes one line once its socket listens (moto_main.serve): wait for it, or
        for the process to exit (a failed provisioning call: the traceback is in the log)."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else b""
        self.proc.stdout.close()
        if not line:
            try:
                code = self.proc.wait(timeout=2) if ready else None   # end of file: it is exiting
            except subprocess.TimeoutExpired:
                code = None
            self.stop()
            why = f"exited with {code}" if code is not None else f"not serving after {timeout_s:.0f}s"
            raise MotoServerError(f"moto server for {self.region} {why}; see {self.log_path}:\n{self._log_tail()}")
        self.results = json.loads(line)["results"]

    def _poll_ready(self, timeout_s: float) -> None:
        import requests   # the baseline's way only (benchmarks): the harness's server says when it is ready
        from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

        @retry(stop=stop_after_delay(timeout_s), wait=wait_fixed(0.05),
               retry=retry_if_exception_type((requests.ConnectionError, AssertionError)), reraise=True)
        def _ready() -> None:
            if self.proc.poll() is not None:
                raise MotoServerError(f"moto server for {self.region} exited with {self.proc.returncode}; "
                                      f"see {self.log_path}")
            r = requests.get(self.url + "/moto-api/data.json", timeout=1)
            assert r.status_code == 200

        _ready()

    def _log_tail(self, n: int = 12) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:]) if self.log_path else ""
        except OSError:
            return ""

    def stop(self) -> None:
        procs.terminate(self.proc)

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
