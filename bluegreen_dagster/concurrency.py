"""What may run at once, answered by the Dagster instance, so it holds across hosts:

- Loads: the pool `bluegreen_loads` on the load step, its limit `orchestrator.max_concurrent_loads`. With the
  instance's `concurrency: pools: granularity: op` (our dagster.yaml) every executor claims a slot before the step
  starts, including runs that bypass the queue (`dagster asset materialize`, `execute_in_process`). `load_slot`
  covers the rest: when Dagster did not claim a slot for the step (pool granularity `run` and a run that bypassed
  the queue, or a pool without a limit), it claims one itself through the same instance storage. Because that
  claim is not atomic, the step also holds one of `max_concurrent_loads` named locks while it loads.
- Alias switch and cleanup of one customer: the run queue admits one run per `customer` tag; `customer_lock` is
  the guard for runs that bypass the queue.

A named lock is a PostgreSQL advisory lock on the instance's own database (released by PostgreSQL if the holder
dies), or, for an instance on SQLite, which only processes of one host can share, a file lock beside that
instance's files.
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
    """Hold a `bluegreen_loads` slot for the step's duration; yields who claimed it ("dagster" or "step").

    Dagster's claim is what the UI shows, but it is not atomic: it counts free slots, then takes one by id, in
    separate statements, so steps starting at the same instant on several hosts can be admitted past the limit
    (seen: three loads at once with a limit of two). The step therefore also holds one of `limit` named locks,
    which is atomic, while it loads."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:  # an in-memory instance: one process, nothing to share
        yield "none (in-memory instance)"
        return
    # Set the limit explicitly: Dagster initialises a pool from `default_limit` with a count-then-insert, so runs
    # starting at once on a fresh instance can allocate one slot each (seen with two hosts on PostgreSQL).
    # An explicit limit also removes such extra free slots; one setter at a time.
    with _any_lock(instance, ["pool-limit"], busy="another run is setting the pool's limit",
                   timeout=CUSTOMER_LOCK_TIMEOUT_SECONDS):
        sync_pool_limit(instance, limit)
    info = storage.get_concurrency_info(LOADS_POOL)
    claimed_by = "dagster" if any(s.run_id == run_id and s.step_key == step_key for s in info.claimed_slots) else None
    busy = f"all slots of pool {LOADS_POOL} are taken (orchestrator.max_concurrent_loads={limit})"
    told = False
    try:
        while claimed_by is None:
            status = storage.claim_concurrency_slot(LOADS_POOL, run_id, step_key)
            if status.is_claimed:
                claimed_by = "step"
                break
            if not told:
                on_wait(f"{busy}; waiting")
                told = True
            time.sleep(status.sleep_interval or poll_seconds)
        with _any_lock(instance, [f"load-slot:{i}" for i in range(limit)], busy=busy,
                       on_wait=(lambda _: None) if told else on_wait, poll_seconds=poll_seconds):
            yield claimed_by
    finally:
        if claimed_by == "step":  # a slot Dagster claimed is Dagster's to free
            storage.free_concurrency_slot_for_step(run_id, step_key)


@contextmanager
def customer_lock(instance: dg.DagsterInstance, customer: str, on_wait: Callable[[str], None] = lambda _: None,
                  timeout: float = CUSTOMER_LOCK_TIMEOUT_SECONDS, poll_seconds: float = 0.2) -> Iterator[str]:
    """Hold the customer's switch/cleanup lock; yields which kind ("postgres advisory lock" or "file lock")."""
    with _any_lock(instance, [f"customer:{customer}"], on_wait=on_wait, timeout=timeout, poll_seconds=poll_seconds,
                   busy=f"customer {customer}: another run is switching or cleaning up") as kind:
        yield kind


def _lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, from the lock's name."""
    digest = hashlib.blake2b(f"bluegreen-dagster:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _postgres_engine(instance: dg.DagsterInstance):
    storage = instance.run_storage
    if type(storage).__module__.startswith("dagster_postgres"):
        return storage._engine  # noqa: SLF001 - the instance's own PostgreSQL; no second set of credentials
    return None


@contextmanager
def _any_lock(instance: dg.DagsterInstance, names: list[str], busy: str,
              on_wait: Callable[[str], None] = lambda _: None, timeout: float | None = None,
              poll_seconds: float = 0.2) -> Iterator[str]:
    """Hold whichever of the named locks is free first (one name: a mutex; n names: a semaphore of n); yields
    which kind ("postgres advisory lock" or "file lock"). `busy` says why a caller waits. Both kinds are released
    if the holder dies: PostgreSQL ends the session's locks, the kernel closes the process's files."""
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False

    def wait() -> None:
        nonlocal told
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{busy}: still waiting after {timeout:g}s")
        if not told:
            on_wait(f"{busy}; waiting")
            told = True
        time.sleep(poll_seconds)

    engine = _postgres_engine(instance)
    if engine is not None:
        import sqlalchemy as sa

        def try_lock(conn, key: int) -> bool:
            return bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())

        keys = [_lock_key(name) for name in names]
        with engine.connect() as conn:  # AUTOCOMMIT, no pool: closing the connection ends the session
            while (held := next((k for k in keys if try_lock(conn, k)), None)) is None:
                wait()
            try:
                yield "postgres advisory lock"
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": held})
        return

    # An instance on SQLite can only be shared by processes of one host: a file lock beside its files is enough.
    folder = Path(instance.root_directory) / "bluegreen-locks"
    folder.mkdir(parents=True, exist_ok=True)
    fds = [os.open(folder / f"{name.replace(':', '-')}.lock", os.O_RDWR | os.O_CREAT, 0o644) for name in names]
    try:
        while not any(_try_flock(fd) for fd in fds):
            wait()
        yield "file lock"
    finally:
        for fd in fds:
            os.close(fd)  # closing releases the lock held through it


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
