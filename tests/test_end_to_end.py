"""End to end through the real Dagster daemon: `dagster-daemon run -w workspace.yaml` in a subprocess, with our
instance settings, the embedded target and a temp data folder. Drop snapshots, watch the alias move."""

from __future__ import annotations

import time
from pathlib import Path

import ladybug
import pytest

from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets import make_target
from tests.conftest import Project, make_project
from tests.dagster_processes import running_daemon, wait_for
from tests.helpers import alias_of

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon(tmp_path: Path):
    project = make_project(tmp_path, orchestrator={"scan_interval": 5, "keep_databases": 2})
    with running_daemon(project) as log:
        yield project, log


def finished_runs(project: Project) -> set[str]:
    """Partition keys of the daemon's successful runs, read from its instance."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(project.root / "dagster_home")) as instance:
        return {r.tags["dagster/partition"] for r in instance.get_runs(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))}


def test_sensor_driven_runs_switch_the_alias_forward_only(daemon) -> None:
    project, log = daemon
    write_snapshot(project.data, "acme", 1_767_000_100, people=200)
    dropped = time.monotonic()
    wait_for(lambda: alias_of(project, "acme") == "acme-1767000100", 120, "the first alias switch", log)
    first_latency = time.monotonic() - dropped

    # A newer snapshot, then an older one arriving late, then a half-written one (sizes within the plausibility
    # gate's max_shrink_percent of each other, whichever order they run in).
    write_snapshot(project.data, "acme", 1_767_000_300, people=300)
    write_snapshot(project.data, "acme", 1_767_000_200, people=250)
    half = project.data / "acme" / "1767000400" / "nodes"
    half.mkdir(parents=True)
    wait_for(lambda: alias_of(project, "acme") == "acme-1767000300", 120, "the switch to the newest", log)

    def loaded() -> set[str]:
        with make_target(project.settings) as target:
            return {d.name for d in target.list_databases("acme")}

    # The late older snapshot is loaded too (then kept or cleaned up), but never takes the alias.
    wait_for(lambda: finished_runs(project) == {"acme-1767000100", "acme-1767000200", "acme-1767000300"}, 120,
             "all three runs to finish", log)
    assert alias_of(project, "acme") == "acme-1767000300"
    assert loaded() <= {"acme-1767000300", "acme-1767000200", "acme-1767000100"}
    assert "acme-1767000300" in loaded() and len(loaded()) <= 2

    with make_target(project.settings) as target:
        reader = target.reader_location("acme")
    db = ladybug.Database(reader, read_only=True)
    try:
        knows = ladybug.Connection(db).execute("MATCH (a:Person)-[:KNOWS]->(b) RETURN count(*)").get_next()[0]
    finally:
        db.close()
    assert knows == expected_counts(snapshot_at(project.data, "acme", 1_767_000_300)).types["KNOWS"]
    print(f"first snapshot -> alias switched in {first_latency:.1f}s")


def test_sensor_driven_runs_on_the_neo4j_target_against_the_standin(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The same daemon and workspace with `target: neo4j`, talking to the Enterprise stand-in over sockets."""
    from tests.standin.server import start_standin

    monkeypatch.setenv("E2E_NEO4J_PASSWORD", "e2e-standin-pw")
    with start_standin(password="e2e-standin-pw") as standin:
        standin.arrow.accept_string_properties = True  # the demo snapshot has string node properties (opt-in)
        project = make_project(tmp_path, target="neo4j", orchestrator={"scan_interval": 5},
                               neo4j={**standin.neo4j_settings(), "password": "${E2E_NEO4J_PASSWORD}",
                                      "online_timeout": 10, "arrow_string_properties": True})
        with running_daemon(project) as log:
            write_snapshot(project.data, "acme", 1_767_000_100, people=200)
            wait_for(lambda: standin.dbms.alias_target("acme") == "acme-1767000100", 120, "the alias switch", log)
        graph = standin.dbms.counts("acme-1767000100")
        assert graph.type_counts() == expected_counts(snapshot_at(project.data, "acme", 1_767_000_100)).types
