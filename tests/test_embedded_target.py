"""The embedded LadybugDB target against real database files."""

from __future__ import annotations

import datetime as dt
import decimal
import os
from pathlib import Path

import ladybug as lb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bluegreen_dagster.config import parse_settings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import Snapshot, SnapshotError, expected_counts, snapshot_at
from bluegreen_dagster.targets.base import PermanentTargetError
from bluegreen_dagster.targets.embedded import EmbeddedTarget, database, store


def make_target(tmp_path: Path, **embedded) -> EmbeddedTarget:
    raw = {"embedded": {"path": str(tmp_path / "store"), **embedded}}
    return EmbeddedTarget(parse_settings(raw, root=tmp_path))


def demo(tmp_path: Path, customer: str = "acme", ts: int = 1000, people: int = 300) -> Snapshot:
    write_snapshot(tmp_path / "data", customer, ts, people=people)
    return snapshot_at(tmp_path / "data", customer, ts)


def custom(tmp_path: Path, nodes: dict[str, pa.Table], rels: dict[str, pa.Table], customer: str = "acme",
           ts: int = 2000) -> Snapshot:
    snap = snapshot_at(tmp_path / "data", customer, ts)
    (snap.path / "nodes").mkdir(parents=True)
    (snap.path / "relationships").mkdir(parents=True)
    for name, table in nodes.items():
        pq.write_table(table, snap.path / "nodes" / f"{name}.parquet")
    for name, table in rels.items():
        pq.write_table(table, snap.path / "relationships" / f"{name}.parquet")
    return snap


def people(ids, labels=None, **extra) -> pa.Table:
    labels = labels if labels is not None else [["Person"]] * len(ids)
    return pa.table({"nodeId": pa.array(ids, pa.int64()), "labels": pa.array(labels, pa.list_(pa.string())), **extra})


def knows(src, dst, rel_type="KNOWS", **extra) -> pa.Table:
    return pa.table({"sourceNodeId": pa.array(src, pa.int64()), "targetNodeId": pa.array(dst, pa.int64()),
                     "relationshipType": pa.array([rel_type] * len(src)), **extra})


def store_files(target: EmbeddedTarget) -> dict[str, list[str]]:
    return {d: sorted(os.listdir(target.root / d)) if (target.root / d).is_dir() else []
            for d in ("databases", "loading")}


def query(path: str, cypher: str) -> list:
    db = lb.Database(path, read_only=True)
    try:
        conn = lb.Connection(db)
        try:
            result = conn.execute(cypher)
            rows = []
            while result.has_next():
                rows.append(result.get_next())
            return rows
        finally:
            conn.close()
    finally:
        db.close()


def test_load_counts_match_snapshot_and_alias_is_queryable(tmp_path):
    snap = demo(tmp_path)
    target = make_target(tmp_path)

    report = target.load(snap)

    expected = expected_counts(snap)
    assert not report.reused
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


def test_multi_label_nodes_count_once_per_distinct_label(tmp_path):
    snap = custom(tmp_path, {
        "p": people([1, 2, 3, 4], [["Person", "Employee"], ["Person"], ["Person", "Employee", "Employee"],
                                   ["Employee", "Person"]]),
        "c": pa.table({"nodeId": pa.array([10], pa.int64()), "labels": pa.array(["Company"]).dictionary_encode()}),
    }, {"k": knows([1, 4], [2, 10], "WORKS_WITH")})
    target = make_target(tmp_path)
    target.load(snap)

    counts = target.count(snap.key)
    assert counts == expected_counts(snap)
    assert counts.labels == {"Person": 4, "Employee": 3, "Company": 1}
    assert counts.nodes == 5
    # Rule: the table is the first label; all labels stay in the `labels` property.
    path = str(target.database_path(snap.key))
    assert query(path, "MATCH (n:Person) RETURN count(*)") == [[3]]
    assert query(path, "MATCH (n:Employee) RETURN n.nodeId, n.labels") == [[4, ["Employee", "Person"]]]
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


