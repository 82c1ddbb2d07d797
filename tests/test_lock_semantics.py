"""What the load slots and the customer lock promise, checked without timing anything, on SQLite (file locks) and
on a real PostgreSQL (advisory locks): `max_concurrent_loads` steps load at once and the next one waits, saying
why; a customer's lock is a mutex that times out with a message naming the customer, leaves other customers free,
and is free again once its holder is done, or dead.

Each lock taken here is a separate lock file descriptor or a separate PostgreSQL session, exactly as in two steps,
so one test process can play several steps. tests/test_concurrency.py and tests/test_customer_lock.py race real
processes and whole runs; these are the fast, deterministic half (a few seconds, the PostgreSQL server included).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.concurrency import customer_lock, load_slot
from tests.postgres import postgres, sqlite_or_postgres_home  # noqa: F401 - the fixture


class Waits(Exception):
    """Raised by `give_up`: the caller would have waited."""


def give_up(message: str) -> None:
    raise Waits(message)


@pytest.fixture(params=["sqlite", "postgres"])
def instance(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    home, _ = sqlite_or_postgres_home(request, tmp_path / "dagster_home", monkeypatch)
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def kind_of(instance: dg.DagsterInstance) -> str:
    return "file lock" if "sqlite" in type(instance.run_storage).__name__.lower() else "postgres advisory lock"


def test_the_limit_is_the_number_of_loads_that_hold_a_slot_at_once(instance: dg.DagsterInstance) -> None:
    kind = kind_of(instance)
    with load_slot(instance, limit=2, on_wait=give_up) as first:
        assert first == f"slot 1 of 2 ({kind})"
        with load_slot(instance, limit=2, on_wait=give_up) as second:
            assert second == f"slot 2 of 2 ({kind})"
            with pytest.raises(Waits) as waited:
                with load_slot(instance, limit=2, on_wait=give_up):
                    pytest.fail("a third load got a slot with max_concurrent_loads=2")
            assert str(waited.value) == ("all 2 load slots are taken (orchestrator.max_concurrent_loads=2); "
                                         "waiting")
        with load_slot(instance, limit=2, on_wait=give_up) as again:  # the second slot is free again
            assert again == f"slot 2 of 2 ({kind})"
    with load_slot(instance, limit=1, on_wait=give_up) as only:
        assert only == f"slot 1 of 1 ({kind})"
        with pytest.raises(Waits, match=r"^all 1 load slots are taken \(orchestrator.max_concurrent_loads=1\)"):
            with load_slot(instance, limit=1, on_wait=give_up):
                pass


def test_a_waiting_load_gets_the_slot_when_it_is_freed(instance: dg.DagsterInstance) -> None:
    """The waiting load polls; it is told once why it waits, and proceeds as soon as the holder is done."""
    told: list[str] = []
    holder = load_slot(instance, limit=1)
    holder.__enter__()

    def on_wait(message: str) -> None:
        told.append(message)
        if len(told) == 1:
            holder.__exit__(None, None, None)  # the other step finishes while this one waits

    with load_slot(instance, limit=1, on_wait=on_wait, poll_seconds=0.01) as slot:
        assert slot == f"slot 1 of 1 ({kind_of(instance)})"
    assert told == ["all 1 load slots are taken (orchestrator.max_concurrent_loads=1); waiting"]


def test_a_customer_lock_is_one_holder_per_customer_and_times_out_naming_it(instance: dg.DagsterInstance) -> None:
    kind = kind_of(instance)
    with customer_lock(instance, "acme", timeout=5) as held:
        assert held == kind
        told: list[str] = []
        with pytest.raises(TimeoutError) as timed_out:
            with customer_lock(instance, "acme", on_wait=told.append, timeout=0.3, poll_seconds=0.05):
                pytest.fail("two holders of acme's lock")
        assert str(timed_out.value) == ("customer acme: another run is switching or cleaning up: still waiting "
                                        "after 0.3s")
        assert told == ["customer acme: another run is switching or cleaning up; waiting"]  # told once
        with customer_lock(instance, "globex", on_wait=give_up, timeout=5) as other:  # another customer: free
            assert other == kind
        with load_slot(instance, limit=1, on_wait=give_up):  # a load is not held back by a customer's lock
            pass
    with customer_lock(instance, "acme", on_wait=give_up, timeout=5):  # released when the block ends
        pass


def test_a_customer_lock_held_by_a_failing_step_is_released(instance: dg.DagsterInstance) -> None:
    with pytest.raises(RuntimeError, match="the switch failed"):
        with customer_lock(instance, "acme", timeout=5):
            raise RuntimeError("the switch failed")
    with customer_lock(instance, "acme", on_wait=give_up, timeout=5):
        pass


def _hold_and_die(home: str, holding) -> None:
    with dg.DagsterInstance.from_config(home) as inst:
        with customer_lock(inst, "acme"), load_slot(inst, limit=1):
            holding.set()
            mp.Event().wait(120)  # killed long before


def test_a_dead_holders_file_locks_are_free_again(tmp_path: Path) -> None:
    """On SQLite the kernel releases a killed worker's locks (PostgreSQL's case: tests/test_concurrency.py)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as inst:
        ctx = mp.get_context("spawn")
        holding = ctx.Event()
        holder = ctx.Process(target=_hold_and_die, args=(str(home), holding))
        holder.start()
        try:
            assert holding.wait(60), "the holder never got the locks"
            with pytest.raises(Waits, match="customer acme: another run"):
                with customer_lock(inst, "acme", on_wait=give_up):
                    pass
        finally:
            holder.kill()
            holder.join(30)
        with customer_lock(inst, "acme", on_wait=give_up), load_slot(inst, limit=1, on_wait=give_up) as slot:
            assert slot == "slot 1 of 1 (file lock)"


def test_the_ui_pool_limit_follows_max_concurrent_loads(instance: dg.DagsterInstance) -> None:
    """`sync_pool_limit` sets Dagster's `bluegreen_loads` pool to the bound the slots keep, and says whether it
    changed anything (the sensor calls it every tick)."""
    from bluegreen_dagster.concurrency import LOADS_POOL, sync_pool_limit

    storage = instance.event_log_storage
    assert storage.get_concurrency_info(LOADS_POOL).using_default_limit
    assert sync_pool_limit(instance, 1) is True  # the default limit is 1 too, but not set on the pool yet
    info = storage.get_concurrency_info(LOADS_POOL)
    assert info.slot_count == 1 and not info.using_default_limit
    assert sync_pool_limit(instance, 1) is False
    assert sync_pool_limit(instance, 3) is True
    assert storage.get_concurrency_info(LOADS_POOL).slot_count == 3
    assert sync_pool_limit(instance, 3) is False
    assert sync_pool_limit(instance, 2) is True
    assert storage.get_concurrency_info(LOADS_POOL).slot_count == 2


def test_an_instance_that_cannot_limit_pools_is_left_alone() -> None:
    from bluegreen_dagster.concurrency import sync_pool_limit

    with dg.DagsterInstance.ephemeral() as ephemeral:
        assert sync_pool_limit(ephemeral, 2) is False
