"""The embedded target: one LadybugDB file per snapshot, a symlink per customer as the alias.

Layout under `embedded.path`::

    databases/<key>.lbug      complete databases only (a load renames its file in here when done and closed)
    loading/<key>.lbug        a load in progress (removed on failure; a stale one is removed by the next load)
    loading/<key>.lbug.staging/   that load's staging Parquet files (removed with it)
    loading/<key>.lock        flock held while a process loads <key> (two loads of one key never interleave)
    aliases/<customer>.lbug   symlink -> ../databases/<key>.lbug, switched with os.replace (atomic)

A reader opens the alias path read-only and always gets a complete database.

Graph model:

* One node table per label. A node with several labels lives in the table of its FIRST label; all its labels
  are kept in the `labels STRING[]` property of every node table. `count()` reports per-label counts from that
  property (a node counts once for each distinct label), exactly like `snapshots.expected_counts`.
  Nodes without any label are rejected (SnapshotError): an embedded node must live in a table.
* One rel table per relationship type, with every (FROM, TO) table pair that occurs in the data.
* `nodeId` is the INT64 primary key of every node table; node ids must be unique across all labels.

Loading runs in bounded memory, one record batch (`batch_rows`) at a time:

1. Check pass: reads only the GDS id / label / type columns, to learn the tables, the rel tables' (FROM, TO)
   pairs and the union of each table's property columns, and to reject duplicate ids and dangling endpoints
   before anything is written.
2. Staging pass: streams every column, splits each batch by destination (node table, or rel type + pair),
   conforms it to the table's schema (column order, casts, nulls for columns a file lacks) and appends it to
   one staging Parquet file per destination in `loading/<key>.lbug.staging/` (~`chunk_rows` rows per write).
3. One `COPY <table> FROM '<staging file>'` per destination; LadybugDB reads the file itself, in bounded memory
   (its buffer pool, `buffer_pool_mb`, spills beyond that).

Why not COPY chunk after chunk straight from Arrow: LadybugDB accepts COPY into a non-empty table, but each
such COPY costs time proportional to what the table already holds (measured: 3M relationships in 250k-row
chunks took 5x as long as one COPY, node tables 4x), so chunked COPY is quadratic in the table size.

The only structure that grows with the graph is the node-id index that resolves relationship endpoints to
their tables: a direct lookup array when ids are dense (2 bytes per id in the range), else sorted int64 ids +
table codes (12 bytes per node).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import ladybug as lb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bluegreen_dagster.columns import is_list, labels_as_list_array
from bluegreen_dagster.config import Settings
from bluegreen_dagster.snapshots import (
    IDENTIFIER_RE,
    LABELS,
    NODE_COLUMNS,
    NODE_ID,
    REL_TYPE,
    RELATIONSHIP_COLUMNS,
    SOURCE_ID,
    TARGET_ID,
    GraphCounts,
    InvalidName,
    Snapshot,
    SnapshotError,
    check_identifier,
    iter_batches,
    open_parquet,
    parse_partition_key,
    validate_customer,
)
from bluegreen_dagster.targets.base import (
    DatabaseInfo,
    GraphTarget,
    Health,
    LoadReport,
    PermanentTargetError,
    TransientTargetError,
)

SUFFIX = ".lbug"
DATABASES_DIR = "databases"
LOADING_DIR = "loading"
ALIASES_DIR = "aliases"

# LadybugDB's internal properties; a data column with one of these names cannot be created.
RESERVED_PROPERTIES = {"_id", "_label", "_src", "_dst"}
# Names that go into file paths (database names given to count/drop/point_alias).
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

DISK_PER_SNAPSHOT_BYTE = 4
MB = 1024 * 1024


# --------------------------------------------------------------------------------------------------------------
# Arrow -> LadybugDB types


@dataclass(frozen=True)
class ColumnType:
    ddl: str  # LadybugDB type in CREATE TABLE
    arrow: pa.DataType  # what the column is cast to before COPY


_INTEGERS = {
    pa.int8(): "INT8", pa.int16(): "INT16", pa.int32(): "INT32", pa.int64(): "INT64",
    pa.uint8(): "UINT8", pa.uint16(): "UINT16", pa.uint32(): "UINT32", pa.uint64(): "UINT64",
}
# Nanoseconds are stored as microseconds (LadybugDB reads no TIMESTAMP_NS from Parquet): the cast is checked, so a
# value with a sub-microsecond part fails the load with the file and column named instead of being truncated.
_TIMESTAMP_UNITS = {"s": ("TIMESTAMP_SEC", "s"), "ms": ("TIMESTAMP_MS", "ms"), "us": ("TIMESTAMP", "us"),
                    "ns": ("TIMESTAMP", "us")}


def column_type(arrow_type: pa.DataType) -> ColumnType | None:
    """The LadybugDB type for an Arrow type, or None when it has no faithful equivalent."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        return column_type(t.value_type)
    if t in _INTEGERS:
        return ColumnType(_INTEGERS[t], t)
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return ColumnType("FLOAT", pa.float32())
    if pa.types.is_float64(t):
        return ColumnType("DOUBLE", pa.float64())
    if pa.types.is_boolean(t):
        return ColumnType("BOOLEAN", pa.bool_())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return ColumnType("STRING", pa.string())
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            return ColumnType("TIMESTAMP_TZ", pa.timestamp("us", tz="UTC"))
        ddl, unit = _TIMESTAMP_UNITS[t.unit]
        return ColumnType(ddl, pa.timestamp(unit))
    if pa.types.is_date32(t) or pa.types.is_date64(t):
        return ColumnType("DATE", pa.date32())
    if is_list(t):
        inner = column_type(t.value_type)
        return None if inner is None else ColumnType(f"{inner.ddl}[]", pa.list_(inner.arrow))
    return None


