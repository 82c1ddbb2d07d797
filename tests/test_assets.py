"""The refresh steps through `dagster.materialize`, on the real embedded target."""


import dagster as dg
import pytest

from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets.embedded import EmbeddedTarget
from tests.conftest import Project
from tests.helpers import alias_of, databases, metadata, run_partition


def live_graph_events(result: dg.ExecuteInProcessResult) -> list[dg.AssetMaterialization]:
    """The `live_graph` materializations the run recorded (one per move of an alias)."""
    return [e.step_materialization_data.materialization for e in result.all_events
            if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
            and e.step_materialization_data.materialization.asset_key == dg.AssetKey("live_graph")]


def test_full_refresh_loads_verifies_switches_and_reports(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=200)
    with dg.instance_for_test() as instance:
        result = run_partition(project, instance, "acme-100")
    assert result.success
    load = metadata(result, "snapshot_database")
    assert load["database"] == "acme-100"
    assert (load["nodes"], load["relationships"]) == (204, 800)
    assert load["rows"] == 1004 and load["bytes"] > 0 and load["rows_per_s"] > 0 and load["duration_s"] > 0
    assert load["reused"] is False
    switch = metadata(result, "alias_switch")
    assert switch["switched"] is True and switch["previous"] == "" and switch["alias_target"] == "acme-100"
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {"verify_counts": True,
                                                                                      "plausible": True,
                                                                                      "smoke_queries": True}
    assert alias_of(project, "acme") == "acme-100"
    # The UI's asset live_graph, partition acme, says which database the alias serves, and since when.
    [live] = live_graph_events(result)
    assert live.partition == "acme" and live.description.startswith("acme -> acme-100 since ")
    values = {k: v.value for k, v in live.metadata.items()}
    assert values["serves"] == "acme-100" and values["since"].endswith("+00:00") and values["previous"] == ""
    assert values["snapshot_timestamp"] == "100" and values["how"] == "switch"
    assert values["run_id"] == result.run_id


def test_steps_run_in_order_as_separate_steps(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=20)
    with dg.instance_for_test() as instance:
        result = run_partition(project, instance, "acme-100")
    started = [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
    assert started == ["health_check", "snapshot_database", "gate", "alias_switch", "cleanup"]
    # The order is the asset graph's, not a priority: cleanup depends on the switch, the switch on the gate.
    graph = project.defs.resolve_asset_graph()
    assert dg.AssetKey("alias_switch") in graph.get(dg.AssetKey("cleanup")).parent_keys
    # The load step held the one load slot (orchestrator.max_concurrent_loads: 1).
    assert metadata(result, "snapshot_database")["load_slot"] == "slot 1 of 1 (file lock)"


def test_rerun_is_idempotent_and_says_so(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=20)
    with dg.instance_for_test() as instance:
        run_partition(project, instance, "acme-100")
        again = run_partition(project, instance, "acme-100")
    assert again.success
    assert metadata(again, "snapshot_database")["reused"] is True
    assert not live_graph_events(again)  # no move of the alias: nothing recorded on live_graph
    switch = metadata(again, "alias_switch")
    assert switch["switched"] is False and "already points at acme-100" in switch["reason"]
    assert databases(project, "acme") == ["acme-100"]


def test_older_snapshot_never_takes_the_alias(project: Project) -> None:
    write_snapshot(project.data, "acme", 200, people=20)
    write_snapshot(project.data, "acme", 100, people=20)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-200").success
        late = run_partition(project, instance, "acme-100")
    assert late.success
    assert not live_graph_events(late)
    switch = metadata(late, "alias_switch")
    assert switch["switched"] is False and "newer" in switch["reason"]
    assert alias_of(project, "acme") == "acme-200"
    assert metadata(late, "cleanup")["kept"]  # cleanup still ran after a switch that did not move the alias


def test_corrupt_parquet_fails_at_once_and_loses_nothing(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=20)
    write_snapshot(project.data, "acme", 200, people=20)
    bad = project.data / "acme/200/relationships/knows-00000.parquet"
    bad.write_bytes(b"garbage")
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        result = run_partition(project, instance, "acme-200")
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "snapshot_database"
    assert "knows-00000.parquet" in failure.event_specific_data.error.message
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries == []  # bad input: no retry
    assert alias_of(project, "acme") == "acme-100"
    assert databases(project, "acme") == ["acme-100"]  # the partial database is gone
    assert bad.exists()  # the snapshot stays on disk


def test_failed_verification_blocks_the_switch_and_drops_the_database(project: Project,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    write_snapshot(project.data, "acme", 100, people=20)
    write_snapshot(project.data, "acme", 200, people=20)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        real_count = EmbeddedTarget.count

        def short_by_one(self, database):  # a load that silently lost a row
            counts = real_count(self, database)
            if database != "acme-200":
                return counts
            return type(counts)(counts.nodes - 1, counts.relationships, counts.labels, counts.types)

        monkeypatch.setattr(EmbeddedTarget, "count", short_by_one)
        result = run_partition(project, instance, "acme-200")
    assert not result.success
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "verify_counts")
    assert check.passed is False and "nodes: expected 21, found 20" in check.description
    # The gate stops at the first failed check: the others did not run, and the step says so.
    assert [e.check_name for e in result.get_asset_check_evaluations()] == ["verify_counts"]
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "gate"
    assert "plausible, smoke_queries not run: verify_counts failed first" in failure.event_specific_data.error.message
    started = [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
    assert started == ["health_check", "snapshot_database", "gate"]  # the switch and the cleanup never ran
    assert alias_of(project, "acme") == "acme-100"
    assert databases(project, "acme") == ["acme-100"]


def test_health_refusal_is_retried_then_fails_with_the_reason(project: Project) -> None:
    project.reconfigure(embedded={"min_free_disk_mb": 10**12})
    write_snapshot(project.data, "acme", 100, people=20)
    with dg.instance_for_test() as instance:
        result = run_partition(project, instance, "acme-100")
    assert not result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == project.settings.orchestrator.max_retries
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "health_check"
    assert "health check refused the load" in failure.event_specific_data.error.message
    assert "min_free_disk_mb" in failure.event_specific_data.error.message
    assert databases(project, "acme") == []


def test_cleanup_keeps_newest_n_and_the_alias_target(project: Project) -> None:
    project.reconfigure(orchestrator={"keep_databases": 2})
    for ts in (100, 200, 300, 400):
        write_snapshot(project.data, "acme", ts, people=10)
    write_snapshot(project.data, "globex", 50, people=10)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "globex-50").success
        for ts in (100, 200, 300):
            assert run_partition(project, instance, f"acme-{ts}").success
        assert databases(project, "acme") == ["acme-200", "acme-300"]
        result = run_partition(project, instance, "acme-400")
        partitions = instance.get_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME)
        history = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": "acme-200"}))
    assert metadata(result, "cleanup")["dropped"] == ["acme-200"]
    assert databases(project, "acme") == ["acme-300", "acme-400"]
    assert databases(project, "globex") == ["globex-50"]  # other customers untouched
    # Dropped databases' partitions are pruned; their run history stays.
    assert "acme-200" not in partitions and "acme-100" not in partitions
    assert {"acme-300", "acme-400", "globex-50"} <= set(partitions)
    assert len(history) == 1 and history[0].status == dg.DagsterRunStatus.SUCCESS


