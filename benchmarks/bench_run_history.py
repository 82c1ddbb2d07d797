"""Run history at scale on PostgreSQL: what the UI's Runs page, the sensor tick, our records queries and the run
retention job cost at `--runs` runs (500,000: three weeks of 24 snapshots a day for 1,000 customers), against the
same at `--small` runs (5,000), in one run on one PostgreSQL server (tests/postgres.py: Debian's, by pid).

    nice -n 10 .venv/bin/python benchmarks/bench_run_history.py --runs 500000 --small 5000

The history is written with COPY into Dagster's own tables, shaped like ours: one real template run (our asset
keys, `record_live`, the three gate checks) is executed through Dagster on the instance, then its run row, tags
and events (run start / success, the `snapshot_database`, `alias_switch` and `live_graph` materializations, the
check evaluations) are copied per run with run id, customer, partition key, status and times replaced, plus the
sensor's tags (`dagster/run_key`, `dagster/sensor`). 1,000 customers, one snapshot per customer per hour, 2 % of
runs failed, the newest 10 in flight; the newest two snapshots per customer exist as partitions.

Measured (median of `--repeats`):
- ui: a real `dagster-webserver` on the instance, the Runs page's GraphQL (`RunsFeedRootQuery`, 30 rows, as the
  UI sends it; the same filtered by a customer tag and by status Failed; the feed count; the queued and in-progress
  counts) over HTTP;
- sensor_tick: `snapshot_sensor` evaluated with the instance (1,000 customers, one new snapshot), then what the
  daemon does per request before launching: the run-key lookup (`dagster/_daemon/sensor.py`
  `fetch_existing_runs`) and the partition add;
- records: records.py's queries the steps, reconcile, the exporter and retention ask;
- retention: `retention.delete_old_runs` deleting the oldest day (`--retention-batch` per batch).

Prints one JSON object, with the machine and the load average before and after.
"""

# No `from __future__ import annotations`: Dagster reads the template asset's annotations.

import argparse
import csv
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_sensor_tick import FIRST_TS, drop_new, steady_cursor  # noqa: E402
from bluegreen_dagster import records  # noqa: E402
from bluegreen_dagster.live_graph import SWITCH, record_live  # noqa: E402
from bluegreen_dagster.partitions import snapshot_partitions  # noqa: E402
from bluegreen_dagster.resources import PipelineResource  # noqa: E402
from bluegreen_dagster.retention import delete_old_runs  # noqa: E402
from bluegreen_dagster.sensors import snapshot_sensor  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.postgres import Postgres, start_postgres  # noqa: E402

CUSTOMERS = 1000
TEMPLATE_CUSTOMER = "zzqtmpl"
TEMPLATE_KEY = f"{TEMPLATE_CUSTOMER}-{FIRST_TS - 1}"
KEPT_EVENTS = {"RUN_START", "RUN_SUCCESS", "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION", "STEP_START",
               "STEP_SUCCESS"}
IN_FLIGHT = 10


# -- the template run ----------------------------------------------------------------------------------------------

@dg.asset(key=records.LOADED_ASSET, partitions_def=snapshot_partitions,
          check_specs=[dg.AssetCheckSpec(name, asset=records.LOADED_ASSET, blocking=True)
                       for name in records.GATE_CHECKS])
def _load(context: dg.AssetExecutionContext):
    key = context.partition_key
    yield dg.MaterializeResult(metadata={"database": key, "rows": 1000, "fingerprint": "0" * 64},
                               check_results=[dg.AssetCheckResult(check_name=n, passed=True)
                                              for n in records.GATE_CHECKS])
    context.log_event(dg.AssetMaterialization(asset_key=records.SWITCH_ASSET, partition=key,
                                              metadata={"switched": True}))
    record_live(context.instance, TEMPLATE_CUSTOMER, key, None, how=SWITCH, by="bench", run_id=context.run.run_id,
                log_event=context.log_event)


