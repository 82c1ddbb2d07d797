"""Fault: a snapshot folder deleted and dropped again under the same timestamp with other files (fingerprints.py).
Each test asserts: the alias still serves the last good database or moved forward to a good one; no snapshot file
was changed by the pipeline (hashes before and after); no partial or failed database is left after the next
cleanup; the message a user sees names the cause and what to do."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.targets import make_target
from tests.conftest import Project, make_project
from tests.dagster_processes import running_daemon, wait_for
from tests.faults.harness import tree_state
from tests.helpers import alias_of, metadata, run_partition
from tests.test_sensors import snapshot_sensor, tick


def redrop(project: Project, customer: str, ts: int, people: int, seed: int) -> Path:
    """What the producer did: delete the snapshot folder, then drop new files under the same timestamp."""
    shutil.rmtree(project.data / customer / str(ts))
    return write_snapshot(project.data, customer, ts, people=people, seed=seed)


def redrop_warnings(caplog: pytest.LogCaptureFixture, key: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and f"{key} was dropped again" in r.getMessage()]


def step_failure(result: dg.ExecuteInProcessResult, step: str) -> str:
    [event] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE and e.step_key == step]
    return event.step_failure_data.user_failure_data.description


def step_starts(result: dg.ExecuteInProcessResult, step: str) -> int:
    return len([e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START and e.step_key == step])


def run_warnings(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> list[str]:
    return [r.user_message for r in instance.all_logs(result.run_id) if r.level == logging.WARNING]


def no_leftovers(project: Project, customer: str) -> list[str]:
    """Databases that are not complete, and files in the store's loading/ folder."""
    with make_target(project.settings) as target:
        bad = [f"{d.name} ({d.status})" for d in target.list_databases(customer) if d.status != "online"]
    loading = Path(project.settings.embedded.path) / "loading"
    return bad + ([p.name for p in loading.iterdir()] if loading.is_dir() else [])


def test_a_redropped_snapshot_that_is_not_live_is_loaded_again_and_switched(
        project: Project, caplog: pytest.LogCaptureFixture, fault) -> None:
    sensor = snapshot_sensor(project)
    write_snapshot(project.data, "acme", 100, people=50)
    write_snapshot(project.data, "acme", 200, people=10)  # a producer bug: -80%, refused by the gate
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance).cursor
        assert run_partition(project, instance, "acme-100").success
        refused = run_partition(project, instance, "acme-200")
        assert not refused.success and alias_of(project, "acme") == "acme-100"
        first_fingerprint = metadata(refused, "snapshot_database")["fingerprint"]

        redrop(project, "acme", 200, people=60, seed=7)  # the producer's fix, same timestamp
        probe = fault("re-drop, same timestamp, not live", project, "acme")
        requests = []
        for _ in range(3):
            result = tick(sensor, instance, cursor, log_handler=caplog.handler)
            requests += result.run_requests
            cursor = result.cursor
        # Launched once, under a new run key, and said once in the sensor's log.
        [request] = requests
        assert request.partition_key == "acme-200" and request.run_key.startswith("acme-200@")
        [said] = redrop_warnings(caplog, "acme-200")
        assert "other files" in said and request.run_key in said

        again = run_partition(project, instance, "acme-200")
        assert again.success, step_failure(again, "snapshot_database")
        load = metadata(again, "snapshot_database")
        assert load["reused"] is False and (load["nodes"], load["relationships"]) == (61, 240)
        assert load["fingerprint"] != first_fingerprint and request.run_key.split("@")[1] in load["fingerprint"]
        [reloaded] = [w for w in run_warnings(again, instance) if "dropped it and loading it again" in w]
        probe.conclude(alias="acme-200", message=reloaded, mentions=["other files", "same timestamp", "acme-200"])
    assert no_leftovers(project, "acme") == []


def test_same_counts_other_values_are_loaded_again_not_served_stale(project: Project) -> None:
    """Verification compares counts only: a re-drop with the same counts but other values would pass it on the
    old database. The fingerprint sees the difference."""
    write_snapshot(project.data, "acme", 200, people=40)
    write_snapshot(project.data, "acme", 100, people=40)  # older: loaded, never live
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-200").success
        assert run_partition(project, instance, "acme-100").success
        redrop(project, "acme", 100, people=40, seed=99)
        again = run_partition(project, instance, "acme-100")
        assert again.success and metadata(again, "snapshot_database")["reused"] is False
        # The same files again: reused, as before fingerprints.
        assert metadata(run_partition(project, instance, "acme-100"), "snapshot_database")["reused"] is True
    assert alias_of(project, "acme") == "acme-200"
    assert no_leftovers(project, "acme") == []


