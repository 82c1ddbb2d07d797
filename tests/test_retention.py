"""Run retention (retention.py) on real Dagster instances, SQLite and PostgreSQL (tests/postgres.py): runs are real
in-process runs of assets with our asset keys and tags, made old by setting their timestamps in the test's own
database; then old runs and their event logs are gone, and every protected run is still there."""

# No `from __future__ import annotations`: Dagster reads the test assets' annotations.

import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster import records
from bluegreen_dagster.live_graph import SWITCH, record_live
from bluegreen_dagster.partitions import snapshot_partitions
from bluegreen_dagster.records import CUSTOMER_TAG, LOADED_ASSET, RUN_RETENTION_JOB, SNAPSHOTS_PARTITIONS_NAME
from bluegreen_dagster.retention import LIVE_DATABASE, PARTITION_EXISTS, delete_old_runs

from tests.postgres import Postgres, start_postgres

pytestmark = pytest.mark.timeout(120)

OLD = timedelta(days=40)


# -- instances: SQLite in a temp DAGSTER_HOME, and a fresh database on one PostgreSQL server per module ----------

@pytest.fixture(scope="module")
def pg_server() -> Iterator[Postgres]:
    with start_postgres() as pg:
        yield pg


class Instance:
    """A Dagster instance and a way to age its runs with SQL on its own run storage."""

    def __init__(self, instance: dg.DagsterInstance, age_sql) -> None:
        self.instance, self._age_sql = instance, age_sql

    def age(self, run_ids: list[str], by: timedelta) -> None:
        when = (datetime.now(timezone.utc) - by).replace(tzinfo=None)
        self._age_sql(run_ids, when)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    if request.param == "sqlite":
        (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            def age_sqlite(run_ids, when):
                with sqlite3.connect(tmp_path / "history" / "runs.db") as conn:
                    conn.executemany("UPDATE runs SET create_timestamp = ?, update_timestamp = ? WHERE run_id = ?",
                                     [(when.isoformat(" "), when.isoformat(" "), r) for r in run_ids])
            yield Instance(instance, age_sqlite)
        return
    import psycopg2

    pg: Postgres = request.getfixturevalue("pg_server")
    database = f"retention_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database}")
    monkeypatch.setenv("PGPASSWORD", pg.password)
    (tmp_path / "dagster.yaml").write_text(
        Postgres(pg.host, pg.port, pg.user, pg.password, database).instance_yaml("telemetry:\n  enabled: false\n"))
    conn = psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=database)
    try:
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            def age_pg(run_ids, when):
                with conn, conn.cursor() as cur:
                    cur.execute("UPDATE runs SET create_timestamp = %s, update_timestamp = %s WHERE run_id = ANY(%s)",
                                (when, when, list(run_ids)))
            yield Instance(instance, age_pg)
    finally:
        conn.close()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {database} WITH (FORCE)")
        admin.close()


# -- runs like ours ----------------------------------------------------------------------------------------------

@dg.asset(key=LOADED_ASSET, partitions_def=snapshot_partitions)
def _snapshot_database(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    """Stands for the load run: materializes the partition and, when asked, switches the alias to it (as the
    `alias_switch` step records it, through `record_live`)."""
    key = context.partition_key
    customer = key.rsplit("-", 1)[0]
    if context.run.tags.get("test/switch") == "true":
        record_live(context.instance, customer, key, None, how=SWITCH, by="test", run_id=context.run.run_id,
                    log_event=context.log_event)
    return dg.MaterializeResult(metadata={"database": key})


@dg.asset(key="_other_job_asset")
def _other() -> None:
    """Any other job's run (health audit, reconcile): no partition."""


def load_run(instance: dg.DagsterInstance, key: str, *, switch: bool = False) -> str:
    if not instance.has_dynamic_partition(SNAPSHOTS_PARTITIONS_NAME, key):
        instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, [key])
    tags = {CUSTOMER_TAG: key.rsplit("-", 1)[0], "test/switch": "true" if switch else "false"}
    result = dg.materialize([_snapshot_database], instance=instance, partition_key=key, tags=tags)
    assert result.success
    return result.run_id