def template_rows(instance: dg.DagsterInstance, conn) -> tuple[str, tuple, list, list]:
    """(template run id, its run row, its tag rows, its kept event rows) after running the template load once."""
    instance.add_dynamic_partitions(records.SNAPSHOTS_PARTITIONS_NAME, [TEMPLATE_KEY])
    result = dg.materialize([_load], instance=instance, partition_key=TEMPLATE_KEY,
                            tags={records.CUSTOMER_TAG: TEMPLATE_CUSTOMER})
    assert result.success
    run_id = result.run_id
    with conn.cursor() as cur:
        cur.execute("SELECT snapshot_id, pipeline_name, mode, run_body, partition, partition_set FROM runs "
                    "WHERE run_id = %s", (run_id,))
        run_row = cur.fetchone()
        cur.execute("SELECT key, value FROM run_tags WHERE run_id = %s", (run_id,))
        tags = cur.fetchall()
        cur.execute("SELECT event, dagster_event_type, step_key, asset_key, partition FROM event_logs "
                    "WHERE run_id = %s ORDER BY id", (run_id,))
        events = [row for row in cur.fetchall() if row[1] in KEPT_EVENTS]
    return run_id, run_row, tags, events


# -- bulk history --------------------------------------------------------------------------------------------------

def _copy(conn, table: str, columns: list[str], rows) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    for row in rows:
        writer.writerow(["\\N" if v is None else v for v in row])
    buf.seek(0)
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buf)


def fill(conn, instance: dg.DagsterInstance, runs: int) -> dict:
    """Write `runs` runs shaped like the template, oldest first, ending now; returns their shape."""
    template_id, run_row, tags, events = template_rows(instance, conn)
    snapshot_id, job, mode, body, _, partition_set = run_row
    per_customer = -(-runs // CUSTOMERS)
    span = timedelta(days=21)  # three weeks at any size: at 500,000 runs that is 24 snapshots a day per customer
    step = span / per_customer
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    first = now - span
    ts_re = re.compile(r'"timestamp": [0-9.]+')
    status_re = re.compile(r'"DagsterRunStatus\.[A-Z_]+"')
    started = time.perf_counter()
    batch = 50_000
    for offset in range(0, runs, batch):
        run_rows, tag_rows, event_rows = [], [], []
        for i in range(offset, min(runs, offset + batch)):
            s, c = divmod(i, CUSTOMERS)
            customer = f"customer-{c:04d}"
            key = f"{customer}-{FIRST_TS + s}"
            run_id = f"{i:08d}-0000-4000-8000-{c:012d}"
            when = first + step * s + timedelta(seconds=c % 60)
            status = ("STARTED" if i >= runs - IN_FLIGHT else "FAILURE" if i % 50 == 7 else "SUCCESS")
            epoch = when.replace(tzinfo=timezone.utc).timestamp()

            def sub(text: str) -> str:
                return (text.replace(template_id, run_id).replace(TEMPLATE_KEY, key)
                        .replace(TEMPLATE_CUSTOMER, customer))

            run_body = status_re.sub(f'"DagsterRunStatus.{status}"', sub(body))
            run_rows.append((run_id, snapshot_id, job, mode, status, run_body, key, partition_set, when, when,
                             epoch, None if status == "STARTED" else epoch + 5))
            for k, v in tags:
                tag_rows.append((run_id, k, sub(v)))
            tag_rows += [(run_id, "dagster/run_key", key), (run_id, "dagster/sensor", records.SNAPSHOT_SENSOR)]
            for event, kind, step_key, asset_key, partition in events:
                if status != "SUCCESS" and kind in ("ASSET_MATERIALIZATION", "RUN_SUCCESS"):
                    continue
                event_rows.append((run_id, ts_re.sub(f'"timestamp": {epoch}', sub(event)), kind, when, step_key,
                                   asset_key, sub(partition) if partition else None))
        _copy(conn, "runs", ["run_id", "snapshot_id", "pipeline_name", "mode", "status", "run_body", "partition",
                             "partition_set", "create_timestamp", "update_timestamp", "start_time", "end_time"],
              run_rows)
        _copy(conn, "run_tags", ["run_id", "key", "value"], tag_rows)
        _copy(conn, "event_logs", ["run_id", "event", "dagster_event_type", "timestamp", "step_key", "asset_key",
                                   "partition"], event_rows)
        conn.commit()
    # The partitions that exist: each customer's newest two snapshots (keep_databases), and every customer.
    newest = per_customer - 1
    keys = [f"customer-{c:04d}-{FIRST_TS + s}" for c in range(CUSTOMERS) for s in (newest - 1, newest)
            if s * CUSTOMERS + c < runs]
    instance.delete_dynamic_partition(records.SNAPSHOTS_PARTITIONS_NAME, TEMPLATE_KEY)
    instance.add_dynamic_partitions(records.SNAPSHOTS_PARTITIONS_NAME, keys)
    instance.add_dynamic_partitions(records.CUSTOMERS_PARTITIONS_NAME, [f"customer-{c:04d}" for c in range(CUSTOMERS)])
    with conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE")
        conn.autocommit = False
        cur.execute("SELECT count(*) FROM runs")
        total_runs = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM event_logs")
        total_events = cur.fetchone()[0]
        cur.execute("SELECT pg_database_size(current_database())")
        size = cur.fetchone()[0]
    return {"runs": total_runs, "events": total_events, "db_mb": round(size / 2**20), "per_customer": per_customer,
            "span_days": span.days, "first": first, "step": step, "fill_s": round(time.perf_counter() - started, 1)}


# -- measurements --------------------------------------------------------------------------------------------------

def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 4)


