"""The `bluegreen` command, as a user runs it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.cli import main, prepare_dagster_home
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME
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
            rules.switch_if_newest(target, snap.key, expected_counts(snap))
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
    project.reconfigure(orchestrator={"max_concurrent_loads": 3})
    write_snapshot(project.data, "acme", 1767741527, people=5)
    assert main(["register", "acme", "1767741527"]) == 0
    assert main(["register", "acme", "1767741527"]) == 0
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        assert instance.get_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME) == ["acme-1767741527"]
        # The instance it created limits the load pool from config.yaml, in its settings and in its storage.
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 3 and pools.pool_granularity.value == "op"
        assert instance.event_log_storage.get_concurrency_info("bluegreen_loads").slot_count == 3
    assert main(["register", "acme", "1767749999"]) == 2  # no such snapshot folder


@pytest.mark.slow
def test_load_submits_through_the_run_queue_and_shows_its_progress(project: Project) -> None:
    """No webserver: the instance, the workspace and the daemon are all `bluegreen load` needs."""
    from bluegreen_dagster.progress import rows_in
    from bluegreen_dagster.snapshots import snapshot_at
    from tests.test_end_to_end import running_daemon

    project.reconfigure(orchestrator={"progress_seconds": 0.05})
    write_snapshot(project.data, "acme", 1767741527, people=40_000, rows_per_file=20_000)
    snap = snapshot_at(project.data, "acme", 1767741527)
    total = rows_in(snap.node_files + snap.relationship_files)
    bluegreen = Path(sys.executable).parent / "bluegreen"
    # Submitted before the daemon starts, so this run is first in the queue and does the load (the daemon's
    # sensor queues its own run of the snapshot behind it, which then finds the database loaded).
    load = subprocess.Popen([str(bluegreen), "load", "acme", "1767741527"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with dg.DagsterInstance.from_config(str(prepare_dagster_home())) as instance:
            deadline = time.monotonic() + 120
            while not instance.get_runs() and load.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
        with running_daemon(project) as log:
            _, shown = load.communicate(timeout=240)
    finally:
        if load.poll() is None:
            load.kill()
    assert load.returncode == 0, shown[-3000:] + log.read_text()[-3000:]
    # While it waited it showed the run going: queued, each step, rows of the snapshot's total with rate and ETA.
    assert "queued" in shown and "step started: snapshot_database" in shown and "step done: alias_switch" in shown
    rows_lines = [line for line in shown.splitlines() if f" of {total:,} rows" in line]
    assert len(rows_lines) >= 4 and f"acme-1767741527: copying {total:,} of {total:,} rows (100%)" in shown, shown
    assert all("rows/s, ETA" in line for line in rows_lines)
    assert shown.index("queued") < shown.index("step started: health_check") < shown.index(rows_lines[0])
    run_id = shown.split("submitted run ")[1].split()[0]
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        run = instance.get_run_by_id(run_id)  # (the daemon's sensor launches its own run of it too)
        assert run.job_name == "load_snapshot" and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["customer"] == "acme" and run.tags["dagster/partition"] == "acme-1767741527"
        queued = [e for e in instance.all_logs(run_id) if e.dagster_event
                  and e.dagster_event.event_type == dg.DagsterEventType.RUN_ENQUEUED]
        assert queued  # went through the run queue, not an in-process execution
    assert main(["status", "--json"]) == 0
    from bluegreen_dagster.targets import make_target

    with make_target(project.settings) as target:
        assert target.alias_target("acme") == "acme-1767741527"


def test_check_reports_ready_or_every_problem(project: Project, capsys, monkeypatch) -> None:
    write_snapshot(project.data, "acme", 1767741527, people=5)
    assert main(["check"]) == 0
    assert "1 complete" in capsys.readouterr().out
    (project.data / "Bad_Name").mkdir()
    monkeypatch.setenv("CHECK_TEST_PW", "pw-not-shown")
    project.reconfigure(target="neo4j", neo4j={"host": "127.0.0.1", "bolt_port": 1, "password": "${CHECK_TEST_PW}"})
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert "Bad_Name" in out and "cannot reach Neo4j" in out and "pw-not-shown" not in out


def test_a_literal_neo4j_password_is_refused_because_the_ui_would_show_it(project: Project, capsys) -> None:
    project.reconfigure(target="neo4j", neo4j={"password": "literal-pw"})
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert "neo4j.password must name an environment variable" in err and "literal-pw" not in err


def status_rows():
    from bluegreen_dagster.status import CustomerStatus, DatabaseStatus

    pin = {"database": "globex-1796270000", "reason": "bad data", "since": "2026-12-01T10:00:00", "by": "ops"}
    return [CustomerStatus("acme-corp", "acme-corp", "acme-corp-1796273600", "1796273600", 7320,
                           [DatabaseStatus("acme-corp-1796270000", "online"),
                            DatabaseStatus("acme-corp-1796273600", "online")],
                           reader="/srv/bluegreen/embedded/aliases/acme-corp.lbug"),
            CustomerStatus("globex", "globex", "globex-1796270000", "1796270000", 90061,
                           [DatabaseStatus("globex-1796270000", "online"),
                            DatabaseStatus("globex-1796273600", "loading")],
                           reader="/srv/bluegreen/embedded/aliases/globex.lbug", pin=pin)]


def test_status_in_80_columns_never_cuts_a_database_name() -> None:
    from rich.console import Console

    from bluegreen_dagster.status import print_status

    for wide in (False, True):
        out = Console(width=80, record=True)
        print_status(out, status_rows(), "embedded", wide=wide)
        text = out.export_text()
        assert max(len(line) for line in text.splitlines()) <= 80
        for name in ("acme-corp-1796270000", "acme-corp-1796273600", "globex-1796270000",
                     "globex-1796273600 (loading)", "acme-corp", "globex"):
            assert name in text, (name, text)  # whole, on one line
        assert "globex is pinned to globex-1796270000 since 2026-12-01T10:00:00 by ops: bad data" in text
        # The reader path only with --wide: too long for a column here, so one whole line per customer.
        assert ("globex reader opens /srv/bluegreen/embedded/aliases/globex.lbug" in text) == wide
        assert ("acme-corp.lbug" in text) == wide

    # Names too long for any 80-column table: one block per customer, every name whole even past the edge.
    long = status_rows()
    long[0].customer = "a-customer-with-a-name-long-enough-to-fill-most-of-a-row"
    long[0].target_database = long[0].customer + "-1796273600"
    out = Console(width=80, record=True)
    print_status(out, long, "embedded")
    text = out.export_text()
    assert long[0].target_database in text and long[0].customer + "\n" in text
    assert "globex-1796273600 (loading)" in text


def test_status_command_has_a_wide_option(project: Project, capsys) -> None:
    from bluegreen_dagster.cli import build_parser

    assert build_parser().parse_args(["status", "--wide"]).wide
    assert main(["status", "--wide"]) == 0 and main(["status"]) == 0
