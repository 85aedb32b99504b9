"""The run log (gameday/runlog.py): one schema for the clients' history, the environment's timeline
and the fault journal; round trips through the real writers, the journal read as nemesis operations,
the one migration of runs written before the schema, and one-line errors naming file:line."""

from __future__ import annotations

import ast
import json
import math
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gameday import runlog
from gameday.events import EventLog
from gameday.faults.journal import Journal, read_journal
from gameday.loadgen.history import HistoryWriter, read_entries
from gameday.runlog import (EVENT_KINDS, HISTORY_ALIASES_V1, RunLogError, migrate_v1, nemesis_ops, read_events,
                            read_history, read_journal_lines, run_log, upgrade)

REPO = Path(__file__).resolve().parents[1]
STORED = REPO / "tests" / "data" / "run-surge-blackhole.tar.gz"   # a run recorded before the run log schema
FS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
FINITE = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
EPOCH = st.floats(min_value=1.7e9, max_value=2.0e9, allow_nan=False)
JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | FINITE | TEXT,
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("old")
    with tarfile.open(STORED) as tf:
        tf.extractall(dest, filter="data")
    return dest / "run2"


# -- round trips through the real writers ------------------------------------------------------------------

@st.composite
def client_ops(draw) -> dict:
    op = {"type": draw(st.sampled_from(runlog.OP_TYPES)), "time": draw(EPOCH), "mono": draw(st.floats(0, 1e6)),
          "id": draw(TEXT), "process": draw(TEXT), "op": draw(st.sampled_from(["write", "read", "ping"])),
          "key": draw(st.none() | TEXT), "value": draw(JSONISH), "region": draw(st.none() | TEXT)}
    optional = {"served_by": st.none() | TEXT, "status": st.none() | st.integers(0, 599),
                "latency_s": st.none() | st.floats(0, 60), "error": st.none() | TEXT, "worker": TEXT,
                "dns_ttl": st.none() | st.floats(0, 300), "task": TEXT}
    return {**op, **draw(st.fixed_dictionaries({}, optional=optional))}


@FS
@given(st.lists(client_ops(), min_size=1, max_size=20))
def test_any_client_op_written_is_read_back_the_same(tmp_path, ops):
    path = tmp_path / "history.r.w0-1@h.jsonl"
    path.unlink(missing_ok=True)
    w = HistoryWriter(path, "w0")
    for op in ops:
        w.write(op)
    w.close()
    lines = read_history(path, validate=True)
    assert lines.records == ops and not lines.truncated_tail
    assert read_entries(path) == (ops, False)   # the load generator reads through the run log too


# each kind with fields of the types its emitters pass (the schema's own models decide validity)
EVENT_FIELDS = {
    "alarm": st.fixed_dictionaries({"region": TEXT, "alarm": TEXT, "old": TEXT, "new": TEXT, "reason": TEXT,
                                    "value": st.none() | FINITE, "source": TEXT}),
    "dns_change": st.fixed_dictionaries({"name": TEXT, "type": st.just("A"), "old": st.lists(TEXT, max_size=2),
                                         "new": st.lists(TEXT, max_size=2)}),
    "replication_lag": st.fixed_dictionaries({"direction": TEXT, "lag_s": st.floats(0, 100), "pending": st.integers(0, 99),
                                              "paused": st.booleans(), "applied": st.integers(0, 99)}),
    "ecs": st.fixed_dictionaries({"action": TEXT, "region": TEXT},
                                 optional={"task": TEXT, "az": TEXT, "port": st.integers(1, 65535),
                                           "exit_code": st.none() | st.integers(-9, 255), "container": TEXT}),
    "fault": st.fixed_dictionaries({"action": st.sampled_from(["inject", "rollback"]), "ok": st.booleans(),
                                    "id": TEXT, "params": st.dictionaries(TEXT, JSONISH, max_size=3)}),
    "note": st.dictionaries(st.sampled_from(["text", "by", "extra"]), JSONISH, max_size=3),
}


@FS
@given(st.lists(st.sampled_from(sorted(EVENT_FIELDS)).flatmap(
    lambda k: EVENT_FIELDS[k].map(lambda f, k=k: (k, f))), min_size=1, max_size=12))
