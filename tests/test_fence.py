"""A worker that lost its lock can do no harm (bluegreen_dagster/fence.py, docs/concurrency.md "A worker that lost
its lock").

Deterministic part, on the embedded target and on the Neo4j stand-in: two handles on one target play two workers;
what the second one does "while the first is paused" runs at the first one's lock check, right before its move,
which is exactly where a pause hurts. Real part: a worker process takes the customer lock on a real PostgreSQL,
stops itself (SIGSTOP) right before its move, its PostgreSQL session is terminated as the server's keepalive
would, a second worker switches to a newer snapshot, and the first is continued.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from bluegreen_dagster import bluegreen as rules
from bluegreen_dagster.concurrency import LostLock, _lock_key, customer_lock
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import expected_counts, snapshot_at
from bluegreen_dagster.targets import PermanentTargetError, make_target
from bluegreen_dagster.targets.base import Fence, FenceMoved, GraphTarget
from tests.conftest import Project, make_project
from tests.helpers import run_partition, standin_settings
from tests.postgres import Postgres, postgres  # noqa: F401 - the fixture

PEOPLE = 10
TIMESTAMPS = (100, 200, 300)
LOST = "lost the customer lock; another worker may have moved the alias"
WAIT_LIMIT = 120.0  # seconds: only reached when something is broken


@pytest.fixture(params=["embedded", "neo4j"])
def two_workers(request, tmp_path: Path) -> Iterator[tuple[GraphTarget, GraphTarget, dict]]:
    """Two handles on one target (two workers), with acme-100, -200 and -300 loaded and the alias on acme-100;
    also each snapshot's expected counts by key."""
    if request.param == "neo4j":
        settings = standin_settings(request.getfixturevalue("standin"), tmp_path)
    else:
        settings = make_project(tmp_path).settings
    expected = {}
    with make_target(settings) as loader:
        for ts in TIMESTAMPS:
            write_snapshot(settings.dataset.base_path, "acme", ts, people=PEOPLE)
            snap = snapshot_at(settings.dataset.base_path, "acme", ts)
            loader.load(snap)
            expected[snap.key] = expected_counts(snap)
        loader.point_alias("acme", "acme-100")
    with make_target(settings) as a, make_target(settings) as b:
        yield a, b, expected


def at_the_move(action: Callable[[], None]) -> Callable[[], None]:
    """An `ensure_held` that lets `action` happen first, once: what another worker did while this one was paused
    right before its move (the lock check itself passes: a pause the keepalive did not notice)."""
    done = []

    def ensure_held() -> None:
        if not done:
            done.append(True)
            action()
    return ensure_held


def test_a_stale_worker_cannot_move_the_alias_back_over_a_newer_switch(two_workers) -> None:
    a, b, expected = two_workers
    result = rules.switch_if_newest(a, "acme-200", expected["acme-200"], ensure_held=at_the_move(
        lambda: rules.switch_if_newest(b, "acme-300", expected["acme-300"])))
    assert not result.switched and result.current == "acme-300"
    assert "moved since it was read" in result.reason and "not moved to acme-200" in result.reason
    assert a.alias_target("acme") == b.alias_target("acme") == "acme-300"


def test_moved_away_and_back_is_not_unmoved(two_workers) -> None:
    """Worker A read acme-100; meanwhile B switched to acme-300 and an operator rolled back to acme-100: the alias
    serves what A read, but A's decision is stale all the same (the move count differs) and it moves nothing."""
    a, b, expected = two_workers

    def switch_then_rollback() -> None:
        rules.switch_if_newest(b, "acme-300", expected["acme-300"])
        b.point_alias("acme", "acme-100")  # rollback.py's move

    result = rules.switch_if_newest(a, "acme-200", expected["acme-200"], ensure_held=at_the_move(switch_then_rollback))
    assert not result.switched and a.alias_target("acme") == "acme-100"