def test_a_redrop_of_the_live_snapshot_fails_with_what_to_do_and_changes_nothing(
        project: Project, caplog: pytest.LogCaptureFixture, fault) -> None:
    sensor = snapshot_sensor(project)
    write_snapshot(project.data, "acme", 100, people=50)
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance).cursor
        assert run_partition(project, instance, "acme-100").success
        with make_target(project.settings) as target:
            live_counts = target.count("acme-100")

        redrop(project, "acme", 100, people=70, seed=3)
        probe = fault("re-drop, same timestamp, live", project, "acme")
        result = tick(sensor, instance, cursor, log_handler=caplog.handler)
        [request] = result.run_requests
        assert request.run_key.startswith("acme-100@") and len(redrop_warnings(caplog, "acme-100")) == 1

        failed = run_partition(project, instance, "acme-100")
        assert not failed.success
        assert step_starts(failed, "snapshot_database") == 1  # not retried: a retry cannot fix it
        message = probe.message(failed)
        assert message == step_failure(failed, "snapshot_database")
        # The alias still serves the database as it was, the new files are still on disk untouched.
        probe.conclude(alias="acme-100", message=message, mentions=[
            "acme-100 is live", "other files than it was loaded from", "new snapshot with a later timestamp",
            "run the partition acme-100 again"])
        with make_target(project.settings) as target:
            assert target.count("acme-100") == live_counts

        # Doing what the message says: the new files as a later snapshot go live; cleanup leaves nothing partial.
        write_snapshot(project.data, "acme", 300, people=70, seed=3)
        assert run_partition(project, instance, "acme-300").success
        assert alias_of(project, "acme") == "acme-300"
        # With the alias moved, the re-dropped timestamp itself now loads again as the message says.
        again = run_partition(project, instance, "acme-100")
        assert again.success and metadata(again, "snapshot_database")["reused"] is False
        assert alias_of(project, "acme") == "acme-300"
    assert no_leftovers(project, "acme") == []


def test_the_same_files_dropped_again_launch_nothing_and_are_reused(
        project: Project, caplog: pytest.LogCaptureFixture, tmp_path: Path, fault) -> None:
    sensor = snapshot_sensor(project)
    folder = write_snapshot(project.data, "acme", 100, people=30)
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance).cursor
        assert run_partition(project, instance, "acme-100").success
        # The producer publishes the very same files again (delete, copy back, same content).
        shutil.copytree(folder, tmp_path / "copy")
        shutil.rmtree(folder)
        shutil.copytree(tmp_path / "copy", folder)
        probe = fault("re-drop, same timestamp, same files", project, "acme")
        for _ in range(2):
            result = tick(sensor, instance, cursor, log_handler=caplog.handler)
            assert not result.run_requests
            cursor = result.cursor
        assert redrop_warnings(caplog, "acme-100") == []
        again = run_partition(project, instance, "acme-100")
        assert again.success and metadata(again, "snapshot_database")["reused"] is True
        [said] = [r.user_message for r in instance.all_logs(again.run_id) if "reused it" in r.user_message]
        probe.conclude(alias="acme-100", message=said, mentions=["acme-100", "already loaded; reused it"])


def test_both_targets_behave_the_same_on_the_neo4j_stand_in(neo4j_project: Project, standin) -> None:
    """The rule lives above the target (fingerprints.py): on Neo4j too, a non-live re-drop is dropped and loaded
    again, a live one fails with what to do and the alias and the graph stay as they were."""
    write_snapshot(neo4j_project.data, "acme", 200, people=40)
    write_snapshot(neo4j_project.data, "acme", 100, people=40)
    with dg.instance_for_test() as instance:
        assert run_partition(neo4j_project, instance, "acme-200").success
        # older: loaded, kept as this run's, never live
        assert run_partition(neo4j_project, instance, "acme-100").success
        redrop(neo4j_project, "acme", 100, people=40, seed=5)
        again = run_partition(neo4j_project, instance, "acme-100")
        assert again.success and metadata(again, "snapshot_database")["reused"] is False

        with make_target(neo4j_project.settings) as target:
            live_counts = target.count("acme-200")
        redrop(neo4j_project, "acme", 200, people=60, seed=5)
        files = tree_state(neo4j_project.data)
        failed = run_partition(neo4j_project, instance, "acme-200")
        assert not failed.success and "acme-200 is live" in step_failure(failed, "snapshot_database")
        assert standin.dbms.alias_target("acme") == "acme-200"
        with make_target(neo4j_project.settings) as target:
            assert target.count("acme-200") == live_counts
            assert all(d.status == "online" for d in target.list_databases("acme"))
    assert tree_state(neo4j_project.data) == files


@pytest.mark.slow
def test_through_the_daemon_a_fixed_redrop_goes_live_without_manual_steps(tmp_path: Path) -> None:
    """The producer's fix for a refused snapshot, dropped again under the same timestamp, is launched by the real
    daemon's sensor once (a second run key for that partition, no more over later ticks) and goes live."""
    project = make_project(tmp_path, orchestrator={"scan_interval": 5, "keep_databases": 2})
    home = str(project.root / "dagster_home")

    def runs(key: str, status: dg.DagsterRunStatus | None = None) -> list[str]:
        with dg.DagsterInstance.from_config(home) as instance:
            return sorted(r.tags.get("dagster/run_key", "") for r in instance.get_runs(filters=dg.RunsFilter(
                tags={"dagster/partition": key}, statuses=[status] if status else None)))

    with running_daemon(project) as log:
        write_snapshot(project.data, "acme", 1_767_000_100, people=200)
        wait_for(lambda: alias_of(project, "acme") == "acme-1767000100", 120, "the first switch", log)
        write_snapshot(project.data, "acme", 1_767_000_200, people=20)  # -90%: refused by the gate
        wait_for(lambda: runs("acme-1767000200", dg.DagsterRunStatus.FAILURE), 120, "the refused run", log)

        redrop(project, "acme", 1_767_000_200, people=220, seed=11)
        files = tree_state(project.data)
        wait_for(lambda: alias_of(project, "acme") == "acme-1767000200", 120, "the re-drop to go live", log)
        time.sleep(3 * project.settings.orchestrator.scan_interval)  # later ticks launch nothing more
        keys = runs("acme-1767000200")
    assert len(keys) == 2 and keys[0] == "acme-1767000200" and keys[1].startswith("acme-1767000200@"), keys
    assert tree_state(project.data) == files
    assert no_leftovers(project, "acme") == []
