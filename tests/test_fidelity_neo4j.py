"""The Cypher loader stores every value as the snapshot has it (docs/types.md): named time zones through the
driver's packstream path in fresh processes, and round trips through a real Neo4j Community 5.26."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import neo4j
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.snapshots import snapshot_at
from bluegreen_dagster.targets.neo4j.cypher_loader import CypherLoader
from tests.test_neo4j_community import empty_neo4j, target  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent

# One process packs a 3-row named-zone column the way the driver sends parameters and prints what it sent.
# Before the fix, the same snapshot segfaulted the process in about half of the runs, raised "utcoffset must be a
# whole number of minutes" or sent an offset one hour off: CPython's C zoneinfo read the driver's own DateTime as
# if it were a datetime.
PACK_SCRIPT = textwrap.dedent("""
    import datetime as dt, io, pyarrow as pa
    from neo4j._codec.hydration.bolt.v2.hydration_handler import HydrationHandler
    from neo4j._codec.packstream.v1 import Packer
    from bluegreen_dagster.targets.neo4j.cypher_loader import _values
    instants = [dt.datetime(2024, 3, 10, 6, 30, tzinfo=dt.UTC), dt.datetime(2024, 11, 3, 5, 30, tzinfo=dt.UTC),
                dt.datetime(2024, 11, 3, 6, 30, tzinfo=dt.UTC)]
    hooks = HydrationHandler().new_hydration_scope().dehydration_hooks
    for zone in ("America/New_York", "Europe/Berlin"):
        values = _values(pa.array(instants, pa.timestamp("us", tz=zone)))
        for value in values:
            struct = hooks.get_transformer(value)(value)
            Packer(io.BytesIO()).pack(value, dehydration_hooks=hooks)
            print(zone, struct.tag, *struct.fields)
