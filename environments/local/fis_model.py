"""AWS FIS experiments' schedule and states as pure functions of time: the rules the local FIS
runner (fis.py, the adapter on ctx.clock) applies, tested on a fake clock (tests/test_fis_model.py).

What FIS documents, and how it is read here:
- An experiment's actions start together when it starts, except an action with `startAfter`,
  which starts once every action it names has ended (ExperimentTemplateAction.startAfter).
- An action with a `duration` parameter (ISO 8601, e.g. PT2M) runs that long, then ends
  ("completed"); the experiment is "completed" once all its actions have.
- StopExperiment, or a stop condition (a CloudWatch alarm of the experiment in ALARM): the
  actions running then are "stopped", those not started yet "cancelled"; the experiment is
  "stopping" until every action's effect is undone, then "stopped".
- An action that fails (its target cannot be resolved, a parameter is invalid): that action
  "failed", the others stop as above, the experiment "failed" with the reason.
State values: ExperimentState.status and ExperimentActionState.status in the FIS API reference.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable

EXPERIMENT_STATUSES = ("pending", "initiating", "running", "completed", "stopping", "stopped", "failed", "cancelled")
ACTION_STATUSES = ("pending", "initiating", "running", "completed", "cancelled", "stopping", "stopped", "failed",
                   "skipped")
TERMINAL = frozenset({"completed", "stopped", "failed", "cancelled"})

STOPPED_BY_USER = "Experiment stopped by user (StopExperiment)."
_DURATION_RE = re.compile(r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?"
                          r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


def parse_duration(text: str) -> float:
    """Seconds in an ISO 8601 duration as FIS takes it (PT2M, PT90S, PT1H30M, P1D)."""
    m = _DURATION_RE.match(str(text).strip().upper())
    if not m or not any(m.groupdict().values()) or str(text).strip().upper().endswith("T"):
        raise ValueError(f"duration {text!r} is not an ISO 8601 duration such as PT2M or PT30S")
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return g["d"] * 86400 + g["h"] * 3600 + g["m"] * 60 + g["s"]


def select_targets(arns: Iterable[str], selection_mode: str | None) -> list[str]:
    """The resources a target takes from those it lists: ALL, COUNT(n), PERCENT(n). FIS picks
    COUNT/PERCENT at random; here the first ones in ARN order, so a run is repeatable."""
    ordered = sorted(dict.fromkeys(arns))
    mode = (selection_mode or "ALL").strip().upper()
    if mode == "ALL":
        return ordered
    m = re.fullmatch(r"(COUNT|PERCENT)\((\d+)\)", mode)
    if not m:
        raise ValueError(f"selectionMode {selection_mode!r}: one of ALL, COUNT(n), PERCENT(n)")
    n = int(m.group(2))
    return ordered[:n] if m.group(1) == "COUNT" else ordered[:math.ceil(len(ordered) * n / 100)]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    duration_s: float = 0.0          # how long the action's effect lasts (its `duration` parameter)
    start_after: tuple[str, ...] = ()


@dataclass(frozen=True)
class Window:
    """When an action runs, in seconds after the experiment started."""
    start: float
    end: float


def schedule(actions: Iterable[ActionSpec]) -> dict[str, Window]:
    """Each action's window: it starts when the last action it starts after has ended (0 with no
    startAfter) and lasts its duration. A startAfter naming no action, or a cycle, is a ValueError."""
    by_name = {a.name: a for a in actions}
    windows: dict[str, Window] = {}
    visiting: list[str] = []

    def window(name: str) -> Window:
        if name in windows:
            return windows[name]
        if name in visiting:
            raise ValueError(f"actions start after each other in a cycle: {' -> '.join([*visiting, name])}")
        visiting.append(name)
        a = by_name[name]
        for before in a.start_after:
            if before not in by_name:
                raise ValueError(f"action {name!r} starts after {before!r}: no such action in the experiment")
        start = max((window(before).end for before in a.start_after), default=0.0)
        visiting.pop()
        windows[name] = Window(start, start + a.duration_s)
        return windows[name]

    for name in by_name:
        window(name)
    return windows


@dataclass(frozen=True)
class Halt:
    """The experiment was stopped (StopExperiment, a stop condition) or an action failed, `at`
    seconds after it started."""
    at: float
    status: str                       # "stopped" | "failed"
    reason: str
    action: str | None = None         # the action that failed


@dataclass(frozen=True)
class ActionState:
    status: str
    reason: str
    start: float | None = None        # seconds after the experiment started
    end: float | None = None


@dataclass(frozen=True)
class ExperimentState:
    status: str
    reason: str
    actions: dict[str, ActionState] = field(default_factory=dict)
    end: float | None = None          # seconds after the experiment started, once it has ended

    @property
    def running(self) -> set[str]:
        """The actions whose effect is in place at this moment."""
        return {n for n, a in self.actions.items() if a.status == "running"}


def _action_on_course(w: Window, t: float) -> ActionState:
    if t < w.start:
        return ActionState("pending", "Action is pending: it starts after other actions end.")
    if t < w.end:
        return ActionState("running", "Action is running.", w.start)
    return ActionState("completed", "Action completed.", w.start, w.end)


def _action_halted(name: str, w: Window, halt: Halt) -> ActionState:
    if name == halt.action:
        return ActionState("failed", halt.reason, halt.at, halt.at)
    if w.end <= halt.at and w.start <= halt.at:
        return ActionState("completed", "Action completed.", w.start, w.end)
    if w.start <= halt.at:   # it started (a halt at its very start finds it started: its effect goes)
        return ActionState("stopped", "Action was stopped: the experiment " +
                           ("was stopped." if halt.status == "stopped" else "failed."), w.start, halt.at)
    return ActionState("cancelled", "Action was cancelled: the experiment ended before it started.")


def experiment_state(windows: dict[str, Window], elapsed: float, halt: Halt | None = None,
                     *, undone: bool = True) -> ExperimentState:
    """The experiment and each action `elapsed` seconds after it started. `undone`: every effect
    of a halted experiment has been rolled back (until then a stopped one is "stopping")."""
    if halt is not None and elapsed >= halt.at:
        actions = {n: _action_halted(n, w, halt) for n, w in windows.items()}
        if halt.status == "failed":
            return ExperimentState("failed", halt.reason, actions, halt.at)
        if not undone:
            return ExperimentState("stopping", halt.reason, actions)
        return ExperimentState("stopped", halt.reason, actions, halt.at)
    actions = {n: _action_on_course(w, elapsed) for n, w in windows.items()}
    if all(a.status == "completed" for a in actions.values()):
        end = max((w.end for w in windows.values()), default=0.0)
        return ExperimentState("completed", "Experiment completed.", actions, end)
    return ExperimentState("running", "Experiment is running.", actions)


def next_change(windows: dict[str, Window], elapsed: float) -> float | None:
    """The next moment (seconds after the start) an action starts or ends, None if none is left."""
    later = [t for w in windows.values() for t in (w.start, w.end) if t > elapsed]
    return min(later, default=None)
