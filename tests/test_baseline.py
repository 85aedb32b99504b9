"""The baseline before a scenario (scenarios/baseline.py): which alarms it still waits for."""

from __future__ import annotations

import pytest

from gameday.scenarios.baseline import never_evaluated

NEW = {"StateValue": "INSUFFICIENT_DATA", "StateReason": "Unchecked: Initial alarm creation"}
MISSING = {"StateValue": "INSUFFICIENT_DATA",
           "StateReason": "Insufficient Data: 1 datapoint was unknown."}   # evaluated, missing data kept missing
OK = {"StateValue": "OK", "StateReason": "Threshold Crossed: 1 datapoint [2.0] was not less than the threshold (1.0)."}


@pytest.mark.parametrize("alarm, watched, waits", [
    (NEW, True, True),          # the first period has not closed: a story needing OK would see INSUFFICIENT_DATA
    (NEW, False, False),        # an alarm the scenario does not rely on is not waited for
    (MISSING, True, False),     # evaluated: INSUFFICIENT_DATA is its state, not a start-up
    (OK, True, False),
])
def test_the_baseline_waits_only_for_watched_alarms_cloudwatch_never_evaluated(alarm, watched, waits):
    alarms = {"gameday-healthy-hosts-us-east-1": alarm, "gameday-request-count-us-east-1": OK}
    got = never_evaluated(alarms, {"gameday-healthy-hosts-us-east-1"} if watched else set())
    assert got == (["gameday-healthy-hosts-us-east-1"] if waits else [])
