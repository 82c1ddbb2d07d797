import json
import logging

import dagster as dg
import pytest

from bluegreen_dagster.concurrency import LOADS_POOL
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME
from tests.conftest import Project


def snapshot_sensor(project: Project) -> dg.SensorDefinition:
    sensor = next(s for s in project.defs.sensors if s.name == "snapshot_sensor")
    sensor.project = project  # what tick() binds the resources from
    return sensor


@pytest.fixture
def sensor(project: Project) -> dg.SensorDefinition:
    return snapshot_sensor(project)


def tick(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None = None,
         log_handler: logging.Handler | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources=sensor.project.resources.as_dict())
    if log_handler:
        context.log.addHandler(log_handler)
    result = sensor(context)
    # What the daemon does with the result: register the partitions before it launches the runs.
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_interval_and_status_come_from_config(project: Project, sensor: dg.SensorDefinition) -> None:
    assert sensor.minimum_interval_seconds == project.settings.orchestrator.scan_interval
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_one_partition_and_one_run_per_complete_snapshot(project: Project, sensor: dg.SensorDefinition) -> None:
    project.reconfigure(orchestrator={"settle_seconds": 120})  # acme/200 stays "waiting" on a slow machine
    write_snapshot(project.data, "acme", 100, people=5)
    write_snapshot(project.data, "globex", 50, people=5)
    write_snapshot(project.data, "acme", 200, people=5, success_marker=False)  # not settled yet
    with dg.instance_for_test() as instance:
        result = tick(sensor, instance)
        assert [r.partition_key for r in result.run_requests] == ["globex-50", "acme-100"]
        assert [r.run_key for r in result.run_requests] == ["globex-50", "acme-100"]
        assert [r.tags["customer"] for r in result.run_requests] == ["globex", "acme"]
        assert list(result.dynamic_partitions_requests[0].partition_keys) == ["globex-50", "acme-100"]
        assert len(result.cursor) < 200

        again = tick(sensor, instance, result.cursor)
        assert not again.run_requests  # in the cursor: launched once
        assert "waiting" in again.skip_reason.skip_message and "acme/200" in again.skip_reason.skip_message


def test_seen_lives_in_the_cursor_not_in_the_partitions(project: Project, sensor: dg.SensorDefinition) -> None:
    write_snapshot(project.data, "acme", 100, people=5)
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance)
        instance.delete_dynamic_partition(SNAPSHOTS_PARTITIONS_NAME, "acme-100")  # what cleanup does after dropping it
        again = tick(sensor, instance, first.cursor)
        assert not again.run_requests
        assert json.loads(again.cursor)["launched"] == {"acme": [100]}


def test_late_older_snapshot_is_still_loaded(project: Project, sensor: dg.SensorDefinition) -> None:
    write_snapshot(project.data, "acme", 200, people=5)
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance)
        write_snapshot(project.data, "acme", 100, people=5)  # arrives after the newer one
        assert [r.partition_key for r in tick(sensor, instance, first.cursor).run_requests] == ["acme-100"]


def test_snapshots_older_than_the_kept_window_are_superseded(project: Project) -> None:
    """keep_databases=2: a late snapshot older than the two newest launched ones would be dropped by cleanup at
    once, so it is not loaded; one between them is."""
    sensor = snapshot_sensor(project)
    for ts in (200, 400):
        write_snapshot(project.data, "acme", ts, people=3)
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance).cursor
        write_snapshot(project.data, "acme", 100, people=3)
        write_snapshot(project.data, "acme", 300, people=3)
        late = tick(sensor, instance, cursor)
        assert [r.partition_key for r in late.run_requests] == ["acme-300"]
        assert json.loads(late.cursor)["launched"] == {"acme": [400, 300]}
        assert not tick(sensor, instance, late.cursor).run_requests


def test_sensor_writes_max_concurrent_loads_into_the_pool(project: Project, sensor: dg.SensorDefinition) -> None:
    project.reconfigure(orchestrator={"max_concurrent_loads": 3})
    with dg.instance_for_test() as instance:
        tick(snapshot_sensor(project), instance)
        assert instance.event_log_storage.get_concurrency_info(LOADS_POOL).slot_count == 3


def test_invalid_folder_is_reported_once_and_never_requested(project: Project, sensor: dg.SensorDefinition,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    (project.data / "Acme_Corp" / "100" / "nodes").mkdir(parents=True)
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, log_handler=caplog.handler)
        assert not first.run_requests
        assert json.loads(first.cursor)["invalid"] == [str(project.data / "Acme_Corp")]
        warnings = [r for r in caplog.records if "Acme_Corp" in r.getMessage()]
        assert len(warnings) == 1 and "lowercase letters" in warnings[0].getMessage()
        tick(sensor, instance, first.cursor, log_handler=caplog.handler)
        assert len([r for r in caplog.records if "Acme_Corp" in r.getMessage()]) == 1


def test_work_per_tick_is_bounded_and_newest_first(project: Project) -> None:
    project.reconfigure(orchestrator={"max_runs_per_tick": 2})
    sensor = snapshot_sensor(project)
    for customer in ("acme", "globex"):
        for ts in range(1, 4):
            write_snapshot(project.data, customer, ts, people=3)
    with dg.instance_for_test() as instance:
        seen, cursor = [], None
        for _ in range(3):
            result = tick(sensor, instance, cursor)
            seen.append([r.partition_key for r in result.run_requests])
            cursor = result.cursor
        # Two per tick, newest first; each customer's two newest only (keep_databases=2), then nothing.
        assert seen == [["acme-3", "globex-3"], ["acme-2", "globex-2"], []]


