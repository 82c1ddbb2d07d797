"""How long a `bluegreen metrics` scrape takes against a Dagster instance with a long run history.

Builds a SQLite instance holding `--runs` finished load_snapshot runs (one in `--failure-every` failed) with their
run-finished events and `snapshot_database` materializations, then scrapes the exporter's registry repeatedly:
the first scrapes read the history in bounded steps (`max_records` per query, `budget_seconds` per scrape), later
ones only what is new. The peer is the naive exporter: read every run record and every failed run's events on
each scrape. The limit is Prometheus' default scrape timeout (10 s).

    .venv/bin/python benchmarks/bench_metrics_scrape.py --runs 3000

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType
from prometheus_client import generate_latest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bluegreen_dagster.metrics import registry_for  # noqa: E402
from tests.conftest import make_project  # noqa: E402

PROMETHEUS_SCRAPE_TIMEOUT = 10.0


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "mem_gb": round(mem / 2**20), "cpu": cpu, "load_avg_1m": os.getloadavg()[0]}


def fill(instance: dg.DagsterInstance, runs: int, failure_every: int) -> None:
    for i in range(runs):
        customer = f"customer-{i % 20:02d}"
        key = f"{customer}-{1_700_000_000 + i}"
        failed = i % failure_every == 0
        run_id = str(uuid.uuid4())
        instance.add_run(dg.DagsterRun(job_name="load_snapshot", run_id=run_id,
                                       status=dg.DagsterRunStatus.FAILURE if failed else dg.DagsterRunStatus.SUCCESS,
                                       tags={"customer": customer, "dagster/partition": key}))
        if not failed:
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key="snapshot_database", partition=key,
                metadata={"database": key, "rows": 1000, "duration_s": 0.5, "rows_per_s": 2000, "reused": False}))
        event = DagsterEventType.RUN_FAILURE if failed else DagsterEventType.RUN_SUCCESS
        instance.report_dagster_event(DagsterEvent(event_type_value=event.value, job_name="load_snapshot"),
                                      run_id=run_id)


def naive_scrape(instance: dg.DagsterInstance) -> None:
    """What an exporter without a cursor would do: everything, every scrape."""
    for run in instance.get_runs(dg.RunsFilter(job_name="load_snapshot")):
        if run.status == dg.DagsterRunStatus.FAILURE:
            instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    cursor, more = None, True
    while more:  # Dagster caps one read at 10,000 records
        result = instance.fetch_materializations(dg.AssetKey("snapshot_database"), limit=10_000, cursor=cursor)
        cursor, more = result.cursor, result.has_more


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--failure-every", type=int, default=10)
    args = parser.parse_args()
    # tmpfs when there is one: filling a SQLite history on disk costs an fsync per event
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        project = make_project(Path(tmp))
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            fill_s = timed(lambda: fill(instance, args.runs, args.failure_every))
            registry = registry_for(project.resources.initialized(), instance_opener=lambda: instance,
                                    cache_seconds=0)
            scrapes = []
            while True:
                seconds = timed(lambda: scrapes.append(generate_latest(registry).decode()))
                scrapes[-1] = (seconds, "bluegreen_instance_history_caught_up 1.0" in scrapes[-1])
                if scrapes[-1][1] or len(scrapes) > 1000:
                    break
            steady = sorted(timed(lambda: generate_latest(registry)) for _ in range(10))[5]
            naive = sorted(timed(lambda: naive_scrape(instance)) for _ in range(3))[1]
    catch_up = [s for s, _ in scrapes]
    print(json.dumps({
        "benchmark": "metrics_scrape", "runs": args.runs, "fill_seconds": round(fill_s, 1),
        "catch_up_scrapes": len(catch_up), "slowest_catch_up_scrape_s": round(max(catch_up), 3),
        "steady_scrape_s": round(steady, 4), "naive_scrape_s": round(naive, 3),
        "naive_over_steady": round(naive / steady, 1),
        "limit_s": PROMETHEUS_SCRAPE_TIMEOUT, "within_limit": max(catch_up) < PROMETHEUS_SCRAPE_TIMEOUT,
        "machine": machine()}, indent=2))


if __name__ == "__main__":
    main()