FEED_QUERY = """
query RunsFeedRootQuery($limit: Int!, $cursor: String, $filter: RunsFilter, $view: RunsFeedView!) {
  runsFeedOrError(limit: $limit, cursor: $cursor, filter: $filter, view: $view) {
    ... on RunsFeedConnection {
      cursor hasMore
      results {
        __typename id runStatus creationTime startTime endTime tags { key value } jobName
        ... on Run {
          repositoryOrigin { id repositoryLocationName repositoryName }
          assetSelectionPreview: assetSelection(limit: 25) { ... on AssetKey { path } }
          assetSelectionCount
          assetCheckSelectionPreview: assetCheckSelection(limit: 25) { name assetKey { path } }
          assetCheckSelectionCount
          status hasReExecutePermission hasTerminatePermission hasDeletePermission
        }
      }
    }
    ... on PythonError { message }
  }
}"""
COUNT_QUERY = """
query RunsFeedCountQuery($filter: RunsFilter, $view: RunsFeedView!) {
  runsFeedCountOrError(filter: $filter, view: $view) { ... on RunsFeedCount { count } ... on PythonError { message } }
}"""
TAB_COUNTS_QUERY = """
query RunTabsCountQuery($queuedFilter: RunsFilter!, $inProgressFilter: RunsFilter!) {
  queuedCount: runsOrError(filter: $queuedFilter) { ... on Runs { count } }
  inProgressCount: runsOrError(filter: $inProgressFilter) { ... on Runs { count } }
}"""


