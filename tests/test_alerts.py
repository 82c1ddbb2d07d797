"""What alerts say about real failed runs: a blocking check, a raising step, a run worker that vanished, a run
stopped by run monitoring, the project's own steps. Delivery: tests/test_alert_channels.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg

from bluegreen_dagster.alerts import alert_for_run, blocked_switch_alert
from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME

WEB = "http://127.0.0.1:3000"
KEY = "acme-corp-1767741527"
parts = dg.DynamicPartitionsDefinition(name=SNAPSHOTS_PARTITIONS_NAME)


@dg.asset(partitions_def=parts)
def snapshot_database() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"nodes": 299})


@dg.asset_check(asset=snapshot_database, blocking=True)
def verify_counts() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, description="acme-corp-1767741527: Person: expected 300 nodes, found 299")


@dg.asset(partitions_def=parts, deps=[snapshot_database])
def alias_switch() -> None:
    raise AssertionError("a blocking check failed: this step must not run")


@dg.asset(partitions_def=parts, retry_policy=dg.RetryPolicy(max_retries=1))
def flaky_load() -> None:
    raise ConnectionRefusedError("target at localhost:7687 refused the connection")


@dg.asset(partitions_def=parts)
def refused_load() -> None:
    raise dg.Failure(description="data/acme-corp/1767741527/nodes/a.parquet: column nodeId is missing")


def run_of(instance: dg.DagsterInstance, selection: list) -> dg.DagsterRun:
    instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, [KEY])
    result = dg.materialize(selection, partition_key=KEY, instance=instance, raise_on_error=False,
                            tags={"customer": "acme-corp"})
    assert not result.success
    return instance.get_run_by_id(result.run_id)


def test_a_failed_blocking_check_alerts_with_what_differed() -> None:
    with dg.instance_for_test() as instance:
        run = run_of(instance, [snapshot_database, verify_counts, alias_switch])
        alert = alert_for_run(instance, run, WEB + "/")
    assert alert.kind == "verification_blocked"
    assert (alert.customer, alert.snapshot, alert.partition) == ("acme-corp", "1767741527", KEY)
    assert alert.cause == "acme-corp-1767741527: Person: expected 300 nodes, found 299"
    assert alert.step == "verify_counts (check on snapshot_database)"
    assert alert.run_url == f"{WEB}/runs/{run.run_id}"
    text = alert.text()
    assert "expected 300 nodes, found 299" in text and "DagsterAssetCheckFailedError" not in text
    assert "bluegreen load acme-corp 1767741527" in text and alert.run_url in text
    assert "verification blocked the switch" in alert.title


def test_a_raising_step_alerts_with_the_innermost_error_and_the_attempts() -> None:
    with dg.instance_for_test() as instance:
        alert = alert_for_run(instance, run_of(instance, [flaky_load]), WEB)
    assert alert.kind == "run_failed" and alert.step == "flaky_load"
    assert alert.cause == ("ConnectionRefusedError: target at localhost:7687 refused the connection "
                           "(after 2 attempts)")
    assert "Error occurred while executing op" not in alert.text()


def test_a_failure_alerts_with_its_description() -> None:
    with dg.instance_for_test() as instance:
        alert = alert_for_run(instance, run_of(instance, [refused_load]), None)
    assert alert.cause == "data/acme-corp/1767741527/nodes/a.parquet: column nodeId is missing"
    assert alert.run_url is None and "re-execute the run in the UI" in alert.action


_CHILD = textwrap.dedent("""
    import sys, time
    import dagster as dg
    from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME
    parts = dg.DynamicPartitionsDefinition(name=SNAPSHOTS_PARTITIONS_NAME)

    @dg.asset(partitions_def=parts)
    def snapshot_database():
        time.sleep(600)

    with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
        dg.materialize([snapshot_database], partition_key=sys.argv[2], instance=instance,
                       tags={"customer": "acme-corp"})
