"""The load bound (`concurrency.load_slot`) and the customer lock, in separate processes sharing one Dagster
instance, on SQLite and on PostgreSQL: where Dagster's own pool claim lets steps asking at one instant through."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.synchronize
import time
from pathlib import Path

import dagster as dg
import pytest

from bluegreen_dagster.concurrency import customer_lock, load_slot
from tests.postgres import Postgres, postgres  # noqa: F401 - the fixture


def _hold_slot(home: str, slots: int, log: str, name: str, start: mp.synchronize.Barrier, rounds: int) -> None:
    with dg.DagsterInstance.from_config(home) as instance:
        for _ in range(rounds):
            start.wait()  # every process asks for a slot at the same instant: where a non-atomic claim fails
            with load_slot(instance, limit=slots, poll_seconds=0.02) as slot:
                with open(log, "a") as f:
                    f.write(f"start {time.time()} {name}:{slot.replace(' ', '_')}\n")
                time.sleep(0.3)
                with open(log, "a") as f:
                    f.write(f"end {time.time()} {name}\n")


def _peak_overlap(home: Path, slots: int, log: Path, processes: int = 5, rounds: int = 3) -> tuple[int, set[str]]:
    """The most loads that held a slot at once, and which slots they said they held."""
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(processes)
    procs = [ctx.Process(target=_hold_slot, args=(str(home), slots, str(log), f"run{i}", start, rounds))
             for i in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * processes
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 2 * processes * rounds
    running = peak = 0
    for _, kind in sorted((float(t), kind) for kind, t, _ in lines):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    return peak, {who.split(":", 1)[1].replace("_", " ") for kind, _, who in lines if kind == "start"}


@pytest.mark.parametrize("slots", [1, 2])
def test_max_concurrent_loads_bounds_overlap_across_processes(tmp_path: Path, slots: int) -> None:
    """Five steps asking at the same instant, three times over: never more than the limit load at once, and the
    limit is reached (the bound is not a mutex in disguise)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    dg.DagsterInstance.from_config(str(home)).dispose()
    peak, held = _peak_overlap(home, slots, tmp_path / "log")
    assert peak == slots
    assert held == {f"slot {i} of {slots} (file lock)" for i in range(1, slots + 1)}


def test_max_concurrent_loads_holds_on_a_postgres_instance(tmp_path: Path, postgres: Postgres,  # noqa: F811
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The same bound with the instance on PostgreSQL, as in production: processes of several hosts share only it."""
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(postgres.instance_yaml())
    dg.DagsterInstance.from_config(str(home)).dispose()
    peak, held = _peak_overlap(home, 2, tmp_path / "log")
    assert peak == 2
    assert held == {"slot 1 of 2 (postgres advisory lock)", "slot 2 of 2 (postgres advisory lock)"}


def test_customer_lock_is_released_when_its_holder_dies(tmp_path: Path, postgres: Postgres,  # noqa: F811
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed while holding its customer's lock (or a load slot) does not hold it forever: PostgreSQL
    ends the dead session's advisory locks, and another customer's lock is independent all along."""
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(postgres.instance_yaml())
    dg.DagsterInstance.from_config(str(home)).dispose()
    ctx = mp.get_context("spawn")
    holding = ctx.Event()
    holder = ctx.Process(target=_hold_and_hang, args=(str(home), holding))
    holder.start()
    try:
        assert holding.wait(60)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            with customer_lock(instance, "globex", timeout=5) as kind:  # another customer: not blocked
                assert kind == "postgres advisory lock"
            with pytest.raises(TimeoutError, match="customer acme: another run is switching"):
                with customer_lock(instance, "acme", timeout=1):
                    pass
            with pytest.raises(Waits, match=r"all 1 load slots are taken \(orchestrator.max_concurrent_loads=1\)"):
                with load_slot(instance, limit=1, on_wait=give_up):
                    pass
            holder.kill()
            holder.join(10)
            with customer_lock(instance, "acme", timeout=10), load_slot(instance, limit=1) as slot:
                assert slot == "slot 1 of 1 (postgres advisory lock)"
    finally:
        if holder.is_alive():
            holder.kill()


class Waits(Exception):
    """What `give_up` raises: the step would wait (load_slot itself waits as long as it takes)."""


def give_up(message: str) -> None:
    raise Waits(message)


def _hold_and_hang(home: str, holding) -> None:
    with dg.DagsterInstance.from_config(home) as instance:
        with customer_lock(instance, "acme"), load_slot(instance, limit=1):
            holding.set()
            time.sleep(600)
