"""The reconcile job and the relaunch schedule, on the real embedded target and a real Dagster instance: runs
execute in process, schedules are evaluated with `build_schedule_context` as the daemon would."""

import shutil

import dagster as dg
import pytest

from bluegreen_dagster.config import OrchestratorSettings

from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.pins import set_pin
from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME
from bluegreen_dagster.relaunch import RELAUNCH_TAG
from bluegreen_dagster.snapshots import snapshot_at
from bluegreen_dagster.targets import make_target
from tests.conftest import Project
from tests.helpers import alias_of, databases, run_partition


def reconcile(project: Project, instance: dg.DagsterInstance):
    """One run of the job the reconcile schedule launches: (its materialization metadata, its drift check)."""
    result = project.defs.resolve_job_def("reconcile").execute_in_process(instance=instance)
    assert result.success  # drift is a failed check, not a failed run
    [materialization] = [m for m in result.asset_materializations_for_node("reconcile_report")
                         if m.asset_key == dg.AssetKey("reconcile_report")]  # not a forward switch's live_graph
    [check] = result.get_asset_check_evaluations()
    return {k: v.value for k, v in materialization.metadata.items()}, check


def load_without_switch(project: Project, instance: dg.DagsterInstance, customer: str, ts: int) -> None:
    """A database loaded and checked whose run died before its switch (nothing in flight names it): the run's
    health_check and snapshot_database steps and their checks, without alias_switch and cleanup."""
    key = f"{customer}-{ts}"
    if not instance.has_dynamic_partition(SNAPSHOTS_PARTITIONS_NAME, key):
        instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, [key])
    project.job().execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                     asset_selection=[dg.AssetKey("health_check"), dg.AssetKey("snapshot_database")])


def test_a_database_without_a_passed_gate_or_rolled_back_from_is_never_switched_to(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=200)
    write_snapshot(project.data, "acme", 200, people=200)
    write_snapshot(project.data, "acme", 300, people=200)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        assert run_partition(project, instance, "acme-200").success
        with make_target(project.settings) as target:
            target.point_alias("acme", "acme-100")  # as a rollback without a pin leaves it
            target.load(snapshot_at(project.data, "acme", 300))  # loaded, but no run recorded its checks
        meta, check = reconcile(project, instance)
    assert alias_of(project, "acme") == "acme-100" and check.passed and not meta["switched_forward"]
    notes = meta["per_customer"]["acme"]
    assert "not switched to acme-300: Dagster has no record of loading it" in notes
    assert "not switched to acme-200: the alias served it before and was rolled back from it" in notes


def test_reconcile_schedule_is_hourly_running_and_configurable(project: Project) -> None:
    assert OrchestratorSettings().reconcile_cron == "0 * * * *"  # the default (tests/conftest.py sets a rare one)
    schedules = {s.name: s for s in project.defs.schedules}
    assert schedules["reconcile"].cron_schedule == project.settings.orchestrator.reconcile_cron
    assert schedules["reconcile"].job_name == "reconcile"
    assert schedules["relaunch_transient_failures"].job_name == "load_snapshot"
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in schedules.values())
    project.reconfigure(orchestrator={"reconcile_cron": "30 2 * * *"})
    schedules = {s.name: s for s in project.defs.schedules}
    assert schedules["reconcile"].cron_schedule == schedules["relaunch_transient_failures"].cron_schedule \
        == "30 2 * * *"


def test_stale_alias_moves_forward_to_the_newest_verified_database(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=200)
    write_snapshot(project.data, "acme", 200, people=210)
    write_snapshot(project.data, "acme", 300, people=2)  # shrinks far beyond max_shrink_percent: never switched to
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        load_without_switch(project, instance, "acme", 200)
        load_without_switch(project, instance, "acme", 300)
        assert alias_of(project, "acme") == "acme-100"

        meta, check = reconcile(project, instance)
        # The forward switch is a move of the alias like any other: recorded on the customer's live_graph.
        [record] = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("live_graph"), asset_partitions=["acme"]), limit=1).records
        live = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    assert alias_of(project, "acme") == "acme-200"
    assert meta["switched_forward"] == ["acme: acme-100 -> acme-200"]
    assert (live["serves"], live["previous"], live["how"]) == ("acme-200", "acme-100", "reconcile")
    assert "not switched to acme-300" in meta["per_customer"]["acme"]
    assert check.passed
    # Retention (keep_databases=2): the alias target and the newest are kept, the oldest is dropped.
    assert databases(project, "acme") == ["acme-200", "acme-300"]
    assert meta["dropped"] == ["acme-100"]


