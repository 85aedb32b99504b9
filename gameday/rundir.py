"""Run directories: reports/runs/<run-id>/ with a `latest` link (docs/architecture.md, Jepsen-style)."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

RUNS_DIR = Path("reports") / "runs"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


def new_run_dir(base: Path | str = RUNS_DIR, run_id: str | None = None) -> Path:
    base = Path(base)
    run = base / (run_id or new_run_id())
    run.mkdir(parents=True, exist_ok=False)
    latest = base / "latest"
    tmp = base / f".latest-{os.getpid()}"
    try:
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(run.name)
        os.replace(tmp, latest)  # atomic: readers never see a missing `latest`
    except OSError:
        pass
    return run
