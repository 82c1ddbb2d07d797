"""The customer lock, deterministically, on SQLite and on PostgreSQL: while one process holds it, another process
times out waiting for it, and a run's alias switch waits (the alias does not move) until it is released.

No race is timed: the holder is a separate process that keeps the lock until the test releases it, and the test
checks what happens while it is held. A no-op lock fails every run of these tests."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.concurrency import customer_lock
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.targets import make_target
from tests.conftest import Project
from tests.faults.harness import run_partition
from tests.postgres import Postgres, postgres  # noqa: F401 - the fixture

WAIT_LIMIT = 120.0  # seconds: only reached when something is broken


def _hold(home: str, customer: str, held, release) -> None:
    with dg.DagsterInstance.from_config(home) as instance:
        with customer_lock(instance, customer):
            held.set()
            release.wait(WAIT_LIMIT)


@contextmanager
def held_elsewhere(home: Path, customer: str) -> Iterator[mp.Process]:
    """The customer's lock, held by another process until the block ends."""
    ctx = mp.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(home), customer, held, release))
    holder.start()
    try:
        assert held.wait(WAIT_LIMIT), "the holder process never got the lock"
        yield holder
    finally:
        release.set()
        holder.join(WAIT_LIMIT)
        if holder.is_alive():
            holder.kill()
    assert holder.exitcode == 0


@pytest.fixture(params=["sqlite", "postgres"])
def home(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Dagster instance home on SQLite or on a real PostgreSQL server."""
    folder = tmp_path / "dagster_home"
    folder.mkdir()
    if request.param == "postgres":
        pg: Postgres = request.getfixturevalue("postgres")
        monkeypatch.setenv("PGPASSWORD", pg.password)
        (folder / "dagster.yaml").write_text(pg.instance_yaml())
    dg.DagsterInstance.from_config(str(folder)).dispose()
    return folder


def test_while_another_process_holds_it_a_second_one_times_out(home: Path) -> None:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with held_elsewhere(home, "acme"):
            told: list[str] = []
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="customer acme: another run is switching or cleaning up"):
                with customer_lock(instance, "acme", on_wait=told.append, timeout=1.0, poll_seconds=0.1):
                    pytest.fail("got the customer lock while another process held it")
            assert time.monotonic() - started >= 1.0
            assert len(told) == 1 and "waiting" in told[0]
            with customer_lock(instance, "globex", timeout=1.0):  # another customer's lock is free
                pass
        with customer_lock(instance, "acme", timeout=WAIT_LIMIT):  # released with the holder
            pass


def _logs_of(instance: dg.DagsterInstance, key: str) -> str:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": key}))
    return "\n".join(e.message or "" for run in runs for e in instance.all_logs(run.run_id))


def test_a_runs_switch_waits_while_another_process_holds_the_customer_lock(home: Path, project: Project) -> None:
    """acme-100 is live; acme-200's run starts while another process holds acme's lock: the run says it waits and
    the alias stays on acme-100 as long as the lock is held; once released, the run moves it to acme-200."""
    write_snapshot(project.data, "acme", 100, people=10)
    write_snapshot(project.data, "acme", 200, people=10)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert run_partition(project, instance, "acme-100").success
    with make_target(project.settings) as target:
        assert target.alias_target("acme") == "acme-100"

    with held_elsewhere(home, "acme"):
        outcome: dict = {}

        def run() -> None:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                outcome["result"] = run_partition(project, instance, "acme-200")

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        deadline = time.monotonic() + WAIT_LIMIT
        with dg.DagsterInstance.from_config(str(home)) as watcher:
            while "another run is switching or cleaning up; waiting" not in _logs_of(watcher, "acme-200"):
                assert runner.is_alive(), ("the run finished while another process held the customer lock: "
                                           f"{outcome}")
                assert time.monotonic() < deadline, "the run neither waited for the lock nor finished"
                time.sleep(0.2)
        time.sleep(1.0)  # the run goes on polling; the alias must still not move
        assert runner.is_alive()
        with make_target(project.settings) as target:
            assert target.alias_target("acme") == "acme-100"
    runner.join(WAIT_LIMIT)
    assert not runner.is_alive() and outcome["result"].success
    with make_target(project.settings) as target:
        assert target.alias_target("acme") == "acme-200"
