"""A region's moto server as the harness starts it (environments/local/moto_main.py: access log
off, the dispatcher's per-request module scan and method listing cached, forked from a zygote
that warmed moto, the start-up's objects frozen out of the collector's sight) side by side with plain
`python -m moto.server`, the baseline, in the same run: the same request mix against each, in
alternating rounds, measuring the server process's CPU time per request (utime + stime from
/proc, so what the client does is not counted) and the client's wall time per request.

The mix is what the suite sends a region: DynamoDB PutItem/GetItem (the service tasks and the
replicator), CloudWatch PutMetricData (the load balancers' metrics), ECS ListTasks/
DescribeServices (the scheduler's ticks).

Run: python benchmarks/bench_moto.py [--rounds 3] [--requests 400]. Writes results.json key "moto_server".
Goal: the harness's server needs <= 0.8 x the baseline's CPU per request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import record  # noqa: E402
from gameday.environments.local.moto_region import MotoFleet, MotoServer  # noqa: E402
from gameday import procs  # noqa: E402

REGION = "us-east-1"


def clients(url: str):
    kw = dict(endpoint_url=url, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing",
              config=Config(retries={"max_attempts": 1}))
    return boto3.client("dynamodb", **kw), boto3.client("cloudwatch", **kw), boto3.client("ecs", **kw)


def prepare(url: str) -> None:
    ddb, _, ecs = clients(url)
    ddb.create_table(TableName="bench", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    ecs.create_cluster(clusterName="bench")


def drive(url: str, n: int) -> int:
    """n rounds of the mix; returns how many requests were sent."""
    ddb, cw, ecs = clients(url)
    sent = 0
    for i in range(n):
        ddb.put_item(TableName="bench", Item={"pk": {"S": f"k{i % 200}"}, "v": {"N": str(i)}})
        ddb.get_item(TableName="bench", Key={"pk": {"S": f"k{i % 200}"}})
        cw.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[
            {"MetricName": "RequestCount", "Dimensions": [{"Name": "LoadBalancer", "Value": "app/bench/1"}],
             "Value": 1.0, "Unit": "Count"}])
        ecs.list_tasks(cluster="bench")
        sent += 4
    return sent


def measure(server: MotoServer, n: int) -> dict:
    drive(server.url, 5)   # warm: imports and first-call caches on both sides
    c0, t0 = procs.cpu_seconds(server.proc.pid), time.perf_counter()
    sent = drive(server.url, n)
    wall, cpu = time.perf_counter() - t0, procs.cpu_seconds(server.proc.pid) - c0
    return {"requests": sent, "server_cpu_ms_per_request": round(1000 * cpu / sent, 3),
            "wall_ms_per_request": round(1000 * wall / sent, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds per server (default 3)")
    ap.add_argument("--requests", type=int, default=400, help="mix rounds per measurement, 4 requests each (default 400)")
    args = ap.parse_args()
    # the harness's server as the stack starts it: forked from the fleet's zygote
    fleet = MotoFleet([REGION], Path(tempfile.mkdtemp(prefix="gameday-bench-moto-"))).launch()
    fleet.send_plans({})
    servers = {"harness": fleet.wait_ready().servers[REGION], "baseline": MotoServer(REGION, module="moto.server").start()}
    try:
        for s in servers.values():
            prepare(s.url)
        runs: dict[str, list[dict]] = {k: [] for k in servers}
        for r in range(args.rounds):
            for name, s in servers.items():
                runs[name].append(measure(s, args.requests))
                print(f"round {r + 1} {name}: {runs[name][-1]}", flush=True)
    finally:
        servers["baseline"].stop()
        fleet.stop()
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("server_cpu_ms_per_request", "wall_ms_per_request")}
           for k, v in runs.items()}
    ratio_cpu = round(med["harness"]["server_cpu_ms_per_request"] / med["baseline"]["server_cpu_ms_per_request"], 3)
    ratio_wall = round(med["harness"]["wall_ms_per_request"] / med["baseline"]["wall_ms_per_request"], 3)
    res = record("moto_server", {"median": med, "runs": runs, "ratio_cpu_per_request": ratio_cpu,
                                 "ratio_wall_per_request": ratio_wall, "goal_ratio_cpu": 0.8,
                                 "goal_met": ratio_cpu <= 0.8, "load_average_1m": round(os.getloadavg()[0], 2),
                                 "baseline": "python -m moto.server (moto " + __import__("moto").__version__ + ")"})
    print(f"server CPU per request: harness {med['harness']['server_cpu_ms_per_request']} ms, baseline "
          f"{med['baseline']['server_cpu_ms_per_request']} ms, ratio {ratio_cpu}; wall ratio {ratio_wall}")
    return res


if __name__ == "__main__":
    main()