def _merge_types(a: ColumnType, b: ColumnType) -> ColumnType | None:
    """The type two files' versions of one column share, or None when they conflict."""
    if a == b:
        return a
    numeric = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FLOAT", "DOUBLE"}
    if a.ddl in numeric and b.ddl in numeric:
        if a.ddl in _INTEGERS.values() and b.ddl in _INTEGERS.values():
            return ColumnType("INT64", pa.int64())
        return ColumnType("DOUBLE", pa.float64())
    return None


# --------------------------------------------------------------------------------------------------------------
# Load plan (pass 1)


@dataclass
class TableSchema:
    name: str
    kind: str  # "node" or "rel"
    properties: dict[str, ColumnType] = field(default_factory=dict)
    origin: dict[str, Path] = field(default_factory=dict)  # property -> first file that had it
    files: list[Path] = field(default_factory=list)
    pairs: set[tuple[str, str]] = field(default_factory=set)  # rel tables: (from table, to table)

    def arrow_schema(self) -> pa.Schema:
        if self.kind == "node":
            head = [pa.field(NODE_ID, pa.int64()), pa.field(LABELS, pa.list_(pa.string()))]
        else:
            # names no data column can have (they fail IDENTIFIER_RE); COPY maps columns by position
            head = [pa.field("from id", pa.int64()), pa.field("to id", pa.int64())]
        return pa.schema(head + [pa.field(name, t.arrow) for name, t in self.properties.items()])


