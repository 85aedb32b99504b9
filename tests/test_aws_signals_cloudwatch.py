"""environments/aws/signals_cloudwatch.py: the aws environment's `alarm` / `alarm_action` events from
DescribeAlarmHistory and `replication_lag` from ReplicationLatency, against the stand-in account
(`gameday up --aws-config`, as tests/test_aws_account.py runs it).

What is proven:
- the incremental read's rules over CloudWatch's own history selection (moto_fix_cloudwatch.select_history,
  the stand-in account's rules): items sharing a Timestamp, several pages, nothing before the start,
  nothing twice over many reads;
- a region blocked then unblocked: the aws environment's timeline gets the healthy-hosts alarm's ALARM
  and OK transitions stamped with the history's time, matching the local environment's own events of
  the same transitions, with their actions; nothing from before the start, no duplicates;
- alarm_fires reads the aws environment's events: a brief ALARM (SetAlarmState through the endpoint,
  OK again at once) is found; its twin without the source fails, still OK;
- a write in one region becomes a ReplicationLatency datapoint, then a replication_lag event.
`pytest -s` prints the measured delays and the calls per minute per region.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone

import pytest
import requests

from gameday.assertions.eventually import NotWithinDeadline, eventually
from gameday.assertions.failover import alarm_fires, alarm_name
from gameday.environments.aws import AwsEnvironment
from gameday.environments.aws import signals as signals_mod
from gameday.environments.aws import signals_cloudwatch
from gameday.environments.aws.signals_cloudwatch import (AlarmHistoryReader, HISTORY_API, LATENCY_API,
                                                         Regions, interval_for, metric_period)
from gameday.environments.local.moto_fix_cloudwatch import select_history, state_update_item
from tests.test_aws_account import account  # noqa: F401 - the stand-in account fixture, shared

REGION = "us-west-2"


# -- the incremental read, over CloudWatch's selection rules -------------------------------------------------

class HistoryOf:
    """DescribeAlarmHistory over a list of items, by the stand-in account's selection rules."""

    def __init__(self, items: list[dict]):
        self.items, self.calls = items, 0

    def describe_alarm_history(self, **kw) -> dict:
        self.calls += 1
        page, token = select_history(self.items, start=kw.get("StartDate"), scan_by=kw.get("ScanBy"),
                                     max_records=kw.get("MaxRecords"), next_token=kw.get("NextToken"))
        return {"AlarmHistoryItems": page, **({"NextToken": token} if token else {})}


def _item(name: str, t: float, new: str, old: str = "OK") -> dict:
    return state_update_item(name, (old, "was", None), (new, f"to {new}", '{"recentDatapoints":[1.0,7.0]}'),
                             datetime.fromtimestamp(t, tz=timezone.utc))


def test_items_sharing_a_timestamp_and_pages_are_read_once_and_nothing_before_the_start():
    t0 = 1_800_000_000.25
    items = [_item("a", t0 - 1, "ALARM")]                                           # before the start
    items += [_item(f"n{i}", t0 + 1, "ALARM") for i in range(150)]                  # one Timestamp, two pages
    hist = HistoryOf(items)
    reader = AlarmHistoryReader(hist, "us-east-1", [f"n{i}" for i in range(150)] + ["a"], since=t0, interval_s=1)
    first = reader.poll()
    assert len(first) == 150 and {e["alarm"] for e in first} == {f"n{i}" for i in range(150)}
    assert all(e["time"] == t0 + 1 and e["value"] == 7.0 and e["old"] == "OK" for e in first)
    assert hist.calls == 2                                                          # 100 a page
    items += [_item("n0", t0 + 1, "OK", "ALARM"), _item("n1", t0 + 2.5, "OK", "ALARM")]   # a late twin Timestamp
    again = [reader.poll() for _ in range(5)]
    assert [(e["alarm"], e["new"], e["time"]) for e in again[0]] == [("n0", "OK", t0 + 1), ("n1", "OK", t0 + 2.5)]
    assert not any(again[1:])
    # the twin without the start: the item from before the run is reported
    assert any(e["alarm"] == "a" for e in AlarmHistoryReader(HistoryOf(items), "us-east-1", ["a"], 0, 1).poll())


