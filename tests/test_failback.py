"""The failback rule (assertions/failback.py) over hand-written timelines: Route 53's answers as
`dns_change` events and the failed region's alarm / health-check transitions. Times are seconds
after the fault at T0; us-east-1 (E) fails, traffic goes to us-west-2 (W)."""

from __future__ import annotations

import pytest

from gameday.assertions.dns_timeline import dns_states
from gameday.assertions.failback import failback_rule, health_at, moves_back, signals

T0 = 1_000_000.0
E, W = "127.0.1.1", "127.0.2.1"
NAME = "api.gameday.test"
HH, FIVE = "gameday-healthy-hosts-us-east-1", "gameday-target-5xx-us-east-1"
LABELS = {HH: "healthy-hosts alarm", FIVE: "target-5xx alarm"}
PERIOD = 5.0


def dns(*changes: tuple[float, list[str]]) -> list[dict]:
    """(seconds after T0, the new answer) per change; the first answer (E) is set before the fault."""
    out, old = [{"kind": "dns_change", "time": T0 - 60, "name": NAME, "type": "A", "old": [], "new": [E]}], [E]
    for t, new in changes:
        out.append({"kind": "dns_change", "time": T0 + t, "name": NAME, "type": "A", "old": old, "new": new})
        old = new
    return out


def alarm(t: float, name: str, new: str, region: str = "us-east-1") -> dict:
    return {"kind": "alarm", "time": T0 + t, "region": region, "alarm": name, "old": "?", "new": new}


def health(t: float, healthy: bool, region: str = "us-east-1") -> dict:
    return {"kind": "route53_health", "time": T0 + t, "region": region, "health_check_id": "hc-east",
            "healthy": healthy}


def judge(dns_events, health_events, *, policy="automatic", hold=1, until=None) -> dict:
    return failback_rule(dns_states(dns_events, name=NAME), signals(health_events, region="us-east-1", alarms=LABELS),
                         region="us-east-1", addresses=[E], since_wall=T0, policy=policy, hold_periods=hold,
                         period_s=PERIOD, origin_wall=T0, until_wall=None if until is None else T0 + until)


HEALED_AT_12 = [alarm(3.1, HH, "ALARM"), alarm(12.0, HH, "OK")]

# (id, dns changes, health events, policy, hold, valid, words the detail must hold)
ROWS = [
    ("no failback at all", [(5.0, [W])], HEALED_AT_12, "automatic", 1, True, ["did not answer us-east-1 again"]),
    ("automatic at the OK, hold 1", [(5.0, [W]), (12.3, [E])], HEALED_AT_12, "automatic", 1, True,
     ["+12.3s", "healthy since +12.0s"]),
    ("automatic while the alarm still fires", [(5.0, [W]), (9.0, [E])], HEALED_AT_12, "automatic", 1, False,
     ["DNS answered us-east-1 again at +9.0s while us-east-1's healthy-hosts alarm was still ALARM (since +3.1s)"]),
    ("manual: any move back fails", [(5.0, [W]), (12.3, [E])], HEALED_AT_12, "manual", 1, False,
     ["failback = manual but DNS answered us-east-1 again at +12.3s"]),
    ("manual and still unhealthy: both named", [(5.0, [W]), (9.0, [E])], HEALED_AT_12, "manual", 1, False,
     ["failback = manual", "still ALARM (since +3.1s)"]),
    ("one alarm OK while another fires", [(5.0, [W]), (12.3, [E])],
     HEALED_AT_12 + [alarm(8.0, FIVE, "ALARM")], "automatic", 1, False, ["target-5xx alarm was still ALARM (since +8.0s)"]),
    ("hold 2: one period after the OK is enough", [(5.0, [W]), (17.1, [E])], HEALED_AT_12, "automatic", 2, True,
     ["+17.1s"]),
    ("hold 2: failback at the OK is too early", [(5.0, [W]), (14.1, [E])], HEALED_AT_12, "automatic", 2, False,
     ["healthy for 2.1s (since +12.0s) of the 5s", "2-period hold"]),
    ("two-call failback: the intermediate answer is the moment", [(5.0, [W]), (10.0, [E, W]), (13.0, [E])],
     HEALED_AT_12, "automatic", 1, False, ["again at +10.0s while", "still ALARM"]),
    ("INSUFFICIENT_DATA is not healthy", [(5.0, [W]), (12.3, [E])],
     [alarm(3.1, HH, "ALARM"), alarm(12.0, HH, "INSUFFICIENT_DATA")], "automatic", 1, False,
     ["still INSUFFICIENT_DATA (since +12.0s)"]),
    ("the other region's alarms do not count", [(5.0, [W]), (12.3, [E])],
     HEALED_AT_12 + [alarm(8.0, "gameday-healthy-hosts-us-west-2", "ALARM", region="us-west-2")], "automatic", 1,
     True, []),
    ("health check passing (failover routing)", [(2.0, [W]), (9.1, [E])], [health(1.5, False), health(9.0, True)],
     "automatic", 1, True, ["healthy since +9.0s"]),
    ("health check still failing", [(2.0, [W]), (6.0, [E])], [health(1.5, False), health(9.0, True)],
     "automatic", 1, False, ["health check hc-east was still failing (since +1.5s)"]),
    ("flapping during the fault", [(5.0, [W]), (6.0, [E]), (7.0, [W])], HEALED_AT_12, "automatic", 1, False,
     ["again at +6.0s while"]),
]