class NodeIndex:
    """Node id -> node table code, for resolving relationship endpoints.

    Dense ids (the usual GDS export: a range with few gaps) get a direct lookup array (2-4 bytes per id in the
    range); sparse ids fall back to binary search in the sorted ids (12 bytes per node).
    """

    def __init__(self, sorted_ids: np.ndarray, codes: np.ndarray, ntables: int) -> None:
        self.dense: np.ndarray | None = None
        self.ids, self.codes = sorted_ids, codes
        self.low = int(sorted_ids[0]) if len(sorted_ids) else 0
        span = int(sorted_ids[-1]) - self.low + 1 if len(sorted_ids) else 0
        if 0 < span <= 4 * len(sorted_ids) + 4096:
            dense = np.full(span, -1, dtype=np.int16 if ntables < 2**15 else np.int32)
            dense[sorted_ids - self.low] = codes
            self.dense, self.ids, self.codes = dense, np.zeros(0, np.int64), np.zeros(0, np.int32)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, node table codes; meaningless where not found) for an array of node ids."""
        if self.dense is not None:
            offset = ids - self.low
            inside = (offset >= 0) & (offset < len(self.dense))
            codes = self.dense[np.where(inside, offset, 0)].astype(np.int64)
            found = inside & (codes >= 0)
            return found, np.where(found, codes, 0)
        if len(self.ids) == 0:
            return np.zeros(len(ids), dtype=bool), np.zeros(len(ids), dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        found = self.ids[pos] == ids
        return found, self.codes[pos].astype(np.int64)


@dataclass
class LoadPlan:
    node_tables: dict[str, TableSchema]
    rel_tables: dict[str, TableSchema]
    table_names: list[str]  # node table code -> name
    index: NodeIndex

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.index.lookup(ids)


def _as_int64(column: pa.Array, name: str, path: Path) -> np.ndarray:
    if column.null_count:
        raise SnapshotError(f"{path}: column {name!r} has {column.null_count} null value(s); ids must be set")
    try:
        return column.cast(pa.int64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as exc:
        raise SnapshotError(f"{path}: column {name!r} has values that do not fit INT64 ({exc})") from None


def _first_labels(labels: pa.ListArray, path: Path) -> tuple[pa.Array, int]:
    """(first label of every labelled row, as a string array aligned with the rows; count of unlabeled rows).

    Unlabeled rows get null in the returned array.
    """
    offsets = labels.offsets.to_numpy(zero_copy_only=False)
    starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
    valid = labels.is_valid().to_numpy(zero_copy_only=False)
    labelled = valid & (lengths > 0)
    firsts = labels.values.take(pa.array(np.where(labelled, starts, 0).astype(np.int64))) if len(labels.values) \
        else pa.nulls(len(labels), pa.string())
    firsts = pc.if_else(pa.array(labelled), firsts, pa.scalar(None, pa.string()))
    return firsts, int((~labelled).sum())


class _Names:
    """Table names across labels and types; LadybugDB names are case-insensitive, so clashes are errors."""

    def __init__(self) -> None:
        self.by_lower: dict[str, tuple[str, str, Path]] = {}  # lower -> (name, kind, first file)

    def register(self, name: str, kind: str, path: Path) -> None:
        seen = self.by_lower.get(name.lower())
        if seen is None:
            self.by_lower[name.lower()] = (name, kind, path)
        elif seen[:2] != (name, kind):
            raise SnapshotError(
                f"{path}: {kind} {name!r} clashes with {seen[1]} {seen[0]!r} from {seen[2]}: LadybugDB table names "
                "are case-insensitive and shared by labels and relationship types"
            )


def _add_properties(table: TableSchema, path: Path, schema: pa.Schema, skip: set[str]) -> None:
    lower_seen = {name.lower(): name for name in table.properties}
    lower_seen.update({s.lower(): s for s in skip})
    for f in schema:
        if f.name in skip:
            continue
        check_identifier(f.name, "property column", path)
        if f.name.lower() in RESERVED_PROPERTIES:
            raise SnapshotError(f"{path}: property column {f.name!r} is a name LadybugDB reserves; rename it")
        if pa.types.is_null(f.type):
            continue  # all-null column: typed by another file, or STRING (see _finish_properties)
        ctype = column_type(f.type)
        if ctype is None:
            raise SnapshotError(
                f"{path}: column {f.name!r} has type {f.type}, which the embedded target cannot store "
                "(supported: integers, floats, bool, strings, dictionary strings, lists of these, timestamps, dates)"
            )
        clash = lower_seen.get(f.name.lower())
        if clash is not None and clash != f.name:
            raise SnapshotError(
                f"{path}: column {f.name!r} clashes with {clash!r} of {table.kind} table {table.name}: "
                "LadybugDB property names are case-insensitive"
            )
        if f.name in table.properties:
            merged = _merge_types(table.properties[f.name], ctype)
            if merged is None:
                raise SnapshotError(
                    f"{path}: column {f.name!r} has type {f.type} ({ctype.ddl}), but {table.origin[f.name]} has "
                    f"{table.properties[f.name].ddl} for {table.name}; use one type in all files"
                )
            table.properties[f.name] = merged
        else:
            table.properties[f.name] = ctype
            table.origin[f.name] = path
            lower_seen[f.name.lower()] = f.name


def _finish_properties(table: TableSchema, schemas: dict[Path, pa.Schema], skip: set[str]) -> None:
    """Columns that are all-null (type null) in every file become STRING."""
    for path in table.files:
        for f in schemas[path]:
            if f.name not in skip and pa.types.is_null(f.type) and f.name not in table.properties:
                table.properties[f.name] = ColumnType("STRING", pa.string())
                table.origin[f.name] = path


def _sample(values: np.ndarray, n: int = 5) -> str:
    return ", ".join(str(v) for v in values[:n].tolist())


def plan_load(snapshot: Snapshot, batch_rows: int) -> LoadPlan:
    """Pass 1: read only the GDS id/label/type columns; decide tables, check ids and endpoints."""
    names = _Names()
    node_tables: dict[str, TableSchema] = {}
    table_names: list[str] = []
    codes_of: dict[str, int] = {}
    ids_parts: list[np.ndarray] = []
    codes_parts: list[np.ndarray] = []
    files_parts: list[np.ndarray] = []
    schemas: dict[Path, pa.Schema] = {}

    node_files = snapshot.node_files
    for file_no, path in enumerate(node_files):
        schemas[path] = open_parquet(path).schema_arrow
        unlabeled = 0
        file_tables: set[str] = set()
        for _, batch in iter_batches([path], NODE_COLUMNS, batch_rows, columns=[NODE_ID, LABELS]):
            ids = _as_int64(batch.column(0), NODE_ID, path)
            labels = labels_as_list_array(batch.column(1))
            values = labels.flatten()
            if values.null_count:
                raise SnapshotError(f"{path}: column {LABELS!r} holds null label(s) inside label lists")
            for label in pc.unique(values).to_pylist():
                check_identifier(label, "label", path)
            firsts, missing = _first_labels(labels, path)
            unlabeled += missing
            if missing:
                continue
            encoded = pc.dictionary_encode(firsts)
            local = []
            for label in encoded.dictionary.to_pylist():
                if label not in codes_of:
                    names.register(label, "label", path)
                    codes_of[label] = len(table_names)
                    table_names.append(label)
                    node_tables[label] = TableSchema(label, "node")
                local.append(codes_of[label])
                file_tables.add(label)
            ids_parts.append(ids)
            codes_parts.append(np.asarray(local, dtype=np.int32)[encoded.indices.to_numpy(zero_copy_only=False)])
            files_parts.append(np.full(len(ids), file_no, dtype=np.int32))
        if unlabeled:
            raise SnapshotError(
                f"{path}: {unlabeled} node(s) have no label; the embedded target stores each node in the table of "
                "its first label, so every node needs at least one"
            )
        for label in sorted(file_tables):
            node_tables[label].files.append(path)
            _add_properties(node_tables[label], path, schemas[path], {NODE_ID, LABELS})
    for table in node_tables.values():
        _finish_properties(table, schemas, {NODE_ID, LABELS})

    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int64)
    codes = np.concatenate(codes_parts) if codes_parts else np.zeros(0, dtype=np.int32)
    files = np.concatenate(files_parts) if files_parts else np.zeros(0, dtype=np.int32)
    del ids_parts, codes_parts, files_parts
    order = np.argsort(ids, kind="stable")
    ids, codes, files = ids[order], codes[order], files[order]
    del order
    dup = np.flatnonzero(ids[1:] == ids[:-1])
    if len(dup):
        where = sorted({str(node_files[f]) for f in np.concatenate([files[dup], files[dup + 1]])[:20].tolist()})
        raise SnapshotError(
            f"{len(dup)} duplicate nodeId value(s) among the node files (e.g. {_sample(ids[dup])}; in "
            f"{', '.join(where)}): nodeId must be unique across all labels"
        )
    del files
    plan = LoadPlan(node_tables, {}, table_names, NodeIndex(ids, codes, len(table_names)))
    del ids, codes

    # Relationships: types, the (FROM, TO) pairs that occur, endpoints that exist.
    missing_by_file: dict[Path, int] = {}
    missing_examples: list[int] = []
    type_codes: dict[str, int] = {}
    type_names: list[str] = []
    ntables = max(1, len(table_names))
    for path in snapshot.relationship_files:
        schemas[path] = open_parquet(path).schema_arrow
        file_types: set[str] = set()
        for _, batch in iter_batches([path], RELATIONSHIP_COLUMNS, batch_rows, columns=[SOURCE_ID, TARGET_ID, REL_TYPE]):
            src, dst = batch.column(0), batch.column(1)
            src_ok = src.is_valid().to_numpy(zero_copy_only=False)
            dst_ok = dst.is_valid().to_numpy(zero_copy_only=False)
            src_np = _ids_with_nulls(src, SOURCE_ID, path)
            dst_np = _ids_with_nulls(dst, TARGET_ID, path)
            src_found, src_codes = plan.lookup(src_np)
            dst_found, dst_codes = plan.lookup(dst_np)
            ok = src_ok & dst_ok & src_found & dst_found
            if not ok.all():
                missing_by_file[path] = missing_by_file.get(path, 0) + int((~ok).sum())
                if len(missing_examples) < 5:
                    bad = np.concatenate([src_np[src_ok & ~src_found], dst_np[dst_ok & ~dst_found]])
                    missing_examples.extend(bad[: 5 - len(missing_examples)].tolist())
            types = _type_strings(batch.column(2), path)
            encoded = pc.dictionary_encode(types)
            local = []
            for rel_type in encoded.dictionary.to_pylist():
                if rel_type not in type_codes:
                    check_identifier(rel_type, "relationship type", path)
                    names.register(rel_type, "relationship type", path)
                    type_codes[rel_type] = len(type_names)
                    type_names.append(rel_type)
                    plan.rel_tables[rel_type] = TableSchema(rel_type, "rel")
                local.append(type_codes[rel_type])
                file_types.add(rel_type)
            tcodes = np.asarray(local, dtype=np.int64)[encoded.indices.to_numpy(zero_copy_only=False)]
            keys = (tcodes[ok] * ntables + src_codes[ok]) * ntables + dst_codes[ok]
            for key in np.unique(keys).tolist():
                t, rest = divmod(key, ntables * ntables)
                f, d = divmod(rest, ntables)
                plan.rel_tables[type_names[t]].pairs.add((table_names[f], table_names[d]))
        for rel_type in sorted(file_types):
            plan.rel_tables[rel_type].files.append(path)
            _add_properties(plan.rel_tables[rel_type], path, schemas[path], {SOURCE_ID, TARGET_ID, REL_TYPE})
    if missing_by_file:
        total = sum(missing_by_file.values())
        per_file = "; ".join(f"{p}: {n}" for p, n in missing_by_file.items())
        raise SnapshotError(
            f"{total} relationship(s) reference nodes that are not in the node files "
            f"(e.g. nodeId {', '.join(map(str, missing_examples)) or 'null'}); per file: {per_file}"
        )
    for table in plan.rel_tables.values():
        _finish_properties(table, schemas, {SOURCE_ID, TARGET_ID, REL_TYPE})
    return plan


def _ids_with_nulls(column: pa.Array, name: str, path: Path) -> np.ndarray:
    try:
        return pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid as exc:
        raise SnapshotError(f"{path}: column {name!r} has values that do not fit INT64 ({exc})") from None


def _type_strings(column: pa.Array, path: Path) -> pa.Array:
    column = column.cast(pa.string())
    if column.null_count or pc.any(pc.equal(column, "")).as_py():
        raise SnapshotError(f"{path}: column {REL_TYPE!r} has empty or null relationship types")
    return column


# --------------------------------------------------------------------------------------------------------------
# The target


class EmbeddedTarget(GraphTarget):
    kind = "embedded"

    def __init__(self, settings: Settings, *, chunk_rows: int = 100_000, batch_rows: int = 65_536,
                 buffer_pool_mb: int = 1024, threads: int = 0) -> None:
        self.settings = settings
        self.root = Path(settings.embedded.path)
        self.chunk_rows = chunk_rows
        self.batch_rows = batch_rows
        self.buffer_pool_bytes = buffer_pool_mb * MB
        self.threads = threads

    # -- paths --------------------------------------------------------------------------------------------------

    @property
    def databases_dir(self) -> Path:
        return self.root / DATABASES_DIR

    @property
    def loading_dir(self) -> Path:
        return self.root / LOADING_DIR

    @property
    def aliases_dir(self) -> Path:
        return self.root / ALIASES_DIR

    def database_path(self, database: str) -> Path:
        return self.databases_dir / f"{_file_name(database)}{SUFFIX}"

    def alias_path(self, customer: str) -> Path:
        return self.aliases_dir / f"{_customer(customer)}{SUFFIX}"

    def _ensure_dirs(self) -> None:
        try:
            for folder in (self.databases_dir, self.loading_dir, self.aliases_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransientTargetError(f"cannot create the embedded store under {self.root}: {exc}") from None

    # -- health -------------------------------------------------------------------------------------------------

    def health(self, snapshot: Snapshot | None = None) -> Health:
        self._ensure_dirs()
        probe = self.root / f".probe-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise TransientTargetError(f"cannot write to the embedded store {self.root}: {exc}") from None
        free_mb = shutil.disk_usage(self.root).free // MB
        databases = len(self._names(self.databases_dir))
        health = Health(measurements={"free_disk_mb": int(free_mb), "databases": databases})
        min_free = self.settings.embedded.min_free_disk_mb
        need, why = min_free, "embedded.min_free_disk_mb"
        if snapshot is not None:
            # Measured: the database file is ~2.3x the Parquet size and staging adds ~1x while loading.
            room = -(-DISK_PER_SNAPSHOT_BYTE * snapshot.size_bytes // MB)  # ceil
            if room > need:
                need, why = room, f"{DISK_PER_SNAPSHOT_BYTE} x the snapshot's {snapshot.size_bytes / MB:.1f} MB"
        if free_mb < need:
            health.problems.append(f"only {free_mb} MB free on {self.root}, need {need} MB ({why})")
        max_databases = self.settings.orchestrator.max_databases
        if databases >= max_databases:
            health.problems.append(
                f"{databases} databases in {self.databases_dir}, the limit is {max_databases} "
                "(orchestrator.max_databases): clean up old snapshots first"
            )
        return health

    # -- load ---------------------------------------------------------------------------------------------------

    def load(self, snapshot: Snapshot) -> LoadReport:
        started = time.monotonic()
        key = snapshot.key
        final = self.database_path(key)
        if final.exists():
            return self._reused(key, started)
        self._ensure_dirs()
        with self._load_lock(key):
            if final.exists():  # finished by another process while we waited for nothing (lock is non-blocking)
                return self._reused(key, started)
            partial = self.loading_dir / f"{key}{SUFFIX}"
            _remove_with_siblings(partial)  # stale file of a crashed attempt
            try:
                bytes_read = snapshot.size_bytes
                plan = plan_load(snapshot, self.batch_rows)
                nodes, relationships = self._write(partial, plan)
                os.replace(partial, final)
                _fsync_dir(self.databases_dir)
            except BaseException:
                _remove_with_siblings(partial)
                raise
        return LoadReport(key, nodes, relationships, bytes_read, time.monotonic() - started)

    def _reused(self, key: str, started: float) -> LoadReport:
        counts = self.count(key)
        return LoadReport(key, counts.nodes, counts.relationships, 0, time.monotonic() - started, reused=True)

    @contextmanager
    def _load_lock(self, key: str) -> Iterator[None]:
        path = self.loading_dir / f"{key}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise TransientTargetError(f"{key} is being loaded by another process right now") from None
            try:
                yield
            finally:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def _write(self, path: Path, plan: LoadPlan) -> tuple[int, int]:
        """Stage conformed rows per destination table, then fill the new database with one COPY per table."""
        staging = path.parent / f"{path.name}.staging"
        staging.mkdir()
        node_files = self._stage_nodes(plan, staging)
        rel_files = self._stage_relationships(plan, staging)
        db = lb.Database(str(path), buffer_pool_size=self.buffer_pool_bytes, max_num_threads=self.threads)
        try:
            conn = lb.Connection(db)
            try:
                self._create_tables(conn, plan)
                for name, (file, _) in node_files.items():
                    _copy(conn, f"COPY `{name}` FROM {_path_literal(file)}", name)
                for (name, a, b), (file, _) in rel_files.items():
                    _copy(conn, f"COPY `{name}` FROM {_path_literal(file)} (from='{a}', to='{b}')", name)
            finally:
                conn.close()
        finally:
            db.close()
        shutil.rmtree(staging)
        return sum(rows for _, rows in node_files.values()), sum(rows for _, rows in rel_files.values())

    def _create_tables(self, conn: lb.Connection, plan: LoadPlan) -> None:
        for table in plan.node_tables.values():
            props = "".join(f", `{name}` {t.ddl}" for name, t in table.properties.items())
            _ddl(conn, f"CREATE NODE TABLE `{table.name}`(`{NODE_ID}` INT64 PRIMARY KEY, `{LABELS}` STRING[]{props})",
                 table)
        for table in plan.rel_tables.values():
            pairs = ", ".join(f"FROM `{a}` TO `{b}`" for a, b in sorted(table.pairs))
            props = "".join(f", `{name}` {t.ddl}" for name, t in table.properties.items())
            _ddl(conn, f"CREATE REL TABLE `{table.name}`({pairs}{props})", table)

    def _stage_nodes(self, plan: LoadPlan, staging: Path) -> dict[str, tuple[Path, int]]:
        schemas = {name: t.arrow_schema() for name, t in plan.node_tables.items()}
        code_to_name = plan.table_names
        files = sorted({p for t in plan.node_tables.values() for p in t.files})
        with _Stage(staging, self.chunk_rows) as stage:
            for path, batch in iter_batches(files, NODE_COLUMNS, self.batch_rows):
                labels = labels_as_list_array(batch.column(LABELS))
                ids = batch.column(NODE_ID).cast(pa.int64())
                _, codes = plan.lookup(ids.to_numpy(zero_copy_only=False))
                for code in np.unique(codes).tolist():
                    name = code_to_name[code]
                    mask = codes == code
                    if mask.all():
                        rows, row_ids, row_labels = batch, ids, labels
                    else:
                        keep = pa.array(mask)
                        rows, row_ids, row_labels = batch.filter(keep), ids.filter(keep), labels.filter(keep)
                    stage.add(name, f"node-{name}.parquet", _conform(rows, schemas[name], [row_ids, row_labels], path))
            return stage.finish()

    def _stage_relationships(self, plan: LoadPlan, staging: Path) -> dict[tuple[str, str, str], tuple[Path, int]]:
        schemas = {name: t.arrow_schema() for name, t in plan.rel_tables.items()}
        files = sorted({p for t in plan.rel_tables.values() for p in t.files})
        names = plan.table_names
        ntables = max(1, len(names))
        with _Stage(staging, self.chunk_rows) as stage:
            for path, batch in iter_batches(files, RELATIONSHIP_COLUMNS, self.batch_rows):
                src = batch.column(SOURCE_ID).cast(pa.int64())
                dst = batch.column(TARGET_ID).cast(pa.int64())
                _, src_codes = plan.lookup(src.to_numpy(zero_copy_only=False))
                _, dst_codes = plan.lookup(dst.to_numpy(zero_copy_only=False))
                types = pc.dictionary_encode(batch.column(REL_TYPE).cast(pa.string()))
                type_list = types.dictionary.to_pylist()
                keys = (types.indices.to_numpy(zero_copy_only=False).astype(np.int64) * ntables + src_codes) \
                    * ntables + dst_codes
                unique = np.unique(keys)
                for key in unique.tolist():
                    t, rest = divmod(key, ntables * ntables)
                    f, d = divmod(rest, ntables)
                    rel_type, a, b = type_list[t], names[f], names[d]
                    if len(unique) == 1:
                        rows, s, e = batch, src, dst
                    else:
                        keep = pa.array(keys == key)
                        rows, s, e = batch.filter(keep), src.filter(keep), dst.filter(keep)
                    stage.add((rel_type, a, b), f"rel-{rel_type}-{a}-{b}.parquet",
                              _conform(rows, schemas[rel_type], [s, e], path))
            return stage.finish()

    # -- reading ------------------------------------------------------------------------------------------------

    def count(self, database: str) -> GraphCounts:
        path = self.database_path(database)
        if not path.exists():
            raise PermanentTargetError(f"database {database} does not exist ({path} is missing)")
        return count_database(path)

    def list_databases(self, customer: str) -> list[DatabaseInfo]:
        found: dict[str, str] = {}
        # A load shows as "loading" from its lock file until its rename; leftovers of a crashed load (no live
        # process holds their lock) show as "failed", which cleanup removes.
        for name in self._names(self.loading_dir) + self._names(self.loading_dir, ".lock"):
            found[name] = "loading" if self._load_in_progress(name) else "failed"
        for name in self._names(self.databases_dir):
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

    def _load_in_progress(self, key: str) -> bool:
        try:
            fd = os.open(self.loading_dir / f"{key}.lock", os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also releases the lock if we got it
        return False

    @staticmethod
    def _names(folder: Path, suffix: str = SUFFIX) -> list[str]:
        if not folder.is_dir():
            return []
        return sorted(p.name[: -len(suffix)] for p in folder.iterdir()
                      if p.name.endswith(suffix) and not p.name.startswith(".") and p.is_file())

    def alias_target(self, customer: str) -> str | None:
        path = self.alias_path(customer)
        try:
            link = os.readlink(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PermanentTargetError(
                f"alias {path} is not a symlink ({exc}); move it away so the pipeline can manage the alias"
            ) from None
        name = os.path.basename(link)
        return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name

    def reader_location(self, customer: str) -> str | None:
        path = self.alias_path(customer)
        return str(path) if os.path.lexists(path) else None

    def point_alias(self, customer: str, database: str) -> None:
        target = self.database_path(database)
        if not target.is_file():
            raise PermanentTargetError(
                f"cannot point alias {customer} at {database}: {target} does not exist (load it first)"
            )
        self._ensure_dirs()
        alias = self.alias_path(customer)
        tmp = self.aliases_dir / f".{customer}{SUFFIX}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.symlink(os.path.join("..", DATABASES_DIR, target.name), tmp)
            os.replace(tmp, alias)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        _fsync_dir(self.aliases_dir)

    def drop_database(self, database: str) -> None:
        path = self.database_path(database)
        holders = [p.name[: -len(SUFFIX)] for p in sorted(self.aliases_dir.glob(f"*{SUFFIX}"))
                   if p.is_symlink() and os.path.basename(os.readlink(p)) == path.name] \
            if self.aliases_dir.is_dir() else []
        if holders:
            raise PermanentTargetError(
                f"refusing to drop {database}: it is the target of alias(es) {', '.join(holders)}; "
                "point the alias elsewhere first"
            )
        _remove_with_siblings(path)
        # A stale partial file of this name (from a crashed load) goes too, unless a load is writing it now.
        partial = self.loading_dir / f"{_file_name(database)}{SUFFIX}"
        if partial.exists() and self.loading_dir.is_dir():
            try:
                with self._load_lock(database):
                    _remove_with_siblings(partial)
            except TransientTargetError:
                pass  # being loaded right now: leave it alone


# --------------------------------------------------------------------------------------------------------------
# Helpers


def count_database(path: str | os.PathLike[str]) -> GraphCounts:
    """Node and relationship counts of a LadybugDB file (opened read-only), per label the way snapshots count."""
    db = lb.Database(str(path), read_only=True, buffer_pool_size=256 * MB)
    try:
        conn = lb.Connection(db)
        try:
            tables = _rows(conn.execute("CALL show_tables() RETURN name, type"))
            labels: Counter[str] = Counter()
            types: dict[str, int] = {}
            nodes = relationships = 0
            for name, kind in tables:
                if kind == "NODE":
                    properties = {row[0] for row in _rows(conn.execute(f"CALL table_info('{name}') RETURN name"))} \
                        if IDENTIFIER_RE.match(name) else set()
                    if LABELS in properties:
                        for node_labels, n in _rows(conn.execute(f"MATCH (n:`{name}`) RETURN n.`{LABELS}`, count(*)")):
                            nodes += n
                            for label in set(node_labels or []):
                                labels[label] += n
                    else:
                        n = _rows(conn.execute(f"MATCH (n:`{name}`) RETURN count(*)"))[0][0]
                        nodes += n
                        if n:
                            labels[name] += n
                elif kind == "REL":
                    n = _rows(conn.execute(f"MATCH ()-[r:`{name}`]->() RETURN count(*)"))[0][0]
                    relationships += n
                    if n:
                        types[name] = n
            return GraphCounts(nodes, relationships, dict(labels), types)
        finally:
            conn.close()
    finally:
        db.close()


def _rows(result) -> list[list]:
    out = []
    while result.has_next():
        out.append(result.get_next())
    return out


class _Stage:
    """Conformed rows per destination table, appended to one staging Parquet file each (~chunk_rows per write)."""

    def __init__(self, folder: Path, chunk_rows: int) -> None:
        self.folder = folder
        self.chunk_rows = chunk_rows
        self.pending: dict[object, list[pa.RecordBatch]] = {}
        self.pending_rows: dict[object, int] = {}
        self.file_names: dict[object, str] = {}
        self.writers: dict[object, pq.ParquetWriter] = {}
        self.rows: dict[object, int] = {}

    def __enter__(self) -> _Stage:
        return self

    def __exit__(self, *exc: object) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    def add(self, key: object, file_name: str, batch: pa.RecordBatch) -> None:
        self.file_names.setdefault(key, file_name)
        self.pending.setdefault(key, []).append(batch)
        self.pending_rows[key] = self.pending_rows.get(key, 0) + batch.num_rows
        if self.pending_rows[key] >= self.chunk_rows:
            self._flush(key)

    def _flush(self, key: object) -> None:
        batches = self.pending.pop(key, [])
        self.pending_rows.pop(key, None)
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        writer = self.writers.get(key)
        if writer is None:
            writer = self.writers[key] = pq.ParquetWriter(self.folder / self.file_names[key], table.schema,
                                                          compression="snappy")
        writer.write_table(table)
        self.rows[key] = self.rows.get(key, 0) + table.num_rows

    def finish(self) -> dict:
        """Flush and close everything; {key: (staging file, rows)}."""
        for key in list(self.pending):
            self._flush(key)
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
        return {key: (self.folder / self.file_names[key], rows) for key, rows in self.rows.items()}


def _conform(batch: pa.RecordBatch, schema: pa.Schema, head: list[pa.Array], path: Path) -> pa.RecordBatch:
    """The batch's columns in table order, cast to the table's types; missing columns as nulls."""
    arrays = list(head)
    for f in list(schema)[len(head):]:
        index = batch.schema.get_field_index(f.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, f.type))
            continue
        column = batch.column(index)
        if column.type != f.type:
            try:
                if pa.types.is_dictionary(column.type):
                    column = column.dictionary_decode()
                column = column.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SnapshotError(f"{path}: column {f.name!r} cannot be converted to {f.type} ({exc})") from None
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _ddl(conn: lb.Connection, statement: str, table: TableSchema) -> None:
    try:
        conn.execute(statement)
    except RuntimeError as exc:
        files = ", ".join(str(p) for p in table.files[:3])
        raise SnapshotError(f"{files}: LadybugDB cannot create {table.kind} table {table.name}: {exc}") from None


def _copy(conn: lb.Connection, statement: str, name: str) -> None:
    try:
        conn.execute(statement)
    except RuntimeError as exc:
        text = str(exc)
        if "space" in text.lower() or "disk" in text.lower():
            raise TransientTargetError(f"LadybugDB ran out of disk copying into {name}: {text}") from None
        raise PermanentTargetError(f"LadybugDB failed copying rows into {name}: {text}") from None


# COPY FROM takes a file name only as a literal (a parameter is read as a data frame), so the staging path is
# written into the statement: it is ours (under embedded.path + a partition key + table names that passed
# IDENTIFIER_RE), and characters that a literal or a glob would interpret are refused outright.
_UNSAFE_PATH_CHARS = set("'\"\\*?[]{}\n\r")


def _path_literal(path: Path) -> str:
    text = str(path)
    if _UNSAFE_PATH_CHARS & set(text):
        raise PermanentTargetError(
            f"embedded.path {text!r} contains a quote, backslash or glob character, which LadybugDB's COPY cannot "
            "take in a file name: choose a plain folder name"
        )
    return f"'{text}'"


def _remove_with_siblings(path: Path) -> None:
    """Remove a database file and its `<file>.*` siblings (write-ahead log, shadow files)."""
    for p in [path, *path.parent.glob(f"{glob_escape(path.name)}.*")] if path.parent.is_dir() else [path]:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:
            pass


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_name(database: str) -> str:
    if not isinstance(database, str) or not _FILE_NAME_RE.match(database) or database.endswith(SUFFIX):
        raise PermanentTargetError(f"{database!r} is not a database name the embedded target can use")
    return database


def _customer(customer: str) -> str:
    try:
        return validate_customer(customer)
    except InvalidName as exc:
        raise PermanentTargetError(str(exc)) from None
