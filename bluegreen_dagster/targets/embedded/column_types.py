"""Arrow column types -> LadybugDB column types, and the type two files' versions of one column share."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from bluegreen_dagster.columns import is_list


@dataclass(frozen=True)
class ColumnType:
    ddl: str  # LadybugDB type in CREATE TABLE
    arrow: pa.DataType  # what the column is cast to before COPY


STRING = ColumnType("STRING", pa.string())

_INTEGERS = {
    pa.int8(): "INT8", pa.int16(): "INT16", pa.int32(): "INT32", pa.int64(): "INT64",
    pa.uint8(): "UINT8", pa.uint16(): "UINT16", pa.uint32(): "UINT32", pa.uint64(): "UINT64",
}
_FLOATS = {"FLOAT", "DOUBLE"}
_UNIT_RANK = {"s": 0, "ms": 1, "us": 2, "ns": 3}
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
        return STRING
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


def merge_types(a: ColumnType, b: ColumnType) -> ColumnType | None:
    """The type two files' versions of one column share without changing a value, or None when they conflict:
    integers of any width -> INT64, floats -> DOUBLE, timestamp units -> the finer, lists by their elements.
    An integer and a float are not merged (schema_rules.py refuses them for every target)."""
    if a == b:
        return a
    if a.ddl in _INTEGERS.values() and b.ddl in _INTEGERS.values():
        return ColumnType("INT64", pa.int64())
    if a.ddl in _FLOATS and b.ddl in _FLOATS:
        return ColumnType("DOUBLE", pa.float64())
    timestamps = pa.types.is_timestamp(a.arrow) and pa.types.is_timestamp(b.arrow)
    if timestamps and (a.arrow.tz is None) == (b.arrow.tz is None):
        return a if _UNIT_RANK[a.arrow.unit] >= _UNIT_RANK[b.arrow.unit] else b
    if pa.types.is_list(a.arrow) and pa.types.is_list(b.arrow):
        inner = merge_types(ColumnType(a.ddl[:-2], a.arrow.value_type), ColumnType(b.ddl[:-2], b.arrow.value_type))
        return None if inner is None else ColumnType(f"{inner.ddl}[]", pa.list_(inner.arrow))
    return None
