"""Faults and the nemesis: validation, the journal, rollback on every way out, and each fault's
real effect on a running local environment (then gone after rollback), including a SIGTERMed
injector (its handlers roll back) and a SIGKILLed one (`gameday rollback` restores)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Literal

import botocore.exceptions
import pydantic
import pytest
import requests
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from gameday import faults
from gameday.environments.base import CAPABILITIES, CapabilityMissing, Environment, FaultDriver
from gameday.environments.local.faults_local import LOCAL_FAULT_DRIVERS
from gameday.faults import API_EFFECTS, BLOCK_MODES, LAMBDA_MODES, Fault, FaultError, Nemesis, RollbackFailed
from gameday.faults.base import known_aws_regions
from gameday.faults.journal import ACTIONS, open_faults, read_journal
from gameday import aws
from gameday.config import load_config

REPO = Path(__file__).resolve().parents[1]


def eventually(deadline_s: float, interval_s: float = 0.05):
    return retry(stop=stop_after_delay(deadline_s), wait=wait_fixed(interval_s), reraise=True,
                 retry=retry_if_exception_type(AssertionError))


def journal_lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


# =====================================================================================================
# pure: validation, journal, ordering (a fake environment)
# =====================================================================================================

@pytest.mark.parametrize("make, message", [
    (lambda: faults.stop_tasks("us-east-9", count=1), "stop_tasks: region: unknown region 'us-east-9': one of"),
    (lambda: faults.stop_tasks("useast1", count=1), "region: 'useast1' is not an AWS region name"),
    (lambda: faults.stop_tasks("us-east-1", count=0), "count: must be a whole number >= 1 (or nothing), got 0"),
    (lambda: faults.stop_tasks("us-east-1", count=True), "count: must be a whole number >= 1"),
    (lambda: faults.stop_tasks("us-east-1", fraction=1.5), "fraction: must be a number within 0 < x <= 1"),
    (lambda: faults.stop_tasks("us-east-1", fraction=0), "fraction: must be a number within 0 < x <= 1"),
    (lambda: faults.stop_tasks("us-east-1"), "give exactly one of count=N, fraction=0..1 or all=True"),
    (lambda: faults.stop_tasks("us-east-1", count=1, all=True), "(got count, all)"),
    (lambda: faults.stop_tasks("us-east-1", all="yes"), "all: must be true or false, got 'yes'"),
    (lambda: faults.stop_tasks("us-east-1", all=True, cluster=""), "cluster: must be a non-empty string, got ''"),
    (lambda: faults.api_fault("sns", "*", operation=""), "operation: must be a non-empty string (or nothing)"),
    (lambda: faults.lose_az("us-east-1", "us-west-2a"), "az: 'us-west-2a' is not an AZ of us-east-1"),
    (lambda: faults.block_region("us-east-1", mode="drop"), "mode: unknown mode 'drop': one of hang, refuse"),
    (lambda: faults.block_region("us-east-1", data_plane=False), "block at least one of"),
    (lambda: faults.pause_replication("us-east-1", "us-east-1"), "source and destination are both"),
    (lambda: faults.api_fault("dynamodbx", "us-east-1"), "service: unknown AWS service 'dynamodbx'"),
    (lambda: faults.api_fault("dynamodb", "us-east-1", effect="slow"),
     "effect: unknown effect 'slow': one of error, throttle, latency, blackhole"),
    (lambda: faults.api_fault("dynamodb", "us-east-1", effect="slow"), "effect: unknown effect 'slow'"),
    (lambda: faults.api_fault("dynamodb", "us-east-1", effect="latency"), "latency_s: effect='latency' needs latency_s"),
    (lambda: faults.api_fault("dynamodb", "us-east-1", rate=0), "rate: must be a number within 0 < x <= 1"),
    (lambda: faults.api_fault("dynamodb", "us-east-1", effect="throttle", status=500), "status: only for effect='error'"),
    (lambda: faults.api_fault("dynamodb", "us-east-1", status=200), "status: must be a whole number within 400 <= x <= 599"),
    (lambda: faults.api_fault("dynamodb", "us-east-1", limit=0), "limit: must be a whole number >= 1"),
    (lambda: faults.lambda_fault("crash"), "mode: unknown mode 'crash': one of error, timeout, delay"),
    (lambda: faults.lambda_fault("delay"), "delay_s: mode='delay' needs delay_s, a number > 0"),
    (lambda: faults.replication_drop(-0.1), "fraction: must be a number within 0 < x <= 1"),
    (lambda: faults.parse_fault({"kind": "nope"}), "unknown fault kind 'nope': one of api_fault, block_region"),
    (lambda: faults.parse_fault({"region": "us-east-1"}), "a fault needs a kind: one of"),
    (lambda: faults.parse_fault({"kind": "lose_az", "region": "us-east-1", "az": "a", "zone": 1}),
     "lose_az: unknown parameter 'zone': expected region, az"),
    (lambda: faults.parse_fault({"kind": "stop_tasks", "count": 1}), "stop_tasks: region: required (an AWS region"),
    (lambda: faults.parse_fault({"kind": "replication_drop", "fraction": "0.5"}), "fraction: must be a number"),
    (lambda: Fault.from_record("lose_az", ["us-east-1"]), "lose_az: params must be an object, got list"),
])
def test_bad_parameters_are_refused_with_one_line_naming_the_field(make, message):
    with pytest.raises(FaultError) as e:
        make()
    assert message in str(e.value)
    assert "\n" not in str(e.value) and "pydantic" not in str(e.value)


def test_several_bad_parameters_are_all_named_on_one_line():
    with pytest.raises(FaultError) as e:
        faults.parse_fault({"kind": "api_fault", "service": "dynamodbx", "region": "mars", "rate": 2})
    text = str(e.value)
    assert "\n" not in text and all(f"{f}:" in text for f in ("service", "region", "rate")), text


ALL_FAULTS = [
    faults.stop_tasks("us-west-2", fraction=0.5),
    faults.lose_az("us-east-1", "b"),
    faults.block_region("us-east-1", control_plane=True, mode="refuse"),
    faults.pause_replication("us-east-1", "us-west-2"),
    faults.api_fault("cloudwatch", "*", effect="latency", latency_s=0.2, operation="PutMetricData"),
    faults.lambda_fault("timeout"),
    faults.replication_drop(0.25),
    faults.fail_responses("us-west-2", share=0.25, status=503),
]


def test_every_kind_is_covered_here_and_has_a_local_driver():
    from gameday.environments.aws.faults_aws import AWS_FAULT_DRIVERS
    from gameday.environments.local.faults_local import LOCAL_FAULT_DRIVERS

    builtin = {k for k, c in faults.fault_classes().items() if c.__module__.startswith("gameday.faults.")}
    assert {f.kind for f in ALL_FAULTS} == builtin == set(LOCAL_FAULT_DRIVERS)
    assert set(AWS_FAULT_DRIVERS) == builtin - {"replication_drop"}   # a mutation of the local model only
    # docker runs the local control plane: the same drivers
    from gameday.environments.docker import DockerEnvironment
    from gameday.environments.local import LocalEnvironment

    assert DockerEnvironment.fault_drivers is LocalEnvironment.fault_drivers is LOCAL_FAULT_DRIVERS


@pytest.mark.parametrize("fault", ALL_FAULTS, ids=lambda f: f.kind)
def test_faults_are_data_that_rebuild_from_the_journal(fault):
    record = json.loads(json.dumps({"kind": fault.kind, "params": fault.params}))
    assert "kind" not in record["params"]       # kind names the fault type only
    assert faults.parse_fault({"kind": record["kind"], **record["params"]}) == fault
    assert Fault.from_record(record["kind"], record["params"]) == fault
    assert fault.describe() and "\n" not in fault.describe()
    assert fault.required_capability in fault.required_capabilities
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        fault.target_override = 1  # noqa: B010 - frozen: a journaled fault cannot change afterwards
    field = next(iter(fault.params))
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        setattr(fault, field, fault.params[field])


# -- every kind round-trips through its journal record, whatever its (valid) params ----------------------------

REGION = st.sampled_from(known_aws_regions())
SHARE = st.floats(min_value=0, max_value=1, exclude_min=True)
SECONDS = st.floats(min_value=0.001, max_value=3600)
COUNT = st.integers(min_value=1, max_value=10_000)
NAME = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=20)


@st.composite
def stop_tasks_records(draw):
    how = draw(st.sampled_from([{"count": COUNT}, {"fraction": SHARE}, {"all": st.just(True)}]))
    extra = {"cluster": NAME, "seed": st.none() | st.integers()}
    return draw(st.fixed_dictionaries({"kind": st.just("stop_tasks"), "region": REGION, **how}, optional=extra))


@st.composite
def lose_az_records(draw):
    region, letter = draw(REGION), draw(st.sampled_from("abcdef"))
    return {"kind": "lose_az", "region": region, "az": draw(st.sampled_from([letter, region + letter]))}


@st.composite
def block_region_records(draw):
    planes = draw(st.sampled_from([(True, False), (False, True), (True, True)]))
    return {"kind": "block_region", "region": draw(REGION), "data_plane": planes[0], "control_plane": planes[1],
            "mode": draw(st.sampled_from(BLOCK_MODES))}


@st.composite
def api_fault_records(draw):
    effect = draw(st.sampled_from(API_EFFECTS))
    rec = {"kind": "api_fault", "effect": effect, "service": draw(st.sampled_from(["*", "dynamodb", "route53", "sns",
                                                                                   "cloudwatch", "ecs", "ec2"])),
           "region": draw(st.just("*") | REGION), "rate": draw(SHARE)}
    if effect == "latency":
        rec["latency_s"] = draw(SECONDS)
    if effect == "error":
        rec["status"] = draw(st.none() | st.integers(400, 599))
    return {**rec, **draw(st.fixed_dictionaries({}, optional={"operation": NAME, "limit": st.none() | COUNT}))}


@st.composite
def lambda_fault_records(draw):
    mode = draw(st.sampled_from(LAMBDA_MODES))
    return {"kind": "lambda_fault", "mode": mode, **({"delay_s": draw(SECONDS)} if mode == "delay" else {})}


@st.composite
def pause_replication_records(draw):
    source, destination = draw(st.lists(REGION, min_size=2, max_size=2, unique=True))
    return {"kind": "pause_replication", "source": source, "destination": destination}


VALID_RECORDS = st.one_of(stop_tasks_records(), lose_az_records(), block_region_records(), api_fault_records(),
                          lambda_fault_records(), pause_replication_records(),
                          st.fixed_dictionaries({"kind": st.just("replication_drop"), "fraction": SHARE}))


@settings(max_examples=300, deadline=None)
@given(VALID_RECORDS)
def test_every_kind_round_trips_through_its_journal_record(record):
    fault = faults.parse_fault(record)
    journaled = json.loads(json.dumps({"id": "x", "kind": fault.kind, "target": fault.target, "params": fault.params}))
    assert journaled["kind"] == record["kind"] and journaled["target"] == fault.target
    assert set(journaled["params"]) == set(type(fault).model_fields) - {"kind"}
    again = faults.parse_fault({"kind": journaled["kind"], **journaled["params"]})
    assert again == fault and again.params == fault.params and again.describe() == fault.describe()


@settings(max_examples=150, deadline=None)
@given(VALID_RECORDS, st.floats(allow_nan=False) | st.integers() | st.text(max_size=3) | st.booleans())
def test_a_bad_share_is_refused_naming_the_field(record, value):
    share = next((f for f in ("rate", "fraction") if f in record), None)
    assume(share is not None and not (type(value) in (int, float) and 0 < value <= 1))
    with pytest.raises(FaultError) as e:
        faults.parse_fault({**record, share: value})
    assert f"{record['kind']}: {share}: must be a number within 0 < x <= 1" in str(e.value)
    assert "\n" not in str(e.value)


def test_fault_details_that_matter():
    from gameday.environments.local.faults_local import api_rule

    assert faults.lose_az("us-east-1", "a").target == "us-east-1/us-east-1a"
    us_east = faults.block_region("us-east-1", data_plane=False, control_plane=True)
    assert "Route 53" in us_east.describe() and us_east.required_capabilities == ("block_control_plane",)
    assert "Route 53" not in faults.block_region("us-west-2", control_plane=True).describe()
    assert faults.block_region("us-west-2", control_plane=True).required_capabilities == (
        "block_data_plane", "block_control_plane")
    # the router matches the SigV4 signing name: CloudWatch signs as "monitoring"
    assert api_rule(faults.api_fault("cloudwatch", "us-east-1"))["service"] == "monitoring"
    # form values (text) are read as the field's type only when asked to
    assert faults.parse_fault({"kind": "stop_tasks", "region": "us-east-1", "count": "2"}, strict=False) == \
        faults.stop_tasks("us-east-1", count=2)


class FakeEnv(Environment):
    """Records control-API calls (the local drivers' and the timeline's); can be told to fail some."""
    kind = "fake"

    def __init__(self, capabilities=CAPABILITIES, fail_paths=(), drivers=None):
        super().__init__(load_config(None))
        self.capabilities = frozenset(capabilities)
        self.fault_drivers = drivers if drivers is not None else {**LOCAL_FAULT_DRIVERS, "test_probe": ProbeDriver}
        self.calls: list[tuple[str, str, dict | None]] = []
        self.fail_paths = set(fail_paths)
        self.endpoints = {"pid": 4242, "control_url": "http://127.0.0.1:9"}

    def control(self, method, path, body=None, timeout_s=10.0):
        self.calls.append((method, path, body))
        if path in self.fail_paths:
            raise requests.ConnectionError(f"{path} unreachable")
        if path == "/api-faults":
            return {"id": "api-7", **body}
        return {"ok": True}

    def post_event(self, event, timeout_s=2.0):
        self.control("POST", "/events", event, timeout_s)

    def start(self): return self
    def stop(self): pass
    def client(self, service, region): raise AssertionError("not used")
    def observer(self, service, region): raise AssertionError("not used")
    def lb_url(self, region): return ""
    def region_of_address(self, address): return None
    def resolver(self, honour_ttl=True): return None
    def status(self): return {}
    def events(self, since=0, kind=None): return []

    def non_event_calls(self):
        return [(m, p, b) for m, p, b in self.calls if p != "/events"]


class Probe(Fault):
    """A test fault whose driver (ProbeDriver) looks at the journal while it is being applied."""
    kind: Literal["test_probe"] = "test_probe"
    capabilities = ("lose_az",)
    name: str = "p"
    journal: str = ""
    fail_inject: bool = False
    fail_rollback: bool = False

    @property
    def target(self):
        return self.name

    def describe(self):
        return f"probe {self.name}"


class ProbeDriver(FaultDriver):
    def apply(self):
        f, env = self.fault, self.env
        seen = journal_lines(Path(f.journal))
        env.calls.append(("INJECT", f.name, {"journal_before": [(x["fault"]["id"], x["action"]) for x in seen]}))
        if f.fail_inject:
            raise RuntimeError(f"{f.name} half-applied")
        return {"applied": f.name}

    def revert(self, applied=None):
        self.env.calls.append(("ROLLBACK", self.fault.name, applied))
        if self.fault.fail_rollback:
            raise RuntimeError(f"{self.fault.name} will not roll back")
        return {"undone": self.fault.name}


def probe(name: str, journal: Path, **kw) -> Probe:
    return Probe.create(name=name, journal=str(journal), **kw)


def test_an_environment_without_a_driver_for_a_kind_cannot_do_it(tmp_path):
    """Capabilities alone are not enough: the driver table says what the environment can do."""
    jp = tmp_path / "journal.jsonl"
    env = FakeEnv(drivers={k: v for k, v in LOCAL_FAULT_DRIVERS.items() if k != "lose_az"})
    nem = Nemesis(env, jp)
    with pytest.raises(CapabilityMissing, match="the fake environment has no driver for fault kind 'lose_az'"):
        nem.inject(faults.lose_az("us-east-1", "a"))
    with pytest.raises(CapabilityMissing, match="no driver for fault kind 'test_probe'"):
        env.apply(probe("x", jp))
    with pytest.raises(CapabilityMissing, match="'lose_az'"):
        env.revert(faults.lose_az("us-east-1", "a"))
    assert not jp.exists() and env.calls == []
    nem.inject(faults.block_region("us-west-2"))   # the kinds it has a driver for still work
    assert env.non_event_calls() == [("POST", "/network/block", {"region": "us-west-2", "mode": "hang"})]
    nem.rollback_all()


def test_fault_models_do_not_import_concrete_environments():
    """faults/* depend on the Environment interface only; environments import faults, not back."""
    code = ("import sys, gameday.faults, gameday.faults.restore; "
            "print(sorted(m for m in sys.modules if m.startswith('gameday.environments.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['gameday.environments.base']"], out.stdout


def test_intent_is_journaled_and_synced_before_the_fault_is_applied(tmp_path):
    env, jp = FakeEnv(), tmp_path / "journal.jsonl"
    with Nemesis(env, jp, scenario="s1") as nem:
        rec = nem.inject(probe("a", jp))
        inject_call = [c for c in env.calls if c[0] == "INJECT"][0]
        assert inject_call[2]["journal_before"] == [(rec.id, "intent")]
    lines = journal_lines(jp)
    assert [x["action"] for x in lines] == ["intent", "injected", "rolled_back"]
    assert [x["seq"] for x in lines] == [1, 2, 3]
    for x in lines:   # gameday/runlog.py FaultStep
        assert {"seq", "time", "action", "fault", "scenario", "detail"} <= set(x)
        assert x["fault"] == {"id": rec.id, "kind": "test_probe", "target": "a", "params": rec.fault.params}
        assert x["scenario"] == "s1"
    assert lines[0]["detail"]["description"] == "probe a" and lines[0]["detail"]["env"]["pid"] == 4242
    assert lines[1]["detail"] == {"applied": "a"}
    assert lines[0]["time"] <= lines[1]["time"] <= lines[2]["time"]
    # the fault is on the environment's timeline too
    events = [b for m, p, b in env.calls if p == "/events"]
    assert [(e["kind"], e["action"], e["ok"]) for e in events] == [("fault", "inject", True), ("fault", "rollback", True)]


def test_the_report_reader_accepts_the_journal(tmp_path):
    from gameday.reports.rundata import load_run

    env, jp = FakeEnv(), tmp_path / "journal.jsonl"
    with Nemesis(env, jp, scenario="s1") as nem:
        nem.inject(probe("a", jp))
    (tmp_path / "scenarios" / "s1").mkdir(parents=True)
    (tmp_path / "scenarios" / "s1" / "result.json").write_text(json.dumps({"name": "s1", "outcome": "passed"}))
    run = load_run(tmp_path)
    assert [j["action"] for j in run.journal] == ["intent", "injected", "rolled_back"]


def test_rollback_all_is_reverse_order_and_attempts_every_fault(tmp_path):
    env, jp = FakeEnv(), tmp_path / "journal.jsonl"
    nem = Nemesis(env, jp)
    for name in ("first", "second", "third"):
        nem.inject(probe(name, jp, fail_rollback=(name == "second")))
    assert [r.target for r in nem.active()] == ["first", "second", "third"]
    with pytest.raises(RollbackFailed) as e:
        nem.rollback_all()
    assert "second" in str(e.value) and "gameday rollback" in str(e.value)
    assert [n for k, n, _ in env.calls if k == "ROLLBACK"] == ["third", "second", "first"]
    # rollback gets what inject returned
    assert [d for k, _, d in env.calls if k == "ROLLBACK"][0] == {"applied": "third"}
    tail = [(x["fault"]["target"], x["action"]) for x in journal_lines(jp)][-3:]
    assert tail == [("third", "rolled_back"), ("second", "rollback_failed"), ("first", "rolled_back")]
    assert [r.target for r in nem.active()] == ["second"]
    summary = nem.records()
    assert [s["target"] for s in summary] == ["first", "second", "third"]
    assert summary[0]["rolled_back_at"] and summary[1]["rolled_back_at"] is None
    assert summary[0]["injected_at"].endswith("+00:00")


def test_rollback_is_idempotent_and_by_id_or_fault(tmp_path):
    env, jp = FakeEnv(), tmp_path / "journal.jsonl"
    nem = Nemesis(env, jp)
    f = probe("x", jp)
    rec = nem.inject(f)
    nem.rollback(f)
    nem.rollback(rec.id)
    nem.rollback_all()
    assert [k for k, *_ in env.calls if k == "ROLLBACK"] == ["ROLLBACK"]
    with pytest.raises(KeyError, match="no fault with id"):
        nem.rollback("nope")


def test_context_manager_rolls_back_on_exception_and_keeps_the_exception(tmp_path):
    env, jp = FakeEnv(), tmp_path / "journal.jsonl"
    with pytest.raises(ZeroDivisionError):
        with Nemesis(env, jp) as nem:
            nem.inject(faults.block_region("us-west-2", mode="refuse"))
            nem.inject(faults.api_fault("dynamodb", "us-west-2", effect="throttle"))
            1 / 0
    assert env.non_event_calls() == [
        ("POST", "/network/block", {"region": "us-west-2", "mode": "refuse"}),
        ("POST", "/api-faults", {"kind": "throttle", "region": "us-west-2", "rate": 1.0, "service": "dynamodb",
                                 "operation": "*"}),
        ("DELETE", "/api-faults/api-7", None),
        ("POST", "/network/unblock", {"region": "us-west-2"}),
    ]
    assert nem.active() == []


def test_a_failed_rollback_does_not_hide_the_scenarios_exception(tmp_path):
    env, jp = FakeEnv(fail_paths={"/network/unblock"}), tmp_path / "journal.jsonl"
    with pytest.raises(ZeroDivisionError):
        with Nemesis(env, jp) as nem:
            nem.inject(faults.block_region("us-west-2"))
            1 / 0
    assert journal_lines(jp)[-1]["action"] == "rollback_failed"
    assert "unreachable" in journal_lines(jp)[-1]["detail"]["error"]
    # without an exception in flight the failure is raised
    env2 = FakeEnv(fail_paths={"/replication/resume"})
    with pytest.raises(RollbackFailed):
        with Nemesis(env2, tmp_path / "j2.jsonl") as nem:
            nem.inject(faults.pause_replication("us-east-1", "us-west-2"))


def test_missing_capability_or_region_writes_nothing(tmp_path):
    jp = tmp_path / "journal.jsonl"
    nem = Nemesis(FakeEnv(capabilities={"block_data_plane"}), jp)
    with pytest.raises(CapabilityMissing, match="cannot block control plane"):
        nem.inject(faults.block_region("us-west-2", control_plane=True))
    with pytest.raises(FaultError, match="'eu-west-1' is not a region of this environment: one of us-east-1, us-west-2"):
        nem.inject(faults.block_region("eu-west-1"))
    assert not jp.exists() and nem.active() == []
    # a control plane may be us-east-1 (Route 53's home) even when it is not a service region
    env = FakeEnv()
    env.config = load_config(None, {"regions": ["us-west-2", "eu-west-1"], "failover": {"region": "us-west-2"}})
    faults.block_region("us-east-1", data_plane=False, control_plane=True).check(env)
    with pytest.raises(FaultError):
        faults.block_region("us-east-1").check(env)


def test_failed_injection_is_journaled_and_what_applied_is_undone(tmp_path):
    env, jp = FakeEnv(fail_paths={"/control-plane/block"}), tmp_path / "journal.jsonl"
    nem = Nemesis(env, jp)
    with pytest.raises(requests.ConnectionError):
        nem.inject(faults.block_region("us-west-2", control_plane=True))
    assert [x["action"] for x in journal_lines(jp)] == ["intent", "inject_failed", "rolled_back"]
    assert "ConnectionError" in journal_lines(jp)[1]["detail"]["error"]
    assert ("POST", "/network/unblock", {"region": "us-west-2"}) in env.non_event_calls()
    assert nem.records() == [] and nem.active() == []
    assert open_faults(read_journal(jp)[0]) == []


def test_sigint_rolls_back_then_raises_keyboard_interrupt(tmp_path):
    env, jp = FakeEnv(), tmp_path / "journal.jsonl"
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    nem = Nemesis(env, jp)
    nem.inject(probe("held", jp))
    assert signal.getsignal(signal.SIGINT) == nem._on_signal
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the signal is handled at the next bytecode; this sleep is never finished
    assert [n for k, n, _ in env.calls if k == "ROLLBACK"] == ["held"]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_read_journal_finds_open_faults_and_tolerates_a_cut_last_line(tmp_path):
    env, jp = FakeEnv(), tmp_path / "journal.jsonl"
    nem = Nemesis(env, jp)
    done = nem.inject(probe("done", jp))
    nem.rollback(done)
    held = nem.inject(probe("held", jp))
    with open(jp, "a") as f:
        f.write('{"seq": 99, "action": "rolled_ba')  # SIGKILL mid-write
    fs, warnings = read_journal(jp)
    assert [f.id for f in open_faults(fs)] == [held.id]
    assert open_faults(fs)[0].injected == {"applied": "held"}
    assert warnings and "cut short" in warnings[0]
    assert set(ACTIONS) >= {f.state for f in fs}


def test_gameday_rollback_without_environment_and_with_a_corrupted_journal(tmp_path):
    run = tmp_path / "run"
    (run / "env").mkdir(parents=True)
    nem = Nemesis(FakeEnv(), run / "journal.jsonl")
    nem.inject(faults.block_region("us-west-2"))  # never rolled back: the injector "died"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / "env" / "state.json").write_text(json.dumps({"pid": dead.pid, "control_url": "http://127.0.0.1:9"}))
    out = _cli("rollback", str(run))
    assert out.returncode == 0, out.stderr
    assert "faults died with it" in out.stdout and "block_region us-west-2" in out.stdout

    (run / "journal.jsonl").write_text('{"seq": 1, "action": "intent"}\nnot json\n{"x": 1}\n')
    out = _cli("rollback", str(run))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "corrupted journal" in out.stderr
    assert "Traceback" not in out.stderr


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gameday.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


# =====================================================================================================
# end to end: each fault's real effect on the local environment, and gone after rollback
# =====================================================================================================

TIMINGS: dict[str, tuple[float, float]] = {}   # kind -> (inject_s, rollback_s), printed at the end


@pytest.fixture(scope="module")
def local_env(tmp_path_factory):
    from gameday.environments.local import LocalEnvironment

    with LocalEnvironment(load_config(None), tmp_path_factory.mktemp("faults-env")) as e:
        yield e
    if TIMINGS:
        print("\nfault timings (inject s / rollback s): " + ", ".join(
            f"{k} {i * 1000:.0f}/{r * 1000:.0f} ms" for k, (i, r) in sorted(TIMINGS.items())))


def _timed(rec, label: str = "") -> None:
    TIMINGS[f"{rec.kind}{label}"] = (rec.inject_s, rec.rollback_s)


def _deadline(env) -> float:
    """Time for the environment to react to a change: a few health checks / scheduler ticks, plus
    the 2-core machine's scheduling margin."""
    p = env.profile
    return (p.healthy_threshold + p.unhealthy_threshold) * p.health_check_interval_s + 4 * p.reconcile_interval_s + 6


def _fresh(env, service, region, timeout_s=5.0):
    return aws.client(service, region, env.endpoints["aws_endpoint"], retries=0, timeout_s=timeout_s, cached=False)


e2e = pytest.mark.needs_env


@e2e
def test_stop_tasks_stops_them_and_ecs_replaces_them(local_env, tmp_path):
    ecs = local_env.observer("ecs", "us-west-2")
    with Nemesis(local_env, tmp_path / "journal.jsonl") as nem:
        rec = nem.inject(faults.stop_tasks("us-west-2", count=1))
        stopped = rec.injected["stopped"]
        assert len(stopped) == 1 and rec.injected["running_before"] >= 2

        @eventually(_deadline(local_env), 0.1)
        def replaced():
            running = ecs.list_tasks(cluster="gameday", desiredStatus="RUNNING")["taskArns"]
            assert stopped[0] not in running and len(running) >= local_env.config.service.desired_tasks

        replaced()
        desc = ecs.describe_tasks(cluster="gameday", tasks=stopped)["tasks"][0]
        assert desc["lastStatus"] == "STOPPED" or desc["desiredStatus"] == "STOPPED"
    assert "nothing to undo" in rec.rollback_detail["note"]
    _timed(rec)


@e2e
def test_lose_az_moves_tasks_out_and_back(local_env, tmp_path):
    def ecs_status():
        return local_env.status()["ecs"]["us-east-1"]

    with Nemesis(local_env, tmp_path / "journal.jsonl") as nem:
        rec = nem.inject(faults.lose_az("us-east-1", "a"))

        @eventually(_deadline(local_env), 0.1)
        def moved():
            st = ecs_status()
            assert st["unavailable_azs"] == ["us-east-1a"]
            running = [t for t in st["tasks"] if t["state"] == "RUNNING"]
            assert running and all(t["az"] == "us-east-1b" for t in st["tasks"]), st["tasks"]
            assert len(running) >= local_env.config.service.min_tasks

        moved()
    assert ecs_status()["unavailable_azs"] == []
    _timed(rec)


def _lb_answers(env, region):
    r = requests.get(env.lb_url(region) + "/health", timeout=2)
    assert r.status_code == 200, r.status_code


@e2e
@pytest.mark.parametrize("mode", ["hang", "refuse"])
def test_block_region_data_plane(local_env, tmp_path, mode):
    with Nemesis(local_env, tmp_path / "journal.jsonl") as nem:
        rec = nem.inject(faults.block_region("us-west-2", mode=mode))
        t0 = time.monotonic()
        if mode == "hang":
            with pytest.raises(requests.ReadTimeout):
                requests.get(local_env.lb_url("us-west-2") + "/health", timeout=0.5)
        else:
            with pytest.raises(requests.ConnectionError) as e:
                requests.get(local_env.lb_url("us-west-2") + "/health", timeout=2)
            assert not isinstance(e.value, requests.Timeout)  # refused at once, not timed out
            assert time.monotonic() - t0 < 1.5
        _lb_answers(local_env, "us-east-1")  # only the blocked region
    eventually(_deadline(local_env), 0.1)(lambda: _lb_answers(local_env, "us-west-2"))()
    _timed(rec, f" data plane {mode}")


@e2e
def test_block_region_control_plane_and_route53_with_us_east_1(local_env, tmp_path):
    zone = local_env.endpoints["hosted_zone_id"]
    table = local_env.endpoints["table"]
    # a Lambda in us-west-2 signs Route 53 calls for us-west-2: they still go to us-east-1's control plane
    r53 = _fresh(local_env, "route53", "us-west-2", timeout_s=0.5)
    with Nemesis(local_env, tmp_path / "journal.jsonl") as nem:
        west = nem.inject(faults.block_region("us-west-2", data_plane=False, control_plane=True))
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            _fresh(local_env, "dynamodb", "us-west-2", timeout_s=0.5).describe_table(TableName=table)
        # Route 53 is not in us-west-2; asked with a client's usual wait: on two busy cores an answer
        # can take longer than the 0.5 s that only needs to tell a hang
        _fresh(local_env, "route53", "us-west-2").list_resource_record_sets(HostedZoneId=zone)
        _lb_answers(local_env, "us-west-2")                # the data plane was not blocked
        nem.rollback(west)
        _fresh(local_env, "dynamodb", "us-west-2").describe_table(TableName=table)

        east = nem.inject(faults.block_region("us-east-1", data_plane=False, control_plane=True))
        with pytest.raises(botocore.exceptions.ReadTimeoutError):
            r53.list_resource_record_sets(HostedZoneId=zone)
        _fresh(local_env, "dynamodb", "us-west-2").describe_table(TableName=table)
    _fresh(local_env, "route53", "us-west-2").list_resource_record_sets(HostedZoneId=zone)
    _timed(west, " control plane us-west-2")
    _timed(east, " control plane us-east-1")


@e2e
def test_api_fault_throttle_is_a_real_throttling_error(local_env, tmp_path):
    table = local_env.endpoints["table"]
    c = _fresh(local_env, "dynamodb", "us-west-2")
    with Nemesis(local_env, tmp_path / "journal.jsonl") as nem:
        rec = nem.inject(faults.api_fault("dynamodb", "us-west-2", effect="throttle", operation="PutItem"))
        with pytest.raises(botocore.exceptions.ClientError) as e:
            c.put_item(TableName=table, Item={"pk": {"S": "fault-throttle"}})
        assert e.value.response["Error"]["Code"] == "ThrottlingException"
        c.get_item(TableName=table, Key={"pk": {"S": "fault-throttle"}})  # other operations unaffected
        rules = local_env.status()["router"]["api_faults"]
        assert [r["id"] for r in rules] == [rec.injected["rule_id"]]
    c.put_item(TableName=table, Item={"pk": {"S": "fault-throttle"}})
    assert local_env.status()["router"]["api_faults"] == []
    _timed(rec)


@e2e
def test_pause_replication_holds_writes_until_resumed(local_env, tmp_path):
    table = local_env.endpoints["table"]
    east, west = local_env.observer("dynamodb", "us-east-1"), local_env.observer("dynamodb", "us-west-2")
    key = {"pk": {"S": f"fault-pause-{time.time_ns()}"}}

    def replicated() -> bool:
        return "Item" in west.get_item(TableName=table, Key=key, ConsistentRead=True)

    with Nemesis(local_env, tmp_path / "journal.jsonl") as nem:
        rec = nem.inject(faults.pause_replication("us-east-1", "us-west-2"))
        east.put_item(TableName=table, Item={**key, "value": {"S": "v"}})

        @eventually(_deadline(local_env), 0.1)
        def queued():
            st = local_env.status()["replication"]["us-east-1->us-west-2"]
            assert st["paused"] and st["pending"] >= 1, st

        queued()
        assert not local_env.status()["replication"]["us-west-2->us-east-1"]["paused"]
        assert not replicated()
        nem.rollback(rec)
        eventually(_deadline(local_env), 0.1)(lambda: _assert(replicated()))()
    _timed(rec)


def _assert(cond, msg=""):
    assert cond, msg


@e2e
def test_lambda_fault_error_fails_attempts_until_rolled_back(local_env, tmp_path):
    sns = local_env.observer("sns", "us-west-2")
    topic = local_env.endpoints["topic_arns"]["us-west-2"]
    with Nemesis(local_env, tmp_path / "journal.jsonl") as nem:
        rec = nem.inject(faults.lambda_fault("error"))
        mid = sns.publish(TopicArn=topic, Message=f"gameday fault test {time.time_ns()}")["MessageId"]

        def attempts():
            return [i for i in local_env.control("GET", "/lambda/invocations") if i.get("message_id") == mid]

        @eventually(_deadline(local_env), 0.1)
        def failed():
            a = attempts()
            assert a and a[0]["outcome"] == "error" and a[0]["error"]["type"] == "GamedayInjectedFault", a
            assert a[0]["will_retry"]

        failed()
        nem.rollback(rec)
        retry_budget = sum(local_env.profile.lambda_retry_delays_s) + local_env.config.failover.timeout_s + 5

        @eventually(retry_budget, 0.1)
        def retried_ok():
            assert any(a["outcome"] == "ok" for a in attempts()), attempts()

        retried_ok()
    _timed(rec)


@e2e
def test_replication_drop_loses_writes_until_rolled_back_and_is_on_the_timeline(local_env, tmp_path):
    table = local_env.endpoints["table"]
    east, west = local_env.observer("dynamodb", "us-east-1"), local_env.observer("dynamodb", "us-west-2")
    since = local_env.events()[-1]["seq"]
    jp = tmp_path / "journal.jsonl"

    def direction():
        return local_env.status()["replication"]["us-east-1->us-west-2"]

    def write(tag):
        key = {"pk": {"S": f"fault-drop-{tag}-{time.time_ns()}"}}
        east.put_item(TableName=table, Item={**key, "value": {"S": tag}})
        return key

    with Nemesis(local_env, jp, scenario="timeline") as nem:
        rec = nem.inject(faults.replication_drop(1.0))
        dropped_before = direction()["dropped"]
        lost = write("lost")

        @eventually(_deadline(local_env), 0.1)
        def dropped():
            assert direction()["dropped"] > dropped_before, direction()

        dropped()
        assert "Item" not in west.get_item(TableName=table, Key=lost, ConsistentRead=True)
    kept = write("kept")
    eventually(_deadline(local_env), 0.1)(
        lambda: _assert("Item" in west.get_item(TableName=table, Key=kept, ConsistentRead=True)))()
    evs = [e for e in local_env.events(since, "fault") if e.get("id") == rec.id]
    assert [(e["action"], e["ok"], e["fault_kind"]) for e in evs] == [
        ("inject", True, "replication_drop"), ("rollback", True, "replication_drop")]
    assert [x["action"] for x in journal_lines(jp)] == ["intent", "injected", "rolled_back"]
    _timed(rec)


@e2e
def test_exception_inside_the_context_manager_rolls_everything_back(local_env, tmp_path):
    with pytest.raises(RuntimeError, match="scenario blew up"):
        with Nemesis(local_env, tmp_path / "journal.jsonl") as nem:
            nem.inject(faults.block_region("us-west-2", mode="refuse"))
            nem.inject(faults.api_fault("dynamodb", "us-west-2", effect="error", status=503))
            with pytest.raises(requests.ConnectionError):
                requests.get(local_env.lb_url("us-west-2") + "/health", timeout=2)
            raise RuntimeError("scenario blew up")
    assert local_env.status()["router"]["api_faults"] == []
    eventually(_deadline(local_env), 0.1)(lambda: _lb_answers(local_env, "us-west-2"))()


INJECTOR = textwrap.dedent("""
    import json, sys, time
    from gameday import faults
    from gameday.environments.local import LocalEnvironment
    from gameday import state

    env = LocalEnvironment.attach(state.read_state(sys.argv[1]))
    nemesis = faults.Nemesis(env, sys.argv[2], scenario="child")
    for spec in json.loads(sys.argv[3]):
        nemesis.inject(faults.parse_fault({"kind": spec["kind"], **spec["params"]}))
    print("injected", flush=True)
    while True:
        time.sleep(0.1)  # hold the faults until a signal comes
""")


def _start_injector(env, journal: Path, specs: list[Fault]) -> subprocess.Popen:
    arg = json.dumps([{"kind": f.kind, "params": f.params} for f in specs])
    proc = subprocess.Popen([sys.executable, "-c", INJECTOR, str(env.state_file), str(journal), arg],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @eventually(30, 0.1)
    def injected():
        assert proc.poll() is None, proc.stderr.read()
        lines = journal_lines(journal) if journal.exists() else []
        assert sum(x["action"] == "injected" for x in lines) == len(specs), lines

    injected()
    return proc


def _throttled(env) -> bool:
    try:
        _fresh(env, "dynamodb", "us-west-2").put_item(TableName=env.endpoints["table"], Item={"pk": {"S": "child"}})
        return False
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "ThrottlingException"
        return True


def _refused(env) -> bool:
    try:
        requests.get(env.lb_url("us-west-2") + "/health", timeout=2)
        return False
    except requests.ConnectionError:
        return True


CHILD_FAULTS = [faults.api_fault("dynamodb", "us-west-2", effect="throttle"),
                faults.block_region("us-west-2", mode="refuse")]


@e2e
def test_sigterm_to_an_injector_rolls_its_faults_back(local_env, tmp_path):
    jp = tmp_path / "journal.jsonl"
    proc = _start_injector(local_env, jp, CHILD_FAULTS)
    try:
        assert _throttled(local_env) and _refused(local_env)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM  # it died of the signal, after rolling back
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [x["action"] for x in journal_lines(jp)][-2:] == ["rolled_back", "rolled_back"]
    assert not _throttled(local_env)
    eventually(_deadline(local_env), 0.1)(lambda: _lb_answers(local_env, "us-west-2"))()


@e2e
def test_gameday_rollback_restores_a_sigkilled_injectors_faults(local_env, tmp_path):
    run = tmp_path / "run"
    (run / "env").mkdir(parents=True)
    (run / "env" / "state.json").write_text(Path(local_env.state_file).read_text())
    proc = _start_injector(local_env, run / "journal.jsonl", CHILD_FAULTS)
    proc.kill()
    proc.wait(timeout=10)
    # nothing rolled them back: the injector had no chance
    assert _throttled(local_env) and _refused(local_env)

    t0 = time.monotonic()
    out = _cli("rollback", str(run))
    cli_s = time.monotonic() - t0
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and all(ln.startswith("rolled back") for ln in lines), lines
    assert "block_region us-west-2" in lines[0] and "api_fault" in lines[1]  # newest first
    assert not _throttled(local_env)
    eventually(_deadline(local_env), 0.1)(lambda: _lb_answers(local_env, "us-west-2"))()
    assert local_env.status()["router"]["api_faults"] == []

    again = _cli("rollback", str(run))
    assert again.returncode == 0 and "nothing to roll back" in again.stdout
    TIMINGS["`gameday rollback` CLI, 2 faults, process included"] = (0.0, cli_s)
