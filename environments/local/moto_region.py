"""One moto server process per region: the honest model of a region's AWS control plane,
and twice the throughput of one process on two cores (docs/architecture.md, measured facts)."""

from __future__ import annotations

import time
from pathlib import Path

import requests
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from gameday import procs
from gameday.net import free_port


class MotoServer:
    def __init__(self, region: str, logs_dir: Path | None = None, port: int = 0, host: str = "127.0.0.1",
                 module: str = "gameday.environments.local.moto_main"):
        self.region = region
        self.module = module   # moto.server: plain moto, the baseline of benchmarks/bench_moto.py
        self.host = host
        self.port = port or free_port(host)
        self.logs_dir = logs_dir
        self.proc = None
        self.started_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> "MotoServer":
        t0 = time.monotonic()
        log = self.logs_dir / f"moto-{self.region}.log" if self.logs_dir else None
        self.proc = procs.spawn([procs.python(), "-m", self.module, "-H", self.host, "-p", str(self.port)], log)

        @retry(stop=stop_after_delay(timeout_s), wait=wait_fixed(0.05),
               retry=retry_if_exception_type((requests.ConnectionError, AssertionError)), reraise=True)
        def _ready() -> None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server for {self.region} exited with {self.proc.returncode}; see {log}")
            r = requests.get(self.url + "/moto-api/data.json", timeout=1)
            assert r.status_code == 200

        _ready()
        self.started_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        procs.terminate(self.proc)

    def __enter__(self) -> "MotoServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
