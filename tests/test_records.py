"""records.py: the names it knows are the names the definitions create, the code that reads Dagster's records does
not load the definitions to learn them, and its answers about a run are those the run recorded."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg

from bluegreen_dagster import records
from bluegreen_dagster.demo_data import write_snapshot
from tests.conftest import Project


def test_the_definitions_create_the_names_records_knows(project: Project) -> None:
    defs = project.defs
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {records.HEALTH_CHECK, records.SNAPSHOT_DATABASE, records.ALIAS_SWITCH, records.CLEANUP} <= keys
    assert records.LOADED_ASSET in graph.get_all_asset_keys() and records.SWITCH_ASSET in graph.get_all_asset_keys()
    gate = {key.name for key in graph.asset_check_keys if key.asset_key == records.LOADED_ASSET}
    assert gate == set(records.GATE_CHECKS)
    assert all(graph.get_check_spec(dg.AssetCheckKey(records.LOADED_ASSET, name)).blocking
               for name in records.GATE_CHECKS)
    assert graph.get(records.LOADED_ASSET).partitions_def.name == records.SNAPSHOTS_PARTITIONS_NAME
    for job in (records.LOAD_SNAPSHOT_JOB, records.ROLLBACK_JOB, records.RECONCILE_JOB, records.HEALTH_AUDIT_JOB,
                records.RUN_RETENTION_JOB):
        assert defs.resolve_job_def(job).name == job
    assert {s.name for s in defs.sensors} == set(records.SENSORS)
    assert {s.name for s in defs.schedules} == {records.RECONCILE_SCHEDULE, records.RELAUNCH_SCHEDULE,
                                               records.HEALTH_AUDIT_SCHEDULE, records.RUN_RETENTION_SCHEDULE}


def test_code_that_reads_the_records_does_not_load_the_definitions() -> None:
    """Metrics, alerts, relaunch, reconcile, doctor, status and fingerprints take names from records.py, not from
    the modules that define the assets, jobs, sensors and schedules."""
    readers = ["records", "instance_facts", "metrics", "alerts", "relaunch", "reconcile", "doctor", "status",
               "fingerprints", "partitions", "plausibility", "trigger"]
    definitions = ["assets", "jobs", "definitions", "schedules", "sensors"]
    code = (f"import sys\nfor m in {readers!r}: __import__('bluegreen_dagster.' + m)\n"
            f"print(sorted(m for m in {definitions!r} if 'bluegreen_dagster.' + m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_failed_blocking_checks_of_a_run_are_those_it_recorded(project: Project) -> None:
    """A run blocked by a smoke query: only that check, with its description; a good run: none."""
    write_snapshot(project.data, "acme", 100, people=10)
    write_snapshot(project.data, "acme", 200, people=10)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(records.SNAPSHOTS_PARTITIONS_NAME, ["acme-100", "acme-200"])
        good = project.job().execute_in_process(partition_key="acme-100", instance=instance)
        project.reconfigure(smoke={"queries": [{"name": "enough-people", "query": "MATCH (p:Person) RETURN p.nodeId",
                                                "min_rows": 1000}]})
        blocked = project.job().execute_in_process(partition_key="acme-200", instance=instance,
                                                   raise_on_error=False)
        assert records.failed_blocking_checks(instance, good.run_id) == {}
        failed = records.failed_blocking_checks(instance, blocked.run_id)
        assert list(failed) == [records.SMOKE_QUERIES]
        assert "'enough-people' expected at least 1000 rows" in failed[records.SMOKE_QUERIES].description
        assert records.gate_problem(instance, "acme-100") is None
        assert records.gate_problem(instance, "acme-200") == f"its smoke_queries check failed in run {blocked.run_id}"
        assert records.was_live(instance, "acme-100") and not records.was_live(instance, "acme-200")
        assert records.recorded_fingerprint(instance, "acme-100").startswith("sha256:")
        assert records.load_customer(blocked.dagster_run) == "acme"