def test_pinned_customer_stays_on_its_pinned_database(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=200)
    write_snapshot(project.data, "acme", 200, people=200)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        load_without_switch(project, instance, "acme", 200)
        set_pin(instance, "acme", "acme-100", reason="bad upstream data", by="test")

        meta, check = reconcile(project, instance)
    assert alias_of(project, "acme") == "acme-100"
    assert check.passed  # a pinned customer on its pin is not drift
    assert "pinned to acme-100" in meta["per_customer"]["acme"] and not meta["switched_forward"]


def test_dangling_alias_is_a_failed_check_and_left_alone(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=50)
    write_snapshot(project.data, "globex", 100, people=50)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        assert run_partition(project, instance, "globex-100").success
        with make_target(project.settings) as target:
            target.store.database_path("acme-100").unlink()  # someone removed the live database by hand

        meta, check = reconcile(project, instance)
    assert not check.passed
    assert check.description == "acme: alias acme serves acme-100, which does not exist"
    assert meta["drifted"] == ["acme"]
    assert alias_of(project, "acme") == "acme-100"  # not guessed at
    assert alias_of(project, "globex") == "globex-100"


def test_alias_newer_than_every_snapshot_is_drift_but_a_gone_snapshot_is_fine(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=50)
    write_snapshot(project.data, "acme", 200, people=50)
    write_snapshot(project.data, "globex", 100, people=50)
    with dg.instance_for_test() as instance:
        for key in ("acme-100", "acme-200", "globex-100"):
            assert run_partition(project, instance, key).success
        shutil.rmtree(snapshot_at(project.data, "acme", 200).path)  # acme/100 stays: the live one is newer
        shutil.rmtree(project.data / "globex")  # globex's only snapshot is gone: its database still serves

        meta, check = reconcile(project, instance)
    assert not check.passed
    assert check.description.startswith("acme: alias acme serves acme-200, newer than every snapshot on disk")
    assert meta["drifted"] == ["acme"]
    assert "globex" in meta["per_customer"]  # found through its partition
    assert alias_of(project, "globex") == "globex-100"


def test_crashed_loads_leftover_is_removed_and_its_partition_kept(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=50)
    write_snapshot(project.data, "acme", 200, people=50)
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, ["acme-200"])
        with make_target(project.settings) as target:
            target.store.ensure_dirs()
            target.store.partial_path("acme-200").write_bytes(b"half a database")  # the worker died mid-load
            assert {d.name: d.status for d in target.list_databases("acme")} == {"acme-100": "online",
                                                                                 "acme-200": "failed"}
        meta, check = reconcile(project, instance)
        assert instance.has_dynamic_partition(SNAPSHOTS_PARTITIONS_NAME, "acme-200")  # so it can be relaunched
    assert meta["dropped"] == ["acme-200"] and check.passed
    assert databases(project, "acme") == ["acme-100"]
    assert alias_of(project, "acme") == "acme-100"


# -- relaunch ---------------------------------------------------------------------------------------------------


def relaunch_tick(project: Project, instance: dg.DagsterInstance):
    defs = project.defs
    schedule = next(s for s in defs.schedules if s.name == "relaunch_transient_failures")
    with dg.build_schedule_context(instance=instance, resources=project.resources.as_dict(),
                                   repository_def=defs.get_repository_def()) as context:
        return schedule.evaluate_tick(context)


