"""A lock that was taken and then lost says so (bluegreen_dagster/concurrency.py: `HeldLock.ensure_held`,
`watch_lock`, `end_worker`), in-process on SQLite (file locks: lost when the lock file is replaced) and on a real
PostgreSQL (advisory locks: lost when the server ends the lock's session, as its keepalive does for a host that
vanished). tests/test_lock_watchdog.py ends a real worker process the same way; tests/test_fence.py shows that a
lost lock moves no alias."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from bluegreen_dagster import concurrency
from bluegreen_dagster.concurrency import (
    LOST_LOCK_EXIT_CODE,
    HeldLock,
    LostLock,
    _lock_key,
    customer_lock,
    end_worker,
    load_slot,
    watch_lock,
)
from tests.postgres import Postgres, postgres, sqlite_or_postgres_home  # noqa: F401 - the fixture

WAIT = 30.0  # seconds; reached only when something is broken
LOST = "lost the customer lock; another worker may have moved the alias (customer:acme, "


@pytest.fixture(params=["sqlite", "postgres"])
def instance(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    home, pg = sqlite_or_postgres_home(request, tmp_path / "dagster_home", monkeypatch)
    with dg.DagsterInstance.from_config(str(home)) as inst:
        inst.lose = (lambda name: _end_session(pg, name)) if pg else (lambda name: _replace_file(home, name))
        yield inst


def _replace_file(home: Path, name: str) -> None:
    """An operator's cleanup of the lock folder: another worker could lock a new file at the same path now."""
    path = home / "bluegreen-locks" / f"{name.replace(':', '-')}.lock"
    path.unlink()
    path.touch()


def _end_session(pg: Postgres, name: str) -> None:
    key = _lock_key(name)
    with sa.create_engine(pg.url).connect() as conn:
        [backend] = conn.execute(sa.text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND classid::bigint = :c AND objid::bigint = :o"),
            {"c": (key >> 32) & 0xFFFFFFFF, "o": key & 0xFFFFFFFF}).scalars().all()
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": backend}).scalar()


def test_a_held_lock_proves_it_until_it_is_lost_and_then_says_which(instance: dg.DagsterInstance) -> None:
    with customer_lock(instance, "acme") as lock, customer_lock(instance, "bolt") as other:
        lock.ensure_held()
        other.ensure_held()
        instance.lose("customer:acme")
        with pytest.raises(LostLock) as lost:
            lock.ensure_held()
        other.ensure_held()  # another customer's lock is untouched
    if lock == "file lock":
        assert str(lost.value) == LOST + "file lock: no longer held by this process)"
    else:
        assert str(lost.value).startswith(LOST + "postgres advisory lock: its session is gone: OperationalError: ")
    with customer_lock(instance, "acme", timeout=5.0) as again:  # free for the next run
        again.ensure_held()


def test_a_lost_load_slot_is_reported_once_by_the_watch(instance: dg.DagsterInstance) -> None:
    told: list[str] = []
    called = threading.Event()

    def on_lost(why: str) -> None:
        told.append(why)
        called.set()

    with load_slot(instance, limit=2, on_wait=pytest.fail) as first, \
            load_slot(instance, limit=2, watch_seconds=0.05, on_lost=on_lost) as second:
        assert first.startswith("slot 1 of 2") and second.startswith("slot 2 of 2")
        assert "watch load-slot:1" in [t.name for t in threading.enumerate()]
        instance.lose("load-slot:1")
        assert called.wait(WAIT), "the watch never noticed the lost slot"
        assert told[0].startswith("lost the load-slot lock; another worker may have moved the alias (load-slot:1, ")
    assert len(told) == 1
    assert "watch load-slot:1" not in [t.name for t in threading.enumerate()]


def test_without_a_period_or_a_callback_nothing_watches() -> None:
    proofs = []
    held = HeldLock("file lock", "customer:acme", lambda: proofs.append(1) or False)
    for every, on_lost in ((0, print), (0.01, None)):
        with watch_lock(held, every, on_lost):
            assert not [t for t in threading.enumerate() if t.name.startswith("watch ")]
    assert proofs == []


@pytest.mark.parametrize("error, shown", [
    (RuntimeError("server closed the connection unexpectedly\n\tThis probably means the server terminated"),
     "RuntimeError: server closed the connection unexpectedly"),
    (OSError("  x" * 100), "OSError: " + ("  x" * 100).strip()[:200]),  # at most 200 characters
    (TimeoutError(), "TimeoutError: "),
])
def test_a_proof_that_fails_says_the_session_is_gone_and_why_in_one_line(error: Exception, shown: str) -> None:
    def prove() -> bool:
        raise error

    with pytest.raises(LostLock) as lost:
        HeldLock("postgres advisory lock", "customer:acme", prove).ensure_held()
    assert str(lost.value) == LOST + "postgres advisory lock: its session is gone: " + shown + ")"


def test_a_worker_that_lost_its_lock_ends_with_its_own_exit_status_and_says_why(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    class Ended(Exception):
        pass

    def exit_now(status: int) -> None:
        raise Ended(status)

    monkeypatch.setattr(concurrency.os, "_exit", exit_now)
    with pytest.raises(Ended) as ended:
        end_worker("lost the load-slot lock")
    assert ended.value.args == (LOST_LOCK_EXIT_CODE,) and LOST_LOCK_EXIT_CODE == 75
    assert capsys.readouterr().err == "bluegreen: ending this run worker: lost the load-slot lock\n"


def test_a_file_lock_whose_file_was_deleted_is_lost(tmp_path: Path) -> None:
    """Deleted, not yet replaced: the next worker's open creates a new file and locks that one, so ours is lost."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance, customer_lock(instance, "acme") as lock:
        lock.ensure_held()
        (home / "bluegreen-locks" / "customer-acme.lock").unlink()
        with pytest.raises(LostLock, match="no longer held by this process"):
            lock.ensure_held()


def test_a_pool_limit_setter_waits_for_the_one_setting_it_and_then_finds_it_set(tmp_path: Path) -> None:
    """Two processes setting the pool's limit at once (the sensor's first tick and `bluegreen status`): the second
    waits for the first's lock (Dagster's first setting fails on a duplicate otherwise) and then changes nothing."""
    from bluegreen_dagster.concurrency import LOADS_POOL, _any_lock, sync_pool_limit

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        results: list[bool] = []
        with _any_lock(instance, ["pool-limit"], busy="the first setter"):
            setter = threading.Thread(target=lambda: results.append(sync_pool_limit(instance, 2)))
            setter.start()
            setter.join(1.0)
            assert setter.is_alive() and storage.get_concurrency_info(LOADS_POOL).using_default_limit
            storage.set_concurrency_slots(LOADS_POOL, 2)  # what the first setter does
        setter.join(WAIT)
        assert results == [False] and storage.get_concurrency_info(LOADS_POOL).slot_count == 2
