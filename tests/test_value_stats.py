"""The snapshot side of verification's value check (bluegreen_dagster/value_stats.py): what is counted and bounded
per label or relationship type and property, over several files and batches, and the differences a user reads when
a database does not match. tests/test_fidelity_verify.py checks the same against a loaded database."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bluegreen_dagster.value_stats import PropertyStats, column_stats, comparable, differences, snapshot_stats

DAY = 86_400 * 10**9  # nanoseconds


def write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def nodes(ids, labels, **properties) -> pa.Table:
    return pa.table({"nodeId": pa.array(ids, pa.int64()), "labels": labels, **properties})


def rels(types, **properties) -> pa.Table:
    n = len(types)
    return pa.table({"sourceNodeId": pa.array(range(n), pa.int64()), "targetNodeId": pa.array(range(n), pa.int64()),
                     "relationshipType": pa.array(types), **properties})


@pytest.mark.parametrize("column, expected", [
    (pa.array([3, None, -7, 5], pa.int16()), PropertyStats(3, -7, 5)),
    (pa.array([3, 1, 2]).dictionary_encode(), PropertyStats(3, 1, 3)),
    (pa.array([2.5, None, -1.0], pa.float32()), PropertyStats(2, -1.0, 2.5)),
    (pa.array([1.0, math.nan, 3.0]), PropertyStats(3)),  # NaN: counted, not bounded
    (pa.array(["b", "a", None]), PropertyStats(2)),
    (pa.array([True, False, None]), PropertyStats(2)),
    (pa.array([None, None], pa.int64()), PropertyStats(0)),
    (pa.array([], pa.int64()), PropertyStats(0)),
    (pa.array([dt.date(1970, 1, 2), dt.date(1969, 12, 31)], pa.date32()), PropertyStats(2, -1, 1)),
    (pa.array([dt.date(2000, 1, 1)], pa.date64()), PropertyStats(1, 10957, 10957)),
    (pa.array([86_400_000 + 3_600_000], pa.date64()), PropertyStats(1, 1, 1)),  # a time of day: the day counts
    (pa.array([1, 2], pa.timestamp("s")), PropertyStats(2, 10**9, 2 * 10**9)),
    (pa.array([1, 2], pa.timestamp("ms")), PropertyStats(2, 10**6, 2 * 10**6)),
    (pa.array([1, 2], pa.timestamp("us", tz="UTC")), PropertyStats(2, 1000, 2000)),
    (pa.array([-1, 2], pa.timestamp("ns")), PropertyStats(2, -1, 2)),
])
def test_column_stats_counts_non_null_values_and_bounds_numbers_dates_and_times(column, expected) -> None:
    got = column_stats(column)
    assert got == expected
    assert type(got.low) is type(expected.low) and type(got.high) is type(expected.high)


@pytest.mark.parametrize("value, expected", [
    (None, None), (True, None), (False, None), ("1", None), ([1], None), (7, 7), (-2.5, -2.5),
    (dt.date(1969, 12, 31), -1), (dt.date(1970, 1, 1), 0),
    (dt.datetime(1970, 1, 1, 0, 0, 1, 5), 10**9 + 5000),
    (dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=dt.UTC), -(10**9)),
    (dt.datetime(1970, 1, 2, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))), DAY),
])
def test_a_database_value_compares_as_the_file_counts_it(value, expected) -> None:
    assert comparable(value) == expected


def test_a_driver_time_without_nanoseconds_counts_its_microseconds() -> None:
    class Stamp:  # a driver type that converts to a datetime but keeps no nanoseconds of its own
        def to_native(self):
            return dt.datetime(1970, 1, 1, 0, 0, 0, 7, tzinfo=dt.UTC)

    assert comparable(Stamp()) == 7000


def test_a_driver_value_whose_native_form_is_neither_date_nor_time_is_not_compared() -> None:
    class Duration:
        def to_native(self):
            return dt.timedelta(days=1)

    assert comparable(Duration()) is None


def test_merged_adds_counts_and_widens_bounds_on_either_side() -> None:
    a, b = PropertyStats(2, 1, 5), PropertyStats(3, -4, 3)
    assert a.merged(b) == PropertyStats(5, -4, 5) and b.merged(a) == PropertyStats(5, -4, 5)
    assert PropertyStats(3, 0, 9).merged(PropertyStats(1, 10, 12)) == PropertyStats(4, 0, 12)
    assert PropertyStats(1).merged(PropertyStats(2, 3, 4)) == PropertyStats(3, 3, 4)
    assert PropertyStats(2, 3, 4).merged(PropertyStats(1)) == PropertyStats(3, 3, 4)
    assert PropertyStats(1).merged(PropertyStats(1)) == PropertyStats(2)


def test_snapshot_stats_per_label_and_type_across_files_and_batches(tmp_path: Path) -> None:
    node_files = [
        write(tmp_path / "nodes" / "c.parquet", nodes([8], pa.array(["Person"]))),  # no properties: skipped
        write(tmp_path / "nodes" / "a.parquet", nodes(
            [1, 2, 3, 4, 5],
            pa.array([["Person"], ["Person", "Admin", "Person"], [], None, ["Admin"]], pa.list_(pa.string())),
            age=pa.array([30, 40, 50, 60, None], pa.int64()), name=pa.array(["a", "b", "c", "d", "e"]))),
        write(tmp_path / "nodes" / "b.parquet", nodes(
            [6, 7], pa.array(["Person", ""]), age=pa.array([20, 99], pa.int64()))),
        write(tmp_path / "nodes" / "d.parquet", nodes(
            [9, 10], pa.array([["Person"], None], pa.list_(pa.string())), age=pa.array([25, 99], pa.int64()))),
        write(tmp_path / "nodes" / "e.parquet", nodes(
            [11, 12], pa.array([["Big City"], ["Big City", "Person"]], pa.list_(pa.string())),
            age=pa.array([1, 2], pa.int64()))),
    ]
    rel_files = [
        write(tmp_path / "relationships" / "t.parquet", rels(["KNOWS"])),  # no properties: skipped
        write(tmp_path / "relationships" / "r.parquet", rels(
            ["KNOWS", "LIKES", "KNOWS"], since=pa.array([2001, 1999, None], pa.int64()))),
        write(tmp_path / "relationships" / "s.parquet", rels(["KNOWS"], since=pa.array([2020], pa.int64()))),
    ]
    expected = {
        # node 2 counts once although it says Person twice; nodes without a label (4, 7, 10) count nowhere
        ("label", "Person", "age"): PropertyStats(5, 2, 40),
        ("label", "Big City", "age"): PropertyStats(2, 1, 2),
        ("label", "Person", "name"): PropertyStats(2),
        ("label", "Admin", "age"): PropertyStats(1, 40, 40),
        ("label", "Admin", "name"): PropertyStats(2),
        ("type", "KNOWS", "since"): PropertyStats(2, 2001, 2020),
        ("type", "LIKES", "since"): PropertyStats(1, 1999, 1999),
    }
    for batch_rows in (1, 2, 65_536):  # one row per batch merges everything
        assert snapshot_stats(node_files, rel_files, batch_rows=batch_rows) == expected
    assert snapshot_stats(node_files, rel_files) == expected


def test_one_label_or_type_per_file_reads_every_row(tmp_path: Path) -> None:
    node_files = [write(tmp_path / "n.parquet", nodes([1, 2], pa.array(["City", "City"]),
                                                      pop=pa.array([5, 7], pa.int32())))]
    rel_files = [write(tmp_path / "r.parquet", rels(["IN", "IN"], km=pa.array([1.5, 0.5])))]
    assert snapshot_stats(node_files, rel_files) == {("label", "City", "pop"): PropertyStats(2, 5, 7),
                                                     ("type", "IN", "km"): PropertyStats(2, 0.5, 1.5)}


def test_differences_say_which_property_of_which_label_differs_and_how() -> None:
    expected = {
        ("type", "KNOWS", "since"): PropertyStats(2, 2001, 2020),
        ("label", "Person", "age"): PropertyStats(3, 20, 40),
        ("label", "Person", "name"): PropertyStats(2),
        ("label", "Odd\nOne", "x\ty"): PropertyStats(1),
        ("label", "Same", "n"): PropertyStats(1, 1, 1),
    }
    actual = {
        ("type", "KNOWS", "since"): PropertyStats(2, 2001, 2021),
        ("label", "Person", "age"): PropertyStats(2, 20, 40),
        ("label", "Person", "name"): PropertyStats(2, 1, 1),  # bounds of an uncompared property are ignored
        ("label", "Same", "n"): PropertyStats(1, 1, 1),
    }
    assert differences(expected, actual) == [
        "label Odd\\nOne property x\\ty: expected 1 values, found 0",
        "label Person property age: expected 3 values, found 2",
        "type KNOWS property since: expected values from 2001 to 2020, found 2001 to 2021",
    ]
    assert differences(expected, {**actual, ("type", "KNOWS", "since"): PropertyStats(2, 2000, 2020)})[-1] == (
        "type KNOWS property since: expected values from 2001 to 2020, found 2000 to 2020")
    assert differences(expected, expected) == []
