"""The `bluegreen` command, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.cli import main
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import scan
from tests.conftest import Project

REPO = Path(__file__).resolve().parent.parent


def test_demo_data_and_simulate_snapshot_write_complete_snapshots(project: Project) -> None:
    assert main(["demo-data", "--customers", "acme,globex", "--people", "50"]) == 0
    assert main(["simulate-snapshot", "--customer", "acme", "--people", "20", "--timestamp", "1767741527"]) == 0
    keys = [s.key for s in scan(project.data, settle_seconds=3600).complete]
    assert "acme-1767741527" in keys and len(keys) == 3
    assert main(["simulate-snapshot", "--customer", "Bad_Name"]) == 2  # clear error, nothing written
    assert not (project.data / "Bad_Name").exists()


def test_status_json_reports_alias_target_age_and_databases(project: Project, capsys) -> None:
    from bluegreen_dagster import bluegreen as rules
    from bluegreen_dagster.snapshots import expected_counts, snapshot_at
    from bluegreen_dagster.targets import make_target

    for ts in (1767741000, 1767742000):
        write_snapshot(project.data, "acme", ts, people=20)
    write_snapshot(project.data, "globex", 1767741000, people=20)
    with make_target(project.settings) as target:
        for ts in (1767741000, 1767742000):
            snap = snapshot_at(project.data, "acme", ts)
            target.load(snap)
            rules.switch_if_newest(target, snap.key, expected_counts(snap), project.settings.orchestrator.state_path)
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    acme, globex = out["customers"]
    assert acme["alias"] == "acme" and acme["target_database"] == "acme-1767742000"
    assert acme["snapshot_timestamp"] == "1767742000" and acme["age_seconds"] > 0
    assert [d["name"] for d in acme["databases"]] == ["acme-1767741000", "acme-1767742000"]
    assert acme["reader"].endswith("aliases/acme.lbug") and os.path.exists(acme["reader"])
    assert globex["target_database"] is None and globex["databases"] == []
    assert main(["status"]) == 0  # the rich table renders too


def test_register_adds_the_partition_once(project: Project) -> None:
    write_snapshot(project.data, "acme", 1767741527, people=5)
    assert main(["register", "acme", "1767741527"]) == 0
    assert main(["register", "acme", "1767741527"]) == 0
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        assert instance.get_dynamic_partitions("snapshots") == ["acme-1767741527"]
    assert main(["register", "acme", "1767749999"]) == 2  # no such snapshot folder


@pytest.mark.slow
def test_load_runs_dagster_asset_materialize_for_one_snapshot(project: Project) -> None:
    write_snapshot(project.data, "acme", 1767741527, people=30)
    bluegreen = Path(sys.executable).parent / "bluegreen"
    done = subprocess.run([str(bluegreen), "load", "acme", "1767741527"], cwd=REPO, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["status", "--json"]) == 0
    from bluegreen_dagster.targets import make_target

    with make_target(project.settings) as target:
        assert target.alias_target("acme") == "acme-1767741527"


def test_check_reports_ready_or_every_problem(project: Project, capsys) -> None:
    write_snapshot(project.data, "acme", 1767741527, people=5)
    assert main(["check"]) == 0
    assert "1 complete" in capsys.readouterr().out
    (project.data / "Bad_Name").mkdir()
    project.reconfigure(target="neo4j", neo4j={"host": "127.0.0.1", "bolt_port": 1, "password": "pw-not-shown"})
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "Bad_Name" in out and "cannot reach Neo4j" in out and "pw-not-shown" not in out
