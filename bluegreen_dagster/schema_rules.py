"""The one rule every target applies to a snapshot's values before any database is created (docs/types.md).

A value is stored as the snapshot has it, or the snapshot is refused here, as a SnapshotError (bad input: never
retried) that names the file, the column and what to do. Each target calls `check_snapshot` first:
`targets/embedded/plan.py`, `targets/neo4j/cypher_loader.py` (before `CREATE DATABASE`) and
`targets/neo4j/arrow.py` (whose stricter GDS rules live in `targets/neo4j/arrow_schema.py`).

What is checked, from the schemas in the footers and, for two rare types only, one pass over that column:
- per file: each column name once; the GDS columns (`reading.require_columns`); property names (names.py);
- per property: a type that has a kind (`kind_of`); one kind per property name across all node files (and across
  all relationship files): integers of any width are one kind, and so are floats, timestamp units, list widths;
- values: uint64 at most 2^63-1 in ids (every target) and in properties on Neo4j (signed 64-bit integers only);
  nanosecond timestamps on the embedded target without a sub-microsecond part (LadybugDB keeps microseconds);
- labels on the embedded target: one distinct label per node. LadybugDB keeps every node in exactly one node
  table and `MATCH (n:A)` reads table A only (`(n:A:B)` is a union of tables), so no way of storing a node with
  two labels reads like Neo4j for both `MATCH (n:A)` and `MATCH (n)` (docs/types.md, "Multi-label nodes").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bluegreen_dagster.columns import LABELS, NODE_COLUMNS, NODE_ID, REL_TYPE, RELATIONSHIP_COLUMNS, SOURCE_ID
from bluegreen_dagster.columns import TARGET_ID, decoded, is_list, labels_as_list_array, plain
from bluegreen_dagster.names import SnapshotError, check_identifier, printable
from bluegreen_dagster.reading import open_parquet, require_columns

INT64_MAX = 2**63 - 1
TARGETS = ("embedded", "cypher", "arrow")
GDS_COLUMNS = {"node": {NODE_ID, LABELS}, "relationship": {SOURCE_ID, TARGET_ID, REL_TYPE}}

_REFUSED_HINT = ("cast it in the producer to one of: integer, float, boolean, string, date, timestamp, or a list "
                 "of one of those (docs/types.md)")


def kind_of(t: pa.DataType) -> str | None:
    """The kind of value an Arrow type holds, the same on every target ('integer', 'list of date', ...), 'null'
    for a column with no value at all, or None for a type no target stores (docs/types.md, "Refused")."""
    t = plain(t)
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "zoned timestamp" if t.tz is not None else "local timestamp"
    if is_list(t):
        inner = kind_of(t.value_type)
        if inner is None or inner == "null" or inner.startswith("list"):
            return None
        return f"list of {inner}"
    return None


@dataclass
class _Seen:
    kind: str
    path: Path
    arrow_type: pa.DataType


def check_snapshot(node_files: list[Path], relationship_files: list[Path], target: str) -> None:
    """Refuse, before anything is created, what `target` ('embedded', 'cypher' or 'arrow') would not store as
    the snapshot has it."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")
    for entity, files in (("node", node_files), ("relationship", relationship_files)):
        seen: dict[str, _Seen] = {}
        for path in files:
            schema = open_parquet(path).schema_arrow
            check_file_schema(path, schema, entity)
            for field in schema:
                if field.name in GDS_COLUMNS[entity]:
                    continue
                kind = kind_of(field.type)
                if kind is None:
                    raise SnapshotError(f"{printable(path)}: column {field.name!r} has type {field.type}, "
                                        f"which no target stores as it is: {_REFUSED_HINT}")
                _same_kind(seen, field.name, kind, path, field.type, entity)
            _check_values(path, schema, entity, target)
            if entity == "node" and target == "embedded":
                _check_one_label(path, schema)


def check_file_schema(path: Path, schema: pa.Schema, entity: str) -> None:
    """One file on its own: every column name once and the GDS columns (`reading.require_columns`), and property
    names that may reach a statement."""
    require_columns(path, schema, NODE_COLUMNS if entity == "node" else RELATIONSHIP_COLUMNS)
    for name in schema.names:
        if name not in GDS_COLUMNS[entity]:
            check_identifier(name, "property column", path)


def _same_kind(seen: dict[str, _Seen], name: str, kind: str, path: Path, arrow_type: pa.DataType,
               entity: str) -> None:
    before = seen.get(name)
    if before is None or before.kind == "null":
        seen[name] = _Seen(kind, path, arrow_type)
        return
    if kind == "null" or kind == before.kind:
        return
    raise SnapshotError(
        f"{printable(path)}: {entity} property column {name!r} has type {arrow_type} ({kind}), but "
        f"{printable(before.path)} has {before.arrow_type} ({before.kind}); a property has one kind in all "
        f"{entity} files (integer widths may differ, and so may float widths and timestamp units): write it with "
        "one type everywhere")