def test_an_alarm_not_of_the_stack_is_not_reported():
    t0 = 1_800_000_000.0
    reader = AlarmHistoryReader(HistoryOf([_item("other", t0 + 1, "ALARM")]), "us-east-1", ["mine"], t0, 1)
    assert reader.poll() == []


@pytest.mark.parametrize("profile_s, period", [(1, 1), (2, 5), (5, 5), (20, 30), (60, 60), (61, 120)])
def test_the_metric_period_is_one_getmetricdata_takes(profile_s, period):
    assert metric_period(profile_s) == period


class Failing:
    def __init__(self, reader, failures: int):
        self.reader, self.region, self.calls, self.failures = reader, "us-west-2", 0, failures

    def poll(self) -> list[dict]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("Throttling: Rate exceeded")
        return self.reader.poll()


def test_a_failing_region_does_not_hold_back_the_other_and_is_raised_when_alone():
    t0 = 1_800_000_000.0
    east = AlarmHistoryReader(HistoryOf([_item("e", t0 + 1, "ALARM")]), "us-east-1", ["e"], t0, 1)
    west = Failing(AlarmHistoryReader(HistoryOf([_item("w", t0 + 2, "ALARM")]), "us-west-2", ["w"], t0, 1), 2)
    source = Regions(HISTORY_API, [east, west], 1)
    assert [e["alarm"] for e in source.poll()] == ["e"] and "Rate exceeded" in source.errors["us-west-2"]
    with pytest.raises(RuntimeError, match="Rate exceeded"):   # nothing else to report: the poller counts it
        source.poll()
    assert [e["alarm"] for e in source.poll()] == ["w"]
    assert source.poll() == []


# -- against the stand-in account ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def aws(account):
    """The aws environment on the stand-in account, following this module's sources."""
    env = AwsEnvironment(account["cfg"]).start()
    try:
        with pytest.MonkeyPatch.context() as mp:   # this module's sources only: the others are tested apart
            mp.setattr(signals_mod, "SIGNAL_SOURCES", ours())
            env.follow_signals()
        yield {"cfg": account["cfg"], "env": env, "control": account["endpoints"]["control_url"]}
    finally:
        env.stop()


def ours() -> list:
    """This module's factories, as registered in SIGNAL_SOURCES."""
    found = [f for f in signals_mod.SIGNAL_SOURCES if f.__module__ == signals_cloudwatch.__name__]
    assert {f.__name__ for f in found} == {"alarm_history", "replication_latency"}, signals_mod.SIGNAL_SOURCES
    return found


def _margin(env) -> float:
    return 2 * interval_for(env.profile.period_s) + 3.0


def _local_events(control: str, kind: str) -> list[dict]:
    return requests.get(f"{control}/events", params={"kind": kind}, timeout=5).json()


def _transition(env, name: str, new: str, after: float) -> dict:
    evs = [e for e in env.events(kind="alarm") if e["alarm"] == name and e["new"] == new and e["time"] >= after]
    assert evs, f"no {new} of {name} in the aws environment's timeline yet"
    return evs[0]


def test_a_blocked_region_s_alarm_transitions_come_from_the_history(aws):
    env, control = aws["env"], aws["control"]
    p = env.profile
    name = alarm_name(env, REGION, "healthy-hosts")
    since = env._signals.sources[0].readers[0].since
    # the alarm fires once the targets fail their checks and a period evaluates that
    deadline = (p.unhealthy_threshold + 1) * p.health_check_interval_s + (p.evaluation_periods + 1) * p.period_s \
        + _margin(env)
    t0 = time.time()
    requests.post(f"{control}/network/block", json={"region": REGION, "mode": "hang"}, timeout=5).raise_for_status()
    try:
        fired = eventually(lambda: _transition(env, name, "ALARM", t0), deadline_s=deadline, what="ALARM event")[0]
    finally:
        requests.post(f"{control}/network/unblock", json={"region": REGION}, timeout=5).raise_for_status()
    t1 = time.time()
    ok = eventually(lambda: _transition(env, name, "OK", t1), deadline_s=deadline, what="OK event")[0]
    local = [e for e in _local_events(control, "alarm") if e["alarm"] == name and e["time"] >= t0]
    for ev in (fired, ok):
        # the local transition it reports: the nearest of that state (an alarm left in ALARM by an
        # earlier test may have gone OK once more right after t0)
        twin = min((e for e in local if e["new"] == ev["new"]), key=lambda e: abs(e["time"] - ev["time"]))
        # the history's Timestamp is moto's, written in the SetAlarmState the evaluator made just before its event
        assert abs(ev["time"] - twin["time"]) < 0.5, (ev, twin)
        assert (ev["region"], ev["old"], ev["source"]) == (REGION, twin["old"], HISTORY_API)
        assert ev["reason"] == twin["reason"] and ev.get("value") == twin.get("value"), (ev, twin)
    actions = eventually(lambda: _actions(env, name, t0), deadline_s=_margin(env), what="alarm_action events")[0]
    evs = env.events(kind="alarm")
    keys = Counter((e["alarm"], e["time"], e["new"]) for e in evs)
    assert all(n == 1 for n in keys.values()), keys
    assert all(e["time"] >= since for e in evs + env.events(kind="alarm_action"))
    print(f"\nalarm events read {fired['delay_s']:.2f}s (ALARM) and {ok['delay_s']:.2f}s (OK) after the transition; "
          f"actions {[(a['new'], a.get('after_s'), round(a['delay_s'], 2)) for a in actions]}")