class Webserver:
    """`dagster-webserver` on the instance, with our definitions as the code location; stopped by pid."""

    def __init__(self, home: Path, project: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "DAGSTER_HOME": str(home), "BLUEGREEN_CONFIG": str(project / "config.yaml")}
        self.log = open(home / "webserver.log", "wb")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port),
             "-m", "bluegreen_dagster.definitions"], cwd=project, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/server_info", timeout=2).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("dagster-webserver did not start: "
                                       + (home / "webserver.log").read_text()[-2000:])
                time.sleep(0.5)

    def query(self, text: str, variables: dict) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/graphql",
                                         data=json.dumps({"query": text, "variables": variables}).encode(),
                                         headers={"Content-Type": "application/json"})
        data = json.loads(urllib.request.urlopen(request, timeout=300).read())
        assert "errors" not in data, data["errors"]
        return data["data"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def measure_ui(server: Webserver, repeats: int) -> dict:
    page = {"limit": 30, "view": "ROOTS", "filter": {}}
    first = server.query(FEED_QUERY, page)["runsFeedOrError"]
    assert len(first["results"]) == 30, first
    cases = {
        "runs_page": (FEED_QUERY, page),
        "runs_page_next": (FEED_QUERY, {**page, "cursor": first["cursor"]}),
        "runs_page_customer_tag": (FEED_QUERY, {**page, "filter": {"tags": [{"key": records.CUSTOMER_TAG,
                                                                             "value": "customer-0042"}]}}),
        "runs_page_failed": (FEED_QUERY, {**page, "filter": {"statuses": ["FAILURE"]}}),
        "runs_count": (COUNT_QUERY, {"view": "ROOTS", "filter": {}}),
        "queued_in_progress_counts": (TAB_COUNTS_QUERY, {
            "queuedFilter": {"statuses": ["QUEUED"]},
            "inProgressFilter": {"statuses": ["STARTED", "STARTING", "CANCELING"]}}),
    }
    return {name: timed(lambda q=q, v=v: server.query(q, v), repeats) for name, (q, v) in cases.items()}


def measure_sensor(instance: dg.DagsterInstance, base: Path, per_customer: int, repeats: int) -> dict:
    """The tick with the history in place: the function, then the daemon's per-request work."""
    for c in range(CUSTOMERS):  # the two newest snapshots of each customer on disk, as their partitions say
        for s in (per_customer - 2, per_customer - 1):
            drop_new(base, c, FIRST_TS + s)
    pipeline = PipelineResource(dataset={"base_path": str(base)},
                                orchestrator={"settle_seconds": 30, "keep_databases": 2, "max_runs_per_tick": 20})
    ticks, lookups = [], []
    cursor = steady_cursor(CUSTOMERS, per_customer)
    for i in range(repeats):
        ts = FIRST_TS + per_customer + i
        drop_new(base, 7, ts)
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"pipeline": pipeline})
        started = time.perf_counter()
        result = snapshot_sensor(context, pipeline)
        ticks.append(time.perf_counter() - started)
        keys = [r.partition_key for r in result.run_requests]
        assert keys == [f"customer-0007-{ts}"], keys
        cursor = result.cursor
        started = time.perf_counter()
        instance.add_dynamic_partitions(records.SNAPSHOTS_PARTITIONS_NAME, keys)
        for key in keys:
            assert not instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": key}))
        lookups.append(time.perf_counter() - started)
    # A full tick's worth of existing run keys (max_runs_per_tick), as after a daemon restart.
    old_keys = [f"customer-{c:04d}-{FIRST_TS + per_customer - 1}" for c in range(20)]
    twenty = timed(lambda: [instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": k}))
                            for k in old_keys], repeats)
    return {"function_s": round(statistics.median(ticks), 4),
            "run_key_check_and_partition_add_s": round(statistics.median(lookups), 4),
            "run_key_check_20_existing_s": twenty}


def measure_records(instance: dg.DagsterInstance, per_customer: int, repeats: int) -> dict:
    live = f"customer-0042-{FIRST_TS + per_customer - 1}"
    cutoff = datetime.now(timezone.utc)
    return {
        "in_flight_partitions": timed(lambda: records.in_flight_partitions(instance, "customer-0042"), repeats),
        "in_flight_counts": timed(lambda: records.in_flight_counts(instance), repeats),
        "was_live": timed(lambda: records.was_live(instance, live), repeats),
        "gate_problem": timed(lambda: records.gate_problem(instance, live), repeats),
        "recorded_fingerprint": timed(lambda: records.recorded_fingerprint(instance, live), repeats),
        "left_alias_at": timed(lambda: records.left_alias_at(instance, "customer-0042"), repeats),
        "finished_runs_before_page_500": timed(lambda: records.finished_runs_before(instance, cutoff, 500), repeats),
        "live_database_runs_all_customers": timed(lambda: records.live_database_runs(instance), 1),
    }


