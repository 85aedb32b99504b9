"""What streaming the history to the master costs a Locust worker: the same run with the worker
writing its part file (--gameday-history-stream off) and sending it to the master in batches
(on), side by side, alternating, against bench_history.py's loopback stub.

  saturation   a rate no worker reaches: the requests/s one worker core sustains;
  wire         the history's bytes per request over Locust's connection (the batches as Locust
               serialises them: msgpack), measured from the entries the master received.

    python benchmarks/bench_history_stream.py [--repeat 2] [--seconds 8] [--no-write]

Results go to benchmarks/results.json under "history_streaming".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_history import record_requests, stub_endpoints  # noqa: E402
from gameday import procs  # noqa: E402
from gameday.loadgen import history as hist  # noqa: E402
from gameday.loadgen import history_stream as hs  # noqa: E402
from gameday.loadgen.runner import LoadRunner  # noqa: E402


def one_run(out: Path, endpoints: dict, rate: float, seconds: float, stream: bool, users: int) -> dict:
    mode = "on" if stream else "off"
    with LoadRunner(out, endpoints=endpoints, shape="constant", surge_region="us-east-1", surge_rate=rate / 2,
                    region_mix={"us-west-2": rate / 2}, follower_rate=0, hold_s=seconds,
                    per_user_rps=rate / users, max_requests=int(rate * seconds * 2) + 100, request_timeout_s=5,
                    extra_args=("--gameday-history-stream", mode),
                    standalone=False) as load:   # the stream goes from a worker to its master
        worker = load.workers[0].pid
        t0, c0 = time.monotonic(), procs.cpu_seconds(worker)
        time.sleep(seconds * 0.8)          # a benchmark's measuring window, not a wait for a condition
        c1, t1 = procs.cpu_seconds(worker), time.monotonic()
        load.wait()
    st = load.stats()
    rps = st["requests"] / seconds
    run = {"stream": stream, "requests": st["requests"], "requests_per_s": round(rps, 1),
           "worker_cpu_share": round((c1 - c0) / (t1 - t0), 3),
           "requests_per_s_per_worker_core": round(rps / max(0.05, (c1 - c0) / (t1 - t0)), 1)}
    if stream:
        run.update(wire_bytes_per_request(out, st["requests"]))
    return run


def wire_bytes_per_request(out: Path, requests: int) -> dict:
    """The batches the master received, re-serialised as Locust sends them: msgpack of (type, data,
    node id), as locust.rpc.protocol.Message.serialize does (importing Locust here would patch
    this process with gevent)."""
    import msgpack

    comp = hs.read_completeness(out)
    entries, _ = hist.read_entries(out / hist.MERGED_NAME)
    sent = [{k: v for k, v in e.items() if k != "worker_time"} for e in entries]
    (w,) = comp["workers"].values()
    per_batch = max(1, round(w["entries_received"] / max(1, w["batches_received"])))
    total = 0
    for i in range(0, len(sent), per_batch):
        chunk = sent[i:i + per_batch]
        data = {"kind": "batch", "worker": "w1", "seq": i, "count": len(chunk), "sent_total": i + len(chunk),
                "completions_total": i, "entries": chunk}
        total += len(msgpack.dumps((hs.MESSAGE, data, "vm_caee87eba8814b0abf19bcb3ef593264")))
    return {"wire_bytes_per_request": round(total / max(1, requests), 1), "entries_per_batch": per_batch,
            "history_complete": comp["complete"]}


def writer_costs_us(n: int = 20000) -> dict:
    """Microseconds per request (its invoke and completion entries) in the worker: written to the
    part file, and batched and serialised as Locust sends the batches (msgpack), side by side.
    Steadier than the saturation runs on a shared machine: no other process is in the loop."""
    import msgpack

    wire = [0]

    def send(msg_type: str, data: dict) -> None:
        wire[0] += len(msgpack.dumps((msg_type, data, "vm_caee87eba8814b0abf19bcb3ef593264")))

    with tempfile.TemporaryDirectory() as d:
        file_us = record_requests(hist.HistoryWriter(Path(d) / "history.bench.w0-1@x.jsonl", "w0"), n)
    stream_us = record_requests(hs.StreamWriter("w0", send, run="r"), n)
    return {"file_writer_us_per_request": round(file_us, 2), "stream_writer_us_per_request": round(stream_us, 2),
            "stream_wire_bytes_per_request_micro": round(wire[0] / n, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--saturation-rate", type=float, default=5000.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    runs: list[dict] = []
    with stub_endpoints() as endpoints:
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
            for n in range(args.repeat):
                for stream in (True, False):
                    r = one_run(Path(tmp) / f"run{n}-{stream}", endpoints, args.saturation_rate, args.seconds,
                                stream, 200)
                    runs.append(r)
                    print(f"stream={stream!s:<5} {r['requests_per_s']:>8.1f} req/s  "
                          f"{r['requests_per_s_per_worker_core']:>8.1f} req/s per worker core  "
                          f"{r.get('wire_bytes_per_request', '-')} B/request", flush=True)
    record_result(runs, args, load_before)


def record_result(runs: list[dict], args, load_before) -> None:
    def median(stream: bool, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["stream"] is stream)

    with_s, without = median(True, "requests_per_s_per_worker_core"), median(False, "requests_per_s_per_worker_core")
    result = {
        "what": "one local Locust worker saturated against a loopback stub: history written to a part file "
                "(--gameday-history-stream off) vs sent to the master in batches (on); medians of --repeat",
        "streaming_rps_per_worker_core": with_s, "file_rps_per_worker_core": without,
        "throughput_ratio": round(with_s / without, 3),
        "streaming_rps": median(True, "requests_per_s"), "file_rps": median(False, "requests_per_s"),
        "wire_bytes_per_request": median(True, "wire_bytes_per_request"),
        "pair_ratios": [round(a["requests_per_s_per_worker_core"] / max(1e-9, b["requests_per_s_per_worker_core"]), 3)
                        for a, b in zip(runs[0::2], runs[1::2])],
        "seconds_per_run": args.seconds, "repeat": args.repeat,
        "loadavg_before": [round(x, 2) for x in load_before], "runs": runs,
    }
    micro = writer_costs_us()
    # what the writer's extra microseconds are of one request's worker CPU at the file mode's rate
    micro["stream_extra_share_of_request_cpu"] = round(
        (micro["stream_writer_us_per_request"] - micro["file_writer_us_per_request"]) / (1e6 / without), 3)
    result.update(micro)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if not args.no_write:
        from benchmarks.results_io import record

        record("history_streaming", result)


if __name__ == "__main__":
    main()
