"""timeline.jsonl: everything that happened in a run on one time axis.

  source "env"      the environment's events as recorded (alarm, lambda_invocation, dns_change,
                    task, target_health, replication_lag, replication, data_plane, ...)
  source "journal"  faults: kind "fault", action intent / injected / inject_failed / rolled_back /
                    rollback_failed, fault_kind (block_region, ...), fault {id, kind, target, params}
  source "client"   each scenario's client history summarised per time bucket (1 s) and region:
                    requests, ok, fail, info, p50/p99 latency
  source "scenario" scenario start and finish, with the outcome

Every line has "time" (epoch seconds, the run log's time base: gameday/runlog.py); lines are sorted by it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from gameday.reports.rundata import Op, Run

BUCKET_S = 1.0


def quantile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank quantile (the value a request actually had, no interpolation)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def op_region(o: Op) -> str:
    """The region a completed request is charted under: the one that served it, else the one aimed at."""
    return o.served_by or o.region or "unknown"


def client_buckets(ops: list[Op], bucket_s: float = BUCKET_S) -> list[dict]:
    """Completions per (bucket, region): ts (the bucket's start, epoch s), requests, ok, fail, info,
    p50_s, p99_s (ok and fail latencies)."""
    groups: dict[tuple[float, str], dict] = defaultdict(lambda: {"ok": 0, "fail": 0, "info": 0, "lat": []})
    for o in ops:
        if o.type == "invoke":
            continue
        b = math.floor(o.time / bucket_s) * bucket_s
        g = groups[(b, op_region(o))]
        g[o.type] += 1
        if o.latency_s is not None and o.type != "info":  # an info (timeout) latency is the timeout, not the service
            g["lat"].append(o.latency_s)
    out = []
    for (b, region), g in sorted(groups.items()):
        lat = sorted(g["lat"])
        out.append({"ts": b, "region": region, "bucket_s": bucket_s, "requests": g["ok"] + g["fail"] + g["info"],
                    "ok": g["ok"], "fail": g["fail"], "info": g["info"],
                    "p50_s": _r(quantile(lat, 0.50)), "p99_s": _r(quantile(lat, 0.99))})
    return out


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def build_timeline(run: Run, bucket_s: float = BUCKET_S) -> list[dict]:
    lines: list[dict] = []
    for e in run.events:
        # some events carry their own "source" field (an alarm's evaluation/set_alarm_state, a
        # replication pause's source region): kept as "event_source" so "source" stays the origin
        fields = {("event_source" if k == "source" else k): v for k, v in e.items() if k != "time"}
        lines.append({"time": e["time"], "source": "env", **fields})
    for j in run.journal:
        lines.append({"time": j["time"], "source": "journal", **{k: v for k, v in j.items() if k != "time"},
                      "kind": "fault", "fault_kind": j["fault"]["kind"]})
    for s in run.scenarios:
        if s.started is not None:
            lines.append({"time": s.started, "source": "scenario", "kind": "scenario", "action": "started",
                          "scenario": s.name})
        if s.finished is not None:
            lines.append({"time": s.finished, "source": "scenario", "kind": "scenario", "action": "finished",
                          "scenario": s.name, "outcome": s.result["outcome"]})
        if s.history:
            for b in client_buckets(s.history, bucket_s):
                lines.append({"time": b["ts"], "source": "client", "kind": "client", "scenario": s.name,
                              **{k: v for k, v in b.items() if k != "ts"}})
    lines.sort(key=lambda x: x["time"])  # stable: same-instant lines keep source order
    return lines


def write_timeline(lines: list[dict], run_dir: Path) -> Path:
    path = Path(run_dir) / "timeline.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w") as fh:
        for line in lines:
            fh.write(json.dumps(line, default=str) + "\n")
    tmp.replace(path)
    return path
