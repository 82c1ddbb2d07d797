"""`target: neo4j` through Dagster and the CLI, against the Neo4j Enterprise STAND-IN (tests/standin): the same
steps, sensor and commands as the embedded default, with the production Neo4jTarget talking real Bolt and real
Arrow Flight over sockets to a server that models Enterprise + GDS (it is not Neo4j)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.cli import main
from bluegreen_dagster.demo_data import write_snapshot
from tests.conftest import Project
from tests.helpers import STANDIN_PASSWORD, metadata, run_partition

REPO = Path(__file__).resolve().parent.parent
PASSWORD = STANDIN_PASSWORD  # the `standin` fixture's (tests/conftest.py)


def test_refreshes_through_dagster_on_the_neo4j_target(neo4j_project: Project, standin) -> None:
    write_snapshot(neo4j_project.data, "acme", 100, people=150)
    write_snapshot(neo4j_project.data, "acme", 200, people=100)
    with dg.instance_for_test() as instance:
        first = run_partition(neo4j_project, instance, "acme-100")
        assert first.success
        load = metadata(first, "snapshot_database")
        assert load["target"] == "neo4j" and (load["nodes"], load["relationships"]) == (153, 600)
        assert metadata(first, "alias_switch")["reader"].endswith("database=acme")
        second = run_partition(neo4j_project, instance, "acme-200")
    assert second.success
    assert metadata(second, "alias_switch")["previous"] == "acme-100"
    # The database the alias just left drains (orchestrator.drain_seconds, counted from the switch Dagster
    # recorded): readers' transactions that began on it finish there; a later cleanup drops it.
    assert metadata(second, "cleanup")["dropped"] == []
    assert "draining" in metadata(second, "cleanup")["protected"]["acme-100"]
    assert standin.dbms.alias_target("acme") == "acme-200"
    assert "acme-100" in standin.dbms.database_names()


def test_wrong_password_fails_at_once_and_never_shows_the_password(neo4j_project: Project, standin) -> None:
    standin.dbms.password = "rotated-elsewhere"
    write_snapshot(neo4j_project.data, "acme", 100, people=10)
    with dg.instance_for_test() as instance:
        result = run_partition(neo4j_project, instance, "acme-100")
    assert not result.success
    message = result.get_step_failure_events()[0].event_specific_data.error.message
    assert "authentication failed" in message.lower()
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries == []
    everything = "\n".join(str(e) for e in result.all_events)
    assert PASSWORD not in everything


@pytest.mark.slow
def test_cli_load_and_status_on_the_neo4j_target(neo4j_project: Project, standin, capsys) -> None:
    from tests.test_end_to_end import running_daemon

    write_snapshot(neo4j_project.data, "acme", 1767741527, people=40)
    bluegreen = Path(sys.executable).parent / "bluegreen"
    with running_daemon(neo4j_project):  # `bluegreen load` submits through the run queue
        done = subprocess.run([str(bluegreen), "load", "acme", "1767741527"], cwd=REPO, capture_output=True,
                              text=True, timeout=240, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    assert PASSWORD not in done.stdout + done.stderr
    assert standin.dbms.alias_target("acme") == "acme-1767741527"
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    [acme] = json.loads(capsys.readouterr().out)["customers"]
    assert acme["target_database"] == "acme-1767741527"
    assert [d["name"] for d in acme["databases"]] == ["acme-1767741527"]


@pytest.mark.parametrize("loader", ["arrow", "cypher"])
def test_the_opt_in_enterprise_suite_runs_against_the_stand_in(standin, loader: str) -> None:
    """The suite for a real server (tests/test_neo4j_enterprise_optin.py) runs nowhere else in CI: run it here, so
    it cannot rot between the times someone points it at a real Neo4j Enterprise."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NEO4J_URI": f"bolt://{standin.host}:{standin.bolt_port}", "NEO4J_PASSWORD": PASSWORD}
    env.pop("GDS_ARROW_PORT", None)
    if loader == "arrow":
        env["GDS_ARROW_PORT"] = str(standin.arrow.port)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_neo4j_enterprise_optin.py", "-k", "not real_cluster"],  # that one: a
                          env=env, capture_output=True, text=True,  # 3-member stand-in, tests/test_neo4j_cluster.py
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert done.returncode == 0 and " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-3000:]