def _leaf(t: pa.DataType) -> pa.DataType:
    t = plain(t)
    return _leaf(t.value_type) if is_list(t) else t


def _check_values(path: Path, schema: pa.Schema, entity: str, target: str) -> None:
    """The value rules of the two types whose schema alone does not say whether they fit (one column read)."""
    # LadybugDB has UINT64 columns; Neo4j integers and every id are signed 64-bit.
    uint64 = [f.name for f in schema if pa.types.is_uint64(_leaf(f.type))
              and (target != "embedded" or f.name in GDS_COLUMNS[entity])]
    fine_ns = [f.name for f in schema
               if target == "embedded" and pa.types.is_timestamp(_leaf(f.type)) and _leaf(f.type).unit == "ns"]
    if not uint64 and not fine_ns:
        return
    table = open_parquet(path).read(columns=sorted(set(uint64) | set(fine_ns)))
    for name in uint64:
        values = _flat(table.column(name))
        high = pc.max(values).as_py() if len(values) else None
        if high is not None and high > INT64_MAX:
            who = "every target stores an id" if name in GDS_COLUMNS[entity] else "Neo4j stores an integer"
            raise SnapshotError(f"{printable(path)}: column {name!r} holds {high}, above 2^63-1 = {INT64_MAX}; "
                                f"{who} as a signed 64-bit integer: write values up to {INT64_MAX}, or write the "
                                "column as a string")
    for name in fine_ns:
        values = _flat(table.column(name))
        sub = int(np.count_nonzero(values.cast(pa.int64()).to_numpy(zero_copy_only=False) % 1000))
        if sub:
            raise SnapshotError(f"{printable(path)}: column {name!r} holds {sub} timestamp(s) with a sub-microsecond "
                                "part; the embedded target stores microseconds (LadybugDB reads no nanosecond "
                                "timestamps from Parquet): round them to microseconds in the producer, or load "
                                "into Neo4j (target: neo4j, loader: cypher), which keeps nanoseconds")


def _check_one_label(path: Path, schema: pa.Schema) -> None:
    """The embedded target's label rule: no node with two different labels (a repeated label is one label)."""
    if not is_list(plain(schema.field(LABELS).type)):
        return  # one string per row: one label at most
    parquet = open_parquet(path)
    if _one_label_value_per_row_group(parquet):
        return  # the footer says so: no row can hold two different labels (the usual file: one label each)
    several = 0
    examples: list[str] = []
    for batch in parquet.iter_batches(columns=[NODE_ID, LABELS]):
        labels = labels_as_list_array(batch.column(1))
        values = labels.flatten()
        if not len(values):
            continue
        # a row has two different labels when one of its values differs from the row's first value
        rows = pc.list_parent_indices(labels).to_numpy(zero_copy_only=False)
        offsets = labels.offsets.to_numpy(zero_copy_only=False)
        firsts = values.take(pa.array(offsets[rows] - offsets[0]))
        differs = pc.fill_null(pc.not_equal(values, firsts), False).to_numpy(zero_copy_only=False)
        bad = np.unique(rows[differs])
        several += len(bad)
        for row in bad[: max(0, 3 - len(examples))].tolist():
            examples.append(f"nodeId {batch.column(0)[row].as_py()}: {labels[row].as_py()}")
    if several:
        raise SnapshotError(
            f"{printable(path)}: {several} node(s) have several labels (e.g. {'; '.join(examples)}) in column "
            f"{LABELS!r}; the embedded target (LadybugDB) keeps each node in one node table, so it reads one label "
            "per node and `MATCH (n:<label>)` would miss the others: write one label per node in the producer, or "
            "load this snapshot into Neo4j (target: neo4j), which keeps every label (docs/types.md)")


def _one_label_value_per_row_group(parquet) -> bool:
    """True when every row group's statistics show a single label value (min == max) in the `labels` leaf."""
    meta = parquet.metadata
    leaf = next((i for i in range(meta.num_columns) if meta.schema.column(i).path.split(".")[0] == LABELS), None)
    if leaf is None:
        return False
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(leaf).statistics
        # Some writers cut long min/max values to a prefix (64 bytes); shorter ones are exact.
        if stats is None or not stats.has_min_max or stats.min != stats.max or len(str(stats.min)) >= 64:
            return False
    return True


def _flat(column: pa.ChunkedArray) -> pa.Array:
    """Every value of a column, list elements included, nulls dropped."""
    array = decoded(column.combine_chunks()) if column.num_chunks else pa.array([], column.type)
    while is_list(array.type):
        array = pc.list_flatten(array)
    return array.drop_null()