def test_a_stale_move_landing_right_after_ours_is_repaired_forward(two_workers, monkeypatch) -> None:
    """B (paused before its own move, its decision stale) lands right after A's move to acme-300, putting the
    alias back on acme-200: A, whose lock is still held, reads the fence again and repairs forward."""
    a, b, expected = two_workers
    real_move = a.move_alias
    stale = []

    def move_then_stale_move(customer: str, database: str, *, expect: Fence) -> None:
        real_move(customer, database, expect=expect)
        if not stale:
            stale.append(True)
            b.point_alias("acme", "acme-200")  # a move the fence did not stop (e.g. Neo4j's round-trip window)

    monkeypatch.setattr(a, "move_alias", move_then_stale_move)
    result = rules.switch_if_newest(a, "acme-300", expected["acme-300"], ensure_held=lambda: None)
    assert result.switched and result.current == "acme-300"
    assert "repaired forward: a stale worker had moved it back to acme-200" in result.reason
    assert b.alias_target("acme") == "acme-300"


def test_a_worker_that_lost_its_lock_leaves_a_move_after_its_own_alone(two_workers, monkeypatch) -> None:
    """Right after A's move the alias goes back (a rollback by the worker that holds the lock now): A lost its lock,
    so it repairs nothing; the other worker decided."""
    a, b, expected = two_workers
    real_move = a.move_alias
    lock = {"held": True}

    def move_then_rollback(customer: str, database: str, *, expect: Fence) -> None:
        real_move(customer, database, expect=expect)
        lock["held"] = False
        b.point_alias("acme", "acme-100")

    def ensure_held() -> None:
        if not lock["held"]:
            raise LostLock(LOST)

    monkeypatch.setattr(a, "move_alias", move_then_rollback)
    result = rules.switch_if_newest(a, "acme-300", expected["acme-300"], ensure_held=ensure_held)
    assert result.current == "acme-100" and "left there" in result.reason
    assert b.alias_target("acme") == "acme-100"


def test_a_lost_lock_moves_nothing(two_workers) -> None:
    a, _, expected = two_workers

    def lost() -> None:
        raise LostLock(LOST)

    with pytest.raises(LostLock, match=LOST):
        rules.switch_if_newest(a, "acme-300", expected["acme-300"], ensure_held=lost)
    assert a.alias_target("acme") == "acme-100"


def test_the_fence_refuses_a_stale_expectation_and_counts_every_move(two_workers) -> None:
    a, b, _ = two_workers
    first = a.alias_fence("acme")
    assert first.database == "acme-100" and first.moves == 1
    b.point_alias("acme", "acme-200")
    assert a.alias_fence("acme") == Fence("acme-200", 2)
    with pytest.raises(FenceMoved, match="not moved to acme-300"):
        a.move_alias("acme", "acme-300", expect=first)
    assert b.alias_fence("acme") == Fence("acme-200", 2)
    a.move_alias("acme", "acme-300", expect=Fence("acme-200", 2))
    assert b.alias_fence("acme") == Fence("acme-300", 3)


def test_a_stale_cleanup_cannot_drop_what_the_alias_serves_now(two_workers, monkeypatch) -> None:
    """A's cleanup read the alias (acme-300 after a switch), then paused; an operator rolled back to acme-200
    meanwhile. A's cleanup would drop acme-200 (beyond keep=1, not the alias target it read): the target itself
    refuses, since it checks its aliases at the drop (Neo4j: DROP DATABASE is RESTRICT)."""
    a, b, expected = two_workers
    rules.switch_if_newest(a, "acme-300", expected["acme-300"])
    real_list = a.list_databases

    def list_then_rollback(customer: str):
        listed = real_list(customer)
        b.point_alias("acme", "acme-200")  # after A's cleanup read the alias target
        return listed

    monkeypatch.setattr(a, "list_databases", list_then_rollback)
    with pytest.raises(PermanentTargetError, match="acme-200"):
        rules.cleanup(a, "acme", keep=1, in_flight=set)
    assert b.alias_target("acme") == "acme-200"
    assert "acme-200" in [d.name for d in b.list_databases("acme")]


def test_a_cleanup_that_lost_its_lock_drops_nothing(two_workers) -> None:
    a, _, _ = two_workers

    def lost() -> None:
        raise LostLock(LOST)

    with pytest.raises(LostLock):
        rules.cleanup(a, "acme", keep=1, in_flight=set, ensure_held=lost)
    assert sorted(d.name for d in a.list_databases("acme")) == ["acme-100", "acme-200", "acme-300"]


