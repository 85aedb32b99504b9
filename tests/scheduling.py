"""How the harness's own tests are spread over pytest-xdist's workers (pyproject: `-n 3 --dist
loadgroup --no-loadscope-reorder`).

`--dist loadgroup` hands a worker whole units, an `xdist_group` at a time. The units here:

- every test that needs a part of the machine (tests/parts.py: Docker, Chromium, debootstrap)
  is in one unit, `machine-parts`, so one worker provides the parts, once: apt-get never runs
  twice at once, and the dockerd that worker starts is stopped by that worker after its last
  test (a worker that finished early would otherwise stop it under the other's docker tests);
- a module is one unit, so its module-scoped fixtures (an environment, a built wheel) are made
  once, unless it says `XDIST_SPREAD = True`: its tests are independent runs (each its own
  `gameday run`), each one a unit, so they balance the workers' last minutes; or it names its
  group, `XDIST_GROUP = "machine-parts"` (tests/test_main_job.py): the two whole-suite runs, local
  and docker, then run one after the other, never side by side (two of them beside a third
  scenario run starved moto on 2 cores: read timeouts, failovers missed);
- the longest units go first (xdist would order them by test count): the parts unit, then
  modules marked `slow`, then the spread tests, then modules that start an environment
  (`needs_env`), then the rest in collection order.

Without xdist (`-n 0`) the same order applies and nothing else changes.
"""

from __future__ import annotations

import pytest

PARTS_GROUP = "machine-parts"


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


def _rank(item: pytest.Item, unit: str | None) -> int:
    if unit == PARTS_GROUP:
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
    items[:] = sorted(items, key=lambda item: unit_rank.get(unit[id(item)], rank[id(item)]))