""")


def killed_run(home: Path) -> tuple[dg.DagsterInstance, dg.DagsterRun]:
    """A real run whose process got SIGKILL mid-step: the run record stays STARTED, as after a killed worker."""
    instance = dg.DagsterInstance.from_config(str(home))
    instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, [KEY])
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(home), KEY], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = instance.get_runs()
            if runs and any(e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
                            for e in instance.all_logs(runs[0].run_id)):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the child run never started its step")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    run = instance.get_runs()[0]
    assert run.status == dg.DagsterRunStatus.STARTED
    return instance, run


def test_a_run_whose_worker_vanished_says_the_worker_died_and_how_to_retry(tmp_path: Path) -> None:
    instance, run = killed_run(tmp_path)
    with instance:
        instance.report_run_failed(run)  # what run monitoring / a restarted daemon does with such a run
        alert = alert_for_run(instance, instance.get_run_by_id(run.run_id), WEB)
    assert alert.kind == "run_worker_died" and alert.step == "snapshot_database"
    assert alert.cause.startswith("the run worker died during step snapshot_database: process gone")
    assert "marked as failed from outside" not in alert.text()
    assert "bluegreen load acme-corp 1767741527" in alert.action and "Re-execute" in alert.action
    assert alert.run_url in alert.text()


def test_a_worker_killed_by_a_signal_names_the_signal(tmp_path: Path) -> None:
    from dagster._utils import get_run_crash_explanation  # what a code server logs when its run child exits

    instance, run = killed_run(tmp_path)
    with instance:
        instance.report_engine_event(get_run_crash_explanation(f"Run execution process for {run.run_id}", -9), run)
        instance.report_run_failed(run)
        alert = alert_for_run(instance, instance.get_run_by_id(run.run_id), WEB)
    assert alert.kind == "run_worker_died"
    assert alert.cause.startswith("the run worker died during step snapshot_database: terminated by signal 9 (SIGKILL); "
                                  "often the out-of-memory killer")


def test_a_run_stopped_by_run_monitoring_says_it_timed_out(tmp_path: Path) -> None:
    instance, run = killed_run(tmp_path)
    with instance:
        instance.report_run_failed(run, "Exceeded maximum runtime of 21600 seconds.")  # run monitoring's words
        alert = alert_for_run(instance, instance.get_run_by_id(run.run_id), WEB)
    assert alert.kind == "run_failed" and alert.step == "snapshot_database"
    assert alert.cause == "Exceeded maximum runtime of 21600 seconds."
    assert "bluegreen load acme-corp 1767741527" in alert.action


def test_a_failed_run_of_another_job_names_the_job() -> None:
    @dg.op
    def move_alias() -> None:
        raise dg.Failure(description="database acme-corp-1 is not retained; pick one of: acme-corp-2")

    @dg.job
    def rollback():
        move_alias()

    with dg.instance_for_test() as instance:
        result = rollback.execute_in_process(instance=instance, raise_on_error=False, tags={"customer": "acme-corp"})
        alert = alert_for_run(instance, result.dagster_run, WEB)
    assert alert.title == "bluegreen: acme-corp: rollback failed"
    assert alert.customer == "acme-corp" and alert.snapshot is None and alert.step == "move_alias"
    assert alert.cause.startswith("database acme-corp-1 is not retained")


def test_a_blocked_switch_without_a_failed_run_has_its_own_alert() -> None:
    alert = blocked_switch_alert("acme-corp", "1767741527", "plausibility",
                                 "nodes would shrink from 1000 to 10 (99%, more than max_shrink_percent 50)",
                                 run_id="abcd1234-0000", webserver_url=WEB)
    assert alert.kind == "verification_blocked" and alert.partition == KEY
    assert alert.run_url == f"{WEB}/runs/abcd1234-0000"
    assert alert.payload()["cause"].startswith("nodes would shrink")


# ---- the project's own steps -------------------------------------------------------------------------------------

def test_the_pipelines_failed_verification_alerts_with_the_differing_counts(project, monkeypatch) -> None:
    """The real steps (assets.py) on the embedded target, with a load that silently lost a node."""
    from bluegreen_dagster.demo_data import write_snapshot
    from bluegreen_dagster.targets.embedded import EmbeddedTarget

    write_snapshot(project.data, "acme", 200, people=20)
    real_count = EmbeddedTarget.count

    def short_by_one(self, database):
        counts = real_count(self, database)
        return type(counts)(counts.nodes - 1, counts.relationships, counts.labels, counts.types)

    monkeypatch.setattr(EmbeddedTarget, "count", short_by_one)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, ["acme-200"])
        result = project.job().execute_in_process(partition_key="acme-200", instance=instance,
                                                  raise_on_error=False, tags={"customer": "acme"})
        alert = alert_for_run(instance, result.dagster_run, WEB)
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "verify_counts")
    assert alert.kind == "verification_blocked" and alert.cause == check.description
    assert "expected 21, found 20" in alert.cause
    assert (alert.customer, alert.snapshot, alert.step) == ("acme", "200", "verify_counts (check on snapshot_database)")


def test_the_pipelines_bad_input_alerts_with_the_file(project) -> None:
    from bluegreen_dagster.demo_data import write_snapshot

    write_snapshot(project.data, "acme", 200, people=20)
    (project.data / "acme/200/relationships/knows-00000.parquet").write_bytes(b"garbage")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, ["acme-200"])
        result = project.job().execute_in_process(partition_key="acme-200", instance=instance,
                                                  raise_on_error=False)
        alert = alert_for_run(instance, result.dagster_run, WEB)
    assert alert.kind == "run_failed" and alert.step == "snapshot_database"
    assert "knows-00000.parquet" in alert.cause and "Error occurred while executing" not in alert.cause
    assert "(after" not in alert.cause  # bad input is not retried
