"""Route 53's answers over a run, as states with durations, read from the timeline's `dns_change`
events; and the check that a failover moved the answer once, straight to the healthy region.

Pure: events in, states and checks out. The local DNS server applies each committed change batch
as its own state (environments/local/dns.py), so a failover made of two ChangeResourceRecordSets
calls shows its intermediate answer here (two weights at 0: every region answered), with how long
clients could have been given it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence


@dataclass(frozen=True)
class DnsState:
    """One answer Route 53 gave for a name, from `since` until `until` (epoch s; None: still current)."""

    answer: tuple[str, ...]
    since: float
    until: float | None = None

    def lasted_s(self, now: float | None = None) -> float | None:
        end = self.until if self.until is not None else now
        return None if end is None else round(end - self.since, 3)


def _same_name(a: str, b: str) -> bool:
    return a.rstrip(".").lower() == b.rstrip(".").lower()


def dns_states(events: Iterable[dict], *, name: str | None = None, since_wall: float = 0.0) -> list[DnsState]:
    """The answers `name` (every name when None) had from `since_wall` on, in order: the answer
    current at `since_wall` (from the last change before it; omitted when none is known) and then
    one state per `dns_change` that changed the answer."""
    changes = sorted((e for e in events if e.get("kind", "dns_change") == "dns_change"
                      and (name is None or _same_name(str(e.get("name", "")), name))),
                     key=lambda e: float(e.get("time", 0)))
    states: list[DnsState] = []
    for e in changes:
        t, answer = float(e.get("time", 0)), tuple(sorted(e.get("new") or ()))
        if t < since_wall:
            states = [DnsState(answer, t)]   # the answer before the window: only the latest counts
            continue
        if states and states[-1].answer == answer:
            continue                         # a repeated answer is no change for a client
        if states:
            states[-1] = DnsState(states[-1].answer, states[-1].since, t)
        states.append(DnsState(answer, t))
    return states


def changes_since(states: Sequence[DnsState], since_wall: float) -> list[DnsState]:
    """The states that began at or after `since_wall` (each is one change of the answer)."""
    return [s for s in states if s.since >= since_wall]


def describe_states(states: Sequence[DnsState], named: Callable[[Sequence[str]], str] = ", ".join,
                    now: float | None = None) -> str:
    """'[a] (us-west-2) for 0.27s, then [b] ...': each answer, whose it is, and how long it lasted."""
    parts = []
    for s in states:
        lasted = s.lasted_s(now)
        held = (" (current)" if lasted is None or s.until is None else
                f" for {lasted * 1000:.0f} ms" if lasted < 0.1 else f" for {lasted:.2f}s")
        parts.append(f"[{', '.join(s.answer) or 'no answer'}] ({named(s.answer)}){held}")
    return ", then ".join(parts) or "no change"


def moved_once(states: Sequence[DnsState], target: Sequence[str], *, since_wall: float, region: str,
               named: Callable[[Sequence[str]], str] = ", ".join, until_wall: float | None = None) -> dict:
    """Check `dns_moved_once`: between `since_wall` and `until_wall` (None: the end of the timeline)
    the answer changed exactly once, straight to `target` (the healthy region's addresses). An
    intermediate answer (a change made in two calls: two weights at 0 answer every region) or a
    move elsewhere first fails, naming each answer and how long clients could get it."""
    window = [s for s in changes_since(states, since_wall) if until_wall is None or s.since <= until_wall]
    want = tuple(sorted(target))
    valid = [s.answer for s in window] == [want]
    if valid:
        detail = f"Route 53 answered {region} ({', '.join(want)}) after one change"
    else:
        detail = (f"expected one change of the answer, straight to {region} ({', '.join(want)}); saw "
                  f"{len(window)}: {describe_states(window, named)}")
        between = [s for s in window[:-1] if s.answer != want]
        if window and window[-1].answer == want and between:
            detail += (f". Clients could be answered {describe_states(between, named)} on the way: make the "
                       f"change one ChangeBatch (Route 53 applies each batch as it comes)")
    return {"name": "dns_moved_once", "valid": valid, "detail": detail,
            "metrics": {"dns_changes": len(window),
                        "intermediate_s": round(sum(s.lasted_s() or 0.0 for s in window[:-1]), 3) if window else 0.0}}
