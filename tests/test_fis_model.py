"""FIS's schedule and states (environments/local/fis_model.py) as a fake-clock table: when each
action starts and ends (startAfter, durations), what GetExperiment reports at each moment, and how
StopExperiment, a stop condition and a failed action end it (FIS API reference: ExperimentState,
ExperimentActionState, ExperimentTemplateAction.startAfter; FIS user guide: stop conditions)."""

from __future__ import annotations

import pytest

from gameday.environments.local.fis_model import (ActionSpec, Halt, Window, experiment_state, next_change,
                                                  parse_duration, schedule, select_targets)


@pytest.mark.parametrize("text, seconds", [
    ("PT2M", 120), ("PT30S", 30), ("PT1H30M", 5400), ("PT0.5S", 0.5), ("P1D", 86400), ("P1DT1S", 86401),
    ("pt10s", 10),
])
def test_iso_8601_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "2M", "PT2X", "P1DT", "-PT1S"])
def test_a_duration_that_is_not_iso_8601_is_refused(text):
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_duration(text)


# A (2 s) and B (3 s) start together; C starts after both ended (at 3 s) and runs 1 s.
PLAN = [ActionSpec("A", 2.0), ActionSpec("B", 3.0), ActionSpec("C", 1.0, start_after=("A", "B"))]


def test_start_after_waits_for_every_action_it_names():
    assert schedule(PLAN) == {"A": Window(0, 2), "B": Window(0, 3), "C": Window(3, 4)}
    # a chain: each after the one before
    assert schedule([ActionSpec("x", 1), ActionSpec("y", 2, ("x",)), ActionSpec("z", 1, ("y",))])["z"] == Window(3, 4)


@pytest.mark.parametrize("plan, message", [
    ([ActionSpec("A", 1, ("nope",))], "starts after 'nope': no such action"),
    ([ActionSpec("A", 1, ("B",)), ActionSpec("B", 1, ("A",))], "cycle: A -> B -> A"),
])
def test_an_impossible_schedule_is_refused(plan, message):
    with pytest.raises(ValueError, match=message):
        schedule(plan)


# elapsed seconds -> (experiment status, {action: status}) on course (no stop)
ON_COURSE = [
    (0.0, "running", {"A": "running", "B": "running", "C": "pending"}),
    (1.99, "running", {"A": "running", "B": "running", "C": "pending"}),
    (2.0, "running", {"A": "completed", "B": "running", "C": "pending"}),
    (3.0, "running", {"A": "completed", "B": "completed", "C": "running"}),
    (3.99, "running", {"A": "completed", "B": "completed", "C": "running"}),
    (4.0, "completed", {"A": "completed", "B": "completed", "C": "completed"}),
    (100.0, "completed", {"A": "completed", "B": "completed", "C": "completed"}),
]


@pytest.mark.parametrize("elapsed, status, actions", ON_COURSE)
def test_states_on_course(elapsed, status, actions):
    st = experiment_state(schedule(PLAN), elapsed)
    assert (st.status, {n: a.status for n, a in st.actions.items()}) == (status, actions)
    assert st.running == {n for n, s in actions.items() if s == "running"}


def test_a_completed_experiment_ends_when_its_last_action_does():
    st = experiment_state(schedule(PLAN), 10.0)
    assert st.end == 4.0 and st.actions["C"].start == 3.0 and st.actions["C"].end == 4.0
    assert experiment_state(schedule(PLAN), 1.0).end is None


STOP = Halt(2.5, "stopped", "Experiment stopped by user (StopExperiment).")
FAIL = Halt(3.2, "failed", "Action C failed: no such table", action="C")
ALARM = Halt(0.0, "stopped", "Experiment stopped: stop condition arn:...:alarm:x is in ALARM.")
FAIL_AT_START = Halt(0.0, "failed", "Action A failed: target not found", action="A")

# (halt, elapsed, effects undone?) -> (experiment status, {action: status}, experiment end)
HALTED = [
    (STOP, 2.0, True, "running", {"A": "completed", "B": "running", "C": "pending"}, None),   # not yet
    (STOP, 2.5, False, "stopping", {"A": "completed", "B": "stopped", "C": "cancelled"}, None),
    (STOP, 2.6, True, "stopped", {"A": "completed", "B": "stopped", "C": "cancelled"}, 2.5),
    (STOP, 9.0, True, "stopped", {"A": "completed", "B": "stopped", "C": "cancelled"}, 2.5),   # stays
    (FAIL, 3.2, False, "failed", {"A": "completed", "B": "completed", "C": "failed"}, 3.2),
    # a stop condition in ALARM at the start: what started with it is stopped, the rest cancelled
    (ALARM, 0.0, True, "stopped", {"A": "stopped", "B": "stopped", "C": "cancelled"}, 0.0),
    # a failure found while the first actions start: those started with it are stopped
    (FAIL_AT_START, 0.0, False, "failed", {"A": "failed", "B": "stopped", "C": "cancelled"}, 0.0),
]


@pytest.mark.parametrize("halt, elapsed, undone, status, actions, end", HALTED)
def test_states_when_stopped_or_failed(halt, elapsed, undone, status, actions, end):
    st = experiment_state(schedule(PLAN), elapsed, halt, undone=undone)
    assert (st.status, {n: a.status for n, a in st.actions.items()}, st.end) == (status, actions, end)
    if elapsed >= halt.at:
        assert st.reason == halt.reason and not st.running   # every effect must go
    if status == "stopped" and actions["B"] == "stopped":
        assert st.actions["B"].end == halt.at


def test_next_change_is_the_next_start_or_end():
    w = schedule(PLAN)
    assert [next_change(w, t) for t in (0.0, 1.0, 2.0, 3.0, 3.5, 4.0)] == [2.0, 2.0, 3.0, 4.0, 4.0, None]


@pytest.mark.parametrize("mode, picked", [
    ("ALL", ["a", "b", "c", "d"]), (None, ["a", "b", "c", "d"]), ("COUNT(2)", ["a", "b"]),
    ("PERCENT(50)", ["a", "b"]), ("PERCENT(30)", ["a", "b"]), ("count(9)", ["a", "b", "c", "d"]),
])
def test_selection_modes(mode, picked):
    assert select_targets(["c", "a", "d", "b", "a"], mode) == picked


def test_an_unknown_selection_mode_is_refused():
    with pytest.raises(ValueError, match="selectionMode 'SOME'"):
        select_targets(["a"], "SOME")
