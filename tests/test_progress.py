"""A load's progress: every loader reports rows of the snapshot's total at a steady pace, the run's log records the
lines, and the display `bluegreen load` draws reads them back (the CLI itself: tests/test_cli.py)."""

from __future__ import annotations

import io

import dagster as dg
import pytest
from rich.console import Console

from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.progress import LoadProgress, ProgressEvent, RunDisplay, rows_in, watch_run
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets.neo4j.target import Neo4jTarget
from tests.conftest import Project
from tests.helpers import standin_settings as make_settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_paced_and_read_back_as_the_same_facts() -> None:
    lines: list[str] = []
    clock = Clock()
    progress = LoadProgress(lines.append, every=2.0, clock=clock)
    for at, rows in ((0, 0), (0.5, 100), (1.9, 300), (2.1, 400), (3.0, 500), (4.2, 1000), (4.3, 1000)):
        clock.now = 100 + at
        progress.rows("acme-1767741527", "nodes", rows, 1000)
    clock.now = 104.4
    progress.rows("acme-1767741527", "relationships", 0, 3000)  # a new phase is told at once
    events = [ProgressEvent.parse(line) for line in lines]
    # The phase's start, then at most one line per 2 s, then its end (once); then the next phase's start.
    assert [(e.phase, e.rows) for e in events] == [("nodes", 0), ("nodes", 400), ("nodes", 1000),
                                                   ("relationships", 0)]
    at_400 = events[1]
    assert at_400.total == 1000 and at_400.seconds == pytest.approx(2.1)
    assert at_400.rate == pytest.approx(400 / 2.1) and at_400.eta_seconds == pytest.approx(600 / (400 / 2.1))
    assert lines[1].startswith("acme-1767741527: nodes 400 of 1,000 rows (40%), 190 rows/s, ETA 0:00:03 ")
    assert ProgressEvent.parse("acme-1767741527: loaded 1,000 rows in 4.2s") is None
    LoadProgress(None).rows("acme-1767741527", "nodes", 5, 10)  # outside a run: nothing, no error


def test_an_embedded_load_reports_rows_of_the_total_in_the_runs_log_and_the_display_shows_them(
        project: Project) -> None:
    project.reconfigure(orchestrator={"progress_seconds": 0.05})
    write_snapshot(project.data, "acme", 1767741527, people=40_000, rows_per_file=20_000)
    snap = snapshot_at(project.data, "acme", 1767741527)
    counts = expected_counts(snap)
    total = rows_in(snap.node_files + snap.relationship_files)
    assert total == counts.nodes + counts.relationships

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("snapshots", [snap.key])
        result = project.job().execute_in_process(partition_key=snap.key, instance=instance)
        assert result.success
        run_id = result.run_id
        logged = [(e.step_key, ProgressEvent.parse(e.user_message)) for e in instance.all_logs(run_id)]
        events = [event for step, event in logged if event is not None and step == "snapshot_database"]

        # What `bluegreen load` shows from the same log: on a terminal a live display, in a pipe one line each.
        terminal = Console(file=io.StringIO(), force_terminal=True, width=100)
        with RunDisplay(terminal, run_id) as display:
            assert watch_run(instance, run_id, display, timeout=10) == dg.DagsterRunStatus.SUCCESS
        piped = Console(file=io.StringIO(), force_terminal=False, width=40)  # lines stay whole however narrow
        with RunDisplay(piped, run_id) as display:
            watch_run(instance, run_id, display, timeout=10)

    reading = [e for e in events if e.phase == "reading"]
    copying = [e for e in events if e.phase == "copying"]
    assert len(reading) >= 3 and len(copying) >= 2, events  # start, in between, end
    assert {e.total for e in reading} == {total} and {e.total for e in copying} == {total}
    assert [e.rows for e in reading] == sorted(e.rows for e in reading) and reading[-1].rows == total
    assert copying[-1].rows == total and copying[-1].eta_seconds == 0
    assert 0 < reading[1].rows < total  # a line while the load was under way, not only at its ends
    shown = terminal.file.getvalue()
    assert f"{total:,} of {total:,} rows" in shown and "copying" in shown and "success" in shown
    lines = piped.file.getvalue()
    assert "queued" not in lines  # an in-process run is never queued: only what the log says is shown
    assert "step started: snapshot_database" in lines and f"copying {total:,} of {total:,} rows (100%)" in lines


@pytest.mark.parametrize("loader", ["arrow", "cypher"])
def test_neo4j_loaders_report_rows_of_each_entity_as_they_go(standin, tmp_path, loader) -> None:  # noqa: F811
    settings = make_settings(standin, tmp_path, loader=loader, batch_size=40)
    write_snapshot(settings.dataset.base_path, "acme", 1767741527, people=120)
    snap = snapshot_at(settings.dataset.base_path, "acme", 1767741527)
    counts = expected_counts(snap)
    lines: list[str] = []
    with Neo4jTarget(settings, poll_interval=0.01) as target:
        target.progress = LoadProgress(lines.append, every=0)
        target.load(snap)
    events = [ProgressEvent.parse(line) for line in lines]
    assert all(e is not None and e.database == snap.key for e in events)
    by_phase = {phase: [e for e in events if e.phase == phase] for phase in ("nodes", "relationships")}
    assert by_phase["nodes"][0].rows == 0 and by_phase["nodes"][-1].rows == counts.nodes
    assert by_phase["relationships"][-1].rows == by_phase["relationships"][-1].total == counts.relationships
    if loader == "cypher":  # one line per batch of 40 rows (the arrow streams are timed, not counted)
        assert len(by_phase["relationships"]) >= counts.relationships // 40