def test_any_event_emitted_is_read_back_the_same(tmp_path, events):
    path = tmp_path / "env" / "events.jsonl"
    path.unlink(missing_ok=True)
    log = EventLog(path)
    emitted = [log.emit(kind, **fields) for kind, fields in events]
    log.close()
    back = read_events(path).records
    assert back == json.loads(json.dumps(emitted))
    assert all({"seq", "time", "mono", "kind"} <= set(e) and not {"t", "ts"} & set(e) for e in back)
    assert [e["seq"] for e in back] == list(range(1, len(events) + 1))


FAULTS = st.fixed_dictionaries({"id": TEXT.filter(bool), "kind": TEXT, "target": TEXT,
                                "params": st.dictionaries(TEXT, JSONISH, max_size=3)})
STEPS = st.lists(st.tuples(st.sampled_from(runlog.JOURNAL_ACTIONS), FAULTS, st.none() | TEXT,
                           st.dictionaries(TEXT, JSONISH, max_size=2)), min_size=1, max_size=10)


@FS
@given(STEPS)
def test_any_journal_step_written_is_read_back_the_same(tmp_path, steps):
    path = tmp_path / f"journal-{len(list(tmp_path.iterdir()))}.jsonl"
    j = Journal(path)
    written = [j.write(action, **fault, scenario=scenario, detail=detail) for action, fault, scenario, detail in steps]
    back = read_journal_lines(path).records
    assert back == json.loads(json.dumps(written))
    for line in back:   # each field once, in the canonical names
        assert set(line) == {"seq", "time", "mono", "process", "action", "fault", "scenario", "detail"}
        assert line["process"] == "nemesis"


def test_a_journal_step_stamped_in_the_past_keeps_one_clock(tmp_path):
    import time

    j = Journal(tmp_path / "journal.jsonl")
    before = time.time() - 5.0
    now = j.write("intent", id="f1", kind="k", target="t", params={})
    past = j.write("injected", id="f1", kind="k", target="t", params={}, ts=before)
    assert past["time"] == round(before, 6)
    # mono follows the wall time it was given: the same 5 s earlier on the monotonic clock
    assert (now["mono"] - past["mono"]) == pytest.approx(now["time"] - past["time"], abs=0.01)


# -- the journal as operations of the nemesis ---------------------------------------------------------------

WANT = {"intent": [("start", "invoke")], "injected": [("start", "ok")], "inject_failed": [("start", "info")],
        "rolled_back": [("stop", "invoke"), ("stop", "ok")], "rollback_failed": [("stop", "invoke"), ("stop", "info")]}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(runlog.JOURNAL_ACTIONS), FAULTS, EPOCH), max_size=12))
def test_journal_steps_map_to_nemesis_operations(steps):
    lines = [{"seq": i + 1, "time": t, "mono": t - 1e9, "process": "nemesis", "action": a, "fault": f,
              "scenario": "s", "detail": {"n": i}} for i, (a, f, t) in enumerate(steps)]
    ops = nemesis_ops(lines)
    expected = [(line, f, typ) for line in lines for f, typ in WANT[line["action"]]]
    assert len(ops) == len(expected)
    for op, (line, f, typ) in zip(ops, expected):
        assert op["process"] == "nemesis" and op["f"] == f and op["type"] == typ
        assert op["value"] == line["fault"] and op["id"] == f"{line['fault']['id']}:{f}"
        assert (op["time"], op["mono"], op["action"], op["detail"]) == (line["time"], line["mono"], line["action"],
                                                                         line["detail"])
    # every completion follows an invoke of the same operation (a zero-length one for a rollback)
    for i, op in enumerate(ops):
        if op["type"] != "invoke" and op["f"] == "stop":
            assert ops[i - 1]["type"] == "invoke" and ops[i - 1]["id"] == op["id"]