def other_run(instance: dg.DagsterInstance) -> str:
    result = dg.materialize([_other], instance=instance)
    assert result.success
    return result.run_id


def in_flight_run(instance: dg.DagsterInstance, key: str) -> str:
    """A run the daemon has started and not finished (a worker still loading, or one nobody has failed yet)."""
    run = instance.add_run(dg.DagsterRun(job_name="load_snapshot", run_id=str(uuid.uuid4()),
                                         status=dg.DagsterRunStatus.STARTED,
                                         tags={CUSTOMER_TAG: "acme", records.PARTITION_TAG: key}))
    return run.run_id


def drop_partition(instance: dg.DagsterInstance, key: str) -> None:
    """What cleanup does after dropping a database."""
    instance.delete_dynamic_partition(SNAPSHOTS_PARTITIONS_NAME, key)


def exists(instance: dg.DagsterInstance, run_id: str) -> bool:
    return instance.get_run_by_id(run_id) is not None


# -- the story ---------------------------------------------------------------------------------------------------

def test_old_runs_and_their_events_go_the_protected_ones_stay(store: Instance) -> None:
    instance = store.instance
    dropped = load_run(instance, "acme-100", switch=True)  # was live once; its database is gone since
    drop_partition(instance, "acme-100")
    kept_partition = [load_run(instance, "acme-200"), load_run(instance, "acme-200")]  # a relaunch: both stay
    live = load_run(instance, "acme-300", switch=True)  # acme's alias serves it ...
    drop_partition(instance, "acme-300")  # ... even with its partition deleted by hand
    housekeeping = [other_run(instance) for _ in range(3)]
    loading = in_flight_run(instance, "acme-400")
    recent = load_run(instance, "acme-500")
    drop_partition(instance, "acme-500")
    old = [dropped, *kept_partition, live, *housekeeping, loading]
    store.age(old, OLD)
    assert instance.all_logs(dropped), "the run logged events"

    lines: list[str] = []
    result = delete_old_runs(instance, timedelta(days=30), batch=3, log=lines.append)

    assert [exists(instance, r) for r in (dropped, *housekeeping)] == [False] * 4
    assert instance.all_logs(dropped) == [], "its event log went with it"
    assert not instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=LOADED_ASSET, asset_partitions=["acme-100"]), limit=1).records
    assert all(exists(instance, r) for r in (*kept_partition, live, loading, recent))
    assert records.gate_problem(instance, "acme-300") != "Dagster has no record of loading it"
    assert result.deleted == 4
    assert result.kept == {PARTITION_EXISTS: 2, LIVE_DATABASE: 1}
    assert len(lines) == result.batches >= 2 and lines[0].startswith("batch 1: deleted ")

    # Once its partition is gone too (cleanup dropped acme-200), the next retention run takes its runs.
    drop_partition(instance, "acme-200")
    again = delete_old_runs(instance, timedelta(days=30), batch=3)
    assert again.deleted == 2 and not any(exists(instance, r) for r in kept_partition)
    assert all(exists(instance, r) for r in (live, loading, recent))


def test_a_rollback_run_that_recorded_the_live_alias_stays(store: Instance) -> None:
    """The customer's latest live_graph record may come from another run than the load (a rollback job)."""
    instance = store.instance
    newer = load_run(instance, "beta-200", switch=True)
    older = load_run(instance, "beta-100")

    @dg.asset(key="_rollback")
    def _rollback(context: dg.AssetExecutionContext) -> None:
        record_live(context.instance, "beta", "beta-100", "beta-200", how="rollback", by="test",
                    run_id=context.run.run_id, log_event=context.log_event)

    rollback = dg.materialize([_rollback], instance=instance).run_id
    for key in ("beta-100", "beta-200"):
        drop_partition(instance, key)
    store.age([newer, older, rollback], OLD)

    result = delete_old_runs(instance, timedelta(days=30), batch=10)

    assert exists(instance, rollback) and exists(instance, older), "what is live, and the run that loaded it"
    assert not exists(instance, newer), "the database rolled back from is no longer protected by being live"
    assert result.kept == {LIVE_DATABASE: 2}


