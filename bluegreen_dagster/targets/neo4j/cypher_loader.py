"""Fallback loader (`neo4j.loader: cypher`) for deployments without the GDS Arrow server.

`Neo4jTarget` creates the database (`CREATE DATABASE $name WAIT`) and waits for it to be online; this module
only writes into an EXISTING database, so it also runs against Community's `neo4j` database in tests:

1. a marker node with the load label (an interrupted load is recognised by it), and an index on `nodeId` for
   every label of the snapshot (for readers; the load itself never looks nodes up by property);
2. nodes in batches, one managed write transaction per batch and label set, with static labels and properties
   sent as one list per column; each statement returns the new nodes' internal ids, kept in a sorted map
   nodeId -> internal id (16 bytes per node, e.g. 160 MB for 10M nodes);
3. relationships likewise, grouped by type and ordered by source, endpoints translated through that map before
   sending (an unknown nodeId is a clear error before anything of the batch is written) and found on the
   server by internal id (NodeByIdSeek, cheaper than an index seek);
4. the marker node deleted. Counts are checked per statement: every row made exactly one node or relationship.

Labels, types and property names come from the data. They are validated with a strict identifier regex and
backtick-quoted into the statement text. Where the time goes, measured: benchmarks/RESULTS.md.
"""

from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path
from typing import Any

import neo4j
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytz

from bluegreen_dagster import names
from bluegreen_dagster.columns import LABELS, NODE_COLUMNS, NODE_ID, REL_TYPE, RELATIONSHIP_COLUMNS, SOURCE_ID
from bluegreen_dagster.columns import TARGET_ID, decoded, is_list, labels_as_list_array
from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.progress import NO_PROGRESS, LoadProgress
from bluegreen_dagster.reading import iter_batches, open_parquet
from bluegreen_dagster.schema_rules import check_snapshot, kind_of
from bluegreen_dagster.snapshots import Snapshot, expected_counts
from bluegreen_dagster.targets.base import LoadReport
from bluegreen_dagster.targets.neo4j import queries
from bluegreen_dagster.targets.neo4j.admin import Admin

log = logging.getLogger(__name__)

_SEPARATOR = "\x1f"  # joins a row's labels into one group key; cannot occur in a valid label


def check_identifier(name: Any, kind: str, path: Path | None = None) -> str:
    """`names.check_identifier`, plus our own marker label, which data must not use."""
    if name == queries.LOAD_LABEL:
        raise SnapshotError(f"{path or 'snapshot'}: {kind} {name!r} is reserved for the loader's own use")
    return names.check_identifier(name, kind, path)


def quoted(name: str) -> str:
    return f"`{name}`"  # only ever called on names that passed check_identifier (no backticks possible)


def _property_names(schema: pa.Schema, reserved: set[str], path: Path) -> list[str]:
    names = []
    for f in schema:
        if f.name in reserved:
            continue
        check_identifier(f.name, "property column", path)
        if kind_of(f.type) is None:  # schema_rules.check_snapshot refused it before the database was created
            raise SnapshotError(f"{path}: column {f.name!r} has type {f.type}, which no target stores as it is")
        names.append(f.name)
    return names


def _values(column: pa.Array, name: str = "", path: Path | None = None) -> list[Any]:
    """One column as the Python values the driver sends. Null stays None (the property is not set); NaN stays
    NaN; nulls inside a list are dropped (Neo4j cannot store them in a list property); timestamps as
    `neo4j.time.DateTime` (`_timestamps`)."""
    column = decoded(column)
    leaf = column.type
    while is_list(leaf):
        leaf = leaf.value_type
    try:
        if pa.types.is_timestamp(leaf):
            values = _nested(column, _timestamps)
        else:
            values = column.to_pylist()
    except (ValueError, OverflowError) as exc:  # a date or time outside years 1..9999
        raise SnapshotError(f"{path}: column {name!r} holds a value Python cannot represent ({exc}); write "
                            "dates and times between the years 1 and 9999") from None
    if is_list(column.type) and column.null_count < len(column):
        values = [None if v is None else [x for x in v if x is not None] for v in values]
    return values