def test_a_fault_that_was_rolled_back_is_start_then_stop():
    f = {"id": "block_region-1", "kind": "block_region", "target": "us-east-1", "params": {"region": "us-east-1"}}
    lines = [{"seq": n, "time": 10.0 + n, "mono": 1.0 + n, "process": "nemesis", "action": a, "fault": f,
              "scenario": "x", "detail": {}} for n, a in enumerate(["intent", "injected", "rolled_back"], 1)]
    assert [(o["type"], o["f"], o["time"]) for o in nemesis_ops(lines)] == [
        ("invoke", "start", 11.0), ("ok", "start", 12.0), ("invoke", "stop", 13.0), ("ok", "stop", 13.0)]


# -- runs written before the schema: one migration ----------------------------------------------------------

def _raw(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_an_old_run_reads_through_the_migration_to_the_same_facts(old_run: Path):
    raw_events, raw_journal = _raw(old_run / "env" / "events.jsonl"), _raw(old_run / "journal.jsonl")
    assert all("ts" in e and "time" not in e for e in raw_events), "the stored run is not an old one any more"
    events = read_events(old_run / "env" / "events.jsonl").records
    assert len(events) == len(raw_events)
    for old, new in zip(raw_events, events):
        assert new["time"] == old["ts"] and new["mono"] is None
        assert {k: v for k, v in old.items() if k not in ("t", "ts")} == {k: v for k, v in new.items()
                                                                          if k not in ("time", "mono")}
    journal = read_journal_lines(old_run / "journal.jsonl").records
    assert [(j["seq"], j["time"], j["action"], j["fault"], j["scenario"], j["detail"]) for j in journal] == [
        (o["seq"], o["ts"], o["event"], o["fault"], o["scenario"], o["detail"]) for o in raw_journal]
    faults, warnings = read_journal(old_run / "journal.jsonl")
    assert [(f.kind, f.state, f.intent_ts) for f in faults] == [("block_region", "rolled_back", raw_journal[0]["ts"])]
    assert warnings == []


def test_the_migration_of_a_real_old_journal_line_is_exact(old_run: Path):
    old = _raw(old_run / "journal.jsonl")[1]
    assert migrate_v1(old, "journal") == {
        "seq": old["seq"], "time": old["ts"], "mono": None, "process": "nemesis", "action": old["action"],
        "fault": {"id": old["id"], "kind": old["kind"], "target": old["target"], "params": old["params"]},
        "scenario": old["scenario"], "detail": old["detail"]}
    # a new line is left alone; an old one goes through once
    new = upgrade(old, "journal")
    assert upgrade(new, "journal") is new
    runlog.validate_step(new)


def test_old_events_with_only_the_iso_time_migrate():
    e = migrate_v1({"seq": 3, "t": "2026-11-25T10:50:41.319+00:00", "kind": "scenario", "action": "start",
                    "name": "x"}, "events")
    assert e["time"] == pytest.approx(1795603841.319) and "t" not in e


@st.composite
def old_history_entries(draw) -> tuple[dict, dict]:
    """(an entry in a recorder's own spellings, what it means in canonical names)."""
    t = draw(EPOCH)
    canonical = {"type": draw(st.sampled_from(runlog.OP_TYPES)), "time": t, "op": draw(st.sampled_from(["write", "read"])),
                 "key": draw(TEXT), "value": draw(st.integers()), "region": draw(TEXT), "served_by": draw(TEXT),
                 "status": draw(st.integers(0, 599)), "error": draw(TEXT), "latency_s": draw(st.floats(0, 10))}
    entry = {"type": canonical["type"]}
    for name, value in canonical.items():
        if name == "type":
            continue
        spelled = draw(st.sampled_from((name,) + HISTORY_ALIASES_V1.get(name, ())))
        if spelled == "latency_ms":
            value = value * 1000.0
        elif spelled in ("at", "t") and draw(st.booleans()):
            value = runlog.iso(t)   # the old reader took ISO strings too
            canonical["time"] = runlog.parse_time(value, "")
        entry[spelled] = value
    return entry, canonical


@settings(max_examples=300, deadline=None)
@given(old_history_entries())
def test_old_history_spellings_migrate_to_the_canonical_names(pair):
    entry, canonical = pair
    got = upgrade(entry, "history")
    assert set(got) == set(canonical)
    for k, v in canonical.items():
        assert got[k] == pytest.approx(v, rel=1e-12) if isinstance(v, float) else got[k] == v, k


def test_an_old_history_file_is_migrated_when_read(tmp_path):
    p = tmp_path / "history.jsonl"
    p.write_text('{"type": "invoke", "f": "write", "k": "a", "v": 1, "ts": 100.0}\n'
                 '{"type": "ok", "f": "write", "k": "a", "v": 1, "ts": 100.5, "latency_ms": 500, "server_region": "e"}\n')
    assert read_history(p, validate=True).records == [
        {"type": "invoke", "op": "write", "key": "a", "value": 1, "time": 100.0},
        {"type": "ok", "op": "write", "key": "a", "value": 1, "time": 100.5, "latency_s": 0.5, "served_by": "e"}]


# -- bad input: one line naming file:line -------------------------------------------------------------------

BAD = {
    "history: bad JSON in the middle": ("history", '{"type": "ok", "time": 1}\n{"type": \n{"type": "ok", "time": 2}\n',
                                        r"^h\.jsonl:2: not valid JSON"),
    "history: not an object": ("history", '{"type": "ok", "time": 1}\n[1]\n', r"^h\.jsonl:2: expected a JSON object"),
    "history: wrong type": ("history", '{"type": "ok", "time": 1}\n{"type": "ok", "time": 2, "latency_s": "slow"}\n',
                            r"^h\.jsonl:2: history entry: field 'latency_s'"),
    "history: no type": ("history", '{"time": 1}\n', r"^h\.jsonl:1: history entry: field 'type': Field required"),
    "history: bad old time": ("history", '{"type": "ok", "ts": "yesterday"}\n',
                              r"^h\.jsonl:1: field 'ts': not an ISO-8601 time"),
    "events: unknown kind": ("events", '{"seq": 1, "time": 1, "kind": "alarm_fired"}\n',
                             r"^h\.jsonl:1: unknown event kind 'alarm_fired'"),
    "events: wrong type": ("events", '{"seq": 1, "time": 1, "kind": "target_health", "region": "r", "target": "t", '
                                     '"healthy": "maybe"}\n', r"^h\.jsonl:1: event 'target_health': field 'healthy'"),
    "events: no time at all": ("events", '{"seq": 1, "kind": "note"}\n', r"^h\.jsonl:1: no time"),
    "journal: bad action": ("journal", '{"seq": 1, "time": 1, "process": "nemesis", "action": "applied", '
                                       '"fault": {"id": "a", "kind": "k", "target": "t", "params": {}}}\n',
                            r"^h\.jsonl:1: journal line: field 'action'"),
    "journal: empty fault id": ("journal", '{"seq": 1, "time": 1, "process": "nemesis", "action": "intent", '
                                           '"fault": {"id": "", "kind": "k", "target": "t", "params": {}}}\n',
                                r"^h\.jsonl:1: journal line: field 'fault.id'"),
}
READERS = {"history": lambda p: read_history(p, "h.jsonl", validate=True), "events": lambda p: read_events(p, "h.jsonl"),
           "journal": lambda p: read_journal_lines(p, "h.jsonl")}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_naming_file_and_line(tmp_path, case):
    source, text, message = BAD[case]
    p = tmp_path / "h.jsonl"
    p.write_text(text)
    with pytest.raises(RunLogError, match=message) as e:
        READERS[source](p)
    assert "\n" not in str(e.value)


def test_a_last_line_cut_short_is_dropped_and_reported(tmp_path):
    p = tmp_path / "history.jsonl"
    p.write_text('{"type": "ok", "time": 1}\n{"type": "ok", "ti')
    lines = read_history(p)
    assert lines.records == [{"type": "ok", "time": 1}] and lines.truncated_tail


def test_a_bad_line_is_found_in_a_later_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "_CHUNK", 3)
    p = tmp_path / "history.jsonl"
    p.write_text("".join('{"type": "ok", "time": %d}\n' % i for i in range(7)) + "nope\n" + '{"type": "ok", "time": 9}\n')
    with pytest.raises(RunLogError, match=r":8: not valid JSON"):
        read_history(p)
    p.write_text("".join('{"type": "ok", "time": %d}\n\n' % i for i in range(7)))   # blank lines are no records
    assert [e["time"] for e in read_history(p).records] == list(range(7))