def test_more_protected_runs_than_a_batch_still_ends_and_deletes_past_them(store: Instance) -> None:
    instance = store.instance
    protected = [load_run(instance, f"gamma-{ts}") for ts in range(100, 105)]
    deletable = [other_run(instance) for _ in range(3)]
    store.age(protected + deletable, OLD)

    result = delete_old_runs(instance, timedelta(days=30), batch=2)

    assert result.deleted == 3 and not any(exists(instance, r) for r in deletable)
    assert all(exists(instance, r) for r in protected)


# -- the schedule and the job ------------------------------------------------------------------------------------

def test_the_schedule_runs_the_job_which_deletes_and_records(tmp_path: Path) -> None:
    from tests.conftest import make_project

    project = make_project(tmp_path, orchestrator={"run_retention_days": 1, "run_retention_batch": 2})
    defs = project.defs
    schedule = defs.get_schedule_def(records.RUN_RETENTION_SCHEDULE)
    with dg.instance_for_test() as instance:
        old = [other_run(instance) for _ in range(3)]
        runs_db = Path(instance.root_directory) / "history" / "runs.db"
        when = (datetime.now(timezone.utc) - timedelta(days=2)).replace(tzinfo=None).isoformat(" ")
        with sqlite3.connect(runs_db) as conn:
            conn.executemany("UPDATE runs SET update_timestamp = ? WHERE run_id = ?", [(when, r) for r in old])
        with dg.build_schedule_context(instance=instance) as context:
            requests = schedule.evaluate_tick(context).run_requests
        assert len(requests) == 1

        result = defs.resolve_job_def(RUN_RETENTION_JOB).execute_in_process(instance=instance)

        assert result.success and not any(exists(instance, r) for r in old)
        metadata = result.asset_materializations_for_node("run_history")[0].metadata
        assert metadata["deleted"].value == 3 and metadata["batches"].value == 2
        messages = [e.message for e in instance.all_logs(result.run_id) if e.message]
        assert sum(m.startswith("batch ") for m in messages) == 2

        # While a retention run is still deleting, the next tick launches none.
        running = instance.add_run(dg.DagsterRun(job_name=RUN_RETENTION_JOB, run_id=str(uuid.uuid4()),
                                                 status=dg.DagsterRunStatus.STARTED))
        with dg.build_schedule_context(instance=instance) as context:
            data = schedule.evaluate_tick(context)
        assert not data.run_requests and "still deleting" in data.skip_message
        assert exists(instance, running.run_id)


@pytest.mark.parametrize("name", ["bluegreen_dagster/dagster_instance.yaml", "deploy/dagster.yaml"])
def test_the_instance_purges_schedule_and_sensor_ticks(name: str, tmp_path: Path) -> None:
    """Dagster's own `retention:` covers ticks only; unset, it keeps schedule ticks forever."""
    import yaml
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.scheduler.instigation import TickStatus

    settings = yaml.safe_load((Path(__file__).resolve().parent.parent / name).read_text())
    settings.pop("storage", None)  # deploy/dagster.yaml's PostgreSQL: the retention block is what is read here
    settings.pop("run_launcher", None)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(settings))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        schedule = instance.get_tick_retention_settings(InstigatorType.SCHEDULE)
        sensor = instance.get_tick_retention_settings(InstigatorType.SENSOR)
    assert schedule[TickStatus.SKIPPED] == 7 and schedule[TickStatus.SUCCESS] == 30
    assert schedule[TickStatus.FAILURE] == 90 and sensor[TickStatus.SKIPPED] == 1