def _nested(column: pa.Array, convert) -> list[Any]:
    """`convert` applied to the leaf values of a (list) column, the list structure kept."""
    if not is_list(column.type):
        return convert(column)
    inner = _nested(column.values[column.offsets[0].as_py():column.offsets[-1].as_py()], convert) \
        if len(column) else []
    offsets = [o - column.offsets[0].as_py() for o in column.offsets.to_pylist()]
    valid = column.is_valid().to_pylist()
    return [inner[offsets[i]:offsets[i + 1]] if valid[i] else None for i in range(len(column))]


_NANOS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=pytz.utc)


def _timestamps(column: pa.Array) -> list[Any]:
    """Timestamps as `neo4j.time.DateTime`, to the nanosecond: naive ones as local date-times, zoned ones in
    their zone (a named zone is sent by name, an offset as the offset).

    Never a `zoneinfo.ZoneInfo` time (what pyarrow's to_pylist gives): the driver passes its own DateTime, which
    is not a `datetime`, to the tzinfo's utcoffset, and CPython's C zoneinfo reads that object's memory as if it
    were a datetime; the process crashes, raises "utcoffset must be a whole number of minutes" or gets an
    offset one hour off (tests/test_fidelity_neo4j.py). pytz's time zones compute the offset in Python."""
    t = column.type
    zone = _zone(t.tz) if t.tz is not None else None
    scale = _NANOS[t.unit]
    out: list[Any] = []
    for ticks in column.cast(pa.int64()).to_pylist():
        if ticks is None:
            out.append(None)
            continue
        seconds, nanos = divmod(ticks * scale, 10**9)
        utc = _EPOCH + datetime.timedelta(seconds=seconds)
        native = utc.replace(tzinfo=None) if zone is None else zone.normalize(utc.astimezone(zone))
        out.append(neo4j.time.DateTime.from_native(native).replace(nanosecond=nanos))
    return out


def _zone(name: str) -> datetime.tzinfo:
    """A pytz time zone for an Arrow zone: a name from the tz database, or an offset such as '+05:30'."""
    if name[:1] in "+-":
        hours, _, minutes = name[1:].partition(":")
        offset = int(hours) * 60 + int(minutes or 0)
        return pytz.FixedOffset(-offset if name[0] == "-" else offset)
    return pytz.timezone(name)


def _columns(batch: pa.RecordBatch, names: list[str], path: Path | None = None) -> dict[str, list[Any]]:
    return {f"p{k}": _values(batch.column(name), name, path) for k, name in enumerate(names)}


def _property_map(names: list[str]) -> str:
    return ", ".join(f"{quoted(name)}: $p{k}[i]" for k, name in enumerate(names))


def _groups(codes: np.ndarray, order_by: np.ndarray | None = None) -> list[tuple[int, np.ndarray | None]]:
    """(code, row indices) per distinct code; indices None when one code covers the batch in its own order."""
    if not len(codes):
        return []
    if (codes == codes[0]).all() and order_by is None:
        return [(int(codes[0]), None)]
    order = np.lexsort((order_by, codes)) if order_by is not None else np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    ends = np.r_[starts[1:], len(order)]
    return [(int(sorted_codes[s]), order[s:e]) for s, e in zip(starts, ends, strict=True)]


