"""Hypothesis strategies for the fidelity suite (tests/test_fidelity_properties.py): snapshots over every Arrow type
docs/types.md accepts and some it refuses, with nulls, lists, time zones, names (keywords, case variants, the
200-character limit, duplicates), ids at the limits, files split with differing column sets and types, row groups
and codecs; and the values a target must read back for each, per docs/types.md."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from bluegreen_dagster.snapshots import Snapshot, snapshot_at

INT64_MAX = 2**63 - 1
ZONES = [None, "UTC", "America/New_York", "Europe/Berlin", "+05:30", "-03:00"]
KEYWORDS = ["from", "to", "match", "Return", "ORDER", "node", "type", "count", "where", "label"]
# A type family: one property has one family in every file; the exact type may differ per file within it.
FAMILIES = {
    "int": [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()],
    "float": [pa.float32(), pa.float64()],
    "bool": [pa.bool_()],
    "string": [pa.string(), pa.large_string(), "dict"],
    "date": [pa.date32(), pa.date64()],
    "timestamp": ["s", "ms", "us", "ns"],
    "list_int": [pa.list_(pa.int32()), pa.list_(pa.int64()), pa.large_list(pa.int64())],
    "list_string": [pa.list_(pa.string())],
    "list_date": [pa.list_(pa.date32())],
    "list_timestamp": [pa.list_(pa.timestamp("us"))],
    "null": [pa.null()],
}
REFUSED = {  # types no target stores as they are (docs/types.md, "Refused")
    "binary": pa.binary(), "decimal": pa.decimal128(10, 2), "struct": pa.struct([("a", pa.int64())]),
    "nested_list": pa.list_(pa.list_(pa.int64())), "time": pa.time64("us"),
}
INT_RANGE = {pa.int8(): (-2**7, 2**7 - 1), pa.int16(): (-2**15, 2**15 - 1), pa.int32(): (-2**31, 2**31 - 1),
             pa.int64(): (-2**63, INT64_MAX), pa.uint8(): (0, 2**8 - 1), pa.uint16(): (0, 2**16 - 1),
             pa.uint32(): (0, 2**32 - 1), pa.uint64(): (0, INT64_MAX)}


@dataclass
class Property:
    name: str
    family: str
    zone: str | None = None  # timestamps
    refused: str | None = None  # a REFUSED key: this column makes the snapshot invalid


@dataclass
class GeneratedSnapshot:
    nodes: list[pa.Table]
    relationships: list[pa.Table]
    properties: list[Property]
    # why every target must refuse it (None: every target in `stores` must store it exactly)
    refused: str | None = None
    # why the embedded target must refuse it too (nodes with several labels: schema_rules.py)
    refused_embedded: str | None = None
    codec: str = "snappy"
    row_group: int = 64
    notes: list[str] = field(default_factory=list)

    def write(self, base: Path, ts: int) -> Snapshot:
        snap = snapshot_at(base, "acme", ts)
        for sub, tables in (("nodes", self.nodes), ("relationships", self.relationships)):
            (snap.path / sub).mkdir(parents=True)
            for k, table in enumerate(tables):
                pq.write_table(table, snap.path / sub / f"part-{k}.parquet", compression=self.codec,
                               row_group_size=self.row_group)
        return snap


def names() -> st.SearchStrategy[str]:
    plain = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,12}", fullmatch=True)
    gds = {"nodeid", "labels", "sourcenodeid", "targetnodeid", "relationshiptype"}
    return st.one_of(plain, st.sampled_from(KEYWORDS), st.just("p" * 199), st.just("q" * 200)).filter(
        lambda name: name.lower() not in gds)


def _values(draw, prop: Property, arrow_type, n: int) -> pa.Array:
    nulls = st.booleans() if prop.family != "null" else st.just(True)
    missing = [draw(nulls) and draw(st.booleans()) for _ in range(n)]
    family = prop.family
    if prop.refused:
        t = REFUSED[prop.refused]
        return pa.nulls(n, t) if prop.refused != "binary" else pa.array([b"x"] * n, t)
    if family == "null":
        return pa.nulls(n)
    if family == "int":
        low, high = INT_RANGE[arrow_type]
        ints = st.one_of(st.integers(low, high), st.sampled_from([low, high, 0]).filter(lambda v: low <= v <= high))
        return pa.array([None if m else draw(ints) for m in missing], arrow_type)
    if family == "float":
        if arrow_type == pa.float32():
            floats = st.floats(width=32, allow_nan=True, allow_infinity=True)
        else:
            floats = st.floats(allow_nan=True, allow_infinity=True)
        return pa.array([None if m else draw(floats) for m in missing], arrow_type)
    if family == "bool":
        return pa.array([None if m else draw(st.booleans()) for m in missing], pa.bool_())
    if family == "string":
        text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)
        values = pa.array([None if m else draw(text) for m in missing], pa.large_string()
                          if arrow_type == pa.large_string() else pa.string())
        return values.dictionary_encode() if arrow_type == "dict" else values
    if family == "date":
        days = [None if m else draw(st.integers(-719_162, 2_932_896)) for m in missing]  # years 1..9999
        array = pa.array(days, pa.int32()).cast(pa.date32())
        return array.cast(arrow_type)
    if family == "timestamp":
        unit = arrow_type
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
        # years 1678..2261 keep ns in int64; on whole microseconds so the embedded target can store them
        seconds = st.integers(-9_000_000_000, 9_000_000_000)
        ticks = []
        for m in missing:
            if m:
                ticks.append(None)
                continue
            t = draw(seconds) * per_second
            if per_second > 1:
                t += draw(st.integers(0, per_second - 1)) // max(1, per_second // 10**6) * max(1, per_second // 10**6)
            ticks.append(t)
        return pa.array(ticks, pa.int64()).cast(pa.timestamp(unit, tz=prop.zone))
    if family.startswith("list_"):
        inner = {"list_int": st.integers(-2**63, INT64_MAX) if arrow_type.value_type == pa.int64()
                 else st.integers(-2**31, 2**31 - 1),
                 "list_string": st.text(max_size=4),
                 "list_date": st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)),
                 "list_timestamp": st.datetimes(dt.datetime(1700, 1, 1), dt.datetime(2200, 1, 1))}[family]
        lists = st.lists(st.one_of(st.none(), inner), max_size=3)
        return pa.array([None if m else draw(lists) for m in missing], arrow_type)
    raise AssertionError(family)


@st.composite
def snapshots(draw, allow_refused: bool = True, multi_label: bool = False) -> GeneratedSnapshot:
    """`multi_label`: some snapshots give nodes a second label (only the embedded target's strategy asks: Neo4j
    keeps every label; the embedded target must refuse them)."""
    n = draw(st.integers(1, 8))
    pool = [1, 2, 3, 10, 99, 2**31, 2**53 + 1, INT64_MAX]
    ids = draw(st.lists(st.sampled_from(pool) | st.integers(1, INT64_MAX), min_size=n, max_size=n, unique=True))
    labels = [[draw(st.sampled_from(["Person", "Company", "Thing"]))] for _ in ids]
    refused_embedded = None
    if multi_label and draw(st.integers(0, 4)) == 0:
        node = draw(st.integers(0, n - 1))
        labels[node] = draw(st.permutations([labels[node][0], "Extra"]))
        refused_embedded = "several labels"
    elif multi_label and draw(st.booleans()):
        node = draw(st.integers(0, n - 1))
        labels[node] = labels[node] * 2  # a repeated label is one label
    prop_names = draw(st.lists(names(), max_size=3, unique_by=str.lower))
    properties = []
    for name in prop_names:
        family = draw(st.sampled_from(sorted(FAMILIES)))
        properties.append(Property(name, family, zone=draw(st.sampled_from(ZONES)) if family == "timestamp"
                                   else None))
    refused = None
    if allow_refused and draw(st.integers(0, 4)) == 0:
        kind = draw(st.sampled_from(sorted(REFUSED)))
        properties.append(Property(f"bad_{kind}", "refused", refused=kind))
        refused = f"column 'bad_{kind}'"
    files = draw(st.integers(1, min(3, n)))
    cuts = sorted(draw(st.lists(st.integers(1, n - 1), min_size=files - 1, max_size=files - 1, unique=True))) \
        if n > 1 and files > 1 else []
    bounds = [0, *cuts, n]
    node_tables = []
    for k in range(len(bounds) - 1):
        rows = range(bounds[k], bounds[k + 1])
        columns = {"nodeId": pa.array([ids[i] for i in rows], pa.int64()),
                   "labels": pa.array([labels[i] for i in rows], pa.list_(pa.string()))}
        for prop in properties:
            if draw(st.booleans()) and not prop.refused and k > 0:
                continue  # this file leaves the column out
            arrow_type = draw(st.sampled_from(FAMILIES.get(prop.family, [None])))
            columns[prop.name] = _values(draw, prop, arrow_type, len(rows))
        node_tables.append(pa.table(columns))
    rel_count = draw(st.integers(0, 5))
    src = [draw(st.sampled_from(ids)) for _ in range(rel_count)]
    dst = [draw(st.sampled_from(ids)) for _ in range(rel_count)]
    rel = {"sourceNodeId": pa.array(src, pa.int64()), "targetNodeId": pa.array(dst, pa.int64()),
           "relationshipType": pa.array([draw(st.sampled_from(["KNOWS", "LIKES"])) for _ in src], pa.string())}
    if rel_count and draw(st.booleans()):
        rel[draw(st.sampled_from(["weight", "from", "to", "since"]))] = pa.array(
            [draw(st.one_of(st.none(), st.floats(-1e6, 1e6))) for _ in src], pa.float64())
    return GeneratedSnapshot(node_tables, [pa.table(rel)], properties, refused=refused,
                             refused_embedded=refused_embedded,
                             codec=draw(st.sampled_from(["snappy", "zstd", "gzip", "none", "lz4", "brotli"])),
                             row_group=draw(st.sampled_from([1, 2, 64])))


# ---------------------------------------------------------------------------------------------------------------
# The values a target must read back


def expected_nodes(snapshot: GeneratedSnapshot) -> dict[tuple[int, str], object]:
    """(nodeId, property) -> the value as docs/types.md says every target reads it back (normalised by `same`)."""
    out: dict[tuple[int, str], object] = {}
    for table in snapshot.nodes:
        ids = table.column("nodeId").to_pylist()
        for name in table.schema.names:
            if name in ("nodeId", "labels"):
                continue
            for node_id, value in zip(ids, values_of(table.column(name).combine_chunks()), strict=True):
                out[(node_id, name)] = value
    return out


def values_of(column: pa.Array) -> list:
    """Python values, timestamps as (nanoseconds since epoch UTC, zoned?) so every unit and target compares."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    t = column.type
    if pa.types.is_timestamp(t):
        scale = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[t.unit]
        return [None if v is None else ("ts", v * scale, t.tz is not None) for v in column.cast(pa.int64()).to_pylist()]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = values_of(column.flatten()) if len(column) else []
        out, at = [], 0
        for v in column.to_pylist():
            if v is None:
                out.append(None)
            else:
                out.append(inner[at:at + len(v)])
                at += len(v)
        return out
    if pa.types.is_float32(t):
        return [None if v is None else float(v) for v in column.to_pylist()]
    return column.to_pylist()


def normalised(value: object) -> object:
    """A value read from a target, in the form `values_of` gives."""
    if isinstance(value, dt.datetime):
        aware = value.tzinfo is not None
        base = value if aware else value.replace(tzinfo=dt.UTC)
        delta = base - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        return ("ts", (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000, aware)
    to_native = getattr(value, "to_native", None)
    if to_native is not None:  # neo4j.time types
        native = to_native()
        if isinstance(native, dt.datetime):
            kind, ns, aware = normalised(native)
            return kind, ns + getattr(value, "nanosecond", 0) % 1000, aware
        return native
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def same(expected: object, actual: object) -> bool:
    """Equal values of equal types (bool is not int, int is not float); NaN equals NaN."""
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(same(e, a) for e, a in zip(expected, actual, strict=True))
    if isinstance(expected, float) and isinstance(actual, float) and math.isnan(expected):
        return math.isnan(actual)
    if isinstance(expected, dt.date) and not isinstance(expected, dt.datetime):
        return type(actual) is dt.date and expected == actual
    return type(expected) is type(actual) and expected == actual
