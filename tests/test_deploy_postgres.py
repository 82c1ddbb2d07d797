"""deploy/dagster.yaml, the production instance settings, loaded as-is against a real PostgreSQL server: Debian's
`postgresql` package, started by this test on a temporary data directory and a loopback port, stopped by pid.

Skipped, with the reason, where PostgreSQL's server binaries are not installed; with BLUEGREEN_REQUIRE_POSTGRES=1
(CI, which installs them) that is a failure instead."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.records import SNAPSHOTS_PARTITIONS_NAME

from tests.helpers import free_port

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "pg-deploy-test-pw"  # only for this throwaway server


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    port: int
    user: str
    password: str
    database: str


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        reason = "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)"
        if os.environ.get("BLUEGREEN_REQUIRE_POSTGRES") == "1":  # CI: must run, never silently skip
            pytest.fail(f"{reason} (BLUEGREEN_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    # PostgreSQL refuses to run as root: run it as the package's `postgres` user, in a folder that user owns.
    as_user = {}
    folder = Path(tempfile.mkdtemp(prefix="bluegreen-pg-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data, pwfile = folder / "data", folder / "pwfile"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        os.chown(pwfile, as_user["user"], as_user["group"])
    server = PostgresServer(port=free_port(), user="dagster", password=PASSWORD, database="dagster")
    proc = None
    try:
        subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "-U", server.user, f"--pwfile={pwfile}",
                        "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, cwd=folder, **as_user)
        log = open(folder / "postgres.log", "w")
        proc = subprocess.Popen([str(bin_dir / "postgres"), "-D", str(data), "-p", str(server.port),
                                 "-h", "127.0.0.1", "-k", str(folder), "-c", "fsync=off"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=folder, **as_user)
        wait_until_ready(server, proc, folder / "postgres.log")
        conn = connect(server, "postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
            conn.cursor().execute(f"CREATE DATABASE {server.database}")
        finally:
            conn.close()
        yield server
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def connect(server: PostgresServer, database: str):
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=server.port, user=server.user, password=server.password,
                            dbname=database, connect_timeout=5)


def wait_until_ready(server: PostgresServer, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"postgres exited with {proc.returncode}:\n{log.read_text()}")
        try:
            connect(server, "postgres").close()
            return
        except Exception:
            time.sleep(0.2)
    raise AssertionError(f"postgres did not accept connections within 60 s:\n{log.read_text()}")


@pytest.fixture
def production_home(tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml unchanged, its variables pointing at the test server."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(postgres_server.port))
    monkeypatch.setenv("DAGSTER_PG_DB", postgres_server.database)
    monkeypatch.setenv("DAGSTER_PG_USERNAME", postgres_server.user)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", postgres_server.password)
    return home


def test_production_instance_stores_runs_and_events_in_postgres(production_home: Path) -> None:
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    from bluegreen_dagster.run_launcher import BluegreenRunLauncher

    with dg.DagsterInstance.from_config(str(production_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_launcher, BluegreenRunLauncher)
        assert instance.run_monitoring_enabled and instance.run_monitoring_poll_interval_seconds == 15
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.tag_concurrency_limits == [
            {"key": "customer", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
        assert concurrency.pool_config.default_pool_limit == 1

        run = instance.add_run(dg.DagsterRun(job_name="load_snapshot", status=dg.DagsterRunStatus.NOT_STARTED,
                                             tags={"customer": "acme", "dagster/partition": "acme-1767000100"}))
        instance.report_engine_event("stored in postgres", run)
        instance.add_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME, ["acme-1767000100"])

    # A second process of the deployment (here: a fresh instance) sees the same runs, events and partitions.
    with dg.DagsterInstance.from_config(str(production_home)) as other:
        [stored] = other.get_runs(filters=dg.RunsFilter(tags={"customer": "acme"}))
        assert stored.run_id == run.run_id and stored.tags["dagster/partition"] == "acme-1767000100"
        assert any(e.message == "stored in postgres" for e in other.all_logs(run.run_id))
        assert other.get_dynamic_partitions(SNAPSHOTS_PARTITIONS_NAME) == ["acme-1767000100"]
        # The pool the load step uses gets the default limit.
        other.event_log_storage.initialize_concurrency_limit_to_default("bluegreen_loads")
        assert other.event_log_storage.get_concurrency_info("bluegreen_loads").slot_count == 1


def test_a_wrong_password_fails_and_is_never_printed(production_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-the-password")
    with pytest.raises(Exception, match="too many retries for DB connection") as raised:
        with dg.DagsterInstance.from_config(str(production_home)) as instance:
            instance.get_runs(limit=1)
    assert 'password authentication failed for user "dagster"' in caplog.text
    for secret in ("not-the-password", PASSWORD):
        assert secret not in caplog.text and secret not in str(raised.value)
