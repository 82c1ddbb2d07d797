"""The cheap value check verification adds to the counts: per label and relationship type, per property, the number
of non-null values and, for integers, floats (without NaN), dates and timestamps, the smallest and largest value.

The snapshot side is one pass over the files (`snapshot_stats`, cached with the counts in `snapshots.py`); each
target answers `GraphTarget.value_stats` from its database. A stored value that differs from the file (a shifted
time, a property loaded as NULL) changes a count or a bound, and `bluegreen.verify` blocks the switch.

Values are compared as numbers: integers and floats as they are, dates as days since 1970-01-01 and timestamps as
nanoseconds since 1970-01-01 UTC (a naive timestamp as if it were UTC), so every target's own types compare.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from bluegreen_dagster.columns import LABELS, NODE_COLUMNS, NODE_ID, REL_TYPE, RELATIONSHIP_COLUMNS, SOURCE_ID
from bluegreen_dagster.columns import TARGET_ID, decoded, labels_as_list_array
from bluegreen_dagster.names import printable

# (kind, name, property): kind is "label" or "type"
Key = tuple[str, str, str]
_NANOS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_EPOCH_DAY = dt.date(1970, 1, 1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class PropertyStats:
    count: int  # non-null values
    low: int | float | None = None  # None: not compared (strings, booleans, lists, floats with NaN, no value)
    high: int | float | None = None

    def merged(self, other: PropertyStats) -> PropertyStats:
        low = other.low if self.low is None else self.low if other.low is None else min(self.low, other.low)
        high = other.high if self.high is None else self.high if other.high is None else max(self.high, other.high)
        return PropertyStats(self.count + other.count, low, high)


ValueStats = dict[Key, PropertyStats]


def ranged(t: pa.DataType) -> bool:
    """Whether min and max of this (decoded, not dictionary) type are compared."""
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_date(t)
            or pa.types.is_timestamp(t))


def column_stats(column: pa.Array) -> PropertyStats:
    """Non-null count and, where compared, the bounds of one column."""
    column = decoded(column)
    count = len(column) - column.null_count
    if not count or not ranged(column.type):
        return PropertyStats(count)
    t = column.type
    if pa.types.is_floating(t):
        if pc.any(pc.is_nan(column)).as_py():
            return PropertyStats(count)
        bounds = pc.min_max(column.cast(pa.float64()))
        return PropertyStats(count, bounds["min"].as_py(), bounds["max"].as_py())
    if pa.types.is_date(t):
        bounds = pc.min_max(column.cast(pa.date32(), safe=False).cast(pa.int32()))  # a time of day: refused
        return PropertyStats(count, bounds["min"].as_py(), bounds["max"].as_py())
    if pa.types.is_timestamp(t):
        bounds = pc.min_max(column.cast(pa.int64()))
        scale = _NANOS[t.unit]
        return PropertyStats(count, bounds["min"].as_py() * scale, bounds["max"].as_py() * scale)
    bounds = pc.min_max(column)
    return PropertyStats(count, bounds["min"].as_py(), bounds["max"].as_py())


def comparable(value: object) -> int | float | None:
    """A value read from a database, as `column_stats` counts it (see the module docstring)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, dt.datetime):
        return _nanos(value, 0)
    if isinstance(value, dt.date):
        return (value - _EPOCH_DAY).days
    to_native = getattr(value, "to_native", None)  # neo4j.time.DateTime / Date: nanoseconds kept
    if to_native is not None:
        native = to_native()
        if isinstance(native, dt.datetime):
            return _nanos(native, getattr(value, "nanosecond", 0) % 1000)
        if isinstance(native, dt.date):
            return (native - _EPOCH_DAY).days
    return None


def _nanos(value: dt.datetime, extra_nanos: int) -> int:
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    delta = aware - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000 + extra_nanos


def snapshot_stats(node_files: list[Path], relationship_files: list[Path], batch_rows: int = 65_536) -> ValueStats:
    """One pass over the files: per (label or type, property), what `column_stats` counts. A node counts once for
    each distinct label it carries, as in the label counts."""
    from bluegreen_dagster.reading import iter_batches  # reading.py builds GraphCounts from this module

    stats: ValueStats = {}
    for _, batch in iter_batches(node_files, NODE_COLUMNS, batch_rows):
        properties = [name for name in batch.schema.names if name not in (NODE_ID, LABELS)]
        if not properties:
            continue
        labels = labels_as_list_array(batch.column(LABELS))
        keys = pc.fill_null(pc.binary_join(labels, "\x1f"), "").dictionary_encode()
        codes = keys.indices
        for code, key in enumerate(keys.dictionary.to_pylist()):
            label_set = sorted(set(key.split("\x1f"))) if key else []
            if not label_set:
                continue
            rows = batch if len(keys.dictionary) == 1 else batch.filter(pc.equal(codes, code))
            _add(stats, (("label", label) for label in label_set), rows, properties)
    for _, batch in iter_batches(relationship_files, RELATIONSHIP_COLUMNS, batch_rows):
        properties = [name for name in batch.schema.names if name not in (SOURCE_ID, TARGET_ID, REL_TYPE)]
        if not properties:
            continue
        types = decoded(batch.column(REL_TYPE)).dictionary_encode()
        for code, rel_type in enumerate(types.dictionary.to_pylist()):
            rows = batch if len(types.dictionary) == 1 else batch.filter(pc.equal(types.indices, code))
            _add(stats, [("type", rel_type)], rows, properties)
    return stats


def _add(stats: ValueStats, owners: Iterable[tuple[str, str]], rows: pa.RecordBatch, properties: list[str]) -> None:
    per_column = {name: column_stats(rows.column(name)) for name in properties}
    for kind, owner in owners:
        for name, found in per_column.items():
            key = (kind, owner, name)
            stats[key] = stats[key].merged(found) if key in stats else found


def differences(expected: ValueStats, actual: ValueStats) -> list[str]:
    """Human-readable differences, one per (label or type, property); empty when every value check matches."""
    out = []
    for key in sorted(expected):
        want, got = expected[key], actual.get(key, PropertyStats(0))
        kind, owner, name = key
        where = f"{kind} {printable(owner)} property {printable(name)}"
        if want.count != got.count:
            out.append(f"{where}: expected {want.count} values, found {got.count}")
        elif want.low is not None and (want.low, want.high) != (got.low, got.high):
            out.append(f"{where}: expected values from {want.low} to {want.high}, found {got.low} to {got.high}")
    return out
