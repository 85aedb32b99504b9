"""How the harness's own tests are spread over pytest-xdist's workers (pyproject: `-n 5 --dist
loadgroup --no-loadscope-reorder`).

`--dist loadgroup` hands a worker whole units, an `xdist_group` at a time. The units here:

- every test that needs a part of the machine (tests/parts.py: Docker, Chromium, debootstrap)
  is in one unit, `machine-parts`, so one worker provides the parts, once: apt-get never runs
  twice at once, and the dockerd that worker starts is stopped by that worker after its last
  test (a worker that finished early would otherwise stop it under the other's docker tests);
- a module is one unit, so its module-scoped fixtures (an environment, a built wheel) are made
  once, unless it says `XDIST_SPREAD = True`: its tests are independent runs (each its own
  `gameday run`), each one a unit, so they balance the workers' last minutes; or it names its
  group, `XDIST_GROUP = "..."`;
- the longest units go first (xdist would order them by test count): the parts unit and the
  whole-suite runs (`whole_suite` marker), then modules marked `slow`, then the spread tests,
  then modules that start an environment (`needs_env`), then the rest in collection order.
  Inside the parts unit its whole-suite run (docker) comes last.

The whole-suite runs of the local and docker environments never run side by side (two of them
beside other scenario runs starved moto on 2 cores: read timeouts, failovers missed): each holds
`whole_suite_turn` (a lock file shared by the session's workers) while it runs. They used to share
the parts unit for that, which made the parts worker the session's longest (~720 s of ~740 s at
four workers): now the local one starts at once on a worker of its own, and the parts worker runs
its other tests while it waits for its turn.

Without xdist (`-n 0`) the same order applies and nothing else changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

import pytest

PARTS_GROUP = "machine-parts"
WHOLE_SUITE = "whole_suite"


def _module(item: pytest.Item):
    return getattr(item, "module", None)


def _unit(item: pytest.Item, needs_part) -> str | None:
    """The xdist group `item` belongs to (None: a unit of its own)."""
    if needs_part(item):
        return PARTS_GROUP
    module = _module(item)
    if module is not None and getattr(module, "XDIST_GROUP", None):
        return module.XDIST_GROUP
    if module is not None and not getattr(module, "XDIST_SPREAD", False):
        return module.__name__
    return None


def _whole_suite(item: pytest.Item) -> bool:
    return item.get_closest_marker(WHOLE_SUITE) is not None


def _rank(item: pytest.Item, unit: str | None) -> int:
    if unit == PARTS_GROUP or _whole_suite(item):
        return 0
    spread = getattr(_module(item), "XDIST_SPREAD", False)
    if item.get_closest_marker("slow") is not None:
        return 2 if spread else 1
    return 3 if item.get_closest_marker("needs_env") is not None else 4


def group_and_order(items: list[pytest.Item], needs_part) -> None:
    """Put each item in its unit (an xdist_group marker) and reorder `items` in place, longest first."""
    unit = {id(item): _unit(item, needs_part) for item in items}
    rank = {id(item): _rank(item, unit[id(item)]) for item in items}
    # a unit's tests stay together: a unit ranks as its highest-ranked test
    unit_rank: dict[str, int] = {}
    for item in items:
        u = unit[id(item)]
        if u is not None:
            item.add_marker(pytest.mark.xdist_group(u))
            unit_rank[u] = min(unit_rank.get(u, rank[id(item)]), rank[id(item)])
    # in the parts unit, its whole-suite run last: it may have to wait for the other's turn
    last = {id(item): unit[id(item)] == PARTS_GROUP and _whole_suite(item) for item in items}
    items[:] = sorted(items, key=lambda item: (unit_rank.get(unit[id(item)], rank[id(item)]), last[id(item)]))


@contextlib.contextmanager
def whole_suite_turn(tmp_path_factory: pytest.TempPathFactory):
    """Hold the session's whole-suite lock: wait while another worker's whole-suite run holds it.
    The lock file lives in the directory all of the session's xdist workers share (each worker's
    basetemp is a popen-gwN folder in it)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    with open(shared / "whole-suite.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)   # released when the file closes
        yield
