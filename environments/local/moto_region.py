"""One moto server process per region: the honest model of a region's AWS control plane,
and twice the throughput of one process on two cores (docs/architecture.md, measured facts).

`MotoServer` starts one region's server as a process of its own (tests, benchmarks); `MotoFleet`
(the stack's cold start) starts one process that imports moto once and forks every region's
server from it (moto_main.fork_servers): still one server process per region, the import paid
once instead of once per region.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from pathlib import Path

from gameday import procs
from gameday.environments.local.zygote import ZygoteReader
from gameday.net import free_port, reserved_port

HARNESS_MODULE = "gameday.environments.local.moto_main"


class MotoServerError(RuntimeError):
    pass


class MotoServer:
    def __init__(self, region: str, logs_dir: Path | None = None, port: int = 0, host: str = "127.0.0.1",
                 module: str = HARNESS_MODULE):
        self.region = region
        self.module = module   # moto.server: plain moto, the baseline of benchmarks/bench_moto.py
        self.host = host
        # the harness's server is handed its socket, bound here (net.reserved_port): its port cannot
        # be taken while it imports moto; plain moto.server (a benchmark's baseline) binds its own
        self.socket = reserved_port(host) if not port and module == HARNESS_MODULE else None
        self.port = port or (self.socket.getsockname()[1] if self.socket else free_port(host))
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
        fds = (self.socket.fileno(),) if self.socket else ()
        argv += ["--fd", str(fds[0])] if fds else []
        try:
            self.proc = procs.spawn(argv + (["--plan-stdin"] if with_plan else []), self.log_path,
                                    stdin=subprocess.PIPE if with_plan else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    pass_fds=fds)
        finally:
            self.release_socket()
        return self

    def release_socket(self) -> None:
        """Close this process's copy of the server's socket (the server process holds its own)."""
        if self.socket is not None:
            self.socket.close()
            self.socket = None

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
        return _tail(self.log_path, n) if self.log_path else ""

    def stop(self) -> None:
        procs.terminate(self.proc)

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class MotoFleet:
    """Every region's moto server, forked from one zygote process that imported moto once:
    launch() (the zygote imports and warms moto), send_plans() (each region's provisioning
    calls), wait_ready() (every server provisioned and serving), stop()."""

    def __init__(self, regions: list[str], logs_dir: Path, host: str = "127.0.0.1"):
        self.servers = {r: MotoServer(r, logs_dir, host=host) for r in regions}
        self.logs_dir = Path(logs_dir)
        self.host = host
        self.proc: subprocess.Popen | None = None   # the zygote
        self._t0 = 0.0
        self.reader: ZygoteReader | None = None   # the zygote's messages: servers ready, servers exited

    @property
    def log_path(self) -> Path:
        return self.logs_dir / "moto-zygote.log"

    @property
    def launched_at(self) -> float:
        """time.monotonic() when launch() ran."""
        return self._t0

    def launch(self) -> "MotoFleet":
        self._t0 = time.monotonic()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        argv = [procs.python(), "-m", HARNESS_MODULE, "-H", self.host, "--logs-dir", str(self.logs_dir)]
        fds = []
        for region, server in self.servers.items():
            if server.socket is None:   # released by an earlier launch: the server binds PORT itself
                argv += ["--fork", region, str(server.port), "-"]
            else:
                argv += ["--fork", region, str(server.port), str(server.socket.fileno())]
                fds.append(server.socket.fileno())
        try:
            self.proc = procs.spawn(argv, self.log_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    pass_fds=tuple(fds))
        finally:
            for server in self.servers.values():
                server.release_socket()
        self.reader = ZygoteReader(self.proc.stdout, "moto-fleet")
        return self

    def send_plans(self, plans: dict[str, list[dict]]) -> None:
        try:
            self.proc.stdin.write(json.dumps({r: plans.get(r, []) for r in self.servers}).encode())
            self.proc.stdin.close()
        except BrokenPipeError:
            pass   # it exited before reading: wait_ready() says so, with its log

    def wait_ready(self, timeout_s: float = 60.0) -> "MotoFleet":
        """Every server's ready line (each region's own, the zygote's stdout), or a MotoServerError
        naming the region (and its log) that exited, or the zygote's log if it died itself."""
        deadline = time.monotonic() + timeout_s
        waiting = set(self.servers)
        while waiting:
            msg = self.reader.next(deadline - time.monotonic())
            if msg is None:
                self._fail(None, f"not serving after {timeout_s:.0f}s" if time.monotonic() >= deadline
                           else f"exited with {self._zygote_code()}")
            server = self.servers[msg["region"]]
            if "exited" in msg:
                self._fail(server, f"exited with {msg['exited']}")
            server.proc, server.results = msg["handle"], msg["results"]
            server.started_s = time.monotonic() - self._t0
            waiting.discard(server.region)
        return self

    def _zygote_code(self) -> int | None:
        try:
            return self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None

    def _fail(self, server: MotoServer | None, why: str) -> None:
        self.stop()
        if server is None:
            raise MotoServerError(f"moto servers for {', '.join(self.servers)} {why}; see {self.log_path}:\n"
                                  f"{_tail(self.log_path)}")
        raise MotoServerError(f"moto server for {server.region} {why}; see {server.log_path}:\n{server._log_tail()}")

    def stop(self) -> None:
        """Each server (SIGTERM its group, reaped by the zygote), then the zygote, which exits once
        its servers have."""
        for server in self.servers.values():
            server.stop()
        procs.terminate(self.proc)
        if self.reader is not None:
            self.reader.thread.join(timeout=5)


def _tail(path: Path, n: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