def run_request(project: Project, instance: dg.DagsterInstance, request: dg.RunRequest):
    """What the daemon does with a RunRequest, in process: a run of load_snapshot with the request's tags."""
    return project.job().execute_in_process(partition_key=request.partition_key, tags=request.tags,
                                            instance=instance, raise_on_error=False)


def test_transient_failure_is_relaunched_once_per_tick_up_to_the_bound(project: Project) -> None:
    project.reconfigure(orchestrator={"max_relaunch_attempts": 2}, embedded={"min_free_disk_mb": 10 ** 12})
    write_snapshot(project.data, "acme", 100, people=20)
    with dg.instance_for_test() as instance:
        # the health check refuses: "disk full", transient
        assert not run_partition(project, instance, "acme-100").success
        seen = []
        for _ in range(3):
            tick = relaunch_tick(project, instance)
            seen.append([(r.run_key, r.tags[RELAUNCH_TAG]) for r in tick.run_requests])
            for request in tick.run_requests:
                assert request.partition_key == "acme-100" and request.tags["customer"] == "acme"
                assert not run_request(project, instance, request).success  # still no disk
        assert seen == [[("acme-100/relaunch-1", "1")], [("acme-100/relaunch-2", "2")], []]
        assert "2 relaunches already" in relaunch_tick(project, instance).skip_message

        # Disk freed: the next relaunch that is allowed succeeds and is not relaunched again.
        project.reconfigure(orchestrator={"max_relaunch_attempts": 3}, embedded={"min_free_disk_mb": 1})
        [request] = relaunch_tick(project, instance).run_requests
        assert request.run_key == "acme-100/relaunch-3"
        assert run_request(project, instance, request).success
        assert not relaunch_tick(project, instance).run_requests
    assert alias_of(project, "acme") == "acme-100"


def test_permanent_failures_are_never_relaunched(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=200)
    write_snapshot(project.data, "acme", 200, people=2)  # fails the plausibility gate (a blocking check)
    write_snapshot(project.data, "globex", 100, people=20)
    bad = next((snapshot_at(project.data, "globex", 100).path / "nodes").glob("*.parquet"))
    bad.write_bytes(b"not parquet")  # bad data
    with dg.instance_for_test() as instance:
        assert run_partition(project, instance, "acme-100").success
        assert not run_partition(project, instance, "acme-200").success
        assert not run_partition(project, instance, "globex-100").success
        tick = relaunch_tick(project, instance)
    assert not tick.run_requests
    lines = tick.skip_message.splitlines()
    assert lines[0] == "nothing to relaunch among 2 failed snapshots"
    assert "acme-200" in lines[1] and "permanent: check plausible failed" in lines[1]
    assert "globex-100" in lines[2] and "permanent" in lines[2] and lines[2].endswith("not relaunched")


@pytest.mark.parametrize("bad_cron", ["every hour", "61 * * * *"])
def test_a_bad_cron_fails_at_load_naming_the_key(project: Project, bad_cron: str) -> None:
    from bluegreen_dagster.config import ConfigError

    with pytest.raises(ConfigError, match="orchestrator.reconcile_cron"):
        project.reconfigure(orchestrator={"reconcile_cron": bad_cron})


def test_a_run_whose_worker_died_is_relaunched_a_timed_out_one_is_not(project: Project) -> None:
    """The records Dagster writes: the code server (or run monitoring) fails a run whose worker process is gone
    with `report_run_failed` and no error; run monitoring cancels a run over its maximum runtime first."""
    write_snapshot(project.data, "acme", 100, people=20)
    write_snapshot(project.data, "globex", 100, people=20)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, ["acme-100", "globex-100"])
        died = instance.create_run_for_job(project.job(), tags={"dagster/partition": "acme-100", "customer": "acme"})
        instance.report_run_failed(died)
        slow = instance.create_run_for_job(project.job(),
                                           tags={"dagster/partition": "globex-100", "customer": "globex"})
        instance.report_run_canceling(slow, message="Canceling due to exceeding maximum runtime of 60 seconds.")
        instance.report_run_failed(slow, "Exceeded maximum runtime of 60 seconds.")
        assert instance.get_run_by_id(died.run_id).status == dg.DagsterRunStatus.FAILURE

        [request] = relaunch_tick(project, instance).run_requests
        assert request.partition_key == "acme-100" and request.run_key == "acme-100/relaunch-1"
        assert request.tags["bluegreen/relaunch_of"] == died.run_id
        assert run_request(project, instance, request).success
    assert alias_of(project, "acme") == "acme-100"
    assert alias_of(project, "globex") is None