# -- the emitter checks every event against the schema ------------------------------------------------------

def test_emit_refuses_an_unknown_kind_a_wrong_type_and_the_logs_own_fields(tmp_path):
    log = EventLog(tmp_path / "events.jsonl")
    with pytest.raises(ValueError, match="unknown event kind 'alarms'"):
        log.emit("alarms", region="us-east-1")
    with pytest.raises(ValueError, match=r"event 'alarm': field 'old': Field required"):
        log.emit("alarm", region="us-east-1", alarm="a", new="ALARM")
    with pytest.raises(ValueError, match=r"event 'target_health': field 'healthy'"):
        log.emit("target_health", region="r", target="t", healthy="yes")
    with pytest.raises(ValueError, match="field 'time' is the run log's own"):
        log.emit("note", time=5)
    ok = log.emit("target_health", region="r", target="t", az="a", healthy=True)
    log.close()
    assert ok["seq"] == 1, "a refused event must not use up a sequence number"
    assert read_events(tmp_path / "events.jsonl").records == [ok]


def _emit_calls() -> list[tuple[str, int, str, set[str]]]:
    """(file, line, kind, keyword names) of every emit("kind", ...) call and every POST /events body with a
    literal kind, in the harness's source (tests excluded)."""
    found = []
    for path in sorted(REPO.glob("*/**/*.py")):
        if path.parts[len(REPO.parts)] in ("tests", ".venv", "build") or "site-packages" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            rel = f"{path.relative_to(REPO)}:{node.lineno}"
            if isinstance(node.func, ast.Attribute) and node.func.attr == "emit" and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((rel, node.args[0].value, {k.arg for k in node.keywords if k.arg}))
            elif len(node.args) >= 3 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "/events" \
                    and isinstance(node.args[2], ast.Dict):
                body = {k.value: v for k, v in zip(node.args[2].keys, node.args[2].values) if isinstance(k, ast.Constant)}
                if isinstance(body.get("kind"), ast.Constant):
                    found.append((rel, body.pop("kind").value, set(body)))
    return found


