"""The health-audit job records the target's health on the asset `target_health` (its history is the UI's plot), on
the embedded target and on the Neo4j Enterprise stand-in; an unreachable target is a failed check, not a crash."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.config import OrchestratorSettings

from bluegreen_dagster.demo_data import write_snapshot
from tests.conftest import Project, make_project
from tests.helpers import run_partition

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "standin-audit-pw"


def audit(project: Project, instance: dg.DagsterInstance):
    """One run of the job the health_audit schedule launches: (metadata recorded, the target_healthy check)."""
    result = project.defs.resolve_job_def("health_audit").execute_in_process(instance=instance)
    assert result.success
    [materialization] = result.asset_materializations_for_node("target_health")
    [check] = result.get_asset_check_evaluations()
    return {k: v.value for k, v in materialization.metadata.items()}, check


def history(instance: dg.DagsterInstance, key: str) -> list:
    """What the UI plots: the metadata value of each recorded materialization, oldest first."""
    events = instance.fetch_materializations(dg.AssetKey("target_health"), limit=100, ascending=True).records
    return [e.asset_materialization.metadata[key].value for e in events if key in e.asset_materialization.metadata]


def test_schedule_is_every_15_minutes_and_running(project: Project) -> None:
    assert OrchestratorSettings().health_audit_cron == "*/15 * * * *"  # the default (tests/conftest.py: a rare one)
    schedule = next(s for s in project.defs.schedules if s.name == "health_audit")
    assert schedule.cron_schedule == project.settings.orchestrator.health_audit_cron
    assert schedule.job_name == "health_audit"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    project.reconfigure(orchestrator={"health_audit_cron": "*/5 * * * *"})
    assert next(s for s in project.defs.schedules if s.name == "health_audit").cron_schedule == "*/5 * * * *"


@pytest.mark.parametrize("cron", ["61 * * * *", "0 0 30 2 *", "* * * * * *", "hourly"])
def test_a_cron_dagster_would_refuse_is_a_config_error(cron: str) -> None:
    """Caught when config.yaml is read, naming the key, not when the code location loads its schedules."""
    with pytest.raises(ValueError, match=r"health_audit_cron[\s\S]*not a cron string Dagster accepts"):
        OrchestratorSettings(health_audit_cron=cron)


def test_embedded_health_is_recorded_with_its_numbers(project: Project) -> None:
    write_snapshot(project.data, "acme", 100, people=20)
    with dg.instance_for_test() as instance:
        before, check = audit(project, instance)
        assert run_partition(project, instance, "acme-100").success
        after, _ = audit(project, instance)
        assert history(instance, "databases") == [0, 1]
    assert check.passed and check.description == "embedded target healthy"
    assert before["reachable"] is True and before["target"] == "embedded"
    assert isinstance(before["free_disk_mb"], int) and before["free_disk_mb"] > 0
    assert after["databases"] == 1


def test_embedded_over_threshold_fails_the_check_with_the_reason(project: Project) -> None:
    project.reconfigure(embedded={"min_free_disk_mb": 10 ** 12})
    with dg.instance_for_test() as instance:
        meta, check = audit(project, instance)
    assert meta["reachable"] is True and meta["free_disk_mb"] > 0
    assert not check.passed and "embedded.min_free_disk_mb" in check.description


def test_unreachable_embedded_store_is_recorded_not_crashed(project: Project) -> None:
    (project.root / "blocked").write_text("a file where the store's folder should be")
    project.reconfigure(embedded={"path": "blocked/store"})
    with dg.instance_for_test() as instance:
        meta, check = audit(project, instance)
    assert meta["reachable"] is False and "cannot create the embedded store" in meta["error"]
    assert not check.passed and check.description.startswith("embedded target not reachable:")


@pytest.fixture
def standin_process():
    """`python -m tests.standin` as its own process, stopped by its pid: (the process, its ports)."""
    process = subprocess.Popen([sys.executable, "-m", "tests.standin", "--password", PASSWORD], cwd=REPO,
                               stdout=subprocess.PIPE, text=True)
    try:
        ports = json.loads(process.stdout.readline())
        yield process, ports
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_neo4j_standin_health_is_recorded_and_a_dead_server_is_a_failed_check(
        tmp_path, monkeypatch, standin_process) -> None:
    process, ports = standin_process
    monkeypatch.setenv("AUDIT_NEO4J_PASSWORD", PASSWORD)
    project = make_project(tmp_path, target="neo4j", neo4j={
        "host": "127.0.0.1", **ports, "password": "${AUDIT_NEO4J_PASSWORD}", "online_timeout": 10})
    with dg.instance_for_test() as instance:
        meta, check = audit(project, instance)
        assert check.passed, check.description
        assert meta["reachable"] is True and meta["target"] == "neo4j" and meta["edition"] == "enterprise"
        assert isinstance(meta["heap_percent"], float) and 0 <= meta["heap_percent"] <= 100
        assert isinstance(meta["databases"], int)

        process.kill()  # the server dies
        process.wait(timeout=30)
        dead, check = audit(project, instance)
        assert dead["reachable"] is False and not check.passed
        assert check.description.startswith("neo4j target not reachable:")
        assert history(instance, "reachable") == [True, False]
    assert PASSWORD not in str(dead) and PASSWORD not in check.description