@pytest.mark.slow
def test_through_the_daemon_a_transient_failure_is_relaunched_and_reconcile_runs(project: Project) -> None:
    """The real `dagster-daemon`: the sensor's run fails on a full disk (transient), the disk is freed, and at the
    next minute the relaunch schedule's run (through the queue) switches the alias; the reconcile job runs too."""
    from tests.dagster_processes import dagster_home, running_daemon, wait_for

    project.reconfigure(orchestrator={"reconcile_cron": "* * * * *", "max_retries": 0, "settle_seconds": 0},
                        embedded={"min_free_disk_mb": 10 ** 12})
    write_snapshot(project.data, "acme", 100, people=20)
    home = dagster_home(project.root)
    with running_daemon(project) as log, dg.DagsterInstance.from_config(str(home)) as instance:
        def runs(**tags):
            return instance.get_runs(filters=dg.RunsFilter(tags=tags))

        [first] = wait_for(lambda: [r for r in runs(**{"dagster/partition": "acme-100"})
                                    if r.status == dg.DagsterRunStatus.FAILURE], 120, "the sensor's run to fail",
                           log)
        project.reconfigure(embedded={"min_free_disk_mb": 1})  # read by the next run's worker
        [relaunch] = wait_for(lambda: [r for r in runs(**{RELAUNCH_TAG: "1"}) if r.is_finished], 200,
                              "the relaunched run to finish", log)
        assert relaunch.status == dg.DagsterRunStatus.SUCCESS
        assert relaunch.tags["dagster/partition"] == "acme-100"
        assert relaunch.tags["dagster/schedule_name"] == "relaunch_transient_failures"
        assert relaunch.tags["bluegreen/relaunch_of"] == first.run_id
        wait_for(lambda: [r for r in instance.get_runs(filters=dg.RunsFilter(job_name="reconcile"))
                          if r.status == dg.DagsterRunStatus.SUCCESS], 120, "a reconcile run", log)
    assert alias_of(project, "acme") == "acme-100"


def test_on_the_neo4j_standin_a_stale_alias_moves_forward_and_a_dangling_one_is_drift(tmp_path, monkeypatch) -> None:
    from tests.conftest import make_project
    from tests.standin.server import start_standin

    monkeypatch.setenv("RECONCILE_NEO4J_PASSWORD", "standin-reconcile-pw")
    with start_standin(password="standin-reconcile-pw") as standin:
        standin.arrow.accept_string_properties = True  # the demo snapshot has string node properties
        project = make_project(tmp_path, target="neo4j", neo4j={
            **standin.neo4j_settings(), "password": "${RECONCILE_NEO4J_PASSWORD}", "online_timeout": 10,
            "arrow_string_properties": True})
        for customer in ("acme", "globex"):
            write_snapshot(project.data, customer, 100, people=50)
        write_snapshot(project.data, "acme", 200, people=50)
        with dg.instance_for_test() as instance:
            assert run_partition(project, instance, "acme-100").success
            assert run_partition(project, instance, "globex-100").success
            load_without_switch(project, instance, "acme", 200)
            del standin.dbms.databases["globex-100"]  # gone behind our back; the alias still names it

            meta, check = reconcile(project, instance)
        assert standin.dbms.aliases["acme"] == "acme-200"
        assert meta["switched_forward"] == ["acme: acme-100 -> acme-200"]
        assert not check.passed and check.description == "globex: alias globex serves globex-100, which does not exist"
        assert standin.dbms.aliases["globex"] == "globex-100"
