"""Config validation: defaults are the seed; every bad config is one line naming the key."""

import subprocess
import sys
from pathlib import Path

import pytest

from gameday.config import ConfigError, GamedayConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def test_repo_config_is_the_seed_defaults():
    cfg = load_config(REPO / "gameday.toml")
    assert cfg == GamedayConfig()  # the shipped file documents the defaults, nothing else
    assert cfg.regions == ("us-east-1", "us-west-2")
    assert cfg.alarms["request-count"].threshold == 500
    assert cfg.service.desired_tasks >= 2 and len(cfg.service.azs) >= 2
    p = cfg.profile("local")
    assert p.floor_s == p.evaluation_periods * p.period_s + p.dns_ttl_s


BAD = [
    ("regions = ['us-east-1']", "regions", "at least 2 regions"),
    ("regions = ['us-east-1', 'mars-1']", "regions", "not an AWS region"),
    ("colour = 'blue'", "colour", "unknown key"),
    ("[service]\ndesired_tasks = 'two'", "service.desired_tasks", "integer"),
    ("[alarms.request-count]\nmetric = 'RequestCount'\nthreshold = 0", "threshold must be > 0", ""),
    ("[alarms.request-count]\nmetric = 'RequestCount'\nthreshold = 10\ncomparison = 'Bigger'", "comparison", "GreaterThanThreshold"),
    ("[profiles.local]\nperiod_s = 0", "profiles.local.period_s", "greater than or equal to 1"),
    ("[profiles.local]\nevaluation_periods = 1\ndatapoints_to_alarm = 3", "datapoints_to_alarm", "evaluation_periods"),
    ("[failover]\nhandler = 'not a handler'", "failover.handler", "module:function"),
    ("[failover]\nregion = 'eu-west-1'", "failover.region", "must be one of regions"),
    ("[service]\nazs = ['a']", "service.azs", "at least 2 AZs"),
    ("[service]\nmin_tasks = 3\ndesired_tasks = 2", "min_tasks <= desired_tasks", ""),
    ("regions = [", "not valid TOML", ""),
    ("[failover]\nfailback_hold_periods = 0", "failover.failback_hold_periods", "greater than or equal to 1"),
    ("[route53]\nrouting = 'failover'\n[failover]\nfailback = 'automatic'\nfailback_hold_periods = 2",
     "failover.failback_hold_periods must be 1", "health check passes"),
]


@pytest.mark.parametrize("toml,key,allowed", BAD, ids=[b[1] for b in BAD])
def test_bad_config_is_one_line_naming_the_key(tmp_path, toml, key, allowed):
    f = tmp_path / "gameday.toml"
    f.write_text(toml + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "\n" not in msg
    assert key in msg and allowed in msg, msg


def test_cli_exits_2_with_one_line_for_bad_config(tmp_path):
    f = tmp_path / "gameday.toml"
    f.write_text("regions = ['us-east-1']\n")
    r = subprocess.run([sys.executable, "-m", "gameday.cli", "up", "--config", str(f)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "regions" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_help_explains_commands():
    r = subprocess.run([sys.executable, "-m", "gameday.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for word in ("up", "status", "failover"):
        assert word in r.stdout
