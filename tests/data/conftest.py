# user_scenarios/ holds a team's own scenarios (docs/scenarios.md), data for tests that copy it
# into a user directory: the harness's own test run must not collect them as its tests.
collect_ignore = ["user_scenarios"]
