"""What may run at once, in three sentences (docs/concurrency.md has the details):

1. A load runs only while its step holds one of `orchestrator.max_concurrent_loads` named locks on the Dagster
   instance's own database (PostgreSQL advisory locks; on SQLite, file locks beside the instance): that is the
   bound, atomic, the same for every run on every host whether or not it came through the run queue, and
   released by PostgreSQL or the kernel when the holder dies.
2. A customer's alias switch, cleanup, rollback and reconcile hold that customer's named lock, and the run queue
   admits one run per `customer` tag, so a customer's runs wait their turn in the queue and the lock only ever
   holds back runs that bypassed it.
3. Dagster's pool `bluegreen_loads` on the load step, kept at the same limit, is what the UI shows and what orders
   waiting steps; it is not the bound, because Dagster's slot claim is not atomic (it may admit one step too many,
   which then waits for a lock).

Every instance YAML we ship has the `concurrency:` block `instance_concurrency(max_concurrent_loads)` renders
(tests/test_instance_yaml.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from bluegreen_dagster.records import CUSTOMER_TAG

LOADS_POOL = "bluegreen_loads"
# How long a run waits for another run of the same customer to finish its switch or cleanup.
CUSTOMER_LOCK_TIMEOUT_SECONDS = 600.0
# Runs the queue starts at once, all customers together.
MAX_CONCURRENT_RUNS = 8
# A run that ended without freeing its pool slot (its worker died) gives it back this long after it is marked
# failed. Short is safe: the bound is the named lock, which a live worker keeps however its run is marked.
FREE_SLOTS_AFTER_RUN_END_SECONDS = 10
# A host that vanishes (power, network) leaves its PostgreSQL session open until the server notices: ask the
# server to probe this session's TCP connection so its locks are released within about a minute, not hours.
_KEEPALIVE = {"tcp_keepalives_idle": 30, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 3}


class LostLock(RuntimeError):
    """The process no longer holds a lock it took: its PostgreSQL session was ended (the server's keepalive, an
    operator, a restart) or its lock file was replaced, so another worker may hold it now."""


class HeldLock(str):
    """Which kind of lock is held ("postgres advisory lock" or "file lock", the string logged and recorded as
    before) and `ensure_held()`, which proves it still is right before an act that must not outlive it: a worker
    paused (SIGSTOP, `docker pause`) or cut off longer than the keepalive resumes believing it holds the lock."""

    def __new__(cls, kind: str, name: str, prove: Callable[[], bool]) -> HeldLock:
        held = super().__new__(cls, kind)
        held.name, held._prove = name, prove
        return held

    def ensure_held(self) -> None:
        """Raise LostLock unless the lock is still ours (docs/concurrency.md: "A worker that lost its lock")."""
        what = f"lost the {self.name.split(':')[0]} lock"
        try:
            ok = self._prove()
        except Exception as exc:  # the lock's own connection is gone: so is the lock
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise LostLock(f"{what}; another worker may have moved the alias ({self.name}, {str(self)}: its "
                           f"session is gone: {type(exc).__name__}: {first})") from None
        if not ok:
            raise LostLock(f"{what}; another worker may have moved the alias ({self.name}, {str(self)}: no longer "
                           "held by this process)")


def instance_concurrency(max_concurrent_loads: int) -> dict:
    """The `concurrency:` block of every Dagster instance YAML: one run per `customer` tag value, at most
    MAX_CONCURRENT_RUNS runs, and the load pool claimed per step (`granularity: op`, so the UI shows it for runs
    that bypass the queue too) with `max_concurrent_loads` as the limit of pools not given one of their own."""
    return {
        "runs": {
            "max_concurrent_runs": MAX_CONCURRENT_RUNS,
            "tag_concurrency_limits": [
                {"key": CUSTOMER_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
            ],
        },
        "pools": {"granularity": "op", "default_limit": max_concurrent_loads},
    }


def sync_pool_limit(instance: dg.DagsterInstance, limit: int) -> bool:
    """Make the instance's limit of `bluegreen_loads` equal `limit` (what `dagster instance concurrency set`
    does), so the UI's pool shows the bound `load_slot` keeps. True if it changed; False also when the instance
    cannot limit pools (in-memory storage). Called by the sensor on every tick and by the CLI, so two processes
    can get here at once (seen in the compose stack: `bluegreen status` beside the sensor's first tick); Dagster's
    first setting of a pool inserts without checking and the second fails with a unique violation, so the setter
    holds a named lock."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or _pool_limit_is(storage, limit):
        return False
    with _any_lock(instance, ["pool-limit"], busy="another process is setting the pool's limit",
                   timeout=CUSTOMER_LOCK_TIMEOUT_SECONDS):
        if _pool_limit_is(storage, limit):  # set by the process that held the lock before us
            return False
        storage.set_concurrency_slots(LOADS_POOL, limit)
    return True


def _pool_limit_is(storage, limit: int) -> bool:
    info = storage.get_concurrency_info(LOADS_POOL)
    return info.slot_count == limit and not info.using_default_limit


@contextmanager
def load_slot(instance: dg.DagsterInstance, limit: int, on_wait: Callable[[str], None] = lambda _: None,
              poll_seconds: float = 0.5, watch_seconds: float = 0,
              on_lost: Callable[[str], None] | None = None) -> Iterator[str]:
    """Hold one of `limit` load slots while the step loads; yields which ("slot 2 of 2 (postgres advisory lock)").

    The slots are named locks `load-slot:0` .. `load-slot:<limit-1>`: a step takes whichever is free, so at most
    `limit` steps hold one, on any host. Dagster's pool slot, claimed before the step started, is not enough:
    Dagster counts free slots and takes one by id in separate statements, so steps asking at the same instant can
    all be admitted (seen: three loads at once with a limit of two).

    With `watch_seconds` and `on_lost`, the slot is proven held every `watch_seconds` while the load runs, and
    `on_lost(why)` is called once when it is not (`watch_lock`)."""
    names = [f"load-slot:{i}" for i in range(limit)]
    busy = f"all {limit} load slots are taken (orchestrator.max_concurrent_loads={limit})"
    with _any_lock(instance, names, busy=busy, on_wait=on_wait, poll_seconds=poll_seconds) as (kind, held), \
            watch_lock(kind, watch_seconds, on_lost):
        yield f"slot {names.index(held) + 1} of {limit} ({kind})"


# The exit status of a run worker that ended itself because it lost its load slot's lock (EX_TEMPFAIL).
LOST_LOCK_EXIT_CODE = 75


def end_worker(why: str) -> None:
    """End this run worker at once: it lost its lock and is cut off, so it can neither finish its load usefully nor
    report (the instance is unreachable). Its run launcher then sees the worker gone and fails the run, which frees
    its pool slot (docs/hosts.md, "The nemesis test"); its partial database is dropped by the next attempt or
    reconcile. Printed to stderr, the one place left to say it."""
    sys.stderr.write(f"bluegreen: ending this run worker: {why}\n")
    sys.stderr.flush()
    os._exit(LOST_LOCK_EXIT_CODE)


@contextmanager
def watch_lock(held: HeldLock, every: float, on_lost: Callable[[str], None] | None) -> Iterator[None]:
    """Prove `held` every `every` seconds in a thread while the block runs; call `on_lost(why)` once if it is lost.

    Why: a worker cut off from PostgreSQL and the target at once hangs on dead connections while its process (its
    container) lives on, so Dagster keeps its run STARTED and its pool slot claimed, and every customer's next load
    waits behind it (the nemesis test, docs/hosts.md). Its session's advisory lock is gone by then (PostgreSQL's
    keepalive, `_KEEPALIVE`), and the proof, failing within libpq's tcp_user_timeout, tells the worker so."""
    if not every or on_lost is None:
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every):
            try:
                held.ensure_held()
            except LostLock as exc:
                if not stop.is_set():
                    on_lost(str(exc))
                return

    thread = threading.Thread(target=watch, name=f"watch {held.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every + 60)  # a proof in flight ends within tcp_user_timeout


@contextmanager
def customer_lock(instance: dg.DagsterInstance, customer: str, on_wait: Callable[[str], None] = lambda _: None,
                  timeout: float = CUSTOMER_LOCK_TIMEOUT_SECONDS, poll_seconds: float = 0.2) -> Iterator[HeldLock]:
    """Hold the customer's switch/cleanup lock; yields which kind ("postgres advisory lock" or "file lock"), a
    HeldLock whose `ensure_held()` proves it is still held."""
    with _any_lock(instance, [f"customer:{customer}"], on_wait=on_wait, timeout=timeout, poll_seconds=poll_seconds,
                   busy=f"customer {customer}: another run is switching or cleaning up") as (kind, _):
        yield kind


def _lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, from the lock's name."""
    digest = hashlib.blake2b(f"bluegreen-dagster:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, signed=True)  # big-endian, the default


def _postgres_run_storage(instance: dg.DagsterInstance):
    """The instance's run storage if it is on PostgreSQL (no second set of credentials), else None."""
    try:
        from dagster_postgres import PostgresRunStorage
    except ImportError:  # without the [postgres] extra the instance cannot be on PostgreSQL
        return None
    storage = instance.run_storage
    return storage if isinstance(storage, PostgresRunStorage) else None


@contextmanager
def _any_lock(instance: dg.DagsterInstance, names: list[str], busy: str,
              on_wait: Callable[[str], None] = lambda _: None, timeout: float | None = None,
              poll_seconds: float = 0.2) -> Iterator[tuple[HeldLock, str]]:
    """Hold whichever of the named locks is free first (one name: a mutex; n names: a semaphore of n); yields
    (kind, name held), kind "postgres advisory lock" or "file lock". `busy` says why a caller waits. Both kinds
    are released if the holder dies: PostgreSQL ends the session's locks, the kernel closes the process's files."""
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

    storage = _postgres_run_storage(instance)
    if storage is not None:
        import sqlalchemy as sa

        def try_lock(conn, name: str) -> bool:
            return bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _lock_key(name)}).scalar())

        # dagster-postgres connects in AUTOCOMMIT without a pool: this connection is one session, and closing it
        # (or the process dying) ends the session and its locks.
        with storage.connect() as conn:
            for setting, value in _KEEPALIVE.items():
                conn.execute(sa.text(f"SET {setting} = {int(value)}"))
            while (held := next((name for name in names if try_lock(conn, name)), None)) is None:
                wait()
            key = _lock_key(held)

            def prove() -> bool:
                # On the lock's own session: it answers, and pg_locks lists the advisory lock for its backend (a
                # bigint key shows as classid = high 32 bits, objid = low 32 bits, objsubid = 1).
                return bool(conn.execute(sa.text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND objsubid = 1 AND classid::bigint = :c AND objid::bigint = :o)"),
                    {"c": (key >> 32) & 0xFFFFFFFF, "o": key & 0xFFFFFFFF}).scalar())

            try:
                yield HeldLock("postgres advisory lock", held, prove), held
            finally:
                try:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                except Exception:  # the session is gone (LostLock): its locks went with it
                    pass
        return

    # An instance on SQLite can only be shared by processes of one host: a file lock beside its files is enough.
    folder = Path(instance.root_directory) / "bluegreen-locks"
    folder.mkdir(parents=True, exist_ok=True)
    fds = {name: os.open(folder / f"{name.replace(':', '-')}.lock", os.O_RDWR | os.O_CREAT, 0o644) for name in names}
    try:
        while (held := next((name for name, fd in fds.items() if _try_flock(fd)), None)) is None:
            wait()
        path = folder / f"{held.replace(':', '-')}.lock"
        yield HeldLock("file lock", held, lambda: _still_flocked(fds[held], path)), held
    finally:
        for fd in fds.values():
            os.close(fd)  # closing releases the lock held through it


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _still_flocked(fd: int, path: Path) -> bool:
    """Whether our flock on `fd` still guards `path`: the file at `path` is the one we locked (not replaced) and a
    new lock attempt on it is refused (flock locks belong to the open file, so ours refuses even this process)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
        return False
    probe = os.open(path, os.O_RDWR)
    try:
        return not _try_flock(probe)
    finally:
        os.close(probe)  # releases the probe's lock if it got one
