"""What `gameday` prints (gameday/render.py), as data in and exact text out: no environment, no run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gameday import render

EP = {"env": "local", "timings": {"total": 5.25}, "service_name": "api.gameday.test", "record_name": "api.gameday.test.",
      "dns": {"host": "127.0.0.1", "port": 5353},
      "profile": {"dns_ttl_s": 1, "period_s": 2, "evaluation_periods": 3, "floor_s": 7},
      "regions": {"us-east-1": {"lb_url": "http://127.0.1.1:8080", "lb_address": "127.0.1.1"},
                  "us-west-2": {"lb_url": "http://127.0.2.1:8080", "lb_address": "127.0.2.1"}},
      "aws_endpoint": "http://127.0.0.1:5000", "control_url": "http://127.0.0.1:6000", "alarm_threshold": 500.0,
      "run_dir": "/runs/r1"}


@pytest.mark.parametrize("value, text", [(None, "-"), (0, "0.0s"), (4.75, "4.8s"), (12.04, "12.0s")])
def test_seconds(value, text):
    assert render.seconds(value) == text


@pytest.mark.parametrize("value, text", [(None, "-"), (0, "0"), (3.0, "3")])
def test_count(value, text):
    assert render.count(value) == text


def test_tagged_error_and_warning_lines():
    assert render.tagged("up", "stopping") == "[gameday up] stopping"
    assert render.error("bad --env") == "gameday: error: bad --env"
    assert render.warning("no history") == "gameday: warning: no history"
    assert render.config_mismatch_warning("regions are a, b") == \
        "gameday: warning: regions are a, b (the running environment was started with another config)"
    assert render.run_started("/r", "builtin", ["/s1", "/s2"]) == "[gameday run] run directory /r; suite builtin: /s1 /s2"
    assert render.history_appended(2, "h.jsonl") == "[gameday run] history: 2 line(s) appended to h.jsonl"


def test_endpoints_banner():
    assert render.endpoints(EP, "/st/local.json", "/pkg/locustfile.py").splitlines() == [
        "gameday local environment is up (5.2s); Ctrl-C to stop",
        "  service name    api.gameday.test  (DNS on 127.0.0.1:5353, TTL 1s)",
        "  us-east-1       load balancer http://127.0.1.1:8080",
        "  us-west-2       load balancer http://127.0.2.1:8080",
        "  AWS endpoint    http://127.0.0.1:5000   (export AWS_ENDPOINT_URL=http://127.0.0.1:5000 "
        "AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing)",
        "  control API     http://127.0.0.1:6000",
        "  profile         period 2s x 3, threshold 500/period, failover floor 7s",
        "  run directory   /runs/r1",
        "  state file      /st/local.json",
        "  load            gameday load   (Locust's web UI; or locust -f /pkg/locustfile.py: both find this "
        "environment through /st/local.json)",
    ]
    assert render.web_ui("127.0.0.1", 8089, "/r/locust.log") == \
        "  web UI          http://127.0.0.1:8089/  (Chaos tab after Start; /chaos/ at any time; log /r/locust.log)"


FULL_STATUS = {
    "env": "local", "run_dir": "/runs/r1", "dns": {"answers": {"api.gameday.test.": ["127.0.2.1"]}},
    # keyed by the alarm's name, shown by its [alarms] key
    "alarms": {"us-east-1": {"gameday-request-count-us-east-1": {"state": "ALARM"},
                             "gameday-healthy-hosts-us-east-1": {"state": "OK"}},
               "us-west-2": {"gameday-request-count-us-west-2": {}}},
    "ecs": {"us-east-1": {"running": 2, "desired": 3}, "us-west-2": {"running": 2, "desired": 2}},
    "load_balancers": {"us-east-1": {"healthy": 0, "blocked": "blackhole"}, "us-west-2": {"healthy": 2}},
    "replication": {"us-east-1->us-west-2": {"lag_s": 0.1234, "pending": 3, "paused": True},
                    "us-west-2->us-east-1": {"lag_s": 0, "pending": 0}, "note": "not a direction"},
}


@pytest.mark.parametrize("st, want", [
    (FULL_STATUS, [
        "environment local  run dir /runs/r1",
        "DNS  api.gameday.test -> 127.0.2.1",
        "us-east-1    tasks 2/3 healthy 0  BLOCKED(blackhole)  alarms: request-count=ALARM  healthy-hosts=OK",
        "us-west-2    tasks 2/2 healthy 2  alarms: request-count=?",
        "replication us-east-1->us-west-2: lag 0.12s pending 3 PAUSED",
        "replication us-west-2->us-east-1: lag 0.00s pending 0",
    ]),
    # an environment still starting answers with almost nothing: question marks, not a traceback
    ({}, ["environment None  run dir None", "DNS  api.gameday.test -> ?",
          "us-east-1    tasks ?/? healthy ?  alarms: ", "us-west-2    tasks ?/? healthy ?  alarms: "]),
    # the answer keyed by the service name (no trailing dot) is read too
    ({"dns": {"answers": {"api.gameday.test": ["127.0.1.1", "127.0.2.1"]}}},
     ["environment None  run dir None", "DNS  api.gameday.test -> 127.0.1.1, 127.0.2.1",
      "us-east-1    tasks ?/? healthy ?  alarms: ", "us-west-2    tasks ?/? healthy ?  alarms: "]),
])
def test_status_table(st, want):
    assert render.status(EP, st).splitlines() == want


@pytest.mark.parametrize("in_place, want", [
    (True, "\x1b[H\x1b[2Jgameday status 12:00:01, every 2.5s (Ctrl-C to stop)\nBODY\n"),
    (False, "-- gameday status 12:00:01\nBODY\n\n"),
])
def test_status_refresh(in_place, want):
    assert render.status_refresh("BODY", "12:00:01", 2.5, in_place=in_place) == want


def _scenario(name, outcome, checks=(), **metrics):
    m = {"detection_s": 4.75, "failover_s": 5.1, "rto_s": None, "lost_acked_writes": 0, "acked_writes": 47,
         "error_rate": 0.2111, **metrics}
    return {"name": name, "outcome": outcome, "metrics": m, "checks": list(checks)}


PROFILE = {"period_s": 5, "evaluation_periods": 1, "dns_ttl_s": 1, "floor_s": 6}


@pytest.mark.parametrize("summary, want", [
    ({"run_id": "r1", "passed": True, "profile": PROFILE, "scenarios": [_scenario("surge_fails_over", "passed")]},
     ["gameday r1: PASSED  (period 5s x 1, TTL 1s, floor 6s)",
      "  passed   surge_fails_over                     detection   4.8s  failover   5.1s  rto      -  lost 0/47  "
      "errors 21.1%"]),
    ({"run_id": "r2", "passed": False, "profile": PROFILE, "scenarios": [
        _scenario("region_blackhole_fails_over", "failed", lost_acked_writes=1, rto_s=12.0, checks=[
            {"name": "dns_failover", "valid": True, "detail": "moved"},
            {"name": "lost_acked_writes", "valid": False, "detail": "k1 " + "x" * 400},
            {"name": "convergence", "valid": "unknown", "detail": "no replicas"}])]},
     ["gameday r2: FAILED  (period 5s x 1, TTL 1s, floor 6s)",
      "  failed   region_blackhole_fails_over          detection   4.8s  failover   5.1s  rto  12.0s  lost 1/47  "
      "errors 21.1%",
      # only invalid checks are listed, their detail cut at 300 characters
      "           x lost_acked_writes: k1 " + "x" * 297]),
])
def test_verdict(summary, want):
    assert render.verdict(summary).splitlines() == want


def _point(run_id, failover, regressions=(), lost=0):
    return SimpleNamespace(run_id=run_id, regressions=list(regressions),
                           metrics={"failover_s": failover, "rto_s": None, "error_rate": None, "lost_acked_writes": lost})


def test_trend_lines_newest_run_per_scenario_by_name():
    scenarios = {"surge": [_point("r1", 5.0), _point("r2", 9.0, ["failover_s 9.00s is 80% above"])],
                 "blackhole": [_point("r2", 5.1, lost=None)]}
    assert render.trend(scenarios).splitlines() == [
        "  ok         blackhole                              1 runs  newest r2: failover 5.1s rto - errors 0.0% lost -",
        "  REGRESSION surge                                  2 runs  newest r2: failover 9.0s rto - errors 0.0% lost 0",
        "             x failover_s 9.00s is 80% above",
    ]