@pytest.mark.parametrize("changes, events, policy, hold, valid, says", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_failback_rule(changes, events, policy, hold, valid, says):
    check = judge(dns(*changes), events, policy=policy, hold=hold)
    assert check["name"] == "failback_rule"
    assert check["valid"] is valid, check["detail"]
    for words in says:
        assert words in check["detail"], check["detail"]


def test_the_operators_failback_is_left_out_by_the_window():
    changes = dns((5.0, [W]), (20.0, [E]))
    assert judge(changes, HEALED_AT_12, policy="manual")["valid"] is False
    assert judge(changes, HEALED_AT_12, policy="manual", until=19.9)["valid"] is True


def test_a_signal_stamped_just_after_the_move_it_caused_counts():
    # the DNS server may publish the health check's new status a few ms before the checker's event
    assert judge(dns((2.0, [W]), (9.0, [E])), [health(1.5, False), health(9.05, True)])["valid"] is True
    assert judge(dns((2.0, [W]), (9.0, [E])), [health(1.5, False), health(9.5, True)])["valid"] is False


def test_moves_back_need_a_failover_first():
    # an intermediate answer on the way out ([E, W]) is not a move back: traffic never left E
    states = dns_states(dns((5.0, [E, W]), (5.3, [W]), (12.0, [E])), name=NAME)
    assert [round(s.since - T0, 1) for s in moves_back(states, [E], since_wall=T0)] == [12.0]
    # a deleted record (no answer) is no failover to another region
    states = dns_states(dns((5.0, []), (6.0, [E])), name=NAME)
    assert moves_back(states, [E], since_wall=T0) == []


def test_health_at_names_the_first_source_that_went_bad():
    sigs = signals([alarm(3.0, HH, "ALARM"), alarm(4.0, FIVE, "ALARM"), alarm(9.0, HH, "OK")], region="us-east-1",
                   alarms=LABELS)
    h = health_at(sigs, T0 + 5)
    assert (h.healthy, h.blocking, h.since) == (False, ("healthy-hosts alarm", "ALARM"), T0 + 3.0)
    h = health_at(sigs, T0 + 10)
    assert (h.healthy, h.blocking) == (False, ("target-5xx alarm", "ALARM"))
    assert health_at(sigs, T0 + 1).healthy is True   # nothing fired yet