def assert_nothing_left(target: EmbeddedTarget, snap: Snapshot, files_before: list[Path]) -> None:
    assert store_files(target) == {"databases": [], "loading": []}
    assert sorted(snap.path.rglob("*")) == files_before  # snapshot untouched


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


def test_point_alias_switches_atomically_and_drop_refuses_alias_target(tmp_path):
    target = make_target(tmp_path)
    old, new = demo(tmp_path, ts=1000, people=50), demo(tmp_path, ts=2000, people=60)
    target.load(old)
    target.load(new)

    assert target.alias_target("acme") is None
    with pytest.raises(PermanentTargetError, match="does not exist"):
        target.point_alias("acme", "acme-3000")
    assert target.alias_target("acme") is None

    target.point_alias("acme", old.key)
    assert target.alias_target("acme") == old.key
    target.point_alias("acme", new.key)
    alias = Path(target.reader_location("acme"))
    assert alias.is_symlink() and os.readlink(alias) == f"../databases/{new.key}.lbug"
    assert target.alias_target("acme") == new.key
    assert target.database_path(old.key).is_file()  # the old target stays until cleanup
    assert query(str(alias), "MATCH (p:Person) RETURN count(*)") == [[60]]
    assert [p.name for p in alias.parent.iterdir()] == ["acme.lbug"]  # no temp link left behind

    with pytest.raises(PermanentTargetError, match="alias"):
        target.drop_database(new.key)
    assert target.database_path(new.key).is_file()
    target.drop_database(old.key)
    assert not target.database_path(old.key).exists()
    target.drop_database(old.key)  # already gone: no error
    assert target.count(new.key).nodes == expected_counts(new).nodes


class _WatchedOs:
    """Stands in for `os` inside the embedded store: checks before and after every call that the alias exists."""

    def __init__(self, alias: Path, seen: list[str]) -> None:
        self._alias, self._seen = alias, seen

    def __getattr__(self, name):
        value = getattr(os, name)
        if not callable(value) or isinstance(value, type):
            return value

        def call(*args, **kwargs):
            self._seen.append(os.readlink(self._alias) if os.path.lexists(self._alias) else "MISSING")
            result = value(*args, **kwargs)
            self._seen.append(os.readlink(self._alias) if os.path.lexists(self._alias) else "MISSING")
            return result

        return call


def test_alias_never_missing_during_switch(tmp_path, monkeypatch):
    target = make_target(tmp_path)
    a, b = demo(tmp_path, ts=1000, people=10), demo(tmp_path, ts=2000, people=10)
    target.load(a)
    target.load(b)
    target.point_alias("acme", a.key)
    seen: list[str] = []
    monkeypatch.setattr(store, "os", _WatchedOs(target.root / "aliases" / "acme.lbug", seen))
    target.point_alias("acme", b.key)
    monkeypatch.undo()
    assert seen and "MISSING" not in seen
    assert set(seen) == {f"../databases/{a.key}.lbug", f"../databases/{b.key}.lbug"}
    assert target.alias_target("acme") == b.key


def test_list_databases_customer_isolation(tmp_path):
    target = make_target(tmp_path)
    target.load(demo(tmp_path, "acme", 1000, people=20))
    target.load(demo(tmp_path, "acme-corp", 1000, people=20))
    target.load(demo(tmp_path, "acme", 1001, people=20))
    (target.root / "loading" / "acme-1002.lbug").write_bytes(b"")
    (target.root / "loading" / "acme-corp-1003.lbug").write_bytes(b"")
    (target.root / "loading" / "acme-1004.lock").write_bytes(b"")  # no process holds these: crashed loads
    (target.root / "databases" / "notes.lbug").write_bytes(b"")

    assert [(d.name, d.status) for d in target.list_databases("acme")] == [
        ("acme-1000", "online"), ("acme-1001", "online"), ("acme-1002", "failed"), ("acme-1004", "failed")]
    assert [(d.name, d.status) for d in target.list_databases("acme-corp")] == [
        ("acme-corp-1000", "online"), ("acme-corp-1003", "failed")]
    assert target.list_databases("other") == []


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
