"""What the GDS Arrow server is sent, decided once per Parquet file: the type rules, the per-file cast plan, and the
checks that run on the Parquet footers before anything is created on the server.

The rules follow the GDS documentation (README, "Property types with the GDS Arrow loader"):
- ids (`nodeId`, `sourceNodeId`, `targetNodeId`): int64 > 0, never null;
- `labels`: utf8 or list<utf8>, never null, no empty label, no empty list; `relationshipType`: utf8, never null;
- node properties: int64, float64, list<int64>, list<float64>, list<float32>; utf8 only with
  `neo4j.arrow_string_properties: true` (not documented by GDS, so opt-in);
- relationship properties: double only. Integer columns are cast to float64; values beyond +-2^53 would lose
  precision and are refused;
- an all-null column (Arrow type null) is not sent: no node gets the property, as with the Cypher loader;
- nulls in properties are refused (GDS would store NaN where the Cypher loader stores no property), unless
  `neo4j.arrow_nulls: nan`, which sends null floats as NaN.

Checks use the row-group statistics of the footers; a row group without statistics has that column read (one
column, one row group at a time) so every check still happens before the import starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bluegreen_dagster.columns import LABELS, NODE_COLUMNS, NODE_ID, REL_TYPE, RELATIONSHIP_COLUMNS, SOURCE_ID
from bluegreen_dagster.columns import TARGET_ID, decoded, is_float, is_integer, is_list, is_string, plain
from bluegreen_dagster.config_neo4j import Neo4jSettings
from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.reading import open_parquet, require_columns

INT64_MAX = 2**63 - 1
# Integers up to this magnitude are exactly representable as float64.
FLOAT64_EXACT = 2**53

_CYPHER = "or set neo4j.loader: cypher (the Cypher loader stores any Neo4j property type)"


@dataclass(frozen=True)
class Column:
    """One column of a file: how it is sent and what must be proven about its values."""

    name: str
    role: str  # "id" | "labels" | "type" | "property"
    target: pa.DataType
    nulls: str = "refuse"  # "refuse" | "nan" (null floats sent as NaN)
    exact_float: bool = False  # an integer relationship property: |v| <= 2^53


@dataclass(frozen=True)
class FilePlan:
    """The cast plan of one Parquet file; `apply` turns a batch of it into what the server is sent."""

    path: Path
    entity: str  # "node" | "relationship"
    columns: tuple[Column, ...]
    schema: pa.Schema  # of the batches sent

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        arrays = []
        for column, array in zip(self.columns, batch.columns, strict=True):
            if array.null_count and column.nulls != "nan":  # O(1): a last guard, the footers were checked
                raise SnapshotError(f"{self.path}: column {column.name!r} has null values")
            if array.type != column.target:
                array = _cast(decoded(array), column.target)
            if column.nulls == "nan" and array.null_count:
                array = pc.fill_null(array, float("nan"))
            arrays.append(array)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def _cast(array: pa.Array, target: pa.DataType) -> pa.Array:
    # The footers proved the values fit (ids > 0 and <= int64 max, |int| <= 2^53 for doubles): no per-value checks.
    return array if array.type == target else array.cast(target, safe=False)


def _property_target(t: pa.DataType, entity: str, settings: Neo4jSettings, path: Path, name: str) -> pa.DataType:
    where = f"{path}: property column {name!r} has type {t}"
    if entity == "relationship":
        if is_integer(t) or is_float(t):
            return pa.float64()
        raise SnapshotError(f"{where}; GDS Arrow stores only double relationship properties: cast it to a number "
                            f"in the producer, drop it, {_CYPHER}")
    if is_integer(t):
        return pa.int64()
    if is_float(t):
        return pa.float64()
    if is_string(t):
        if settings.arrow_string_properties:
            return pa.string()
        raise SnapshotError(f"{where}; GDS documents no string node properties for Arrow database import: set "
                            f"neo4j.arrow_string_properties: true (unverified on GDS, see the README), {_CYPHER}")
    if is_list(t):
        value = plain(t).value_type
        if is_integer(value):
            return pa.list_(pa.int64())
        if pa.types.is_float32(value):
            return pa.list_(pa.float32())
        if is_float(value):
            return pa.list_(pa.float64())
    raise SnapshotError(f"{where}; GDS Arrow takes int64, float64 and lists of int64/float64/float32 node "
                        f"properties: cast it in the producer (e.g. booleans to int64 0/1), {_CYPHER}")


def plan_file(path: Path, schema: pa.Schema, entity: str, settings: Neo4jSettings) -> FilePlan:
    """The cast plan for one file, from its schema alone; raises SnapshotError for a type GDS does not take."""
    require_columns(path, schema, NODE_COLUMNS if entity == "node" else RELATIONSHIP_COLUMNS)
    ids = (NODE_ID,) if entity == "node" else (SOURCE_ID, TARGET_ID)
    columns = []
    for field in schema:
        name, t = field.name, field.type
        if name in ids:
            columns.append(Column(name, "id", pa.int64()))
        elif entity == "node" and name == LABELS:
            columns.append(Column(name, "labels", pa.string() if is_string(t) else pa.list_(pa.string())))
        elif entity == "relationship" and name == REL_TYPE:
            columns.append(Column(name, "type", pa.string()))
        elif pa.types.is_null(t):
            continue  # an all-null column: no value to send, as the Cypher loader sets no property
        else:
            target = _property_target(t, entity, settings, path, name)
            nan = settings.arrow_nulls == "nan" and target == pa.float64()
            columns.append(Column(name, "property", target, nulls="nan" if nan else "refuse",
                                  exact_float=entity == "relationship" and is_integer(t)))
    return FilePlan(path, entity, tuple(columns), pa.schema([pa.field(c.name, c.target) for c in columns]))


# --------------------------------------------------------------------------------------------------------------
# Checks on the footers (and, where a row group has no statistics, on that one column)


@dataclass
class _Facts:
    nulls: int
    low: object  # None when unknown
    high: object


def _facts(pf: pq.ParquetFile, rg: int, index: int | None, name: str, want_range: bool, labels: bool) -> _Facts:
    """Null count and min/max of one column chunk, from statistics or, when missing, by reading the column.

    The statistics of a list column count, as nulls, null rows, null elements and empty lists alike: fine for
    `labels` (all three are refused), but an empty list property is a value, so a list property with any such
    count is read to tell them apart."""
    stats = pf.metadata.row_group(rg).column(index).statistics if index is not None else None
    list_property = not labels and is_list(pf.schema_arrow.field(name).type)
    if list_property and stats is not None and stats.has_null_count and stats.null_count:
        stats = None
    if stats is not None and stats.has_null_count and (stats.has_min_max or not want_range or
                                                       stats.null_count == pf.metadata.row_group(rg).num_rows):
        return _Facts(stats.null_count, stats.min if stats.has_min_max else None,
                      stats.max if stats.has_min_max else None)
    array = pf.read_row_group(rg, columns=[name]).column(0)
    array = decoded(array.combine_chunks()) if array.num_chunks else pa.array([], array.type)
    if is_list(array.type):  # nulls of the list column: null rows, empty lists and null elements, as in statistics
        lengths = pc.list_value_length(array)
        empty = (pc.sum(pc.equal(lengths, 0)).as_py() or 0) if labels else 0
        flat = pc.list_flatten(array)
        return _Facts(array.null_count + empty + flat.null_count, None, None)
    if not want_range or len(array) == array.null_count:
        return _Facts(array.null_count, None, None)
    low_high = pc.min_max(array)
    return _Facts(array.null_count, low_high["min"].as_py(), low_high["max"].as_py())


def _leaf_index(pf: pq.ParquetFile, name: str) -> int | None:
    """The Parquet leaf column of a top-level column (a list has one leaf: `name.list.element`)."""
    for i in range(pf.metadata.num_columns):
        if pf.schema.column(i).path.split(".")[0] == name:
            return i
    return None


def check_file(pf: pq.ParquetFile, plan: FilePlan) -> None:
    """Prove from the footers (or the column, where statistics are missing) what `FilePlan.apply` relies on."""
    path = plan.path
    for column in plan.columns:
        index = _leaf_index(pf, column.name)
        want_range = column.role == "id" or column.exact_float or column.role == "labels"
        for rg in range(pf.metadata.num_row_groups):
            facts = _facts(pf, rg, index, column.name, want_range, column.role == "labels")
            where = f"{path}: column {column.name!r} (row group {rg})"
            if column.role == "labels":
                if facts.nulls:
                    raise SnapshotError(f"{where} has null labels or empty label lists ({facts.nulls}): GDS Arrow "
                                        "needs at least one label per node; give every node a label")
                if facts.low == "" or facts.low == b"":
                    raise SnapshotError(f"{where} has empty labels (''): give every node a label")
                continue
            if facts.nulls and column.nulls != "nan":
                if column.role == "property":
                    hint = ("set neo4j.arrow_nulls: nan to store them as NaN (the Cypher loader stores no property "
                            "instead), fill them in the producer, " if column.target == pa.float64() else
                            "fill them in the producer (GDS has no null for integers or lists), ")
                    raise SnapshotError(f"{where} has {facts.nulls} null values; {hint}{_CYPHER}")
                raise SnapshotError(f"{where} has {facts.nulls} null values")
            if column.role == "id" and facts.low is not None:
                if facts.low <= 0:
                    raise SnapshotError(f"{where} holds ids <= 0 ({facts.low}); GDS Arrow needs positive node ids")
                if facts.high > INT64_MAX:
                    raise SnapshotError(f"{where} holds {facts.high}, which does not fit in int64")
            if column.exact_float and facts.low is not None:
                biggest = max(abs(facts.low), abs(facts.high))
                if biggest > FLOAT64_EXACT:
                    raise SnapshotError(f"{where} holds {biggest}; GDS stores relationship properties as double, "
                                        f"exact only up to 2^53: scale or split the value, {_CYPHER}")


def plan_and_check(path: Path, entity: str, settings: Neo4jSettings) -> FilePlan:
    pf = open_parquet(path)
    plan = plan_file(path, pf.schema_arrow, entity, settings)
    try:
        check_file(pf, plan)
    except (pa.ArrowException, OSError) as exc:
        raise SnapshotError(f"{path}: could not be read ({exc}); replace the file and re-run") from None
    return plan
