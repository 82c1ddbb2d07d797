"""Snapshot-to-alias latency under `dagster dev`, against the same work done in-process (the floor).

Starts `dagster dev -w workspace.yaml` on a temp project (embedded target, our instance settings), drops
`--snapshots` small snapshots one after another, and times each from the atomic rename of the snapshot folder to
the moment the customer's alias points at it. The floor is the same five steps run in-process with
`dagster.materialize` on an identical snapshot: what is left is orchestration (sensor interval, queue, launch).

    .venv/bin/python benchmarks/bench_latency.py --snapshots 10 --people 1000

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bluegreen_dagster.definitions import build_definitions  # noqa: E402
from bluegreen_dagster.config import load_settings  # noqa: E402
from bluegreen_dagster.demo_data import write_snapshot  # noqa: E402
from bluegreen_dagster.resources import load_resources  # noqa: E402
from bluegreen_dagster.targets import make_target  # noqa: E402

GOAL_MEDIAN_S = 8.0  # issue 9: median drop-to-switch latency under 8 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_project(root: Path, scan_interval: int) -> Path:
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"base_path": "data"}, "embedded": {"path": "store", "min_free_disk_mb": 1},
        "orchestrator": {"scan_interval": scan_interval}}))
    (root / "data").mkdir()
    return config


def in_process_floor(people: int, repeats: int = 3) -> float:
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        config = make_project(Path(tmp), 10)
        settings = load_settings(config)
        job = build_definitions(load_resources(config)).resolve_job_def("load_snapshot")
        with dg.instance_for_test() as instance:
            for i in range(repeats):
                write_snapshot(settings.dataset.base_path, "floor", 1_000 + i, people=people)
                key = f"floor-{1_000 + i}"
                instance.add_dynamic_partitions("snapshots", [key])
                started = time.perf_counter()
                result = job.execute_in_process(partition_key=key, instance=instance)
                assert result.success
                times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_breakdown(home: Path, drops: dict[str, float]) -> dict[str, float]:
    """Median seconds of each leg, from the instance's run records: drop -> run created (sensor tick),
    created -> started (queue and launch), started -> finished (the run process, including its code load)."""
    legs: dict[str, list[float]] = {"drop_to_run_created_s": [], "created_to_started_s": [],
                                    "started_to_finished_s": []}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for record in instance.get_run_records():
            key = record.dagster_run.tags.get("dagster/partition")
            if key not in drops or not record.start_time or not record.end_time:
                continue
            created = record.create_timestamp.timestamp()
            legs["drop_to_run_created_s"].append(created - drops[key])
            legs["created_to_started_s"].append(record.start_time - created)
            legs["started_to_finished_s"].append(record.end_time - record.start_time)
    return {name: round(statistics.median(values), 2) for name, values in legs.items() if values}


def run(snapshots: int = 10, people: int = 1000, scan_interval: int = 10) -> dict:
    """Time `snapshots` drops under `dagster dev`, and the in-process floor before them."""
    args = argparse.Namespace(snapshots=snapshots, people=people, scan_interval=scan_interval)

    floor = in_process_floor(args.people)
    root = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    config = make_project(root, args.scan_interval)
    settings = load_settings(config)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "bluegreen_dagster" / "dagster_instance.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "BLUEGREEN_CONFIG": str(config)}
    dagster = Path(sys.executable).parent / "dagster"
    log = open(root / "dagster-dev.log", "w")
    proc = subprocess.Popen([str(dagster), "dev", "-w", str(REPO / "workspace.yaml"), "-p", str(free_port())],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    latencies, drops = [], {}
    try:
        time.sleep(8)  # let the webserver, daemon and code server start: not part of a snapshot's latency
        target = make_target(settings)
        for i in range(args.snapshots):
            ts = int(time.time()) + i
            dropped = time.perf_counter()
            write_snapshot(settings.dataset.base_path, "bench", ts, people=args.people)
            drops[f"bench-{ts}"] = time.time()
            deadline = dropped + 180
            while target.alias_target("bench") != f"bench-{ts}":
                if time.perf_counter() > deadline:
                    raise SystemExit(f"no switch to bench-{ts} within 180 s; see {root / 'dagster-dev.log'}")
                time.sleep(0.1)
            latencies.append(time.perf_counter() - dropped)
            time.sleep(1.3)  # so drops do not line up with the sensor's ticks
        breakdown = run_breakdown(home, drops)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # a busy machine can keep dagster dev's children from exiting in time
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()
    shutil.rmtree(root, ignore_errors=True)
    return {
        "benchmark": "snapshot_to_alias_latency",
        "snapshots": args.snapshots, "people_per_snapshot": args.people, "scan_interval_s": args.scan_interval,
        "latency_median_s": round(statistics.median(latencies), 2),
        "latency_p90_s": round(p90(latencies), 2),
        "goal_median_s": GOAL_MEDIAN_S, "meets_goal": statistics.median(latencies) < GOAL_MEDIAN_S,
        "latency_max_s": round(max(latencies), 2), "latency_min_s": round(min(latencies), 2),
        "floor_in_process_run_s": round(floor, 2),
        "orchestration_overhead_median_s": round(statistics.median(latencies) - floor, 2),
        "latencies_s": [round(x, 2) for x in latencies],
        **breakdown,
    }


def p90(values: list[float]) -> float:
    """The 90th percentile, linear between the two nearest (`statistics.quantiles`' inclusive method)."""
    return statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--snapshots", type=int, default=10)
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--scan-interval", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(run(args.snapshots, args.people, args.scan_interval), indent=2))


if __name__ == "__main__":
    main()
