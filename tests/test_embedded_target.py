"""Loading snapshots into the embedded LadybugDB target, against real database files."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pytest

from bluegreen_dagster.config import parse_settings
from bluegreen_dagster.names import SnapshotError
from bluegreen_dagster.snapshots import expected_counts
from bluegreen_dagster.targets.base import PermanentTargetError
from bluegreen_dagster.targets.embedded import EmbeddedTarget, database
from tests.embedded_helpers import (
    assert_nothing_left,
    custom,
    demo,
    knows,
    make_target,
    people,
    query,
    store_files,
)


def test_load_counts_match_snapshot_and_alias_is_queryable(tmp_path):
    snap = demo(tmp_path)
    target = make_target(tmp_path)

    report = target.load(snap)

    expected = expected_counts(snap)
    assert not report.reused
    assert list(report.phases) == ["plan", "staging", "copy"]
    assert 0 < sum(report.phases.values()) <= report.seconds
    assert (report.nodes, report.relationships) == (expected.nodes, expected.relationships)
    assert report.bytes_read == snap.size_bytes
    assert target.count(snap.key) == expected
    assert expected.differences(target.count(snap.key)) == []
    assert store_files(target) == {"databases": [f"{snap.key}.lbug"], "loading": []}

    assert target.reader_location("acme") is None
    target.point_alias("acme", snap.key)
    location = target.reader_location("acme")
    assert location == str(target.root / "aliases" / "acme.lbug")
    assert query(location, "MATCH (a:Person)-[:KNOWS]->(b) RETURN count(*)") == [[expected.types["KNOWS"]]]
    assert query(location, "MATCH (a:Person)-[:WORKS_AT]->(c:Company) RETURN count(*)") == [[expected.types["WORKS_AT"]]]
    # properties survive with their types
    (name, age, score), = query(location, "MATCH (p:Person) WHERE p.nodeId = 1 RETURN p.name, p.age, p.score")
    assert isinstance(name, str) and isinstance(age, int) and isinstance(score, float)


def test_multi_label_nodes_are_refused_before_any_database_exists(tmp_path):
    # LadybugDB keeps a node in one table: `MATCH (n:Employee)` could not find a Person+Employee node stored under
    # Person, so the load refuses it (schema_rules.py) instead of answering per label differently from Neo4j.
    snap = custom(tmp_path, {
        "p": people([1, 2, 3], [["Person"], ["Person", "Employee"], ["Employee", "Person", "Employee"]]),
    }, {"k": knows([1], [2])})
    target = make_target(tmp_path)
    files_before = sorted(snap.path.rglob("*"))
    with pytest.raises(SnapshotError) as caught:
        target.load(snap)
    message = str(caught.value)
    assert "p.parquet" in message and "2 node(s) have several labels" in message
    assert "nodeId 2: ['Person', 'Employee']" in message
    assert "one label per node" in message and "target: neo4j" in message
    assert_nothing_left(target, snap, files_before)


def test_a_repeated_label_is_one_label_and_reads_per_label(tmp_path):
    snap = custom(tmp_path, {
        "p": people([1, 2, 3], [["Person"], ["Person", "Person"], ["Employee"]]),
        "c": pa.table({"nodeId": pa.array([10], pa.int64()), "labels": pa.array(["Company"]).dictionary_encode()}),
    }, {"k": knows([1, 3], [2, 10], "WORKS_WITH")})
    target = make_target(tmp_path)
    target.load(snap)

    counts = target.count(snap.key)
    assert counts == expected_counts(snap)
    assert counts.labels == {"Person": 2, "Employee": 1, "Company": 1}
    path = str(target.database_path(snap.key))
    # every label reads like Neo4j: each node under its label, each node once under MATCH (n)
    assert query(path, "MATCH (n:Person) RETURN n.nodeId ORDER BY n.nodeId") == [[1], [2]]
    assert query(path, "MATCH (n:Employee) RETURN n.nodeId") == [[3]]
    assert query(path, "MATCH (n) RETURN count(*)") == [[4]]
    # one rel table with both FROM/TO pairs that occur
    assert query(path, "MATCH ()-[r:WORKS_WITH]->() RETURN count(*)") == [[2]]
    assert query(path, "MATCH (:Employee)-[:WORKS_WITH]->(c:Company) RETURN c.nodeId") == [[10]]


def test_second_load_is_reused_and_stale_partial_is_replaced(tmp_path):
    snap = demo(tmp_path)
    target = make_target(tmp_path)
    target.root.joinpath("loading").mkdir(parents=True)
    stale = target.root / "loading" / f"{snap.key}.lbug"
    stale.write_bytes(b"half a database from a crashed run")
    (target.root / "loading" / f"{snap.key}.lbug.wal").write_bytes(b"wal")

    first = target.load(snap)
    assert not first.reused
    assert store_files(target) == {"databases": [f"{snap.key}.lbug"], "loading": []}
    mtime = target.database_path(snap.key).stat().st_mtime_ns

    second = target.load(snap)
    assert second.reused
    assert (second.nodes, second.relationships) == (first.nodes, first.relationships)
    assert target.database_path(snap.key).stat().st_mtime_ns == mtime


def test_corrupt_parquet_fails_cleanly(tmp_path):
    snap = demo(tmp_path)
    bad = snap.path / "relationships" / "zzz-corrupt.parquet"
    bad.write_bytes(b"this is not parquet at all" * 10)
    before = sorted(snap.path.rglob("*"))
    target = make_target(tmp_path)

    with pytest.raises(SnapshotError, match="zzz-corrupt.parquet"):
        target.load(snap)
    assert_nothing_left(target, snap, before)
    assert bad.read_bytes().startswith(b"this is not parquet")


def test_failure_during_copy_removes_partial_database(tmp_path):
    # Type conflict found only while streaming (int64 overflow into the merged INT64 column): the partial file
    # written so far must go.
    snap = custom(tmp_path, {
        "a": people([1, 2], n=pa.array([1, 2], pa.int64())),
        "b": people([3], n=pa.array([2**64 - 1], pa.uint64())),
    }, {"k": knows([1], [2])})
    before = sorted(snap.path.rglob("*"))
    target = make_target(tmp_path)
    with pytest.raises(SnapshotError, match=r"b\.parquet.*'n'"):
        target.load(snap)
    assert_nothing_left(target, snap, before)


def test_failure_inside_ladybug_removes_database_file_and_staging(tmp_path, monkeypatch):
    snap = demo(tmp_path, people=50)
    target = make_target(tmp_path)
    calls = []

    def failing_copy(conn, statement, name):
        calls.append(name)
        assert (target.root / "loading" / f"{snap.key}.lbug").exists()  # the partial database exists by now
        raise PermanentTargetError(f"simulated COPY failure into {name}")

    monkeypatch.setattr(database, "copy_rows", failing_copy)
    with pytest.raises(PermanentTargetError, match="simulated"):
        target.load(snap)
    assert calls
    assert store_files(target) == {"databases": [], "loading": []}
    monkeypatch.undo()
    assert not target.load(snap).reused  # and a retry starts clean


def test_missing_required_column(tmp_path):
    snap = custom(tmp_path, {"p": pa.table({"nodeId": pa.array([1], pa.int64()), "name": ["x"]})}, {"k": knows([1], [1])})
    target = make_target(tmp_path)
    with pytest.raises(SnapshotError, match=r"p\.parquet: missing required column 'labels'"):
        target.load(snap)
    assert store_files(target) == {"databases": [], "loading": []}


@pytest.mark.parametrize("column, type_name", [
    (pa.array([{"x": 1}]), "struct"),
    (pa.array([decimal.Decimal("1.5")]), "decimal"),
])
def test_unsupported_column_type_is_named(tmp_path, column, type_name):
    snap = custom(tmp_path, {"p": people([1], odd=column)}, {"k": knows([1], [1])})
    target = make_target(tmp_path)
    with pytest.raises(SnapshotError, match=rf"p\.parquet: column 'odd' has type {type_name}"):
        target.load(snap)
    assert store_files(target) == {"databases": [], "loading": []}


@pytest.mark.parametrize("ids", [[1, 2, 4], [7, 10**12, 5 * 10**15]], ids=["dense", "sparse"])
def test_relationship_to_unknown_node(tmp_path, ids):
    a, b, c = ids
    snap = custom(tmp_path, {"p": people(ids)}, {"k": knows([a, b, a, 3, c], [b, 99, 98, c, a])})
    target = make_target(tmp_path)
    with pytest.raises(SnapshotError, match=r"3 relationship\(s\) reference nodes.*99.*k\.parquet: 3"):
        target.load(snap)
    assert store_files(target) == {"databases": [], "loading": []}


def test_sparse_node_ids_resolve_to_their_tables(tmp_path):
    big = 5 * 10**15
    snap = custom(tmp_path, {
        "p": people([7, big]),
        "c": pa.table({"nodeId": pa.array([10**12], pa.int64()), "labels": pa.array(["Company"])}),
    }, {"k": knows([7, big, 7], [big, 10**12, 10**12], "LINKED")})
    target = make_target(tmp_path)
    target.load(snap)
    assert target.count(snap.key) == expected_counts(snap)
    path = str(target.database_path(snap.key))
    assert query(path, "MATCH (:Person)-[:LINKED]->(c:Company) RETURN count(*)") == [[2]]
    assert query(path, "MATCH (a:Person)-[:LINKED]->(b:Person) RETURN a.nodeId, b.nodeId") == [[7, big]]


def test_invalid_label_name_is_rejected(tmp_path):
    snap = custom(tmp_path, {"p": people([1], [["Person`) DETACH DELETE"]])}, {"k": knows([1], [1])})
    target = make_target(tmp_path)
    with pytest.raises(SnapshotError, match=r"p\.parquet: label .* is not allowed"):
        target.load(snap)


def test_union_schema_types_and_missing_columns(tmp_path):
    ts = dt.datetime(2024, 5, 6, 7, 8, 9, 123000)
    utc = dt.datetime(2024, 5, 6, 7, 8, 9, 5, tzinfo=dt.timezone.utc)
    snap = custom(tmp_path, {
        "a": people([1, 2], name=pa.array(["a", "b"]), born=pa.array([dt.date(2000, 1, 1)] * 2),
                    seen=pa.array([ts] * 2, pa.timestamp("ms")), tags=pa.array([["x"], []], pa.large_list(pa.string())),
                    n=pa.array([1, 2], pa.int32()), at=pa.array([utc] * 2, pa.timestamp("us", tz="UTC")),
                    ns=pa.array([ts] * 2, pa.timestamp("ns")), big=pa.array([2**64 - 1] * 2, pa.uint64())),
        "b": people([3], active=pa.array([True]), n=pa.array([7], pa.int64()), w=pa.array([0.5], pa.float32()),
                    kind=pa.array(["x"]).dictionary_encode()),
    }, {"k": knows([1], [3], since=pa.array([2001], pa.int16()))})
    target = make_target(tmp_path)
    target.load(snap)
    path = str(target.database_path(snap.key))
    rows = query(path, "MATCH (p:Person) RETURN p.nodeId, p.name, p.born, p.seen, p.tags, p.n, p.active, p.w, "
                       "p.at, p.ns, p.big, p.kind ORDER BY p.nodeId")
    assert rows[0] == [1, "a", dt.date(2000, 1, 1), ts, ["x"], 1, None, None, utc, ts, 2**64 - 1, None]
    assert rows[2] == [3, None, None, None, None, 7, True, 0.5, None, None, None, "x"]
    assert query(path, "MATCH ()-[k:KNOWS]->() RETURN k.since") == [[2001]]


def test_sub_microsecond_timestamps_are_refused_not_truncated(tmp_path):
    ns = pa.array([1_700_000_000_123_456_789], pa.timestamp("ns"))
    snap = custom(tmp_path, {"p": people([1], t=ns)}, {"k": knows([1], [1])})
    target = make_target(tmp_path)
    with pytest.raises(SnapshotError, match=r"p\.parquet: column 't'"):
        target.load(snap)
    assert store_files(target) == {"databases": [], "loading": []}


def test_health_reports_thresholds(tmp_path):
    target = make_target(tmp_path, min_free_disk_mb=1)
    assert target.health().ok
    snap = demo(tmp_path, people=20)
    target.load(snap)

    healthy = target.health(snap)
    assert healthy.ok, healthy.problems
    assert healthy.measurements["databases"] == 1 and healthy.measurements["free_disk_mb"] > 0

    raw = {"embedded": {"path": str(tmp_path / "store"), "min_free_disk_mb": 10**12},
           "orchestrator": {"max_databases": 1}}
    strict = EmbeddedTarget(parse_settings(raw, root=tmp_path))
    problems = strict.health(snap).problems
    assert len(problems) == 2
    assert "need 1000000000000 MB (embedded.min_free_disk_mb)" in problems[0]
    assert f"MB free on {strict.root}" in problems[0]
    assert "1 databases" in problems[1] and "limit is 1 (orchestrator.max_databases)" in problems[1]
