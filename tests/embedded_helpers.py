"""Snapshots and a store for the embedded target's tests: real Parquet files, real LadybugDB files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import ladybug as lb
import pyarrow as pa
import pyarrow.parquet as pq

from bluegreen_dagster.config import parse_settings
from bluegreen_dagster.demo_data import write_snapshot
from bluegreen_dagster.snapshots import Snapshot, snapshot_at
from bluegreen_dagster.targets.embedded import EmbeddedTarget


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


def assert_nothing_left(target: EmbeddedTarget, snap: Snapshot, files_before: list[Path]) -> None:
    assert store_files(target) == {"databases": [], "loading": []}
    assert sorted(snap.path.rglob("*")) == files_before  # snapshot untouched


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path: to prove a snapshot was not changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