""")


@pytest.mark.fidelity
def test_named_time_zones_pack_the_same_in_50_fresh_processes():
    expected = "\n".join(f"{zone} b'i' {seconds} 0 {zone}" for zone in ("America/New_York", "Europe/Berlin")
                         for seconds in (1710052200, 1730611800, 1730615400))
    for run in range(50):
        done = subprocess.run([sys.executable, "-c", PACK_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, f"run {run}: exit {done.returncode}\n{done.stderr[-2000:]}"
        assert done.stdout.strip() == expected, f"run {run}"


def write(tmp_path: Path, nodes: dict[str, pa.Table], rels: dict[str, pa.Table] | None = None):
    snap = snapshot_at(tmp_path / "data", "acme", 3000)
    (snap.path / "nodes").mkdir(parents=True)
    (snap.path / "relationships").mkdir(parents=True)
    for name, table in nodes.items():
        pq.write_table(table, snap.path / "nodes" / f"{name}.parquet")
    rels = rels or {"k": pa.table({"sourceNodeId": pa.array([1], pa.int64()), "targetNodeId": pa.array([1], pa.int64()),
                                   "relationshipType": ["KNOWS"]})}
    for name, table in rels.items():
        pq.write_table(table, snap.path / "relationships" / f"{name}.parquet")
    return snap


def nodes_table(n: int, **extra) -> pa.Table:
    return pa.table({"nodeId": pa.array(range(1, n + 1), pa.int64()), "labels": pa.array(["Person"] * n), **extra})


def read(target, prop: str) -> list:  # noqa: F811
    rows = target.admin.run(f"MATCH (p:Person) RETURN p.`{prop}` AS v ORDER BY p.nodeId", database="neo4j")
    return [row["v"] for row in rows]


@pytest.mark.neo4j_community
def test_named_time_zones_round_trip_on_community(empty_neo4j, target, tmp_path):  # noqa: F811
    instants = [dt.datetime(2024, 3, 10, 6, 30, tzinfo=dt.UTC), dt.datetime(2024, 11, 3, 5, 30, tzinfo=dt.UTC),
                None]
    snap = write(tmp_path, {"p": nodes_table(3, ny=pa.array(instants, pa.timestamp("us", tz="America/New_York")),
                                             ns=pa.array([1, 1_000_000_001, None], pa.timestamp("ns", tz="+05:30")),
                                             local=pa.array([1, 2, 3], pa.timestamp("ms")))})
    CypherLoader(target.admin, 100).write("neo4j", snap)
    ny = read(target, "ny")
    assert [v.to_native() if v else None for v in ny] == instants
    assert [v.tzinfo.zone for v in ny[:2]] == ["America/New_York"] * 2  # the zone is kept by name
    assert [v.utcoffset() for v in ny[:2]] == [dt.timedelta(hours=-5), dt.timedelta(hours=-4)]
    ns = read(target, "ns")
    assert [(v.to_native().astimezone(dt.UTC), v.nanosecond) for v in ns[:2]] == [
        (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), 1), (dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC), 1)]
    assert ns[2] is None
    assert [v.to_native() for v in read(target, "local")] == [
        dt.datetime(1970, 1, 1, 0, 0, 0, 1000 * k) for k in (1, 2, 3)]
    assert all(isinstance(v, neo4j.time.DateTime) and v.tzinfo is None for v in read(target, "local"))


@pytest.mark.neo4j_community
def test_valid_types_the_cypher_loader_used_to_refuse_are_stored(empty_neo4j, target, tmp_path):  # noqa: F811
    snap = write(tmp_path, {"p": nodes_table(
        2, nothing=pa.nulls(2), days=pa.array([[dt.date(2024, 1, 2), None], []], pa.list_(pa.date32())),
        times=pa.array([[dt.datetime(2024, 1, 2, 3, 4, 5, 6)], None], pa.list_(pa.timestamp("us"))))})
    CypherLoader(target.admin, 100).write("neo4j", snap)
    assert read(target, "nothing") == [None, None]
    assert read(target, "days") == [[neo4j.time.Date(2024, 1, 2)], []]
    assert [[v.to_native() for v in row] if row is not None else None for row in read(target, "times")] == [
        [dt.datetime(2024, 1, 2, 3, 4, 5, 6)], None]


@pytest.mark.parametrize("column, message", [
    (pa.array([1, 2**63], pa.uint64()), "'big' holds 9223372036854775808, above 2^63-1"),
    (pa.array([[1], [2**64 - 1]], pa.list_(pa.uint64())), "'big' holds 18446744073709551615, above 2^63-1"),
])
def test_uint64_above_int64_is_refused_before_the_database_exists(tmp_path, column, message):
    snap = write(tmp_path, {"p": nodes_table(2, big=column)})
    with pytest.raises(SnapshotError, match=re.escape(message)) as caught:
        CypherLoader.check(snap)
    assert "p.parquet" in str(caught.value)


def test_duplicate_columns_are_refused_before_the_database_exists(tmp_path):
    table = pa.table([pa.array([1, 2], pa.int64()), pa.array(["Person"] * 2), pa.array([1, 2]), pa.array([3, 4])],
                     names=["nodeId", "labels", "age", "age"])
    snap = write(tmp_path, {"p": table})
    with pytest.raises(SnapshotError, match=r"p\.parquet: column 'age' appears 2 times"):
        CypherLoader.check(snap)


def test_neo4j_target_checks_before_create_database(tmp_path, monkeypatch):
    """`Neo4jTarget.load` with the Cypher loader refuses bad input before CREATE DATABASE is sent."""
    from bluegreen_dagster.targets.neo4j import target as neo4j_target

    snap = write(tmp_path, {"p": nodes_table(2, big=pa.array([1, 2**63], pa.uint64()))})
    created = []

    class FakeAdmin:
        def database_status(self, name):
            return None

        def create_database(self, name):
            created.append(name)

    t = neo4j_target.Neo4jTarget.__new__(neo4j_target.Neo4jTarget)
    t.admin = FakeAdmin()
    t.neo4j = type("S", (), {"loader": "cypher", "batch_size": 10})()
    with pytest.raises(SnapshotError, match="2\\^63-1"):
        t.load(snap)
    assert created == []


# ---------------------------------------------------------------------------------------------------------------
# The GDS Arrow path, against the stand-in (tests/standin, which follows the GDS docs)

from bluegreen_dagster.targets.neo4j.target import Neo4jTarget  # noqa: E402
from tests.helpers import standin_settings as make_settings  # noqa: E402
from tests.test_neo4j_standin import (  # noqa: E402
    knows_table,
    load_with_both_loaders,
    people_table,
    write_parquet_snapshot,
)


def test_an_all_null_column_is_no_property_on_both_neo4j_loaders(standin, tmp_path):  # noqa: F811
    arrow_settings = make_settings(standin, tmp_path)
    nodes = people_table(age=pa.array([1, 2, 3, 4]), nothing=pa.nulls(4))
    snap = write_parquet_snapshot(arrow_settings, 100, [nodes], [knows_table()])
    arrow, cypher = load_with_both_loaders(standin, tmp_path, arrow_settings, snap)
    assert cypher == arrow
    assert arrow[0][1] == (("Person",), {"age": 1})


@pytest.mark.parametrize("loader", ["arrow", "cypher"])
@pytest.mark.parametrize("column, needles", [
    (pa.array([1, 2, 3, 2**63], pa.uint64()), ("'big' holds 9223372036854775808", "2^63-1")),
    ("dup", ("'age' appears 2 times",)),
])
def test_neo4j_loaders_refuse_before_create_naming_file_and_column(standin, tmp_path, loader, column,  # noqa: F811
                                                                  needles):
    settings = make_settings(standin, tmp_path, loader=loader)
    if column == "dup":
        table = pa.table([pa.array([1, 2, 3, 4], pa.int64()), pa.array(["Person"] * 4), pa.array([1] * 4),
                          pa.array([2] * 4)], names=["nodeId", "labels", "age", "age"])
    else:
        table = people_table(big=column)
    snap = write_parquet_snapshot(settings, 100, [table], [knows_table()])
    with Neo4jTarget(settings, poll_interval=0.01) as t:
        with pytest.raises(SnapshotError) as info:
            t.load(snap)
    assert "part-0.parquet" in str(info.value)
    for needle in needles:
        assert needle in str(info.value)
    assert not standin.dbms.events_of("v1/CREATE_DATABASE")
    assert "acme-100" not in standin.dbms.databases


@pytest.mark.neo4j_community
def test_value_check_on_community_sees_a_time_one_hour_off(empty_neo4j, target, tmp_path):  # noqa: F811
    from bluegreen_dagster import value_stats
    from bluegreen_dagster.snapshots import expected_counts

    instants = [dt.datetime(2024, 3, 10, 6, 30, tzinfo=dt.UTC), dt.datetime(2024, 11, 3, 5, 30, tzinfo=dt.UTC)]
    snap = write(tmp_path, {"p": nodes_table(2, at=pa.array(instants, pa.timestamp("us", tz="America/New_York")),
                                             age=pa.array([30, None]))})
    CypherLoader(target.admin, 100).write("neo4j", snap)
    expected = expected_counts(snap).values
    assert value_stats.differences(expected, target.value_stats("neo4j", expected)) == []
    # what the driver bug stored in some runs: the same wall-clock time, one hour off as an instant
    target.admin.run("MATCH (p:Person {nodeId: 2}) SET p.at = datetime('2024-11-03T01:30:00-05:00')",
                     database="neo4j")
    assert value_stats.differences(expected, target.value_stats("neo4j", expected)) == [
        "label Person property at: expected values from 1710052200000000000 to 1730611800000000000, found "
        "1710052200000000000 to 1730615400000000000"]


def test_value_check_on_the_standin_blocks_a_lost_value(standin, tmp_path):  # noqa: F811
    from bluegreen_dagster.bluegreen import VerificationFailed, verify
    from bluegreen_dagster.snapshots import expected_counts

    settings = make_settings(standin, tmp_path, loader="cypher")
    snap = write_parquet_snapshot(settings, 100, [people_table(age=pa.array([1, 2, 3, 4]))], [knows_table()])
    with Neo4jTarget(settings, poll_interval=0.01) as t:
        t.load(snap)
        verify(t, "acme-100", expected_counts(snap))
        graph = standin.dbms.databases["acme-100"].graph
        next(props for props in graph.node_properties.values() if props.get("age") == 4).pop("age")
        with pytest.raises(VerificationFailed, match="label Person property age: expected 4 values, found 3"):
            verify(t, "acme-100", expected_counts(snap))
