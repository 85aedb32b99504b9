"""Helpers for component tests: real moto servers per region, provisioned like the seed."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from environments.local.context import LocalContext
from environments.local.moto_region import MotoServer
from environments.local.provision import provision
from gameday.config import GamedayConfig, load_config
from gameday.events import EventLog
from gameday.net import region_address


@contextlib.contextmanager
def provisioned_context(config: GamedayConfig | None = None, run_dir: Path | None = None,
                        do_provision: bool = True):
    """Yield a LocalContext with one moto server per region (+ us-east-1 for Route 53), provisioned."""
    cfg = config or load_config(None)
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="gameday-test-"))
    regions = list(dict.fromkeys([*cfg.regions, "us-east-1"]))
    servers = {r: MotoServer(r, run_dir / "logs") for r in regions}
    try:
        for s in servers.values():
            s.start()
        ctx = LocalContext(
            config=cfg, profile=cfg.profile("local"), run_dir=run_dir,
            events=EventLog(run_dir / "events.jsonl"),
            moto_urls={r: s.url for r, s in servers.items()},
            lb_addresses={r: region_address(i) for i, r in enumerate(cfg.regions)},
        )
        # Without the router, customers talk to their region's moto directly (tests of one component).
        ctx.router_url = servers["us-east-1"].url
        if do_provision:
            ctx.provisioned = provision(ctx)
        yield ctx
    finally:
        for s in servers.values():
            s.stop()