def measure_retention(instance: dg.DagsterInstance, shape: dict, batch: int, max_batches: int | None) -> dict:
    """Delete the oldest day (finished runs last updated before `first + 1 day`), or its first `max_batches`
    batches; the rest of the day is projected from the rate."""
    now = datetime.now(timezone.utc)
    older_than = now.replace(tzinfo=None) - (shape["first"] + timedelta(days=1))
    cutoff = (shape["first"] + timedelta(days=1)).replace(tzinfo=timezone.utc)
    day = instance.get_runs_count(dg.RunsFilter(statuses=list(records.FINISHED), updated_before=cutoff))
    lines: list[str] = []
    result = delete_old_runs(instance, older_than, batch, log=lines.append, max_batches=max_batches)
    rate = result.deleted / result.seconds if result.seconds else None
    return {"oldest_day_runs": day, "deleted": result.deleted, "kept": dict(result.kept), "batches": result.batches,
            "seconds": round(result.seconds, 1), "runs_per_s": round(rate, 1) if rate else None,
            "oldest_day_projected_s": round(day / rate) if rate else None,
            "first_batch_log": lines[0] if lines else None}


# -- one size ------------------------------------------------------------------------------------------------------

def one_size(pg: Postgres, runs: int, repeats: int, batch: int, max_batches: int | None, work: Path) -> dict:
    import psycopg2

    database = f"history_{runs}"
    admin = psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database}")
    admin.close()
    home = work / database
    home.mkdir()
    (home / "dagster.yaml").write_text(Postgres(pg.host, pg.port, pg.user, pg.password, database).instance_yaml(
        "telemetry:\n  enabled: false\n"))
    project = work / f"project_{runs}"
    (project / "data").mkdir(parents=True)
    (project / "config.yaml").write_text(json.dumps({"target": "embedded", "dataset": {"base_path": "data"},
                                                     "embedded": {"path": "store"}}))
    conn = psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=database)
    out: dict = {}
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            shape = fill(conn, instance, runs)
            out["history"] = {k: v for k, v in shape.items() if k not in ("first", "step")}
            print(f"[{runs}] filled: {out['history']}", file=sys.stderr, flush=True)
            server = Webserver(home, project)
            try:
                out["ui_s"] = measure_ui(server, repeats)
            finally:
                server.stop()
            print(f"[{runs}] ui: {out['ui_s']}", file=sys.stderr, flush=True)
            out["sensor_tick_s"] = measure_sensor(instance, work / f"tree_{runs}", shape["per_customer"], repeats)
            out["records_s"] = measure_records(instance, shape["per_customer"], repeats)
            print(f"[{runs}] sensor {out['sensor_tick_s']} records {out['records_s']}", file=sys.stderr, flush=True)
            out["retention_oldest_day"] = measure_retention(instance, shape, batch, max_batches)
    finally:
        conn.close()
    return out


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "mem_gb": round(mem / 2**20), "cpu": cpu, "python": platform.python_version(),
            "dagster": dg.__version__}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=500_000)
    parser.add_argument("--small", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--retention-batch", type=int, default=500)
    parser.add_argument("--retention-batches", type=int, default=None,
                        help="stop the retention measurement after this many batches (default: the whole day)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = {}
    with start_postgres() as pg, tempfile.TemporaryDirectory(prefix="bench-history-") as tmp:
        os.environ["PGPASSWORD"] = pg.password
        for runs in (args.small, args.runs):
            results[str(runs)] = one_size(pg, runs, args.repeats, args.retention_batch, args.retention_batches, Path(tmp))
    big, small = results[str(args.runs)], results[str(args.small)]
    growth = {name: round(big["ui_s"][name] / small["ui_s"][name], 2) for name in big["ui_s"] if small["ui_s"][name]}
    print(json.dumps({
        "sizes": results,
        "ui_growth_x": growth,
        "machine": {**machine(), "load_avg_before": [round(x, 1) for x in load_before],
                    "load_avg_after": [round(x, 1) for x in os.getloadavg()]},
        "seconds": round(time.perf_counter() - started, 1),
    }, indent=2, default=str))


if __name__ == "__main__":
    main()