def test_sensor_tick_resolves_against_the_real_definitions(project: Project) -> None:
    """evaluate_tick resolves the job, partitions and resources like the daemon does."""
    defs = project.defs
    write_snapshot(project.data, "acme", 100, people=3)
    with dg.instance_for_test() as instance:
        sensor = next(s for s in defs.sensors if s.name == "snapshot_sensor")
        ctx = dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs,
                                      resources=project.resources.as_dict())
        data = sensor.evaluate_tick(ctx)
        assert [r.partition_key for r in data.run_requests] == ["acme-100"]
        assert data.run_requests[0].tags["dagster/partition"] == "acme-100"


def test_a_cursor_from_before_stamps_relaunches_nothing(project: Project, sensor: dg.SensorDefinition) -> None:
    """A version-2 cursor (no stamps) keeps what it launched; the stamps are taken on the first tick, and a re-drop
    after that is noticed."""
    import shutil

    write_snapshot(project.data, "acme", 100, people=3)
    old = json.dumps({"v": 2, "launched": {"acme": [100]}, "invalid": []})
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, old)
        assert not first.run_requests and set(json.loads(first.cursor)["stamps"]["acme"]) == {"100"}
        shutil.rmtree(project.data / "acme" / "100")
        write_snapshot(project.data, "acme", 100, people=4)
        assert [r.run_key.split("@")[0] for r in tick(sensor, instance, first.cursor).run_requests] == ["acme-100"]


def test_a_redrop_is_launched_once_when_complete_not_while_written(
        project: Project, sensor: dg.SensorDefinition, caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    project.reconfigure(orchestrator={"settle_seconds": 120})
    sensor = snapshot_sensor(project)
    write_snapshot(project.data, "acme", 100, people=3)
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance).cursor
        shutil.rmtree(project.data / "acme" / "100")
        gone = tick(sensor, instance, cursor, log_handler=caplog.handler)  # deleted: nothing to do yet
        write_snapshot(project.data, "acme", 100, people=4, success_marker=False)  # still being written
        writing = tick(sensor, instance, gone.cursor, log_handler=caplog.handler)
        assert not gone.run_requests and not writing.run_requests
        assert not [r for r in caplog.records if "dropped again" in r.getMessage()]

        (project.data / "acme" / "100" / "_SUCCESS").touch()
        done = tick(sensor, instance, writing.cursor, log_handler=caplog.handler)
        [request] = done.run_requests
        assert request.partition_key == "acme-100" and request.run_key.startswith("acme-100@")
        assert list(done.dynamic_partitions_requests[0].partition_keys) == ["acme-100"]
        assert not tick(sensor, instance, done.cursor, log_handler=caplog.handler).run_requests
        [said] = [r.getMessage() for r in caplog.records if "dropped again" in r.getMessage()]
        assert "none recorded as loaded" in said


def test_files_rewritten_in_place_then_marked_finished_again_are_launched(
        project: Project, sensor: dg.SensorDefinition) -> None:
    """A producer that overwrites the same file names (same folders, same inodes) and writes `_SUCCESS` again."""
    folder = write_snapshot(project.data, "acme", 100, people=3)
    other = write_snapshot(project.data.parent / "elsewhere", "acme", 100, people=5)
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance).cursor
        for name in ("nodes", "relationships"):
            for src in (other / name).iterdir():
                (folder / name / src.name).write_bytes(src.read_bytes())  # truncated and rewritten: same inode
        assert not tick(sensor, instance, cursor).run_requests  # not marked finished again yet
        (folder / "_SUCCESS").write_text("")
        [request] = tick(sensor, instance, cursor).run_requests
        assert request.partition_key == "acme-100" and request.run_key.startswith("acme-100@")


def test_stamps_are_kept_only_for_the_launched_window(project: Project, sensor: dg.SensorDefinition) -> None:
    with dg.instance_for_test() as instance:
        cursor = None
        for ts in (100, 200, 300):  # keep_databases=2
            write_snapshot(project.data, "acme", ts, people=3)
            cursor = tick(sensor, instance, cursor).cursor
        data = json.loads(cursor)
    assert data["launched"] == {"acme": [300, 200]} and set(data["stamps"]["acme"]) == {"300", "200"}


def test_a_folder_touched_while_its_run_loads_launches_nothing_but_a_redrop_after_it_does(
        project: Project, sensor: dg.SensorDefinition) -> None:
    """A producer's `chown -R` over the customer's folder changes every snapshot's stamp. While a snapshot's run is
    in flight nothing is launched (the nemesis found queued snapshots loaded twice); once it ended, the stamp is
    compared again: the same files launch nothing, other files launch the re-drop."""
    import os
    import shutil

    from tests.helpers import run_partition

    folder = write_snapshot(project.data, "acme", 100, people=3)
    with dg.instance_for_test() as instance:
        cursor = tick(sensor, instance).cursor
        loading = instance.add_run(dg.DagsterRun(job_name="load_snapshot", status=dg.DagsterRunStatus.STARTED,
                                                 tags={"dagster/partition": "acme-100", "customer": "acme"}))
        os.chmod(folder / "nodes", 0o750)  # a new change time: the stamp differs, the files do not
        assert not tick(sensor, instance, cursor).run_requests
        instance.delete_run(loading.run_id)
        assert run_partition(project, instance, "acme-100").success  # records what it loaded
        os.chmod(folder / "nodes", 0o755)
        cursor = tick(sensor, instance, cursor)
        assert not cursor.run_requests
        shutil.rmtree(folder)
        write_snapshot(project.data, "acme", 100, people=4)
        [request] = tick(sensor, instance, cursor.cursor).run_requests
        assert request.run_key.startswith("acme-100@")