def test_missing_snapshot_folder_fails_clearly(project: Project) -> None:
    with dg.instance_for_test() as instance:
        result = run_partition(project, instance, "acme-100")
    assert not result.success
    message = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "does not exist" in message and "acme/100" in message


def test_reader_sees_the_graph_through_the_alias(project: Project) -> None:
    import ladybug

    write_snapshot(project.data, "acme", 100, people=50)
    with dg.instance_for_test() as instance:
        result = run_partition(project, instance, "acme-100")
    reader = metadata(result, "alias_switch")["reader"]
    db = ladybug.Database(reader, read_only=True)
    try:
        rows = ladybug.Connection(db).execute("MATCH (a:Person)-[:KNOWS]->(b) RETURN count(*)").get_next()
    finally:
        db.close()
    assert rows[0] == expected_counts(snapshot_at(project.data, "acme", 100)).types["KNOWS"]


def test_in_flight_runs_protect_only_their_own_customer() -> None:
    from bluegreen_dagster.records import in_flight_partitions as in_flight_databases

    with dg.instance_for_test() as instance:
        for run_id, key, status in (("r1", "acme-100", dg.DagsterRunStatus.STARTED),
                                    ("r2", "acme-corp-200", dg.DagsterRunStatus.STARTING),
                                    ("r3", "acme-300", dg.DagsterRunStatus.SUCCESS),
                                    ("me", "acme-400", dg.DagsterRunStatus.STARTED)):
            instance.add_run(dg.DagsterRun(job_name="load_snapshot", run_id=run_id, status=status,
                                           tags={"dagster/partition": key}))
        assert in_flight_databases(instance, "acme", this_run="me") == {"acme-100"}
        assert in_flight_databases(instance, "acme-corp", this_run="me") == {"acme-corp-200"}


def test_a_dead_neo4j_fails_the_run_within_the_documented_worst_case(project: Project,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Driver retries, our own retries and the RetryPolicy stack up; jobs.dead_target_seconds is their bound."""
    import socket
    import time

    from bluegreen_dagster.jobs import dead_target_seconds

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setenv("DEAD_NEO4J_PASSWORD", "dead-pw")
    project.reconfigure(target="neo4j", neo4j={"host": "127.0.0.1", "bolt_port": closed,
                                               "password": "${DEAD_NEO4J_PASSWORD}"},
                        orchestrator={"max_retries": 2, "retry_backoff_base": 0.2})
    bound = dead_target_seconds(project.settings.orchestrator)
    write_snapshot(project.data, "acme", 100, people=5)
    with dg.instance_for_test() as instance:
        started = time.monotonic()
        result = run_partition(project, instance, "acme-100")
        elapsed = time.monotonic() - started
    assert not result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert len(retries) == 2
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "health_check"
    assert "cannot reach Neo4j" in failure.event_specific_data.error.message
    assert elapsed < bound, (elapsed, bound)
    print(f"dead target: run failed after {elapsed:.1f}s, documented bound {bound:.1f}s")