def _actions(env, name: str, after: float) -> list[dict]:
    acts = [e for e in env.events(kind="alarm_action") if e["alarm"] == name and e["time"] >= after]
    assert {a["new"] for a in acts} >= {"ALARM", "OK"}, acts
    assert all(a["topic"].startswith("arn:aws:sns:") and not a.get("error") for a in acts), acts
    return acts


def _brief_alarm(env, name: str) -> float:
    cw = env.client("cloudwatch", REGION)
    started = time.monotonic()
    cw.set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="gameday test: a brief ALARM")
    cw.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="gameday test: OK again")
    return started


def test_alarm_fires_reads_a_brief_alarm_from_the_history(aws):
    env = aws["env"]
    name = alarm_name(env, REGION, "request-count")
    detection = alarm_fires(env, REGION, "request-count", started=_brief_alarm(env, name), deadline=_margin(env))
    assert detection < 1.0


def test_twin_without_the_source_alarm_fires_sees_only_the_state(aws, monkeypatch):
    monkeypatch.setattr(signals_mod, "SIGNAL_SOURCES", [])
    env = AwsEnvironment(aws["cfg"]).start().follow_signals()
    try:
        name = alarm_name(env, REGION, "request-count")
        with pytest.raises(NotWithinDeadline, match=f"alarm {name} still OK"):
            alarm_fires(env, REGION, "request-count", started=_brief_alarm(env, name), deadline=_margin(env))
    finally:
        env.stop()


def test_a_replicated_write_becomes_a_replication_lag_event(aws):
    env = aws["env"]
    t0 = time.time()
    env.client("dynamodb", "us-east-1").put_item(TableName=env.table, Item={"pk": {"S": f"signals-cw-{t0}"}})
    p = env.profile.period_s

    def lag_event() -> dict:
        evs = [e for e in env.events(kind="replication_lag") if e["direction"] == "us-east-1->us-west-2"
               and e["time"] + p >= t0 and e.get("applied")]
        assert evs, "no replication_lag event for the write yet"
        return evs[0]

    # the replicator publishes once a period; the datapoint is read once its period ended
    ev = eventually(lag_event, deadline_s=3 * p + _margin(env), what="replication_lag event")[0]
    assert ev["source"] == LATENCY_API and 0 <= ev["lag_s"] < 5 and ev["applied"] >= 1, ev
    keys = Counter((e["direction"], e["time"]) for e in env.events(kind="replication_lag"))
    assert all(n == 1 for n in keys.values()), keys
    sources = {s.name: s for s in env._signals.sources if s.name in (HISTORY_API, LATENCY_API)}
    elapsed_min = (time.time() - sources[HISTORY_API].readers[0].since) / 60
    rates = {api: {r: round(n / elapsed_min, 1) for r, n in sources[api].calls.items()} for api in sources}
    print(f"\nreplication_lag read {ev['delay_s']:.2f}s after its datapoint's start (period {p}s); "
          f"calls/min per region: {rates}")
    assert all(n <= 60 / interval_for(p) + 6 for api in rates.values() for n in api.values()), rates
