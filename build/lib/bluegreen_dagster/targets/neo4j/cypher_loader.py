"""Fallback loader (`neo4j.loader: cypher`) for deployments without the GDS Arrow server.

`Neo4jTarget` creates the database (`CREATE DATABASE $name WAIT`) and waits for it to be online; this module
only writes into an EXISTING database, so it also runs against Community's `neo4j` database in tests:

1. an index on `nodeId` for every label of the snapshot, plus one on a helper label every node carries while the
   load runs (relationship endpoints are looked up through it: the relationship files do not say the label);
2. nodes in batches, `UNWIND $rows AS row CREATE ...`, each batch one managed write transaction;
3. relationships likewise, checking that every row found both endpoints;
4. the helper label removed in batches and its index dropped.

Labels and types come from the data. They are validated with a strict identifier regex; with Cypher 5.26+
dynamic labels (`$(...)`, probed with EXPLAIN) they are sent as parameters, otherwise backtick-quoted into
the statement text after the check. Writes are sequential (no lock contention between relationship batches).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import neo4j
import pyarrow as pa

from bluegreen_dagster import snapshots
from bluegreen_dagster.columns import decoded, is_float, is_integer, is_list, is_string, labels_as_lists, plain
from bluegreen_dagster.snapshots import (
    LABELS,
    NODE_COLUMNS,
    NODE_ID,
    REL_TYPE,
    RELATIONSHIP_COLUMNS,
    SOURCE_ID,
    TARGET_ID,
    Snapshot,
    SnapshotError,
    expected_counts,
    iter_batches,
)
from bluegreen_dagster.targets.neo4j import queries
from bluegreen_dagster.targets.neo4j.admin import Admin

log = logging.getLogger(__name__)


REMOVE_BATCH = 10_000


def check_identifier(name: Any, kind: str, path: Path | None = None) -> str:
    """`snapshots.check_identifier`, plus our own temporary load label, which data must not use."""
    if name == queries.LOAD_LABEL:
        raise SnapshotError(f"{path or 'snapshot'}: {kind} {name!r} is reserved for the loader's own use")
    return snapshots.check_identifier(name, kind, path)


def quoted(name: str) -> str:
    return f"`{name}`"  # only ever called on names that passed check_identifier (no backticks possible)


def _clean(value: Any) -> Any:
    """Python values the driver can send; None-valued properties are dropped by the caller."""
    if isinstance(value, float) and math.isnan(value):
        return value
    if isinstance(value, list):
        return [v for v in value if v is not None]
    return value


def _supported(t: pa.DataType) -> bool:
    t = plain(t)
    if is_list(t):
        v = t.value_type
        return is_integer(v) or is_float(v) or pa.types.is_boolean(v) or is_string(v)
    return (is_integer(t) or is_float(t) or pa.types.is_boolean(t) or is_string(t) or pa.types.is_date(t)
            or pa.types.is_timestamp(t))


def _property_columns(batch: pa.RecordBatch, reserved: set[str], path: Path) -> list[tuple[str, list[Any]]]:
    out = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name in reserved:
            continue
        if not _supported(column.type):
            raise SnapshotError(f"{path}: property column {name!r} has type {column.type}, which Neo4j cannot store "
                                "as a property: cast it to a number, string, boolean, date or a list of those")
        out.append((name, decoded(column).to_pylist()))
    return out


def _props(columns: list[tuple[str, list[Any]]], i: int) -> dict[str, Any]:
    return {name: _clean(values[i]) for name, values in columns if values[i] is not None}


@dataclass
class CypherLoadResult:
    nodes: int
    relationships: int
    bytes_read: int
    seconds: float


class CypherLoader:
    def __init__(self, admin: Admin, batch_size: int) -> None:
        self.admin = admin
        self.batch_size = batch_size
        self._dynamic: bool | None = None

    def _write(self, database: str, query: str, what: str, params: dict[str, Any]) -> int:
        def work(tx: neo4j.ManagedTransaction) -> int:
            record = tx.run(query, params).single()
            return int(record[0]) if record is not None else 0

        def call() -> int:
            with self.admin.driver.session(database=database) as session:
                return session.execute_write(work)

        return self.admin._with_retry(what, call)

    def dynamic_labels(self, database: str) -> bool:
        """Whether the server accepts `$(...)` labels and types (Cypher 5.26+)."""
        if self._dynamic is None:
            try:
                with self.admin.driver.session(database=database) as session:
                    session.run(queries.PROBE_DYNAMIC_LABELS, {"labels": ["A"], "type": "T"}).consume()
                self._dynamic = True
            except neo4j.exceptions.ClientError as exc:
                log.info("dynamic labels not supported (%s): using quoted labels", exc.code)
                self._dynamic = False
            except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError, OSError) as exc:
                raise self.admin.map_error(exc, f"preparing the load into {database}") from None
        return self._dynamic

    def write(self, database: str, snapshot: Snapshot) -> CypherLoadResult:
        """Write the snapshot into `database`, which must exist, be online and hold none of these node ids."""
        start = time.monotonic()
        expected = expected_counts(snapshot)
        for label in expected.labels:
            check_identifier(label, "label")
        for rel_type in expected.types:
            check_identifier(rel_type, "relationship type")
        dynamic = self.dynamic_labels(database)

        for label in sorted(expected.labels):
            self.admin.run(queries.CREATE_ID_INDEX.format(label=quoted(label)), database=database,
                           what=f"creating the {label}.{queries.ID_PROPERTY} index in {database}")
        self.admin.run(queries.CREATE_LOAD_INDEX, database=database, what=f"creating the load index in {database}")
        self.admin.run(queries.AWAIT_INDEXES, {"seconds": 300}, database=database,
                       what=f"waiting for indexes in {database}")

        nodes = rels = read = 0
        for path, batch in iter_batches(snapshot.node_files, NODE_COLUMNS, self.batch_size):
            read += batch.nbytes
            nodes += self._write_nodes(database, path, batch, dynamic)
        for path, batch in iter_batches(snapshot.relationship_files, RELATIONSHIP_COLUMNS, self.batch_size):
            read += batch.nbytes
            rels += self._write_relationships(database, path, batch, dynamic)

        while self._write(database, queries.REMOVE_LOAD_LABEL, f"removing the load label in {database}",
                          {"limit": REMOVE_BATCH}):
            pass
        self.admin.run(queries.DROP_LOAD_INDEX, database=database, what=f"dropping the load index in {database}")
        seconds = time.monotonic() - start
        log.info("cypher load %s: %d nodes, %d relationships in %.1fs", database, nodes, rels, seconds)
        return CypherLoadResult(nodes, rels, read, seconds)

    def _write_nodes(self, database: str, path: Path, batch: pa.RecordBatch, dynamic: bool) -> int:
        ids = batch.column(NODE_ID)
        if ids.null_count:
            raise SnapshotError(f"{path}: column {NODE_ID!r} has {ids.null_count} null ids")
        ids = ids.to_pylist()
        labels = labels_as_lists(batch.column(LABELS))
        props = _property_columns(batch, {NODE_ID, LABELS}, path)
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for i, node_id in enumerate(ids):
            node_labels = tuple(dict.fromkeys(check_identifier(label, "label", path) for label in labels[i]))
            groups[() if dynamic else node_labels].append(
                {"id": node_id, "labels": list(node_labels), "props": _props(props, i)})
        created = 0
        for key, rows in groups.items():
            query = (queries.CREATE_NODES_DYNAMIC if dynamic else
                     queries.CREATE_NODES_STATIC.format(labels="".join(":" + quoted(lb) for lb in key)))
            created += self._write(database, query, f"writing nodes of {path.name} into {database}", {"rows": rows})
        if created != len(ids):
            raise SnapshotError(f"{path}: wrote {created} of {len(ids)} nodes")
        return created

    def _write_relationships(self, database: str, path: Path, batch: pa.RecordBatch, dynamic: bool) -> int:
        src, dst = batch.column(SOURCE_ID), batch.column(TARGET_ID)
        types = batch.column(REL_TYPE)
        if pa.types.is_dictionary(types.type):
            types = types.cast(types.type.value_type)
        for name, column in ((SOURCE_ID, src), (TARGET_ID, dst), (REL_TYPE, types)):
            if column.null_count:
                raise SnapshotError(f"{path}: column {name!r} has {column.null_count} nulls")
        src, dst, types = src.to_pylist(), dst.to_pylist(), types.to_pylist()
        props = _property_columns(batch, {SOURCE_ID, TARGET_ID, REL_TYPE}, path)
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for i, rel_type in enumerate(types):
            check_identifier(rel_type, "relationship type", path)
            groups["" if dynamic else rel_type].append(
                {"s": src[i], "t": dst[i], "type": rel_type, "props": _props(props, i)})
        created = 0
        for key, rows in groups.items():
            query = (queries.CREATE_RELATIONSHIPS_DYNAMIC if dynamic else
                     queries.CREATE_RELATIONSHIPS_STATIC.format(type=quoted(key)))
            created += self._write(database, query, f"writing relationships of {path.name} into {database}",
                                   {"rows": rows})
        if created != len(src):
            raise SnapshotError(f"{path}: {len(src) - created} of {len(src)} relationships name a "
                                f"{SOURCE_ID}/{TARGET_ID} that is not among the snapshot's nodes"
                                if created < len(src) else
                                f"{path}: wrote {created} relationships for {len(src)} rows: duplicate node ids")
        return created