class NodeIds:
    """nodeId -> Neo4j internal node id for the nodes this load made, sorted for vectorised look-ups."""

    def __init__(self) -> None:
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []
        self.ids = np.empty(0, np.int64)
        self.internal = np.empty(0, np.int64)

    def add(self, ids: np.ndarray, internal: np.ndarray) -> None:
        self._chunks.append((ids, internal))

    def seal(self) -> None:
        if self._chunks:
            ids = np.concatenate([c[0] for c in self._chunks])
            internal = np.concatenate([c[1] for c in self._chunks])
            self._chunks = []
            order = np.argsort(ids, kind="stable")
            self.ids, self.internal = ids[order], internal[order]
        duplicated = self.ids[1:][self.ids[1:] == self.ids[:-1]]
        if len(duplicated):
            raise SnapshotError(f"column {NODE_ID!r}: {len(np.unique(duplicated))} node ids appear more than once "
                                f"in the node files (e.g. {int(duplicated[0])}); node ids must be unique")

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(internal ids, mask of ids that are among the nodes)."""
        if not len(self.ids):
            return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        return self.internal[pos], self.ids[pos] == ids


class CypherLoader:
    def __init__(self, admin: Admin, batch_size: int, progress: LoadProgress = NO_PROGRESS) -> None:
        self.admin = admin
        self.batch_size = batch_size
        self.progress = progress  # rows written so far, per phase (bluegreen_dagster/progress.py)
        self.prepare_seconds = 0.0
        self._filter_notices = True

    def _write(self, database: str, query: str, what: str, params: dict[str, Any]) -> dict[str, Any]:
        def work(tx: neo4j.ManagedTransaction) -> dict[str, Any]:
            record = tx.run(query, params).single()
            return record.data() if record is not None else {}

        def session() -> neo4j.Session:
            # id() is deprecated in Cypher 5: unfiltered, every statement would log a deprecation notice.
            quiet = {"notifications_disabled_classifications": ["DEPRECATION"]} if self._filter_notices else {}
            return self.admin.driver.session(database=database, **quiet)

        def call() -> dict[str, Any]:
            try:
                with session() as s:
                    return s.execute_write(work)
            except neo4j.exceptions.ConfigurationError:
                if not self._filter_notices:
                    raise
                self._filter_notices = False  # Neo4j before 5.7 (Bolt < 5.2) has no notification filters
                with session() as s:
                    return s.execute_write(work)

        return self.admin._with_retry(what, call)

    @staticmethod
    def check(snapshot: Snapshot) -> None:
        """Everything that can be refused from the files, before the database is created (`Neo4jTarget.load`
        calls it first): the rules of every target (schema_rules.py), labels and types."""
        check_snapshot(snapshot.node_files, snapshot.relationship_files, "cypher")
        expected = expected_counts(snapshot)
        for label in expected.labels:
            check_identifier(label, "label")
        for rel_type in expected.types:
            check_identifier(rel_type, "relationship type")
        for files, reserved in ((snapshot.node_files, {NODE_ID, LABELS}),
                                (snapshot.relationship_files, {SOURCE_ID, TARGET_ID, REL_TYPE})):
            for path in files:  # every property name and type, before anything is written
                _property_names(open_parquet(path).schema_arrow, reserved, path)

    def write(self, database: str, snapshot: Snapshot) -> LoadReport:
        """Write the snapshot into `database`, which must exist and be online."""
        start = time.monotonic()
        self.prepare_seconds = 0.0
        self.check(snapshot)
        expected = expected_counts(snapshot)

        self._write(database, queries.CREATE_LOAD_MARKER, f"marking {database} as loading", {})
        for label in sorted(expected.labels):
            self.admin.run(queries.CREATE_ID_INDEX.format(label=quoted(label)), database=database,
                           what=f"creating the {label}.{queries.ID_PROPERTY} index in {database}")
        self.admin.run(queries.AWAIT_INDEXES, {"seconds": 300}, database=database,
                       what=f"waiting for indexes in {database}")
        phases = {"indexes": time.monotonic() - start}

        node_ids = NodeIds()
        nodes = rels = read = 0
        t = time.monotonic()
        self.progress.rows(database, "nodes", 0, expected.nodes)
        for path, batch in iter_batches(snapshot.node_files, NODE_COLUMNS, self.batch_size):
            read += batch.nbytes
            nodes += self._write_nodes(database, path, batch, node_ids)
            self.progress.rows(database, "nodes", nodes, expected.nodes)
        node_ids.seal()
        phases["nodes"] = time.monotonic() - t
        t = time.monotonic()
        self.progress.rows(database, "relationships", 0, expected.relationships)
        for path, batch in iter_batches(snapshot.relationship_files, RELATIONSHIP_COLUMNS, self.batch_size):
            read += batch.nbytes
            rels += self._write_relationships(database, path, batch, node_ids)
            self.progress.rows(database, "relationships", rels, expected.relationships)
        phases["relationships"] = time.monotonic() - t

        self._write(database, queries.DELETE_LOAD_MARKER, f"finishing the load of {database}", {})
        seconds = time.monotonic() - start
        phases["prepare"] = self.prepare_seconds  # client-side share of nodes + relationships
        log.info("cypher load %s: %d nodes, %d relationships in %.1fs (%s)", database, nodes, rels, seconds,
                 ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()))
        return LoadReport(database, nodes, rels, read, seconds, phases=phases)

    def _write_nodes(self, database: str, path: Path, batch: pa.RecordBatch, node_ids: NodeIds) -> int:
        t = time.monotonic()
        ids = batch.column(NODE_ID)
        if ids.null_count:
            raise SnapshotError(f"{path}: column {NODE_ID!r} has {ids.null_count} null ids")
        ids = ids.cast(pa.int64()).to_numpy()
        labels = labels_as_list_array(batch.column(LABELS))
        if pc.list_flatten(labels).null_count:
            raise SnapshotError(f"{path}: column {LABELS!r} has null entries inside label lists")
        keys = pc.fill_null(pc.binary_join(labels, _SEPARATOR), "").dictionary_encode()
        label_sets = [tuple(dict.fromkeys(check_identifier(label, "label", path)
                                          for label in (key.split(_SEPARATOR) if key else [])))
                      for key in keys.dictionary.to_pylist()]
        names = _property_names(batch.schema, {NODE_ID, LABELS}, path)
        properties = ", " + _property_map(names) if names else ""
        self.prepare_seconds += time.monotonic() - t

        created = 0
        for code, rows in _groups(keys.indices.to_numpy(zero_copy_only=False)):
            t = time.monotonic()
            part, part_ids = (batch, ids) if rows is None else (batch.take(pa.array(rows)), ids[rows])
            params = {"ids": part_ids.tolist(), **_columns(part, names, path)}
            query = queries.CREATE_NODES.format(labels="".join(":" + quoted(lb) for lb in label_sets[code]),
                                                properties=properties)
            self.prepare_seconds += time.monotonic() - t
            result = self._write(database, query, f"writing nodes of {path.name} into {database}", params)
            made_rows, made_ids = result.get("rows") or [], result.get("ids") or []
            if len(made_rows) != len(part_ids) or len(made_ids) != len(part_ids):
                raise SnapshotError(f"{path}: wrote {len(made_ids)} of {len(part_ids)} nodes")
            node_ids.add(part_ids[np.asarray(made_rows, np.int64)], np.asarray(made_ids, np.int64))
            created += len(made_ids)
        return created

    def _write_relationships(self, database: str, path: Path, batch: pa.RecordBatch, node_ids: NodeIds) -> int:
        t = time.monotonic()
        src, dst, types = batch.column(SOURCE_ID), batch.column(TARGET_ID), decoded(batch.column(REL_TYPE))
        for name, column in ((SOURCE_ID, src), (TARGET_ID, dst), (REL_TYPE, types)):
            if column.null_count:
                raise SnapshotError(f"{path}: column {name!r} has {column.null_count} nulls")
        src_internal, src_found = node_ids.lookup(src.cast(pa.int64()).to_numpy())
        dst_internal, dst_found = node_ids.lookup(dst.cast(pa.int64()).to_numpy())
        missing = int((~(src_found & dst_found)).sum())
        if missing:
            raise SnapshotError(f"{path}: {missing} of {len(src)} relationships name a {SOURCE_ID}/{TARGET_ID} "
                                "that is not among the snapshot's nodes")
        encoded = types.dictionary_encode()
        type_names = [check_identifier(name, "relationship type", path) for name in encoded.dictionary.to_pylist()]
        names = _property_names(batch.schema, {SOURCE_ID, TARGET_ID, REL_TYPE}, path)
        properties = _property_map(names)
        self.prepare_seconds += time.monotonic() - t

        created = 0
        # Ordered by source within a batch: consecutive rows touch the same node's relationship chain.
        for code, rows in _groups(encoded.indices.to_numpy(zero_copy_only=False), order_by=src_internal):
            t = time.monotonic()
            part = batch.take(pa.array(rows))
            params = {"s": src_internal[rows].tolist(), "t": dst_internal[rows].tolist(),
                      **_columns(part, names, path)}
            query = queries.CREATE_RELATIONSHIPS.format(type=quoted(type_names[code]), properties=properties)
            self.prepare_seconds += time.monotonic() - t
            result = self._write(database, query, f"writing relationships of {path.name} into {database}", params)
            if result.get("created") != len(rows):
                raise SnapshotError(f"{path}: wrote {result.get('created')} of {len(rows)} relationships")
            created += len(rows)
        return created
