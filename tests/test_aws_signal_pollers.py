"""environments/aws/signals.py: a source's events reach the timeline stamped with AWS's time of the
change (not the read), with the API they came from and how late they were read; a failing source
is counted and retried, never raised; an event that does not fit its model is refused by name."""

from __future__ import annotations

from gameday.environments.aws.signals import SignalPollers
from gameday.events import EventLog

NOW = 1_800_000_100.0


class Source:
    name, interval_s = "cloudwatch:DescribeAlarmHistory", 0.01

    def __init__(self, batches):
        self.batches = list(batches)

    def poll(self):
        batch = self.batches.pop(0) if self.batches else []
        if isinstance(batch, Exception):
            raise batch
        return batch


def _alarm(t: float, new: str = "ALARM") -> dict:
    return {"kind": "alarm", "time": t, "region": "us-east-1", "alarm": "a", "old": "OK", "new": new}


def test_events_carry_aws_time_source_and_delay():
    log = EventLog(None)
    src = Source([[_alarm(NOW - 4.0), _alarm(NOW - 1.5, "OK")]])
    pollers = SignalPollers(log, [src], clock=lambda: NOW)
    assert pollers.poll_once(src) == 2
    evs = log.since(0, "alarm")
    assert [(e["time"], e["source"], e["delay_s"], e["new"]) for e in evs] == [
        (NOW - 4.0, src.name, 4.0, "ALARM"), (NOW - 1.5, src.name, 1.5, "OK")]
    assert abs(evs[1]["mono"] - evs[0]["mono"] - 2.5) < 0.01   # mono derived from the same change times
    assert pollers.status()[src.name] | {} == {"polls": 1, "events": 2, "errors": 0, "last_error": None,
                                               "last_delay_s": 1.5, "max_delay_s": 4.0}


def test_a_failing_source_is_counted_and_read_again():
    log = EventLog(None)
    src = Source([RuntimeError("Throttling: Rate exceeded"), [_alarm(NOW - 1.0)]])
    pollers = SignalPollers(log, [src], clock=lambda: NOW)
    assert pollers.poll_once(src) == 0 and pollers.poll_once(src) == 1
    st = pollers.status()[src.name]
    assert st["errors"] == 1 and "Rate exceeded" in st["last_error"] and st["events"] == 1


def test_an_event_that_does_not_fit_its_model_is_refused_and_said():
    log = EventLog(None)
    src = Source([[{"kind": "alarm", "time": NOW, "region": "us-east-1"}, _alarm(NOW)]])   # no alarm/old/new
    pollers = SignalPollers(log, [src], clock=lambda: NOW)
    pollers.poll_once(src)
    assert len(log.since(0, "alarm")) == 1
    assert "invalid event" in pollers.status()[src.name]["last_error"]


def test_threads_poll_until_stopped():
    from gameday.assertions.eventually import eventually

    log = EventLog(None)
    src = Source([[_alarm(NOW)], [], [_alarm(NOW + 1)]])
    pollers = SignalPollers(log, [src]).start()
    try:
        eventually(lambda: _two(log), deadline_s=5, what="both events polled")
    finally:
        pollers.stop()
    assert not pollers._threads


def _two(log) -> None:
    assert len(log.since(0, "alarm")) == 2
