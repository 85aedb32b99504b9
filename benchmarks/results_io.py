"""benchmarks/results.json: one key per benchmark, read-modify-written so benchmarks can run
separately and each keeps its latest numbers with the machine they were measured on."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results.json")


def record(key: str, data: dict) -> dict:
    try:
        all_results = json.loads(RESULTS.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        all_results = {}
    entry = {**data, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    all_results[key] = entry
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(all_results, indent=2, sort_keys=True) + "\n")
    tmp.replace(RESULTS)
    return entry