def test_every_emit_call_site_names_a_known_kind_and_its_declared_fields():
    calls = _emit_calls()
    assert len(calls) >= 30, "the call-site scan found too few emit calls: is it still looking in the right place?"
    models = {m.model_fields["kind"].annotation.__args__[0]: m for m in runlog.EVENT_MODELS}
    problems = []
    for where, kind, names in calls:
        if kind not in EVENT_KINDS:
            problems.append(f"{where}: unknown kind {kind!r}")
            continue
        undeclared = names - set(models[kind].model_fields)
        if undeclared:
            problems.append(f"{where}: {kind} passes undeclared {sorted(undeclared)}")
    assert not problems, "\n".join(problems)


# -- one stream ---------------------------------------------------------------------------------------------

def test_run_log_merges_clients_nemesis_and_environment_in_time_order(old_run: Path):
    recs = list(run_log(old_run, validate=True))
    times = [r.time for r in recs]
    assert times == sorted(times) and all(math.isfinite(t) for t in times)
    by = {s: [r for r in recs if r.source == s] for s in ("client", "nemesis", "env")}
    assert len(by["env"]) == len(_raw(old_run / "env" / "events.jsonl"))
    histories = sorted((old_run / "scenarios").glob("*/history.jsonl"))
    assert len(by["client"]) == sum(len(_raw(h)) for h in histories) > 0
    assert {r.scenario for r in by["client"]} == {h.parent.name for h in histories}
    assert [(r.record["type"], r.record["f"]) for r in by["nemesis"]] == [
        ("invoke", "start"), ("ok", "start"), ("invoke", "stop"), ("ok", "stop")]
    # the fault's start lies inside the scenario whose journal line it is, among that scenario's client ops
    start = by["nemesis"][1]
    mine = [r.time for r in by["client"] if r.scenario == start.record["scenario"]]
    assert min(mine) < start.time < max(mine)
