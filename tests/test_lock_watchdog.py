"""A run worker that lost its load slot's lock ends itself (concurrency.watch_lock + end_worker), so its run fails
and frees its pool slot instead of holding it while hung on dead connections (docs/concurrency.md, "A worker that
lost its lock"). A real PostgreSQL ends the worker's session, as its keepalive does for a host cut off; the worker
is a real process holding the slot the way the load step does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg2
import pytest

from bluegreen_dagster.concurrency import LOST_LOCK_EXIT_CODE
from tests.postgres import Postgres, postgres  # noqa: F401 - the fixture

WORKER = textwrap.dedent("""
    import sys, time
    import dagster as dg
    from bluegreen_dagster.concurrency import end_worker, load_slot

    with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
        with load_slot(instance, limit=1, watch_seconds=float(sys.argv[2]), on_lost=end_worker) as slot:
            print("holding", slot, flush=True)
            time.sleep(120)  # a load hung on a dead connection
    print("released", flush=True)
""")


def start_worker(home: Path, pg: Postgres, watch_seconds: float) -> subprocess.Popen:
    env = {**os.environ, "PGPASSWORD": pg.password}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(home), str(watch_seconds)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert worker.stdout.readline().startswith("holding slot 1 of 1 (postgres advisory lock)")
    return worker


def end_advisory_sessions(pg: Postgres) -> int:
    """What PostgreSQL does to the session of a host that stopped answering its keepalives."""
    with psycopg2.connect(pg.url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted")
        return len(cur.fetchall())


def test_a_worker_whose_load_lock_is_gone_ends_itself_and_says_why(postgres, tmp_path):  # noqa: F811
    home = postgres.instance_home(tmp_path / "home")
    worker = start_worker(home, postgres, 0.3)
    try:
        assert end_advisory_sessions(postgres) == 1
        try:
            status = worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the worker kept running (and would keep its run's pool slot) after losing its load lock")
        assert status == LOST_LOCK_EXIT_CODE
        assert "bluegreen: ending this run worker: lost the load-slot lock" in worker.stderr.read()
    finally:
        worker.kill()


def test_without_the_check_a_worker_that_lost_its_lock_runs_on(postgres, tmp_path):  # noqa: F811
    """The behaviour the check exists for: `lost_lock_check_seconds: 0` and the worker does not notice."""
    home = postgres.instance_home(tmp_path / "home")
    worker = start_worker(home, postgres, 0)
    try:
        assert end_advisory_sessions(postgres) == 1
        time.sleep(2)
        assert worker.poll() is None
    finally:
        worker.kill()