def test_the_neo4j_alias_carries_its_fence_as_properties(standin, tmp_path: Path) -> None:
    """What an operator sees with `SHOW ALIASES FOR DATABASE YIELD name, database, properties`."""
    settings = standin_settings(standin, tmp_path)
    write_snapshot(settings.dataset.base_path, "acme", 100, people=PEOPLE)
    with make_target(settings) as target:
        target.load(snapshot_at(settings.dataset.base_path, "acme", 100))
        target.point_alias("acme", "acme-100")
    [row] = [r for r in standin.dbms.show_aliases() if r["name"] == "acme"]
    assert row["database"] == "acme-100" and row["properties"] == {"served": "acme-100", "moves": 1}


# --------------------------------------------------------------------------------------------------------------
# The real pause: SIGSTOP, the PostgreSQL session terminated, another worker switches, SIGCONT


def _paused_worker(home: str, config: str, key: str, stopped, out) -> None:
    """Run `key`'s job; at the alias switch's lock check, right before the move, stop this whole process
    (SIGSTOP, as `docker pause` freezes a container) until the test continues it."""
    os.environ["BLUEGREEN_CONFIG"] = config
    os.environ["DAGSTER_HOME"] = home
    from bluegreen_dagster import concurrency
    from bluegreen_dagster.config import load_settings

    real = concurrency.HeldLock.ensure_held
    paused = []

    def pause_then_check(self) -> None:
        if not paused:
            paused.append(True)
            stopped.set()  # "about to move"
            os.kill(os.getpid(), signal.SIGSTOP)
        real(self)

    concurrency.HeldLock.ensure_held = pause_then_check
    project = Project(Path(config).parent, Path(config), load_settings(Path(config)))
    with dg.DagsterInstance.from_config(home) as instance:
        result = run_partition(project, instance, key)
        failures = {e.step_key: e.event_specific_data.error.message for e in result.get_step_failure_events()}
        out.put({"success": result.success, "failures": failures, "paused": bool(paused)})


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_paused_worker_resumes_after_losing_its_lock_and_moves_nothing(
        postgres: Postgres, project: Project, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    home = postgres.instance_home(project.root / "dagster_home")
    for ts in TIMESTAMPS:
        write_snapshot(project.data, "acme", ts, people=PEOPLE)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert run_partition(project, instance, "acme-100").success

    ctx = mp.get_context("spawn")
    stopped, out = ctx.Event(), ctx.Queue()
    worker = ctx.Process(target=_paused_worker, args=(str(home), str(project.config_file), "acme-200", stopped, out))
    worker.start()
    try:
        assert stopped.wait(WAIT_LIMIT), "the worker never reached its move"
        deadline = time.monotonic() + 10
        while _state(worker.pid) != "T":
            assert time.monotonic() < deadline, "the worker did not stop"
            time.sleep(0.05)


        key = _lock_key("customer:acme")
        with sa.create_engine(postgres.url).connect() as pg:  # what the server does to a session it gave up on
            [backend] = pg.execute(sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                "AND classid::bigint = :c AND objid::bigint = :o"),
                {"c": (key >> 32) & 0xFFFFFFFF, "o": key & 0xFFFFFFFF}).scalars().all()
            assert pg.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": backend}).scalar()

        with dg.DagsterInstance.from_config(str(home)) as instance:  # the second worker, while the first is paused
            assert run_partition(project, instance, "acme-300").success
        with make_target(project.settings) as target:
            assert target.alias_target("acme") == "acme-300"
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    outcome = out.get(timeout=WAIT_LIMIT)
    worker.join(WAIT_LIMIT)
    with make_target(project.settings) as target:
        assert target.alias_target("acme") == "acme-300"
    assert outcome["paused"] and not outcome["success"]
    assert list(outcome["failures"]) == ["alias_switch"] and LOST in outcome["failures"]["alias_switch"]
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the lock is free again: the next run gets it
        with customer_lock(instance, "acme", timeout=5.0) as lock:
            lock.ensure_held()


def test_a_file_lock_proves_it_is_held_until_its_file_is_replaced(tmp_path: Path) -> None:
    """On a SQLite instance the customer lock is a file lock: held while our lock file is the one at its path."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with customer_lock(instance, "acme") as lock:
            assert lock == "file lock"
            lock.ensure_held()
            path = home / "bluegreen-locks" / "customer-acme.lock"
            path.unlink()  # e.g. an operator's cleanup of the folder: another worker can lock a new file now
            path.touch()
            with pytest.raises(LostLock, match=LOST):
                lock.ensure_held()
