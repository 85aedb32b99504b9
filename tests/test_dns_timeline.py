"""Route 53's answers as states (assertions/dns_timeline.py) and the dns_moved_once check, on
hand-written timelines: a clean move, a move in two calls (the intermediate answer named with
its duration), a flap, no move at all."""

from __future__ import annotations

import pytest

from gameday.assertions.dns_timeline import DnsState, dns_states, moved_once

EAST, WEST = "127.0.1.1", "127.0.2.1"
NAME = "api.gameday.test."


def change(t: float, new: list[str], name: str = NAME) -> dict:
    return {"kind": "dns_change", "time": t, "name": name, "type": "A", "old": [], "new": new}


def test_states_start_from_the_answer_current_at_the_window():
    events = [change(1.0, [EAST]), change(5.0, [WEST, EAST]), change(5.27, [WEST]), change(9.0, [WEST], "x.test.")]
    states = dns_states(events, name="api.gameday.test", since_wall=3.0)
    assert states == [DnsState((EAST,), 1.0, 5.0), DnsState((EAST, WEST), 5.0, 5.27), DnsState((WEST,), 5.27)]
    assert states[1].lasted_s() == 0.27


def test_a_repeated_answer_is_no_change():
    assert dns_states([change(1.0, [EAST]), change(2.0, [EAST]), change(3.0, [WEST])]) == [
        DnsState((EAST,), 1.0, 3.0), DnsState((WEST,), 3.0)]


@pytest.mark.parametrize("answers, valid, says", [
    ([[WEST]], True, "after one change"),
    ([[EAST, WEST], [WEST]], False, "on the way"),          # two calls: both weights 0 for a while
    ([[WEST], [EAST], [WEST]], False, "saw 3"),            # flapped back and forth
    ([], False, "saw 0"),                                   # never moved
    ([[]], False, "no answer"),                             # the record deleted: no answer at all
])
def test_moved_once(answers, valid, says):
    events = [change(1.0, [EAST])] + [change(10.0 + 0.25 * i, a) for i, a in enumerate(answers)]
    check = moved_once(dns_states(events), [WEST], since_wall=5.0, region="us-west-2")
    assert check["valid"] is valid, check
    assert says in check["detail"]


def test_the_intermediate_answer_is_named_with_its_duration():
    events = [change(1.0, [EAST]), change(10.0, [EAST, WEST]), change(10.27, [WEST])]
    check = moved_once(dns_states(events), [WEST], since_wall=5.0, region="us-west-2",
                       named=lambda a: "+".join("us-east-1" if x == EAST else "us-west-2" for x in a))
    assert "[127.0.1.1, 127.0.2.1] (us-east-1+us-west-2) for 0.27s" in check["detail"], check["detail"]
    assert check["metrics"]["intermediate_s"] == 0.27


def test_changes_after_the_window_are_not_judged():
    events = [change(1.0, [EAST]), change(10.0, [WEST]), change(30.0, [EAST])]
    assert moved_once(dns_states(events), [WEST], since_wall=5.0, region="us-west-2", until_wall=20.0)["valid"]
    assert not moved_once(dns_states(events), [WEST], since_wall=5.0, region="us-west-2")["valid"]


def test_a_short_intermediate_answer_reads_in_milliseconds():
    events = [change(1.0, [EAST]), change(10.0, [EAST, WEST]), change(10.013, [WEST])]
    check = moved_once(dns_states(events), [WEST], since_wall=5.0, region="us-west-2")
    assert "for 13 ms" in check["detail"], check["detail"]
