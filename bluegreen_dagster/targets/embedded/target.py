"""`EmbeddedTarget`: the pipeline's `GraphTarget` over the embedded store, one LadybugDB file per snapshot.

A load runs in three steps, in bounded memory: `plan.plan_load` (check pass), `staging` (one Parquet file per
destination table) and `database.fill` (one COPY per staged file). It writes under `loading/` while holding the
store's load lock and renames the closed file into `databases/` only when complete; on any failure the partial
file and its staging folder go, and a full disk fails with the free space and what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
import uuid
from pathlib import Path

from bluegreen_dagster.config import Settings
from bluegreen_dagster.names import InvalidName, SnapshotError, parse_partition_key
from bluegreen_dagster.progress import rows_in
from bluegreen_dagster.reading import GraphCounts
from bluegreen_dagster.snapshots import Snapshot
from bluegreen_dagster.targets.base import DatabaseInfo, Fence, GraphTarget, Health, LoadReport, PermanentTargetError
from bluegreen_dagster.targets.base import QueryResult, TransientTargetError, validate_database
from bluegreen_dagster.targets.embedded.database import count_database, fill, read_query
from bluegreen_dagster.targets.embedded.plan import plan_load
from bluegreen_dagster.targets.embedded.staging import stage_nodes, stage_relationships
from bluegreen_dagster.targets.embedded.store import Store, fsync_dir, remove_with_siblings
from bluegreen_dagster.targets.embedded.values import database_value_stats

MB = 1024 * 1024
# Measured: the database file is ~2.3x the Parquet size and staging adds ~1x while loading.
DISK_PER_SNAPSHOT_BYTE = 4
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class EmbeddedTarget(GraphTarget):
    kind = "embedded"

    def __init__(self, settings: Settings, *, chunk_rows: int = 100_000, batch_rows: int = 65_536,
                 buffer_pool_mb: int = 1024, threads: int = 0) -> None:
        self.settings = settings
        self.store = Store(Path(settings.embedded.path))
        self.root = self.store.root
        self.chunk_rows = chunk_rows
        self.batch_rows = batch_rows
        self.buffer_pool_bytes = buffer_pool_mb * MB
        self.threads = threads

    def database_path(self, database: str) -> Path:
        return self.store.database_path(database)

    # -- health -------------------------------------------------------------------------------------------------

    def health(self, snapshot: Snapshot | None = None) -> Health:
        self.store.ensure_dirs()
        probe = self.root / f".probe-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise TransientTargetError(f"cannot write to the embedded store {self.root}: {exc}") from None
        free_mb = self._free_mb()
        databases = len(self.store.complete())
        health = Health(measurements={"free_disk_mb": int(free_mb), "databases": databases})
        need, why = self._room_needed(snapshot)
        if free_mb < need:
            health.problems.append(f"only {free_mb} MB free on {self.root}, need {need} MB ({why})")
        max_databases = self.settings.orchestrator.max_databases
        if databases >= max_databases:
            health.problems.append(
                f"{databases} databases in {self.store.databases_dir}, the limit is {max_databases} "
                "(orchestrator.max_databases): clean up old snapshots first"
            )
        return health

    def _free_mb(self) -> int:
        return shutil.disk_usage(self.root).free // MB

    def _room_needed(self, snapshot: Snapshot | None) -> tuple[int, str]:
        """(MB of free disk a load needs, and why): embedded.min_free_disk_mb, or more for a large snapshot."""
        need, why = self.settings.embedded.min_free_disk_mb, "embedded.min_free_disk_mb"
        if snapshot is not None:
            room = -(-DISK_PER_SNAPSHOT_BYTE * snapshot.size_bytes // MB)  # ceil
            if room > need:
                need, why = room, f"{DISK_PER_SNAPSHOT_BYTE} x the snapshot's {snapshot.size_bytes / MB:.1f} MB"
        return need, why

    # -- load ---------------------------------------------------------------------------------------------------

    def load(self, snapshot: Snapshot) -> LoadReport:
        started = time.monotonic()
        key = snapshot.key
        final = self.store.database_path(key)
        if final.exists():
            return self._reused(key, started)
        self.store.ensure_dirs()
        with self.store.load_lock(key):
            if final.exists():  # finished by another process while we waited for nothing (lock is non-blocking)
                return self._reused(key, started)
            partial = self.store.partial_path(key)
            remove_with_siblings(partial)  # stale file of a crashed attempt
            planned = None
            try:
                planned = snapshot.file_state()
                bytes_read = snapshot.size_bytes
                nodes, relationships, phases = self._write(partial, snapshot)
                snapshot.require_unchanged_since(planned)
                os.replace(partial, final)
                fsync_dir(self.store.databases_dir)
            except BaseException as exc:
                remove_with_siblings(partial)
                if _is_disk_full(exc):
                    raise self._disk_full(snapshot, exc) from None
                if isinstance(exc, SnapshotError) and planned is not None:
                    snapshot.require_unchanged_since(planned)  # a file cut short by its producer: say that, not "corrupt"
                raise
        return LoadReport(key, nodes, relationships, bytes_read, time.monotonic() - started, phases=phases)

    def _reused(self, key: str, started: float) -> LoadReport:
        counts = self.count(key)
        return LoadReport(key, counts.nodes, counts.relationships, 0, time.monotonic() - started, reused=True)

    def _write(self, path: Path, snapshot: Snapshot) -> tuple[int, int, dict[str, float]]:
        """Plan, stage conformed rows per destination table, then fill the new database with one COPY per table.

        Returns (nodes, relationships, seconds per phase)."""
        started = time.monotonic()
        plan = plan_load(snapshot, self.batch_rows)
        planned = time.monotonic()
        folder = path.parent / f"{path.name}.staging"
        folder.mkdir()
        reading = self._counter(snapshot, "reading", rows_in(snapshot.node_files + snapshot.relationship_files))
        nodes = stage_nodes(plan, folder, self.batch_rows, self.chunk_rows, on_rows=reading)
        relationships = stage_relationships(plan, folder, self.batch_rows, self.chunk_rows, on_rows=reading)
        staged = time.monotonic()
        copying = self._counter(snapshot, "copying", sum(n for _, n in (*nodes.values(), *relationships.values())))
        fill(path, plan, nodes, relationships, buffer_pool_bytes=self.buffer_pool_bytes, threads=self.threads,
             on_rows=copying)
        shutil.rmtree(folder)
        phases = {"plan": planned - started, "staging": staged - planned, "copy": time.monotonic() - staged}
        return sum(rows for _, rows in nodes.values()), sum(rows for _, rows in relationships.values()), phases

    def _counter(self, snapshot: Snapshot, phase: str, total: int):
        """A callback adding rows to `phase`'s count and reporting it to `self.progress` (a phase's start too)."""
        done = 0

        def add(rows: int) -> None:
            nonlocal done
            done += rows
            self.progress.rows(snapshot.key, phase, done, total)

        add(0)
        return add

    def _disk_full(self, snapshot: Snapshot, exc: BaseException) -> TransientTargetError:
        # Transient: another customer's cleanup may free the space before the step's retry.
        need, why = self._room_needed(snapshot)
        return TransientTargetError(
            f"disk full while loading {snapshot.key} into {self.root} ({exc}); the partial database was removed. "
            f"{self._free_mb()} MB are free now and this load needs about {need} MB ({why}): free space on that "
            "disk (drop old snapshot databases, lower orchestrator.keep_databases) or move embedded.path to a "
            "larger disk, then re-run the partition"
        )

    # -- reading ------------------------------------------------------------------------------------------------

    def count(self, database: str) -> GraphCounts:
        path = self.store.database_path(database)
        if not path.exists():
            raise PermanentTargetError(f"database {database} does not exist ({path} is missing)")
        return count_database(path)

    def value_stats(self, database: str, expected: dict) -> dict:
        path = self.store.database_path(validate_database(database))
        if not path.exists():
            raise PermanentTargetError(f"database {database} does not exist ({path} is missing)")
        return database_value_stats(path, expected)

    def read_query(self, database: str, query: str, *, timeout_seconds: float, keep_rows: int = 1) -> QueryResult:
        path = self.store.database_path(validate_database(database))
        if not path.exists():
            raise PermanentTargetError(f"database {database} does not exist ({path} is missing)")
        return read_query(path, query, timeout_seconds=timeout_seconds, keep_rows=keep_rows)

    def list_databases(self, customer: str) -> list[DatabaseInfo]:
        found: dict[str, str] = {}
        # A load shows as "loading" while it holds its lock; leftovers of a crashed load (no live process holds
        # their lock) show as "failed", which cleanup removes.
        for name in self.store.unfinished():
            found[name] = "loading" if self.store.load_in_progress(name) else "failed"
        for name in self.store.complete():
            found[name] = "online"
        out = []
        for name, status in sorted(found.items()):
            try:
                if parse_partition_key(name).customer != customer:
                    continue
            except InvalidName:
                continue
            out.append(DatabaseInfo(name, status))
        return out

    def alias_target(self, customer: str) -> str | None:
        return self.store.alias_target(customer)

    def reader_location(self, customer: str) -> str | None:
        path = self.store.alias_path(customer)
        return str(path) if os.path.lexists(path) else None

    # -- changing -----------------------------------------------------------------------------------------------

    def point_alias(self, customer: str, database: str) -> None:
        self.store.move_alias(customer, database, expect=None)

    def alias_fence(self, customer: str) -> Fence:
        return self.store.fence(customer)

    def move_alias(self, customer: str, database: str, *, expect: Fence) -> None:
        self.store.move_alias(customer, database, expect=expect)

    def drop_database(self, database: str) -> None:
        # Under the fence lock of the database's customer: a move to it and its drop never interleave.
        with self.store.fence_lock(parse_partition_key(validate_database(database)).customer, exclusive=True):
            holders = self.store.aliases_of(database)
            if holders:
                raise PermanentTargetError(
                    f"refusing to drop {database}: it is the target of alias(es) {', '.join(holders)}; "
                    "point the alias elsewhere first"
                )
            remove_with_siblings(self.store.database_path(database))
        # A stale partial file of this name (from a crashed load) goes too, unless a load is writing it now.
        partial = self.store.partial_path(database)
        if partial.exists():
            try:
                with self.store.load_lock(database):
                    remove_with_siblings(partial)
            except TransientTargetError:
                pass  # being loaded right now: leave it alone


def _is_disk_full(exc: BaseException) -> bool:
    """A write failed for lack of space: an OSError from Python or pyarrow, or LadybugDB's own I/O error text."""
    if isinstance(exc, OSError):
        return exc.errno in _DISK_FULL
    return isinstance(exc, RuntimeError) and "No space left on device" in str(exc)
