"""Sensor tick time at scale: `--customers` x `--snapshots` complete snapshots on disk, the cursor in its steady
state (each customer's newest `keep_databases` launched), one new snapshot dropped; then one tick.

    .venv/bin/python benchmarks/bench_sensor_tick.py --customers 1000 --snapshots 100

Prints one JSON object: the tick's median seconds, the same for a tenth of the old snapshots per customer (growth
with old snapshots) and a tenth of the customers (growth with customers), and in the same run the floor it is
compared with: `snapshots.scan` over the same tree (the tick's filesystem work when scan cannot skip old snapshots).
Snapshot folders hold empty `*.parquet` files and `_SUCCESS`: the tick never reads Parquet. Goal: under 1 s at
1,000 x 100.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bluegreen_dagster.resources import PipelineResource  # noqa: E402
from bluegreen_dagster.sensors import snapshot_sensor  # noqa: E402
from bluegreen_dagster.snapshots import scan  # noqa: E402

KEEP = 2
FIRST_TS = 1_700_000_000


def make_tree(base: Path, customers: int, snapshots: int) -> None:
    for c in range(customers):
        customer = base / f"customer-{c:04d}"
        for s in range(snapshots):
            folder = customer / str(FIRST_TS + s)
            (folder / "nodes").mkdir(parents=True)
            (folder / "relationships").mkdir()
            (folder / "nodes" / "part-0.parquet").touch()
            (folder / "relationships" / "part-0.parquet").touch()
            (folder / "_SUCCESS").touch()


def steady_cursor(customers: int, snapshots: int) -> str:
    newest = [FIRST_TS + snapshots - 1 - i for i in range(KEEP)]
    return json.dumps({"v": 2, "launched": {f"customer-{c:04d}": newest for c in range(customers)}, "invalid": []})


def drop_new(base: Path, customer: int, ts: int) -> None:
    folder = base / f"customer-{customer:04d}" / str(ts)
    (folder / "nodes").mkdir(parents=True)
    (folder / "relationships").mkdir()
    for name in ("nodes/part-0.parquet", "relationships/part-0.parquet", "_SUCCESS"):
        (folder / name).touch()


def time_ticks(base: Path, customers: int, snapshots: int, repeats: int) -> dict:
    pipeline = PipelineResource(dataset={"base_path": str(base)},
                                orchestrator={"settle_seconds": 30, "keep_databases": KEEP, "max_retries": 0,
                                              "max_concurrent_loads": 1, "max_runs_per_tick": 20})
    cursor = steady_cursor(customers, snapshots)
    ticks, scans = [], []
    with dg.instance_for_test() as instance:
        for i in range(repeats):
            ts = FIRST_TS + snapshots + i
            drop_new(base, customers // 2, ts)
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"pipeline": pipeline})
            started = time.perf_counter()
            result = snapshot_sensor(context, pipeline)
            ticks.append(time.perf_counter() - started)
            keys = [r.partition_key for r in result.run_requests]
            assert keys == [f"customer-{customers // 2:04d}-{ts}"], keys
            cursor = result.cursor
            started = time.perf_counter()
            scan(base, 30)
            scans.append(time.perf_counter() - started)
    return {"customers": customers, "snapshots_on_disk": customers * (snapshots + repeats),
            "tick_s": round(statistics.median(ticks), 3), "full_scan_s": round(statistics.median(scans), 3)}


def tick_series(sizes: list[tuple[int, int]], repeats: int = 3) -> list[dict]:
    """One tick (and one full scan) per (customers, snapshots per customer) tree, each built in a temp folder."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sensor-") as tmp:
        for customers, snapshots in sizes:
            base = Path(tmp) / f"{customers}x{snapshots}"
            make_tree(base, customers, snapshots)
            results.append({**time_ticks(base, customers, snapshots, repeats), "snapshots_per_customer": snapshots})
            shutil.rmtree(base)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--snapshots", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = {"full": (args.customers, args.snapshots),
             "tenth_old_snapshots": (args.customers, max(KEEP, args.snapshots // 10)),
             "tenth_customers": (max(1, args.customers // 10), args.snapshots)}
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-sensor-") as tmp:
        for name, (customers, snapshots) in cases.items():
            base = Path(tmp) / name
            started = time.perf_counter()
            make_tree(base, customers, snapshots)
            built = time.perf_counter() - started
            results[name] = {**time_ticks(base, customers, snapshots, args.repeats), "tree_built_s": round(built, 1)}
    full = results["full"]
    print(json.dumps({
        "goal_tick_s": 1.0,
        "tick_s": full["tick_s"],
        "meets_goal": full["tick_s"] < 1.0,
        "tick_vs_full_scan": round(full["tick_s"] / full["full_scan_s"], 2) if full["full_scan_s"] else None,
        "growth_old_snapshots_x10": round(full["tick_s"] / results["tenth_old_snapshots"]["tick_s"], 2),
        "growth_customers_x10": round(full["tick_s"] / results["tenth_customers"]["tick_s"], 2),
        "cases": results,
        "machine": {"nproc": os.cpu_count(), "cpu": _cpu(), "python": platform.python_version()},
    }, indent=2))


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    main()
