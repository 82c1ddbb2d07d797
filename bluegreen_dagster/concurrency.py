"""What may run at once, answered by the Dagster instance, so it holds across hosts:

- Loads: the pool `bluegreen_loads` on the load step, its limit `orchestrator.max_concurrent_loads`. With the
  instance's `concurrency: pools: granularity: op` (our dagster.yaml) every executor claims a slot before the step
  starts, including runs that bypass the queue (`dagster asset materialize`, `execute_in_process`). `load_slot`
  covers the rest: when Dagster did not claim a slot for the step (pool granularity `run` and a run that bypassed
  the queue, or a pool without a limit), it claims one itself through the same instance storage.
- Alias switch and cleanup of one customer: the run queue admits one run per `customer` tag; `customer_lock` is
  the guard for runs that bypass the queue: a PostgreSQL advisory lock on the instance's own database (released by
  PostgreSQL if the holder dies), or, for an instance on SQLite, which only processes of one host can share, a
  file lock beside that instance's files.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

LOADS_POOL = "bluegreen_loads"
# How long a run waits for another run of the same customer to finish its switch or cleanup.
CUSTOMER_LOCK_TIMEOUT_SECONDS = 600.0


def sync_pool_limit(instance: dg.DagsterInstance, limit: int) -> bool:
    """Make the instance's limit of `bluegreen_loads` equal `limit` (what `dagster instance concurrency set`
    does). True if it changed; False also when the instance cannot limit pools (in-memory storage)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return False
    info = storage.get_concurrency_info(LOADS_POOL)
    if info.slot_count == limit and not info.using_default_limit:
        return False
    storage.set_concurrency_slots(LOADS_POOL, limit)
    return True


@contextmanager
def load_slot(instance: dg.DagsterInstance, run_id: str, step_key: str, limit: int,
              on_wait: Callable[[str], None] = lambda _: None, poll_seconds: float = 0.5) -> Iterator[str]:
    """Hold a `bluegreen_loads` slot for the step's duration; yields who claimed it ("dagster" or "step")."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:  # an in-memory instance: one process, nothing to share
        yield "none (in-memory instance)"
        return
    # Set the limit explicitly: Dagster initialises a pool from `default_limit` with a count-then-insert, so runs
    # starting at once on a fresh instance can allocate one slot each (seen with two hosts on PostgreSQL).
    # An explicit limit also removes such extra free slots.
    sync_pool_limit(instance, limit)
    info = storage.get_concurrency_info(LOADS_POOL)
    if any(s.run_id == run_id and s.step_key == step_key for s in info.claimed_slots):
        yield "dagster"
        return
    told = False
    try:
        while True:
            status = storage.claim_concurrency_slot(LOADS_POOL, run_id, step_key)
            if status.is_claimed:
                break
            if not told:
                on_wait(f"all slots of pool {LOADS_POOL} are taken (orchestrator.max_concurrent_loads={limit}); "
                        "waiting")
                told = True
            time.sleep(status.sleep_interval or poll_seconds)
        yield "step"
    finally:
        storage.free_concurrency_slot_for_step(run_id, step_key)


def _lock_key(customer: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, from the customer's name."""
    digest = hashlib.blake2b(f"bluegreen-dagster:customer:{customer}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _postgres_engine(instance: dg.DagsterInstance):
    storage = instance.run_storage
    if type(storage).__module__.startswith("dagster_postgres"):
        return storage._engine  # noqa: SLF001 - the instance's own PostgreSQL; no second set of credentials
    return None


@contextmanager
def customer_lock(instance: dg.DagsterInstance, customer: str, on_wait: Callable[[str], None] = lambda _: None,
                  timeout: float = CUSTOMER_LOCK_TIMEOUT_SECONDS, poll_seconds: float = 0.2) -> Iterator[str]:
    """Hold the customer's switch/cleanup lock; yields which kind ("postgres advisory lock" or "file lock")."""
    engine = _postgres_engine(instance)
    deadline = time.monotonic() + timeout
    if engine is not None:
        import sqlalchemy as sa

        key = _lock_key(customer)
        with engine.connect() as conn:  # AUTOCOMMIT, no pool: closing the connection ends the session
            told = False
            while not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"customer {customer}: another run held its switch/cleanup lock for over "
                                       f"{timeout:g}s")
                if not told:
                    on_wait(f"customer {customer}: another run is switching or cleaning up; waiting")
                    told = True
                time.sleep(poll_seconds)
            try:
                yield "postgres advisory lock"
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return

    folder = Path(instance.root_directory) / "bluegreen-locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"customer-{customer}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"customer {customer}: another run held its switch/cleanup lock for over "
                                       f"{timeout:g}s") from None
                if not told:
                    on_wait(f"customer {customer}: another run is switching or cleaning up; waiting")
                    told = True
                time.sleep(poll_seconds)
        yield "file lock"
    finally:
        os.close(fd)  # closing releases the lock; the kernel also releases it if the process dies


IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def in_flight_partitions(instance: dg.DagsterInstance, customer: str, this_run: str | None = None) -> set[str]:
    """Partition keys (= database names) of this customer's runs that are queued or running: the one answer to
    "what is loading", read from the instance's run records, so it holds across hosts."""
    from bluegreen_dagster.snapshots import InvalidName, parse_partition_key

    keys = set()
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        run = record.dagster_run
        key = run.tags.get("dagster/partition", "")
        try:
            if run.run_id != this_run and parse_partition_key(key).customer == customer:
                keys.add(key)
        except InvalidName:
            continue  # another job's run
    return keys
